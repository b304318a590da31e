//! What a broker client gives the stream source: messages with ids, fetched in batches,
//! and acknowledgements by id. One file per broker implements these (`redis.rs`, ...).

use std::time::Duration;

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

/// The reading side of a consumer (group member, durable consumer).
pub trait Broker: Send {
    /// Names the stream in errors and progress.
    fn name(&self) -> String;
    /// Up to `max` messages, waiting at most `wait` for the first; none on a timeout.
    /// Messages delivered earlier and never acknowledged come again (first, after a
    /// restart).
    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>>;
}

/// The acknowledging side; used from the thread that commits parts.
pub trait Acker: Send {
    /// Acknowledges messages by `(id, ack)`: the broker will not deliver them again.
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<()>;
}
