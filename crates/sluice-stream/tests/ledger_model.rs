//! The ledger against an in-memory broker that redelivers what is not acknowledged (at
//! random while it is in hand, and all of it after a crash) and loses acknowledgements at
//! random, driven by random fetches, commits and crashes (a crash between a manifest and
//! its acknowledgements too). Checked against the sequential model: every message exactly
//! once in the committed output, and in the end every one acknowledged.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use sluice_stream::broker::{AckReport, Acker, Message, StreamIdentity};
use sluice_stream::{Ledger, Result};

/// A tiny deterministic generator (the case's seed), so proptest can shrink and replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The broker's view: what it will deliver next, what is delivered and not acknowledged.
struct State {
    ready: VecDeque<u64>,
    unacked: BTreeSet<u64>,
    acked: HashSet<u64>,
    rng: Rng,
    /// Percent of acknowledgements lost on the way (reported unconfirmed).
    loss: u64,
}

impl State {
    fn fetch(&mut self, max: usize) -> Vec<Message> {
        let mut out = Vec::new();
        // A message in hand whose ack wait ran out: delivered again meanwhile.
        if let Some(&again) = self.unacked.iter().next() {
            if self.rng.chance(20) {
                out.push(again);
            }
        }
        while out.len() < max {
            let Some(n) = self.ready.pop_front() else {
                break;
            };
            self.unacked.insert(n);
            out.push(n);
        }
        out.into_iter()
            .map(|n| Message {
                id: format!("{n}-0"),
                ack: Some(format!("reply.{n}")),
                data: Vec::new(),
                extra: Vec::new(),
            })
            .collect()
    }

    /// Everything delivered and not acknowledged comes again (a consumer restarted, or
    /// the ack wait ran out).
    fn redeliver_all(&mut self) {
        let back: Vec<u64> = std::mem::take(&mut self.unacked).into_iter().collect();
        for n in back.into_iter().rev() {
            if !self.ready.contains(&n) {
                self.ready.push_front(n);
            }
        }
    }
}

fn number(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an id")
}

#[derive(Clone)]
struct FakeAcker(Arc<Mutex<State>>);

impl Acker for FakeAcker {
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
        let mut state = self.0.lock().expect("lock");
        let mut report = AckReport::default();
        for (id, ack) in messages {
            assert_eq!(
                ack.as_deref(),
                Some(format!("reply.{}", number(id)).as_str())
            );
            let loss = state.loss;
            if state.rng.chance(loss) {
                report.unconfirmed += 1;
                continue;
            }
            let n = number(id);
            state.unacked.remove(&n);
            state.acked.insert(n);
            report.confirmed += 1;
        }
        Ok(report)
    }

    fn release(&mut self, messages: &[(String, Option<String>)]) -> Result<()> {
        let mut state = self.0.lock().expect("lock");
        for (id, _) in messages.iter().rev() {
            let n = number(id);
            if state.unacked.remove(&n) && !state.ready.contains(&n) {
                state.ready.push_front(n);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Op {
    Fetch(usize),
    /// Commit this share (in percent) of the rows in hand: a part closes, the manifest
    /// lists it, and the hook acknowledges.
    Commit(u64),
    /// The manifest lists the part, then the process dies before acknowledging.
    CommitThenCrash(u64),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..40).prop_map(Op::Fetch),
        3 => (0u64..=100).prop_map(Op::Commit),
        1 => (0u64..=100).prop_map(Op::CommitThenCrash),
        1 => Just(Op::Crash),
    ]
}

fn identity() -> StreamIdentity {
    StreamIdentity {
        broker: "memory".into(),
        stream: "model".into(),
        consumer: "c".into(),
        incarnation: None,
    }
}

/// What the source, engine and sink do with the ledger, reduced to rows and a manifest.
struct Consumer {
    dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
    ledger: Ledger,
    /// The committed output (the manifest's parts), in row order.
    output: Vec<String>,
    /// Rows handed to the engine and not committed.
    in_engine: Vec<String>,
}

impl Consumer {
    fn new(state: Arc<Mutex<State>>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(
            dir.path(),
            identity(),
            0,
            Box::new(FakeAcker(state.clone())),
        )
        .expect("open");
        Consumer {
            dir,
            state,
            ledger,
            output: Vec::new(),
            in_engine: Vec::new(),
        }
    }

    fn committed_rows(&self) -> u64 {
        self.output.len() as u64
    }

    /// As `BrokerSource::next` and `drop_duplicates`: drop what is in hand or was
    /// acknowledged (acknowledging the latter again), record the rest, hand it over.
    fn fetch(&mut self, max: usize) {
        let fetched = self.state.lock().expect("lock").fetch(max);
        let (mut fresh, mut committed) = (Vec::new(), Vec::new());
        for m in fetched {
            if self.ledger.is_duplicate(&m.id) {
                if self.ledger.was_committed(&m.id) {
                    committed.push((m.id, m.ack));
                }
            } else {
                fresh.push(m);
            }
        }
        self.ledger.ack_now(&committed).expect("ack");
        let first = self.committed_rows() + self.in_engine.len() as u64;
        self.ledger.record(first, &fresh).expect("record");
        self.in_engine.extend(fresh.into_iter().map(|m| m.id));
    }

    fn commit(&mut self, percent: u64, acknowledge: bool) {
        let n = (self.in_engine.len() as u64 * percent / 100) as usize;
        if n == 0 {
            return;
        }
        self.output.extend(self.in_engine.drain(..n));
        if acknowledge {
            self.ledger
                .commit_through(self.committed_rows())
                .expect("commit");
        }
    }

    /// The process dies: what the engine held is gone (its parts were never listed), the
    /// broker gives back what was delivered and not acknowledged, and the next instance
    /// opens the ledger with the manifest's committed rows.
    fn crash(&mut self) {
        self.in_engine.clear();
        self.state.lock().expect("lock").redeliver_all();
        let acker = Box::new(FakeAcker(self.state.clone()));
        self.ledger = Ledger::open(self.dir.path(), identity(), self.committed_rows(), acker)
            .expect("reopen");
    }
}

fn run(messages: u64, ops: Vec<Op>, seed: u64, loss: u64) {
    let state = Arc::new(Mutex::new(State {
        ready: (0..messages).collect(),
        unacked: BTreeSet::new(),
        acked: HashSet::new(),
        rng: Rng(seed | 1),
        loss,
    }));
    let mut consumer = Consumer::new(state.clone());
    for op in ops {
        match op {
            Op::Fetch(n) => consumer.fetch(n),
            Op::Commit(p) => consumer.commit(p, true),
            Op::CommitThenCrash(p) => {
                consumer.commit(p, false);
                consumer.crash();
            }
            Op::Crash => consumer.crash(),
        }
    }
    // Drain: read and commit everything, then let the ack wait run out until the broker
    // holds nothing (acks still get lost at first, then no more).
    for round in 0..200 {
        if round == 100 {
            state.lock().expect("lock").loss = 0;
        }
        consumer.fetch(50);
        consumer.commit(100, true);
        let mut s = state.lock().expect("lock");
        if s.ready.is_empty() {
            if s.unacked.is_empty() {
                break;
            }
            s.redeliver_all();
        }
    }
    // The sequential model: every message once.
    let mut seen = HashSet::new();
    for id in &consumer.output {
        assert!(seen.insert(id.clone()), "{id} committed twice");
    }
    let expected: HashSet<String> = (0..messages).map(|n| format!("{n}-0")).collect();
    assert_eq!(seen, expected, "every message committed");
    let s = state.lock().expect("lock");
    assert!(
        s.unacked.is_empty() && s.ready.is_empty(),
        "all acknowledged"
    );
    assert_eq!(s.acked.len() as u64, messages);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_message_once_across_crashes_redeliveries_and_lost_acks(
        messages in 1u64..200,
        ops in prop::collection::vec(op(), 0..60),
        seed in any::<u64>(),
        loss in 0u64..40,
    ) {
        run(messages, ops, seed, loss);
    }
}
