//! A broker as a sluice [`Source`]: fetches as many messages as the engine's next chunk
//! wants (only when admission lets the reader read, so a slow pipeline leaves the backlog
//! in the broker), turns them into rows, records them in the ledger, and sets malformed
//! ones aside. A short chunk is cut once its oldest message waited `max_latency`.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice::source::{LatencyClock, PartHint, SourcePart};
use sluice::{SluiceError, Source};

use crate::broker::{Broker, Message};
use crate::decode::{infer_schema, JsonDecoder, Malformed};
use crate::error::Result;
use crate::ledger::Ledger;

/// Longest single wait for messages, so a stop or an idle limit is seen soon.
const TICK: Duration = Duration::from_millis(100);
/// Most messages one fetch asks for.
const MAX_FETCH: usize = 10_000;

/// What becomes of malformed messages.
#[derive(Debug, Clone)]
pub enum MalformedPolicy {
    /// Appended to `DIR/messages.jsonl` with the message id, then acknowledged.
    DeadLetter(PathBuf),
    /// Counted and acknowledged.
    Skip,
    /// The stream stops with an error naming the message.
    Fail,
}

/// Settings of a broker source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub max_latency: Duration,
    /// End the stream once no message came for this long.
    pub stop_when_idle: Option<Duration>,
    pub malformed: MalformedPolicy,
}

/// Shared with whoever drives the stream: a stop request and the counters.
#[derive(Default)]
pub struct StreamControl {
    stop: AtomicBool,
    pub messages: AtomicU64,
    pub malformed: AtomicU64,
    pub duplicates: AtomicU64,
}

impl StreamControl {
    /// Stop reading: what was read is processed, committed and acknowledged, then the
    /// stream ends.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

pub struct BrokerSource {
    broker: Box<dyn Broker>,
    name: String,
    schema: SchemaRef,
    decoder: JsonDecoder,
    ledger: Arc<Mutex<Ledger>>,
    options: SourceOptions,
    control: Arc<StreamControl>,
    /// Absolute input row of the next row (rows of earlier runs included).
    next_row: u64,
    /// Absolute input row of this run's first row (the rows earlier runs committed).
    first_row: u64,
    /// Fetched before the engine started (to learn the schema).
    first: Option<Vec<Message>>,
    last_message: Instant,
    clock: LatencyClock,
    flush: bool,
    done: bool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BrokerSource {
    /// Waits for the first well-formed message to learn the columns. `None` if the
    /// stream was stopped or stayed idle before one came.
    pub fn open(
        mut broker: Box<dyn Broker>,
        ledger: Arc<Mutex<Ledger>>,
        first_row: u64,
        options: SourceOptions,
        control: Arc<StreamControl>,
    ) -> Result<Option<Self>> {
        let started = Instant::now();
        let name = broker.name();
        let mut last_message = started;
        loop {
            if control.stopping()
                || options
                    .stop_when_idle
                    .is_some_and(|idle| last_message.elapsed() >= idle)
            {
                return Ok(None);
            }
            let fetched = broker.fetch(1000, TICK)?;
            if fetched.is_empty() {
                continue;
            }
            last_message = Instant::now();
            let fresh = drop_duplicates(&ledger, &control, fetched)?;
            let Some(schema) = infer_schema(&fresh) else {
                // Only malformed ones so far: set them aside, wait for a good one.
                let decoder_less: Vec<Malformed> = fresh
                    .into_iter()
                    .map(|m| Malformed {
                        reason: "not a JSON object".into(),
                        message: m,
                    })
                    .collect();
                set_aside(&ledger, &control, &options.malformed, &name, decoder_less)?;
                continue;
            };
            return Ok(Some(BrokerSource {
                broker,
                name,
                decoder: JsonDecoder::new(schema.clone()),
                schema,
                ledger,
                clock: LatencyClock::new(options.max_latency),
                options,
                control,
                next_row: first_row,
                first_row,
                first: Some(fresh),
                last_message,
                flush: false,
                done: false,
            }));
        }
    }

    fn empty(&self) -> Option<(SourcePart, u64)> {
        Some((
            SourcePart::Ready(RecordBatch::new_empty(self.schema.clone())),
            0,
        ))
    }

    fn rows_of(&mut self, messages: Vec<Message>) -> Result<(RecordBatch, u64)> {
        let bytes: u64 = messages.iter().map(|m| m.data.len() as u64).sum();
        let (batch, good, bad) = self.decoder.decode(messages);
        set_aside(
            &self.ledger,
            &self.control,
            &self.options.malformed,
            &self.name,
            bad,
        )?;
        // Recorded before the engine sees the rows: a crash after this point redelivers
        // them (they are not acknowledged) unless the manifest says they were committed.
        lock(&self.ledger).record(self.next_row, &good)?;
        self.next_row += good.len() as u64;
        self.control
            .messages
            .fetch_add(good.len() as u64, Ordering::Relaxed);
        Ok((batch, bytes))
    }

    fn next(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        self.flush = false;
        if self.done {
            return Ok(None);
        }
        if let Some(first) = self.first.take() {
            let (batch, bytes) = self.rows_of(first)?;
            self.flush = self
                .clock
                .arrived(batch.num_rows(), hint.rows, Instant::now());
            return Ok(Some((SourcePart::Ready(batch), bytes)));
        }
        let idle = self
            .options
            .stop_when_idle
            .is_some_and(|idle| self.last_message.elapsed() >= idle);
        if self.control.stopping() || idle {
            self.done = true;
            return Ok(None);
        }
        let wait = self.clock.wait(TICK).max(Duration::from_millis(1));
        let fetched = self.broker.fetch(hint.rows.clamp(1, MAX_FETCH), wait)?;
        if fetched.is_empty() {
            self.flush = self.clock.idle();
            return Ok(self.empty());
        }
        self.last_message = Instant::now();
        let fresh = drop_duplicates(&self.ledger, &self.control, fetched)?;
        let (batch, bytes) = self.rows_of(fresh)?;
        self.flush = self
            .clock
            .arrived(batch.num_rows(), hint.rows, Instant::now());
        Ok(Some((SourcePart::Ready(batch), bytes)))
    }
}

/// Drops (and acknowledges) messages already committed or already in hand.
fn drop_duplicates(
    ledger: &Mutex<Ledger>,
    control: &StreamControl,
    fetched: Vec<Message>,
) -> Result<Vec<Message>> {
    let mut ledger = lock(ledger);
    let (mut fresh, mut seen) = (Vec::with_capacity(fetched.len()), Vec::new());
    for m in fetched {
        if ledger.is_duplicate(&m.id) {
            seen.push(m);
        } else {
            fresh.push(m);
        }
    }
    if !seen.is_empty() {
        control
            .duplicates
            .fetch_add(seen.len() as u64, Ordering::Relaxed);
        // Only those committed before are acknowledged here; one in hand is acknowledged
        // when its part commits (acknowledging twice is harmless).
        let done: Vec<(String, Option<String>)> = seen.into_iter().map(|m| (m.id, m.ack)).collect();
        let committed: Vec<_> = done
            .into_iter()
            .filter(|(id, _)| ledger.was_committed(id))
            .collect();
        ledger.ack_now(&committed)?;
    }
    Ok(fresh)
}

/// Applies the malformed-message policy, then acknowledges them.
fn set_aside(
    ledger: &Mutex<Ledger>,
    control: &StreamControl,
    policy: &MalformedPolicy,
    stream: &str,
    bad: Vec<Malformed>,
) -> Result<()> {
    if bad.is_empty() {
        return Ok(());
    }
    match policy {
        MalformedPolicy::Fail => {
            let first = &bad[0];
            return Err(SluiceError::Source {
                source_name: stream.to_string(),
                message: format!(
                    "message {} is malformed: {}",
                    first.message.id, first.reason
                ),
            }
            .into());
        }
        MalformedPolicy::Skip => {}
        MalformedPolicy::DeadLetter(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| crate::error::StreamError::io(dir, e))?;
            let path = dir.join("messages.jsonl");
            let mut text = String::new();
            for m in &bad {
                let line = serde_json::json!({
                    "stream": stream,
                    "id": m.message.id,
                    "error": m.reason,
                    "data": String::from_utf8_lossy(&m.message.data),
                    "fields": m.message.extra.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                });
                text.push_str(&line.to_string());
                text.push('\n');
            }
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| crate::error::StreamError::io(&path, e))?;
            file.write_all(text.as_bytes())
                .map_err(|e| crate::error::StreamError::io(&path, e))?;
        }
    }
    control
        .malformed
        .fetch_add(bad.len() as u64, Ordering::Relaxed);
    let acks: Vec<(String, Option<String>)> = bad
        .into_iter()
        .map(|m| (m.message.id, m.message.ack))
        .collect();
    lock(ledger).ack_now(&acks)
}

impl Source for BrokerSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn next_part(&mut self, hint: PartHint) -> sluice::Result<Option<(SourcePart, u64)>> {
        self.next(hint).map_err(|e| match e {
            crate::error::StreamError::Engine(e) => e,
            other => SluiceError::Source {
                source_name: self.name.clone(),
                message: other.to_string(),
            },
        })
    }

    fn resume_row(&self) -> u64 {
        // Rows of earlier runs are committed: this run's rows are numbered after them.
        self.first_row
    }

    fn flush_requested(&self) -> bool {
        self.flush
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Acker;

    /// One message per fetch, forever: a fetch is never empty.
    struct Trickle(u64);

    impl Broker for Trickle {
        fn name(&self) -> String {
            "trickle".into()
        }
        fn fetch(&mut self, _max: usize, _wait: Duration) -> Result<Vec<Message>> {
            self.0 += 1;
            Ok(vec![Message {
                id: format!("0-{}", self.0),
                ack: None,
                data: format!("{{\"n\": {}}}", self.0).into_bytes(),
                extra: Vec::new(),
            }])
        }
    }

    struct NoAcks;

    impl Acker for NoAcks {
        fn ack(&mut self, _messages: &[(String, Option<String>)]) -> Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_steady_trickle_still_cuts_a_short_chunk_once_the_oldest_row_waited() {
        let dir = tempfile::tempdir().expect("tmp");
        let ledger = Arc::new(Mutex::new(
            Ledger::open(dir.path(), 0, Box::new(NoAcks)).expect("ledger"),
        ));
        let options = SourceOptions {
            // Every row has waited long enough by the next fetch.
            max_latency: Duration::ZERO,
            stop_when_idle: None,
            malformed: MalformedPolicy::Fail,
        };
        let control = Arc::new(StreamControl::default());
        let mut source = BrokerSource::open(Box::new(Trickle(0)), ledger, 0, options, control)
            .expect("open")
            .expect("a first message");
        let hint = PartHint {
            rows: 1000,
            bytes: 1 << 20,
        };
        // The message read to learn the schema starts the clock.
        source.next_part(hint).expect("first").expect("part");
        assert!(!source.flush_requested());
        let (part, _) = source.next_part(hint).expect("second").expect("part");
        let SourcePart::Ready(batch) = part else {
            panic!("a broker's rows are ready");
        };
        assert_eq!(batch.num_rows(), 1, "the fetch still brought a row");
        assert!(
            source.flush_requested(),
            "two rows of a 1000-row chunk, the first past its latency: cut now"
        );
    }
}
