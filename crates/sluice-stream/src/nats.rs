//! NATS JetStream: `nats://[USER:PASS@|TOKEN@]HOST:PORT/SUBJECT?stream=S&durable=D` (`tls://`
//! for TLS). A durable pull consumer with explicit acks, filtered to `SUBJECT`; a message's
//! id is its stream sequence, acknowledged through its reply subject and confirmed by the server.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, Subscriber};
use futures_util::StreamExt;

use crate::broker::{AckReport, Acker, Broker, Message, Outstanding, StreamIdentity};
use crate::error::{Result, StreamError};

/// Shortest wait asked of the server: a pull request that expires as it arrives can end
/// without the messages that were there (the server prunes expired requests first).
const MIN_EXPIRES: Duration = Duration::from_millis(10);

/// How the client proves who it is (from the URL's user part or `?token=`).
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    /// `nats://USER:PASS@HOST`
    UserPassword {
        user: String,
        password: String,
    },
    /// `nats://TOKEN@HOST` or `?token=TOKEN`
    Token(String),
}

// Never prints a secret (addresses show up in errors and logs).
impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ***)"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Where a JetStream stream is and which durable consumer reads it.
#[derive(Debug, Clone)]
pub struct NatsAddress {
    /// `HOST:PORT`, without credentials.
    pub server: String,
    pub auth: NatsAuth,
    /// `tls://`: TLS required.
    pub tls: bool,
    /// `?tls_ca=PATH`: a PEM file of the CA that signed the server's certificate.
    pub tls_ca: Option<PathBuf>,
    pub subject: String,
    pub stream: String,
    pub durable: String,
    /// How long JetStream waits for an acknowledgement before delivering a message again.
    pub ack_wait: Duration,
}

impl NatsAddress {
    pub fn parse(url: &url::Url) -> Result<Self> {
        let bad = |reason: &str| StreamError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port().unwrap_or(4222);
        let decode = |text: &str, what: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| bad(&format!("the {what} is not UTF-8")))
        };
        let user = decode(url.username(), "user name")?;
        let password = url.password().map(|p| decode(p, "password")).transpose()?;
        let mut auth = match (user.is_empty(), password) {
            (true, None) => NatsAuth::None,
            // `nats://TOKEN@HOST`, as the NATS tools read it.
            (false, None) => NatsAuth::Token(user),
            (_, Some(password)) => NatsAuth::UserPassword { user, password },
        };
        // Wildcards (`events.>`) come percent-encoded in a URL's path.
        let subject = percent_encoding::percent_decode_str(url.path().trim_start_matches('/'))
            .decode_utf8()
            .map_err(|_| bad("the subject is not UTF-8"))?
            .into_owned();
        if subject.is_empty() || subject.contains('/') || subject.contains(char::is_whitespace) {
            return Err(bad(
                "the path must be the subject: nats://HOST:PORT/SUBJECT?stream=S&durable=D",
            ));
        }
        let (mut stream, mut durable, mut tls_ca) = (None, None, None);
        // Longer than one commit interval plus the engine's share of the backlog, so a
        // live run is seldom redelivered what it holds (the ledger drops it if it is).
        let mut ack_wait = Duration::from_secs(30);
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "stream" => stream = Some(v.into_owned()),
                "durable" => durable = Some(v.into_owned()),
                "ack_wait" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| bad("ack_wait is milliseconds (a whole number)"))?;
                    if ms == 0 {
                        return Err(bad("ack_wait must be at least 1 millisecond"));
                    }
                    ack_wait = Duration::from_millis(ms);
                }
                "token" => {
                    if auth != NatsAuth::None {
                        return Err(bad(
                            "token= and credentials in the URL's user part: give one",
                        ));
                    }
                    auth = NatsAuth::Token(v.into_owned());
                }
                "creds" | "nkey" => {
                    return Err(bad(&format!(
                        "{k}= (NKey authentication) is not supported yet; use USER:PASS@ or a token"
                    )))
                }
                "tls_ca" => tls_ca = Some(PathBuf::from(v.into_owned())),
                "format" => match v.as_ref() {
                    "json" => {}
                    "arrow" => {
                        return Err(bad(
                            "format=arrow (Arrow IPC payloads) is not supported yet; \
                             publish JSON objects (format=json, the default)",
                        ))
                    }
                    other => return Err(bad(&format!("unknown format {other:?} (json)"))),
                },
                other => {
                    return Err(bad(&format!(
                        "unknown parameter {other:?} (stream, durable, ack_wait, token, tls_ca, format)"
                    )))
                }
            }
        }
        let stream = stream.ok_or_else(|| bad("missing stream=NAME (the JetStream stream)"))?;
        let durable =
            durable.ok_or_else(|| bad("missing durable=NAME (the durable consumer's name)"))?;
        for (what, name) in [("stream", &stream), ("durable", &durable)] {
            if name.is_empty() || name.contains(['.', '*', '>', ' ', '/', '\\']) {
                return Err(bad(&format!(
                    "{what}={name:?}: a JetStream name cannot be empty or hold . * > / \\ or spaces"
                )));
            }
        }
        Ok(NatsAddress {
            server: format!("{host}:{port}"),
            auth,
            tls: url.scheme() == "tls",
            tls_ca,
            subject,
            stream,
            durable,
            ack_wait,
        })
    }

    fn name(&self) -> String {
        format!(
            "{}://{}/{} (stream {}, durable {})",
            if self.tls { "tls" } else { "nats" },
            self.server,
            self.subject,
            self.stream,
            self.durable
        )
    }
}

/// A current-thread tokio runtime driven by a thread of its own. The client's connection
/// task runs there, so acknowledgements (from the committing thread) and fetches (from
/// the engine's reader) both make progress whichever of them is waiting, with no
/// multi-thread runtime in the build. Callers run futures with `block_on`.
pub(crate) struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Runtime {
    pub(crate) fn start() -> std::io::Result<Arc<Self>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("sluice-nats".into())
            .spawn(move || {
                // Ends when `stop` is sent or dropped.
                let _ = rt.block_on(stopped);
            })?;
        Ok(Arc::new(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }))
    }

    /// Runs `future` to completion on the calling thread; its I/O and timers are driven
    /// by the runtime's thread.
    pub(crate) fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Connects to `HOST:PORT` on `runtime`; with `tls`, over TLS only (the server's
/// certificate checked against the system's roots, and `tls_ca`'s if given).
pub(crate) fn connect(
    runtime: &Runtime,
    server: &str,
    auth: &NatsAuth,
    tls: bool,
    tls_ca: Option<&Path>,
) -> std::result::Result<Client, String> {
    let mut options = ConnectOptions::new()
        .connection_timeout(Duration::from_secs(10))
        .require_tls(tls);
    if let Some(ca) = tls_ca {
        // async-nats reads the file only while connecting, with a vaguer error.
        std::fs::metadata(ca).map_err(|e| format!("tls_ca {}: {e}", ca.display()))?;
        options = options.add_root_certificates(ca.to_path_buf());
    }
    let options = match auth.clone() {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => options.user_and_password(user, password),
        NatsAuth::Token(token) => options.token(token),
    };
    runtime
        .block_on(options.connect(server))
        .map_err(|e| e.to_string())
}

/// A JetStream context; made inside the runtime, which runs its publish-ack task.
pub(crate) fn jetstream_context(runtime: &Runtime, client: Client) -> jetstream::Context {
    runtime.block_on(async { jetstream::new(client) })
}

pub struct NatsBroker {
    name: String,
    address: NatsAddress,
    /// The stream's creation time (nanoseconds since 1970), its incarnation.
    created: String,
    consumer: PullConsumer,
    // Last: the connection goes before the runtime that drives it.
    runtime: Arc<Runtime>,
}

/// Connects, creates the stream (for the subject) and the durable consumer if missing. A
/// durable that exists must read the URL's subject with explicit acks (else it is refused,
/// naming the difference); a different `ack_wait` is updated to the URL's.
pub fn open(address: NatsAddress) -> Result<(NatsBroker, NatsAcker)> {
    let name = address.name();
    let runtime = Runtime::start().map_err(|e| StreamError::broker(&name, "start a runtime", e))?;
    let client = connect(
        &runtime,
        &address.server,
        &address.auth,
        address.tls,
        address.tls_ca.as_deref(),
    )
    .map_err(|e| StreamError::broker(&name, "connect", e))?;
    let js = jetstream_context(&runtime, client.clone());
    let stream = runtime
        .block_on(js.get_or_create_stream(stream::Config {
            name: address.stream.clone(),
            subjects: vec![address.subject.clone()],
            ..Default::default()
        }))
        .map_err(|e| StreamError::broker(&name, "find or create the stream", e))?;
    let created = stream
        .cached_info()
        .created
        .unix_timestamp_nanos()
        .to_string();
    let consumer = runtime.block_on(durable(&name, &stream, &address))?;
    let acker = NatsAcker {
        name: name.clone(),
        client,
        replies: None,
        round: 0,
        runtime: runtime.clone(),
    };
    Ok((
        NatsBroker {
            name,
            address,
            created,
            consumer,
            runtime,
        },
        acker,
    ))
}

/// The durable consumer of `address`: created if missing, checked against the URL if not.
async fn durable(
    name: &str,
    stream: &stream::Stream,
    address: &NatsAddress,
) -> Result<PullConsumer> {
    let wanted = pull::Config {
        durable_name: Some(address.durable.clone()),
        filter_subject: address.subject.clone(),
        ack_policy: AckPolicy::Explicit,
        // A new consumer starts from the stream's first message, like a new Redis group.
        deliver_policy: DeliverPolicy::All,
        ack_wait: address.ack_wait,
        // No cap: the engine's admission already bounds what is in hand, and a cap below
        // what one commit interval holds would only stall delivery until the commit.
        max_ack_pending: -1,
        ..Default::default()
    };
    let action = "find or create the durable consumer";
    let existing = match stream.consumer_info(&address.durable).await {
        Ok(info) => info,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            return stream
                .create_consumer(wanted)
                .await
                .map_err(|e| StreamError::broker(name, action, e));
        }
        Err(e) => return Err(StreamError::broker(name, action, e)),
    };
    let config = existing.config;
    let refuse = |what: String| {
        StreamError::broker(
            name,
            "use the existing durable consumer",
            format!(
                "durable {:?} {what}; use another durable name, or delete this one \
                 (`nats consumer rm {} {}`) to start over from the stream's first message",
                address.durable, address.stream, address.durable
            ),
        )
    };
    if config.ack_policy != AckPolicy::Explicit {
        return Err(refuse(format!(
            "acknowledges {:?}, not each message explicitly",
            config.ack_policy
        )));
    }
    let filters: Vec<&str> = if config.filter_subjects.is_empty() {
        Some(config.filter_subject.as_str())
            .filter(|f| !f.is_empty())
            .into_iter()
            .collect()
    } else {
        config.filter_subjects.iter().map(String::as_str).collect()
    };
    // A durable reading other subjects would deliver other messages under the same ledger
    // (and its acknowledgement floor would skip those of the new subject): not changed
    // silently, refused.
    if filters != [address.subject.as_str()] {
        let reads = if filters.is_empty() {
            "reads every subject of the stream".to_string()
        } else {
            format!("reads {}", filters.join(", "))
        };
        return Err(refuse(format!(
            "{reads}, the URL names subject {}",
            address.subject
        )));
    }
    if config.ack_wait != address.ack_wait {
        // JetStream updates ack_wait of a consumer in place (create on an existing name
        // with only updatable fields changed); its delivery state stays.
        let mut updated = config;
        updated.ack_wait = address.ack_wait;
        stream
            .create_consumer(updated)
            .await
            .map_err(|e| StreamError::broker(name, "update the durable's ack_wait", e))?;
    }
    stream
        .get_consumer(&address.durable)
        .await
        .map_err(|e| StreamError::broker(name, action, e))
}

/// The payload holds the JSON object; headers become string columns.
fn to_message(m: jetstream::Message) -> std::result::Result<Message, String> {
    let info = m
        .info()
        .map_err(|e| format!("not a JetStream delivery: {e}"))?;
    // The stream sequence: unique in the stream, the same on every redelivery.
    let id = info.stream_sequence.to_string();
    let message = m.message;
    let mut extra: Vec<(String, String)> = message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .filter_map(|(k, values)| Some((k.to_string(), values.first()?.as_str().to_string())))
        .collect();
    extra.sort();
    Ok(Message {
        id,
        ack: message.reply.map(|r| r.to_string()),
        data: message.payload.to_vec(),
        extra,
    })
}

impl Broker for NatsBroker {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn identity(&self) -> StreamIdentity {
        StreamIdentity {
            broker: format!("nats://{}", self.address.server),
            stream: self.address.stream.clone(),
            consumer: self.address.durable.clone(),
            // A stream deleted and created again starts its sequences over: its creation
            // time tells it apart.
            incarnation: Some(self.created.clone()),
        }
    }

    fn outstanding(&mut self) -> Result<Outstanding> {
        let name = &self.name;
        let consumer = &mut self.consumer;
        self.runtime.block_on(async {
            let info = consumer
                .info()
                .await
                .map_err(|e| StreamError::broker(name, "read the consumer's state", e))?;
            Ok(Outstanding {
                undelivered: info.num_pending,
                unacknowledged: info.num_ack_pending as u64,
            })
        })
    }

    fn fetch(&mut self, max: usize, wait: Duration) -> Result<Vec<Message>> {
        let name = &self.name;
        let consumer = &self.consumer;
        self.runtime.block_on(async {
            // A one-shot pull: the server waits up to `expires` for the first message, then
            // sends what it has (up to `max`) and ends the batch.
            let mut batch = consumer
                .fetch()
                .max_messages(max.max(1))
                .expires(wait.max(MIN_EXPIRES))
                .messages()
                .await
                .map_err(|e| StreamError::broker(name, "fetch", e))?;
            let mut out = Vec::new();
            while let Some(next) = batch.next().await {
                let delivered = match next {
                    Ok(m) => m,
                    // A status ending the batch early (a leader change, say): keep what
                    // came; what did not is delivered again. Only an empty batch fails.
                    Err(_) if !out.is_empty() => break,
                    Err(e) => return Err(StreamError::broker(name, "fetch", e)),
                };
                out.push(to_message(delivered).map_err(|e| StreamError::broker(name, "fetch", e))?);
            }
            Ok(out)
        })
    }
}

pub struct NatsAcker {
    name: String,
    client: Client,
    /// Where the server's confirmations arrive (`INBOX.ROUND.INDEX`), subscribed at the
    /// first acknowledgement and kept: one subscription for every round.
    replies: Option<(String, Subscriber)>,
    /// Numbers the rounds, so a late answer to an earlier round is not taken for one of
    /// this round's.
    round: u64,
    runtime: Arc<Runtime>,
}

/// What JetStream reads on a reply subject: acknowledged, or to be delivered again now.
const ACK: &[u8] = b"+ACK";
const NAK: &[u8] = b"-NAK";
/// Acknowledgements awaited at once: well under the subscription's buffer (64 Ki
/// messages), which drops what does not fit.
const ACK_WINDOW: usize = 4_096;
/// Tries per acknowledgement: the first and the retries of those left unanswered.
const ACK_TRIES: u32 = 3;
/// How long one round waits for its answers. The server answers an acknowledgement it
/// applied, also one of a message acknowledged before; it stays silent only when the
/// consumer or stream is gone or has not delivered that sequence yet (see `confirm`).
const ACK_ROUND_WAIT: Duration = Duration::from_secs(2);

impl NatsAcker {
    /// Sends `payload` to each reply subject with a reply inbox of ours and waits for the
    /// server's answers, retrying the unanswered ones. nats-server (consumer.go,
    /// `processAck`) answers with an empty message once it applied an ack (to the store;
    /// in a cluster, once replicated), whether or not the message was still pending (a
    /// second ack of a redelivered duplicate, an ack on restart of a reply subject an
    /// earlier run recorded: both answered, nothing lost); a NAK is answered once queued
    /// for redelivery. It does not answer an ack above what the consumer delivered, nor
    /// when the consumer is closed; without a consumer, the core server answers "no
    /// responders". Those stay unconfirmed after `ACK_TRIES` rounds, bounded in time.
    fn confirm(&mut self, payload: &'static [u8], targets: &[&str]) -> Result<AckReport> {
        let (name, client, runtime) = (&self.name, &self.client, &self.runtime);
        if self.replies.is_none() {
            let inbox = client.new_inbox();
            let subscriber = runtime
                .block_on(client.subscribe(format!("{inbox}.>")))
                .map_err(|e| StreamError::broker(name, "subscribe to ack confirmations", e))?;
            self.replies = Some((inbox, subscriber));
        }
        let Some((inbox, subscriber)) = self.replies.as_mut() else {
            unreachable!("subscribed above");
        };
        let mut report = AckReport::default();
        for window in targets.chunks(ACK_WINDOW) {
            let mut todo: Vec<&str> = window.to_vec();
            for attempt in 0..ACK_TRIES {
                if attempt > 0 {
                    report.retried += todo.len() as u64;
                }
                self.round += 1;
                let answered = runtime.block_on(round(
                    client,
                    subscriber,
                    &format!("{inbox}.{}", self.round),
                    payload,
                    &todo,
                ));
                let answered = answered.map_err(|e| StreamError::broker(name, "ack", e))?;
                let mut left = Vec::new();
                for (target, ok) in todo.iter().zip(answered) {
                    if ok {
                        report.confirmed += 1;
                    } else {
                        left.push(*target);
                    }
                }
                todo = left;
                if todo.is_empty() {
                    break;
                }
            }
            report.unconfirmed += todo.len() as u64;
        }
        Ok(report)
    }
}

/// One round: `payload` to every target, each with reply subject `PREFIX.INDEX`; which
/// were answered within `ACK_ROUND_WAIT`.
async fn round(
    client: &Client,
    subscriber: &mut Subscriber,
    prefix: &str,
    payload: &'static [u8],
    targets: &[&str],
) -> std::result::Result<Vec<bool>, String> {
    for (i, target) in targets.iter().enumerate() {
        client
            .publish_with_reply(target.to_string(), format!("{prefix}.{i}"), payload.into())
            .await
            .map_err(|e| e.to_string())?;
    }
    let mut answered = vec![false; targets.len()];
    let mut waiting = targets.len();
    let deadline = tokio::time::Instant::now() + ACK_ROUND_WAIT;
    while waiting > 0 {
        let reply = match tokio::time::timeout_at(deadline, subscriber.next()).await {
            Ok(Some(reply)) => reply,
            Ok(None) => return Err("the confirmations' subscription ended".into()),
            Err(_) => break,
        };
        // Another round's (late) answer, or not one of ours: ignored.
        let Some(index) = reply
            .subject
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(slot) = answered.get_mut(index) else {
            continue;
        };
        // A status (503 no responders: no consumer reads that subject) is an answer that
        // confirms nothing; the target is tried again next round.
        let confirmed = reply.status.is_none();
        if !*slot {
            if confirmed {
                *slot = true;
            }
            waiting -= 1;
        }
    }
    Ok(answered)
}

/// The reply subjects of `messages`; an error names a message without one.
fn reply_subjects<'a>(
    name: &str,
    messages: &'a [(String, Option<String>)],
) -> Result<Vec<&'a str>> {
    messages
        .iter()
        .map(|(id, reply)| {
            reply.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| {
                StreamError::broker(name, "ack", format!("message {id} has no reply subject"))
            })
        })
        .collect()
}

impl Acker for NatsAcker {
    /// `+ACK` to each reply subject, each confirmed by the server (see [`NatsAcker::confirm`]).
    /// Acks go by stream sequence, so a reply subject recorded by an earlier run still
    /// acknowledges.
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
        let targets = reply_subjects(&self.name, messages)?;
        self.confirm(ACK, &targets)
    }

    /// `-NAK` to each reply subject: JetStream delivers those messages again at once rather
    /// than after `ack_wait`. The server answers a NAK like an ack (once queued for
    /// redelivery; a NAK of a message no longer pending is answered and changes nothing);
    /// one left unanswered is delivered again after `ack_wait` anyway.
    fn release(&mut self, messages: &[(String, Option<String>)]) -> Result<()> {
        let targets: Vec<&str> = messages
            .iter()
            .filter_map(|(_, reply)| reply.as_deref().filter(|r| !r.is_empty()))
            .collect();
        self.confirm(NAK, &targets).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NatsAddress> {
        NatsAddress::parse(&url::Url::parse(text).expect("a URL"))
    }

    #[test]
    fn addresses_name_subject_stream_and_durable() {
        let a =
            parse("nats://127.0.0.1/events.%3E?stream=EV&durable=etl&ack_wait=500").expect("valid");
        assert_eq!(a.server, "127.0.0.1:4222");
        assert_eq!(a.subject, "events.>");
        assert_eq!((a.stream.as_str(), a.durable.as_str()), ("EV", "etl"));
        assert_eq!(a.ack_wait, Duration::from_millis(500));
        for (url, says) in [
            ("nats://h:1/s?durable=d", "missing stream="),
            ("nats://h:1/s?stream=S", "missing durable="),
            (
                "nats://h:1/?stream=S&durable=d",
                "the path must be the subject",
            ),
            ("nats://h:1/s?stream=a.b&durable=d", "cannot be empty"),
            (
                "nats://h:1/s?stream=S&durable=d&format=arrow",
                "not supported yet",
            ),
            (
                "nats://h:1/s?stream=S&durable=d&format=csv",
                "unknown format",
            ),
            (
                "nats://h:1/s?stream=S&durable=d&group=g",
                "unknown parameter",
            ),
        ] {
            let e = parse(url).expect_err(url).to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
