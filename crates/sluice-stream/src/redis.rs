//! Redis Streams: `redis://[[USER]:PASS@]HOST:PORT/STREAM?group=G&consumer=C` (`rediss://`
//! for TLS), read with `XREADGROUP`: a restarted consumer re-reads its own pending entries
//! first, and takes over dead consumers' ones idle longer than `claim_idle` (`XAUTOCLAIM`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{
    Client, Connection, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    TlsCertificates, Value,
};

use crate::broker::{AckReport, Acker, Broker, Message, Outstanding, StreamIdentity};
use crate::error::{Result, StreamError};

/// Shortest `claim_idle`: taking over entries idle for less would take back, on every
/// fetch, what this very consumer holds in hand and has not committed yet.
pub const MIN_CLAIM_IDLE: Duration = Duration::from_secs(1);
/// Tries of one `XACK` when the connection fails: the first and the retries, each on a new
/// connection.
const ACK_TRIES: u32 = 3;

/// Where a Redis stream is and who reads it.
#[derive(Clone)]
pub struct RedisAddress {
    /// `redis://HOST:PORT/`, without credentials (the same with TLS: it names the server).
    pub server: String,
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS.
    pub tls: bool,
    /// `?tls_ca=PATH`: a PEM file of the CA that signed the server's certificate (instead
    /// of the system's roots).
    pub tls_ca: Option<PathBuf>,
    /// From the URL's user part (`redis://USER:PASS@` for an ACL user, `redis://:PASS@` for
    /// `requirepass`).
    pub user: Option<String>,
    pub password: Option<String>,
    /// The stream's key, percent-decoded.
    pub stream: String,
    pub group: String,
    pub consumer: String,
    /// Pending entries idle this long are taken over from other consumers.
    pub claim_idle: Duration,
}

// Never prints the password (addresses show up in errors and logs).
impl std::fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAddress")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("claim_idle", &self.claim_idle)
            .finish()
    }
}

impl RedisAddress {
    pub fn parse(url: &url::Url) -> Result<Self> {
        let bad = |reason: &str| StreamError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let decode = |text: &str, what: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| bad(&format!("the {what} is not UTF-8")))
        };
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port().unwrap_or(6379);
        let raw = url.path().trim_start_matches('/');
        if raw.is_empty() || raw.contains('/') {
            return Err(bad(
                "the path must be the stream's key: redis://HOST:PORT/STREAM \
                 (a key with / or spaces percent-encoded: %2F, %20)",
            ));
        }
        let stream = decode(raw, "stream key")?;
        let user = Some(decode(url.username(), "user name")?).filter(|u| !u.is_empty());
        let password = url.password().map(|p| decode(p, "password")).transpose()?;
        if user.is_some() && password.is_none() {
            return Err(bad(
                "a user without a password: redis://USER:PASS@HOST (or redis://:PASS@HOST)",
            ));
        }
        let mut address = RedisAddress {
            server: format!("redis://{host}:{port}/"),
            host: host.to_string(),
            port,
            tls: url.scheme() == "rediss",
            tls_ca: None,
            user,
            password,
            stream,
            group: "sluice".into(),
            consumer: "sluice-1".into(),
            claim_idle: Duration::from_secs(30),
        };
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "group" => address.group = v.into_owned(),
                "tls_ca" => address.tls_ca = Some(PathBuf::from(v.into_owned())),
                "consumer" => address.consumer = v.into_owned(),
                "claim_idle" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| bad("claim_idle is milliseconds (a whole number)"))?;
                    address.claim_idle = Duration::from_millis(ms);
                    if address.claim_idle < MIN_CLAIM_IDLE {
                        return Err(bad(&format!(
                            "claim_idle={ms} is below the minimum, {} ms: entries idle for \
                             less would be taken back from this consumer while it holds them",
                            MIN_CLAIM_IDLE.as_millis()
                        )));
                    }
                }
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (group, consumer, claim_idle, tls_ca)"
                    )))
                }
            }
        }
        if address.tls_ca.is_some() && !address.tls {
            return Err(bad("tls_ca= is for TLS connections: rediss://"));
        }
        for (what, name) in [("group", &address.group), ("consumer", &address.consumer)] {
            if name.is_empty() {
                return Err(bad(&format!("{what}= cannot be empty")));
            }
        }
        Ok(address)
    }

    fn name(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!(
            "{scheme}://{}:{}/{} (group {})",
            self.host, self.port, self.stream, self.group
        )
    }

    fn connect(&self) -> Result<Connection> {
        let fail = |e: RedisError| StreamError::broker(&self.name(), "connect", e);
        let mut settings = RedisConnectionInfo::default();
        if let Some(user) = &self.user {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let addr = if self.tls {
            ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let info = addr
            .into_connection_info()
            .map_err(fail)?
            .set_redis_settings(settings);
        let client = match &self.tls_ca {
            Some(ca) => {
                let pem = std::fs::read(ca).map_err(|e| {
                    StreamError::broker(
                        &self.name(),
                        "connect",
                        format!("tls_ca {}: {e}", ca.display()),
                    )
                })?;
                let certificates = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(info, certificates)
            }
            None => Client::open(info),
        };
        client
            .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(10)))
            .map_err(fail)
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
        con: Some(address.connect()?),
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

/// An entry's `data` field holds the JSON object; its other fields become string columns.
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

    /// The group's `lag` and `pending` from `XINFO GROUPS`. Redis gives no lag (nil) when
    /// it cannot count it (entries deleted after the group's last delivered id, a group
    /// set to an arbitrary id, Redis before 7): then 0 if no entry follows the last
    /// delivered one, else the stream's length, an upper bound that is never 0 while
    /// something waits (what the idle check needs).
    fn outstanding(&mut self) -> Result<Outstanding> {
        let name = self.address.name();
        let groups: Vec<std::collections::HashMap<String, Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.address.stream)
            .query(&mut self.con)
            .map_err(|e| StreamError::broker(&name, "XINFO GROUPS", e))?;
        let group = groups
            .iter()
            .find(|g| {
                g.get("name")
                    .is_some_and(|n| text(n).as_deref() == Some(self.address.group.as_str()))
            })
            .ok_or_else(|| {
                StreamError::broker(&name, "XINFO GROUPS", "the consumer group is gone")
            })?;
        let count = |field: &str| match group.get(field) {
            Some(Value::Int(n)) => Some((*n).max(0) as u64),
            _ => None,
        };
        let unacknowledged = count("pending").ok_or_else(|| {
            StreamError::broker(&name, "XINFO GROUPS", "no pending count for the group")
        })?;
        let undelivered = match count("lag") {
            Some(lag) => lag,
            None => {
                let last = group
                    .get("last-delivered-id")
                    .and_then(text)
                    .unwrap_or_else(|| "0-0".into());
                let next: Vec<StreamId> = redis::cmd("XRANGE")
                    .arg(&self.address.stream)
                    .arg(format!("({last}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query::<redis::streams::StreamRangeReply>(&mut self.con)
                    .map_err(|e| StreamError::broker(&name, "XRANGE", e))?
                    .ids;
                if next.is_empty() {
                    0
                } else {
                    redis::cmd("XLEN")
                        .arg(&self.address.stream)
                        .query::<u64>(&mut self.con)
                        .map_err(|e| StreamError::broker(&name, "XLEN", e))?
                        .max(1)
                }
            }
        };
        Ok(Outstanding {
            undelivered,
            unacknowledged,
        })
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

/// A reply's text (field names and ids come as bulk or simple strings).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The connection broke (or never came): worth a new connection and another try. A
/// refusal by the server (no such group, wrong type, no permission) is not.
fn connection_failed(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

pub struct RedisAcker {
    address: RedisAddress,
    con: Option<Connection>,
}

impl RedisAcker {
    fn xack(&mut self, messages: &[(String, Option<String>)]) -> redis::RedisResult<u64> {
        let con = match self.con.as_mut() {
            Some(con) => con,
            None => self.con.insert(
                self.address
                    .connect()
                    .map_err(|e| RedisError::from(std::io::Error::other(e.to_string())))?,
            ),
        };
        let mut cmd = redis::cmd("XACK");
        cmd.arg(&self.address.stream).arg(&self.address.group);
        for (id, _) in messages {
            cmd.arg(id);
        }
        let acked: i64 = cmd.query(con)?;
        Ok(acked.max(0) as u64)
    }
}

impl Acker for RedisAcker {
    /// One `XACK` of every id; its reply is the count of entries it removed from the
    /// group's pending list. All of them are confirmed (none is pending afterwards): those
    /// the count leaves out were no longer pending (acknowledged before, by an earlier run
    /// or by a try whose reply the broken connection lost) and are reported as
    /// `already_acknowledged`. A broken connection is replaced and the `XACK` sent again
    /// (it is idempotent), up to `ACK_TRIES` times; then, or on a refusal, an error.
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
        if messages.is_empty() {
            return Ok(AckReport::default());
        }
        let n = messages.len() as u64;
        let mut report = AckReport::default();
        let mut tries = 0;
        loop {
            tries += 1;
            match self.xack(messages) {
                Ok(acked) => {
                    report.confirmed = n;
                    report.already_acknowledged = n - acked.min(n);
                    return Ok(report);
                }
                Err(e) if connection_failed(&e) && tries < ACK_TRIES => {
                    self.con = None;
                    report.retried += n;
                    // A moment for a restarting server, longer each time.
                    std::thread::sleep(Duration::from_millis(200 * u64::from(tries)));
                }
                Err(e) => return Err(StreamError::broker(&self.address.name(), "XACK", e)),
            }
        }
    }
}
