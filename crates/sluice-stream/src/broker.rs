//! What a broker client gives the stream source: messages with ids, fetched in batches,
//! acknowledgements by id that the broker confirms, and what the broker still holds for
//! the consumer. One file per broker implements these (`redis.rs`, `nats.rs`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// One message as delivered.
#[derive(Debug, Clone)]
pub struct Message {
    /// The broker's id of the message (a Redis entry id, a JetStream stream sequence):
    /// unique within the stream, the same when it is delivered again.
    pub id: String,
    /// What acknowledging it takes, when that is not the id (a JetStream reply subject).
    pub ack: Option<String>,
    /// The payload: a JSON object.
    pub data: Vec<u8>,
    /// Other fields of the message, which become string columns.
    pub extra: Vec<(String, String)>,
}

/// Names the stream a ledger belongs to, so an output folder is never continued from
/// another stream (or from a stream deleted and created again, whose ids start over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamIdentity {
    /// The broker's address without credentials (`redis://HOST:PORT/`, `nats://HOST:PORT`).
    pub broker: String,
    /// The stream's key or name.
    pub stream: String,
    /// Who reads it: the Redis consumer group, the JetStream durable.
    pub consumer: String,
    /// What tells a stream created again under the same name apart (a JetStream stream's
    /// creation time), when the broker has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

/// What the broker shows for this consumer now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outstanding {
    /// Messages in the stream not yet delivered to the consumer (group lag, JetStream
    /// `num_pending`).
    pub undelivered: u64,
    /// Delivered and not acknowledged (pending entries, JetStream `num_ack_pending`),
    /// including what this run holds and what a dead instance held.
    pub unacknowledged: u64,
}

/// What became of one acknowledgement request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AckReport {
    /// Acknowledgements the broker confirmed.
    pub confirmed: u64,
    /// Sent again after a failed or unanswered try.
    pub retried: u64,
    /// Still not confirmed after every retry: the broker may deliver these again.
    pub unconfirmed: u64,
    /// Of `confirmed`: the broker no longer held them as pending when asked (acknowledged
    /// before: by an earlier run, or by a try whose answer was lost). Nothing was lost; a
    /// count here on a first run points at two readers of one group. Redis tells (its
    /// `XACK` count); JetStream answers both alike, so its acks leave this 0.
    pub already_acknowledged: u64,
}

impl AckReport {
    pub fn add(&mut self, other: AckReport) {
        self.confirmed += other.confirmed;
        self.retried += other.retried;
        self.unconfirmed += other.unconfirmed;
        self.already_acknowledged += other.already_acknowledged;
    }
}

/// The reading side of a consumer (group member, durable consumer).
pub trait Broker: Send {
    /// Names the stream in errors and progress.
    fn name(&self) -> String;
    /// Names the stream for the ledger (see [`StreamIdentity`]).
    fn identity(&self) -> StreamIdentity;
    /// Up to `max` messages, waiting at most `wait` for the first; none on a timeout.
    /// Messages delivered earlier and never acknowledged come again (first, after a
    /// restart).
    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>>;
    /// What the broker still holds for this consumer (asked before a stream is called
    /// idle: no message arriving is not enough while the broker holds some).
    fn outstanding(&mut self) -> Result<Outstanding>;
}

/// The acknowledging side; used from the thread that commits parts.
pub trait Acker: Send {
    /// Acknowledges messages by `(id, ack)` and waits for the broker to confirm them
    /// (retrying what failed): the broker will not deliver confirmed ones again.
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport>;
    /// Hands messages that an earlier instance held (delivered, never committed) back
    /// for delivery now rather than after the broker's ack timeout (JetStream `-NAK`). A
    /// broker that delivers a consumer's own pending entries again at once needs nothing.
    fn release(&mut self, messages: &[(String, Option<String>)]) -> Result<()> {
        let _ = messages;
        Ok(())
    }
}
