//! Redis Streams: `redis://HOST:PORT/STREAM?group=G&consumer=C`. A consumer group (created
//! from the start of the stream if missing) read with `XREADGROUP`; each entry's `data`
//! field holds a JSON object, its other fields become string columns. On start the
//! consumer first re-reads its own pending entries (delivered, never acknowledged), and
//! takes over those of dead consumers with `XAUTOCLAIM` (idle longer than `claim_idle`).

use std::time::{Duration, Instant};

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{Client, Connection, Value};

use crate::broker::{AckReport, Acker, Broker, Message, Outstanding, StreamIdentity};
use crate::error::{Result, StreamError};

/// Where a Redis stream is and who reads it.
#[derive(Debug, Clone)]
pub struct RedisAddress {
    /// `redis://HOST:PORT/`
    pub server: String,
    pub stream: String,
    pub group: String,
    pub consumer: String,
    /// Pending entries idle this long are taken over from other consumers.
    pub claim_idle: Duration,
}

impl RedisAddress {
    pub fn parse(url: &url::Url) -> Result<Self> {
        let bad = |reason: &str| StreamError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port().unwrap_or(6379);
        let stream = url.path().trim_start_matches('/');
        if stream.is_empty() || stream.contains('/') {
            return Err(bad(
                "the path must be the stream's key: redis://HOST:PORT/STREAM",
            ));
        }
        let mut address = RedisAddress {
            server: format!("redis://{host}:{port}/"),
            stream: stream.to_string(),
            group: "sluice".into(),
            consumer: "sluice-1".into(),
            claim_idle: Duration::from_secs(30),
        };
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "group" => address.group = v.into_owned(),
                "consumer" => address.consumer = v.into_owned(),
                "claim_idle" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| bad("claim_idle is milliseconds (a whole number)"))?;
                    address.claim_idle = Duration::from_millis(ms);
                }
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (group, consumer, claim_idle)"
                    )))
                }
            }
        }
        Ok(address)
    }

    fn name(&self) -> String {
        format!("{}{} (group {})", self.server, self.stream, self.group)
    }

    fn connect(&self) -> Result<Connection> {
        let client = Client::open(self.server.as_str())
            .map_err(|e| StreamError::broker(&self.name(), "connect", e))?;
        client
            .get_connection_with_timeout(Duration::from_secs(10))
            .map_err(|e| StreamError::broker(&self.name(), "connect", e))
    }
}

pub struct RedisBroker {
    address: RedisAddress,
    con: Connection,
    /// Reading our own pending entries from this id on; `None`: new entries (`>`).
    pending_from: Option<String>,
    last_claim: Instant,
}

/// Connects, creates the group if missing, takes over dead consumers' entries.
pub fn open(address: RedisAddress) -> Result<(RedisBroker, RedisAcker)> {
    let mut con = address.connect()?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&address.stream)
        .arg(&address.group)
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut con);
    if let Err(e) = created {
        if e.code() != Some("BUSYGROUP") {
            return Err(StreamError::broker(
                &address.name(),
                "create the consumer group",
                e,
            ));
        }
    }
    let acker = RedisAcker {
        con: address.connect()?,
        address: address.clone(),
    };
    let mut broker = RedisBroker {
        address,
        con,
        pending_from: Some("0".into()),
        last_claim: Instant::now(),
    };
    broker.claim()?;
    Ok((broker, acker))
}

impl RedisBroker {
    /// Takes over entries other consumers left pending for `claim_idle`; they join our
    /// own pending entries, which are read next.
    fn claim(&mut self) -> Result<()> {
        self.last_claim = Instant::now();
        let mut start = "0-0".to_string();
        let mut claimed = 0usize;
        loop {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(&self.address.stream)
                .arg(&self.address.group)
                .arg(&self.address.consumer)
                .arg(self.address.claim_idle.as_millis() as u64)
                .arg(&start)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query(&mut self.con)
                .map_err(|e| StreamError::broker(&self.address.name(), "XAUTOCLAIM", e))?;
            claimed += reply.claimed.len();
            if reply.next_stream_id == "0-0" {
                break;
            }
            start = reply.next_stream_id;
        }
        if claimed > 0 {
            self.pending_from = Some("0".into());
        }
        Ok(())
    }

    fn read(&mut self, id: &str, max: usize, wait: Option<Duration>) -> Result<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.address.group)
            .arg(&self.address.consumer)
            .arg("COUNT")
            .arg(max);
        if let Some(wait) = wait {
            cmd.arg("BLOCK").arg((wait.as_millis() as u64).max(1));
        }
        cmd.arg("STREAMS").arg(&self.address.stream).arg(id);
        let reply: Option<StreamReadReply> = cmd
            .query(&mut self.con)
            .map_err(|e| StreamError::broker(&self.address.name(), "XREADGROUP", e))?;
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }
}

fn to_message(entry: StreamId) -> Message {
    let mut data = Vec::new();
    let mut extra = Vec::new();
    for (field, value) in entry.map {
        let bytes = match value {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.into_bytes(),
            Value::Int(i) => i.to_string().into_bytes(),
            other => format!("{other:?}").into_bytes(),
        };
        if field == "data" {
            data = bytes;
        } else {
            extra.push((field, String::from_utf8_lossy(&bytes).into_owned()));
        }
    }
    extra.sort();
    Message {
        id: entry.id,
        ack: None,
        data,
        extra,
    }
}

impl Broker for RedisBroker {
    fn name(&self) -> String {
        self.address.name()
    }

    fn identity(&self) -> StreamIdentity {
        StreamIdentity {
            broker: self.address.server.clone(),
            stream: self.address.stream.clone(),
            consumer: self.address.group.clone(),
            incarnation: None,
        }
    }

    fn outstanding(&mut self) -> Result<Outstanding> {
        // TODO(issue 26): group lag and pending count.
        Ok(Outstanding::default())
    }

    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        if self.last_claim.elapsed() >= self.address.claim_idle {
            self.claim()?;
        }
        if let Some(from) = self.pending_from.clone() {
            let entries = self.read(&from, max, None)?;
            match entries.last() {
                Some(last) => self.pending_from = Some(last.id.clone()),
                None => self.pending_from = None,
            }
            if !entries.is_empty() {
                return Ok(entries.into_iter().map(to_message).collect());
            }
        }
        let entries = self.read(">", max, Some(wait))?;
        Ok(entries.into_iter().map(to_message).collect())
    }
}

pub struct RedisAcker {
    address: RedisAddress,
    con: Connection,
}

impl Acker for RedisAcker {
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
        if messages.is_empty() {
            return Ok(AckReport::default());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.address.stream).arg(&self.address.group);
        for (id, _) in messages {
            cmd.arg(id);
        }
        let acked: i64 = cmd
            .query(&mut self.con)
            .map_err(|e| StreamError::broker(&self.address.name(), "XACK", e))?;
        // TODO(issue 26): check the count.
        Ok(AckReport {
            confirmed: acked.max(0) as u64,
            ..AckReport::default()
        })
    }
}
