//! Broker sources for sluice with exactly-once output: Redis Streams (`redis://`) and NATS
//! JetStream (`nats://`) as a [`sluice::Source`] whose messages are acknowledged only after
//! the part holding them is committed (any [`Broker`] with ids and acknowledgements fits
//! the same machinery), and a ledger that keeps restarts from duplicating what was
//! committed before a crash. `sluice stream` is built on [`open`] and [`runner::run`].

pub mod broker;
pub mod decode;
pub mod error;
pub mod ledger;
pub mod nats;
pub mod redis;
pub mod runner;
pub mod schema;
pub mod source;
pub mod testing;

use std::sync::{Arc, Mutex};

pub use broker::{AckReport, Acker, Broker, Message, Outstanding, StreamIdentity};
pub use error::{Result, StreamError};
pub use ledger::Ledger;
pub use runner::{prepare, run, ChunkFn, OutputSettings, PlanFn, Prepared, StreamSummary};
pub use schema::StreamSchema;
pub use source::{BrokerSource, SourceOptions, StreamControl};

/// A broker address parsed from `--from`.
#[derive(Debug, Clone)]
pub enum Address {
    Redis(redis::RedisAddress),
    Nats(nats::NatsAddress),
}

impl Address {
    pub fn parse(text: &str) -> Result<Self> {
        let url = url::Url::parse(text).map_err(|e| StreamError::BadUrl {
            url: text.to_string(),
            reason: e.to_string(),
        })?;
        match url.scheme() {
            "redis" | "rediss" => Ok(Address::Redis(redis::RedisAddress::parse(&url)?)),
            "nats" | "tls" => Ok(Address::Nats(nats::NatsAddress::parse(&url)?)),
            other => Err(StreamError::BadUrl {
                url: text.to_string(),
                reason: format!(
                    "unknown scheme {other:?}: expected redis://, rediss:// (TLS), nats:// \
                     or tls:// (NATS over TLS)"
                ),
            }),
        }
    }
}

/// A stream ready to run: its source (`None` if it was stopped or stayed idle before the
/// first message) and the ledger its runner acknowledges through.
pub struct Opened {
    pub source: Option<BrokerSource>,
    pub ledger: Arc<Mutex<Ledger>>,
}

/// Connects to the broker, settles what an earlier run committed (see [`ledger`]), and
/// waits for the first message to learn the columns.
pub fn open(
    address: &Address,
    prepared: &Prepared,
    settings: &OutputSettings,
    options: SourceOptions,
    control: Arc<StreamControl>,
) -> Result<Opened> {
    let (broker, acker): (Box<dyn Broker>, Box<dyn Acker>) = match address {
        Address::Redis(a) => {
            let (b, k) = redis::open(a.clone())?;
            (Box::new(b), Box::new(k))
        }
        Address::Nats(a) => {
            let (b, k) = nats::open(a.clone())?;
            (Box::new(b), Box::new(k))
        }
    };
    let ledger = Arc::new(Mutex::new(Ledger::open(
        &settings.dir,
        broker.identity(),
        prepared.committed_rows,
        acker,
    )?));
    // Declared columns win; otherwise those of an earlier run, so a restart does not
    // infer again.
    let known = options.schema.clone().or_else(|| prepared.stored.clone());
    let source = BrokerSource::open(
        broker,
        ledger.clone(),
        prepared.committed_rows,
        options,
        control,
        known,
    )?;
    Ok(Opened { source, ledger })
}
