//! A broker as a sluice [`Source`]: fetches as many messages as the engine's next chunk
//! wants (only when admission lets the reader read, so a slow pipeline leaves the backlog
//! in the broker), turns them into rows and records them in the ledger. Malformed messages
//! become the engine's rejects (its error policy sets them aside as dead letters, which the
//! manifest lists; the ledger acknowledges them only after that). A short chunk is cut once
//! its oldest message waited `max_latency`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use sluice::source::{DecodedPart, LatencyClock, PartHint, SourcePart};
use sluice::{Reject, SluiceError, Source};

use crate::broker::{Broker, Message};
use crate::decode::{JsonDecoder, Malformed};
use crate::error::Result;
use crate::ledger::Ledger;
use crate::schema::StreamSchema;

/// Longest single wait for messages, so a stop or an idle limit is seen soon.
const TICK: Duration = Duration::from_millis(100);
/// Most messages one fetch asks for.
const MAX_FETCH: usize = 10_000;
/// How often an idle stream asks the broker what it still holds for the consumer.
const OUTSTANDING_EVERY: Duration = Duration::from_millis(500);

/// Settings of a broker source.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub max_latency: Duration,
    /// End the stream once no message came for this long and the broker holds nothing
    /// more for the consumer.
    pub stop_when_idle: Option<Duration>,
    /// Declared columns (`--schema`): fixed; messages that do not fit are set aside.
    pub schema: Option<StreamSchema>,
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
    /// `None` once handed over for the next part schema.
    broker: Option<Box<dyn Broker>>,
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
    /// Fetched before the engine started (to learn the schema, or carried over).
    first: Option<Vec<Message>>,
    /// Malformed messages that came before the first well-formed one: rejects of the
    /// first part.
    first_bad: Vec<Malformed>,
    /// Messages that need the columns to grow, with the grown schema: this run ends and
    /// they start the next one (see [`Handoff`]).
    rest: Option<(Vec<Message>, StreamSchema)>,
    handoff: Arc<Mutex<Option<Handoff>>>,
    last_message: Instant,
    last_outstanding: Option<Instant>,
    clock: LatencyClock,
    flush: bool,
    done: bool,
}

/// What a source that ended for a schema change hands to the next run: the broker, the
/// messages not yet taken, the grown schema and where the rows go on.
pub struct Handoff {
    broker: Box<dyn Broker>,
    messages: Vec<Message>,
    pub typing: StreamSchema,
    next_row: u64,
    last_message: Instant,
}

impl Handoff {
    /// The input row the next run starts at.
    pub fn next_row(&self) -> u64 {
        self.next_row
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the broker holds nothing for the consumer beyond what this run has in hand:
/// an idle limit ends the stream only then, not merely because no message came (a dead
/// instance's messages may still be on their way back).
fn broker_settled(broker: &mut dyn Broker, ledger: &Mutex<Ledger>) -> Result<bool> {
    let outstanding = broker.outstanding()?;
    let in_hand = lock(ledger).in_hand() as u64;
    Ok(outstanding.undelivered == 0 && outstanding.unacknowledged <= in_hand)
}

impl BrokerSource {
    /// Waits for the first message. With `known` columns (declared, or kept by an earlier
    /// run) they are used; otherwise they are learned from the first well-formed messages.
    /// `None` if the stream was stopped or stayed idle before one came.
    pub fn open(
        mut broker: Box<dyn Broker>,
        ledger: Arc<Mutex<Ledger>>,
        first_row: u64,
        options: SourceOptions,
        control: Arc<StreamControl>,
        known: Option<StreamSchema>,
    ) -> Result<Option<Self>> {
        let mut last_message = Instant::now();
        let mut last_outstanding: Option<Instant> = None;
        let mut first_bad = Vec::new();
        loop {
            if control.stopping() {
                return Ok(None);
            }
            if options
                .stop_when_idle
                .is_some_and(|idle| last_message.elapsed() >= idle)
                && last_outstanding.is_none_or(|t| t.elapsed() >= OUTSTANDING_EVERY)
            {
                last_outstanding = Some(Instant::now());
                if broker_settled(broker.as_mut(), &ledger)? {
                    return Ok(None);
                }
            }
            let fetched = broker.fetch(1000, TICK)?;
            if fetched.is_empty() {
                continue;
            }
            last_message = Instant::now();
            let fresh = drop_duplicates(&ledger, &control, fetched)?;
            let typing = match &known {
                Some(known) => Some(known.clone()),
                None => StreamSchema::infer(
                    fresh
                        .iter()
                        .filter_map(|m| crate::decode::to_object(m).ok())
                        .collect::<Vec<_>>()
                        .iter(),
                ),
            };
            let Some(typing) = typing else {
                // Nothing to learn the columns from yet: these are rejects of the first
                // part. Held in the ledger, so a redelivery meanwhile is not taken twice.
                lock(&ledger).hold_malformed(
                    first_row,
                    fresh
                        .iter()
                        .map(|m| (m.id.clone(), m.ack.clone()))
                        .collect(),
                );
                first_bad.extend(fresh.into_iter().map(|m| Malformed {
                    reason: match crate::decode::to_object(&m) {
                        Err(reason) => reason,
                        Ok(_) => "no field has a value: the stream's columns cannot be learned from it".into(),
                    },
                    message: m,
                }));
                continue;
            };
            let mut source = Self::with(
                broker,
                typing,
                ledger,
                first_row,
                options,
                control,
                fresh,
                last_message,
            );
            source.first_bad = first_bad;
            return Ok(Some(source));
        }
    }

    /// The next run's source, from what a run that ended for a schema change handed over.
    pub fn resume(
        handoff: Handoff,
        ledger: Arc<Mutex<Ledger>>,
        options: SourceOptions,
        control: Arc<StreamControl>,
    ) -> Self {
        Self::with(
            handoff.broker,
            handoff.typing,
            ledger,
            handoff.next_row,
            options,
            control,
            handoff.messages,
            handoff.last_message,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn with(
        broker: Box<dyn Broker>,
        typing: StreamSchema,
        ledger: Arc<Mutex<Ledger>>,
        first_row: u64,
        options: SourceOptions,
        control: Arc<StreamControl>,
        first: Vec<Message>,
        last_message: Instant,
    ) -> Self {
        BrokerSource {
            name: broker.name(),
            broker: Some(broker),
            schema: typing.schema.clone(),
            decoder: JsonDecoder::new(typing),
            ledger,
            clock: LatencyClock::new(options.max_latency),
            options,
            control,
            next_row: first_row,
            first_row,
            first: Some(first),
            first_bad: Vec::new(),
            rest: None,
            handoff: Arc::new(Mutex::new(None)),
            last_message,
            last_outstanding: None,
            flush: false,
            done: false,
        }
    }

    /// Where this source leaves what the next run needs, if it ends for a schema change.
    pub fn handoff(&self) -> Arc<Mutex<Option<Handoff>>> {
        self.handoff.clone()
    }

    /// The columns this source's rows have.
    pub fn typing(&self) -> &StreamSchema {
        self.decoder.typing()
    }

    fn empty(&self) -> Option<(SourcePart, u64)> {
        Some((
            SourcePart::Ready(RecordBatch::new_empty(self.schema.clone())),
            0,
        ))
    }

    /// The rows of `messages` as the next part, with the malformed ones (and `earlier_bad`,
    /// already held) as its rejects after its rows.
    fn part_of(
        &mut self,
        messages: Vec<Message>,
        earlier_bad: Vec<Malformed>,
    ) -> Result<(SourcePart, u64)> {
        let bytes: u64 = messages.iter().map(|m| m.data.len() as u64).sum();
        let decoded = self.decoder.decode(messages);
        let (batch, good, bad) = (decoded.batch, decoded.good, decoded.bad);
        if decoded.rest.is_some() {
            self.rest = decoded.rest;
        }
        // Recorded before the engine sees the rows: a crash after this point redelivers
        // them (they are not acknowledged) unless the manifest says they were committed.
        lock(&self.ledger).record(self.next_row, &good)?;
        self.next_row += good.len() as u64;
        self.control
            .messages
            .fetch_add(good.len() as u64, Ordering::Relaxed);
        if bad.is_empty() && earlier_bad.is_empty() {
            return Ok((SourcePart::Ready(batch), bytes));
        }
        // Placed after the part's rows: acknowledged once a committed part reaches past
        // them, when their dead letter (riding with a chunk before) is listed too.
        lock(&self.ledger).hold_malformed(
            self.next_row,
            earlier_bad
                .iter()
                .chain(&bad)
                .map(|m| (m.message.id.clone(), m.message.ack.clone()))
                .collect(),
        );
        let rejects: Vec<Reject> = earlier_bad
            .iter()
            .chain(&bad)
            .map(|m| {
                Reject::message(
                    &self.name,
                    &m.message.id,
                    &m.message.data,
                    m.reason.clone(),
                    good.len() as u64,
                )
            })
            .collect();
        self.control
            .malformed
            .fetch_add(rejects.len() as u64, Ordering::Relaxed);
        let estimated_bytes = batch.get_array_memory_size() as u64;
        let part = DecodedPart {
            batches: vec![batch],
            rejects,
        };
        Ok((
            SourcePart::Deferred {
                estimated_bytes,
                decode: Box::new(move || Ok(part)),
            },
            bytes,
        ))
    }

    /// Whether the idle limit ends the stream now.
    fn idle(&mut self) -> Result<bool> {
        let Some(limit) = self.options.stop_when_idle else {
            return Ok(false);
        };
        if self.last_message.elapsed() < limit
            || self
                .last_outstanding
                .is_some_and(|t| t.elapsed() < OUTSTANDING_EVERY)
        {
            return Ok(false);
        }
        self.last_outstanding = Some(Instant::now());
        let Some(broker) = self.broker.as_mut() else {
            return Ok(true);
        };
        broker_settled(broker.as_mut(), &self.ledger)
    }

    fn next(&mut self, hint: PartHint) -> Result<Option<(SourcePart, u64)>> {
        self.flush = false;
        if self.done {
            return Ok(None);
        }
        if let Some(first) = self.first.take() {
            let before = self.next_row;
            let earlier_bad = std::mem::take(&mut self.first_bad);
            let (part, bytes) = self.part_of(first, earlier_bad)?;
            let rows = (self.next_row - before) as usize;
            self.flush = self.clock.arrived(rows, hint.rows, Instant::now());
            return Ok(Some((part, bytes)));
        }
        if let Some((messages, typing)) = self.rest.take() {
            // This run ends here; the next one starts with these messages and columns.
            self.done = true;
            if let Some(broker) = self.broker.take() {
                *lock(&self.handoff) = Some(Handoff {
                    broker,
                    messages,
                    typing,
                    next_row: self.next_row,
                    last_message: self.last_message,
                });
            }
            return Ok(None);
        }
        if self.control.stopping() || self.idle()? {
            self.done = true;
            return Ok(None);
        }
        let Some(broker) = self.broker.as_mut() else {
            self.done = true;
            return Ok(None);
        };
        let wait = self.clock.wait(TICK).max(Duration::from_millis(1));
        let fetched = broker.fetch(hint.rows.clamp(1, MAX_FETCH), wait)?;
        if fetched.is_empty() {
            self.flush = self.clock.idle();
            return Ok(self.empty());
        }
        self.last_message = Instant::now();
        let fresh = drop_duplicates(&self.ledger, &self.control, fetched)?;
        let before = self.next_row;
        let (part, bytes) = self.part_of(fresh, Vec::new())?;
        let rows = (self.next_row - before) as usize;
        self.flush = self.clock.arrived(rows, hint.rows, Instant::now());
        Ok(Some((part, bytes)))
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
    use crate::broker::{AckReport, Acker, Outstanding, StreamIdentity};

    /// One message per fetch, forever: a fetch is never empty.
    struct Trickle(u64);

    impl Broker for Trickle {
        fn name(&self) -> String {
            "trickle".into()
        }
        fn identity(&self) -> StreamIdentity {
            StreamIdentity {
                broker: "test".into(),
                stream: "trickle".into(),
                consumer: "test".into(),
                incarnation: None,
            }
        }
        fn outstanding(&mut self) -> Result<Outstanding> {
            Ok(Outstanding::default())
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
        fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
            Ok(AckReport {
                confirmed: messages.len() as u64,
                ..AckReport::default()
            })
        }
    }

    #[test]
    fn a_steady_trickle_still_cuts_a_short_chunk_once_the_oldest_row_waited() {
        let dir = tempfile::tempdir().expect("tmp");
        let ledger = Arc::new(Mutex::new(
            Ledger::open(dir.path(), Trickle(0).identity(), 0, Box::new(NoAcks)).expect("ledger"),
        ));
        let options = SourceOptions {
            // Every row has waited long enough by the next fetch.
            max_latency: Duration::ZERO,
            stop_when_idle: None,
            schema: None,
        };
        let control = Arc::new(StreamControl::default());
        let mut source =
            BrokerSource::open(Box::new(Trickle(0)), ledger, 0, options, control, None)
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
