//! NATS JetStream: `nats://HOST:PORT/SUBJECT?stream=S&durable=D`. A durable pull consumer
//! with explicit acks on stream `S` (created for `SUBJECT` if missing), filtered to
//! `SUBJECT`; each payload is a JSON object, headers become string columns. A message's id
//! is its stream sequence; it is acknowledged through its reply subject.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions};
use futures_util::StreamExt;

use crate::broker::{AckReport, Acker, Broker, Message, Outstanding, StreamIdentity};
use crate::error::{Result, StreamError};

/// Shortest wait asked of the server: a pull request that expires as it arrives can end
/// without the messages that were there (the server prunes expired requests first).
const MIN_EXPIRES: Duration = Duration::from_millis(10);

/// Where a JetStream stream is and which durable consumer reads it.
#[derive(Debug, Clone)]
pub struct NatsAddress {
    /// `HOST:PORT`
    pub server: String,
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
        let (mut stream, mut durable) = (None, None);
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
                        "unknown parameter {other:?} (stream, durable, ack_wait, format)"
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
            subject,
            stream,
            durable,
            ack_wait,
        })
    }

    fn name(&self) -> String {
        format!(
            "nats://{}/{} (stream {}, durable {})",
            self.server, self.subject, self.stream, self.durable
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

/// Connects to `HOST:PORT` on `runtime`.
pub(crate) fn connect(runtime: &Runtime, server: &str) -> std::result::Result<Client, String> {
    runtime
        .block_on(
            ConnectOptions::new()
                .connection_timeout(Duration::from_secs(10))
                .connect(server),
        )
        .map_err(|e| e.to_string())
}

/// A JetStream context; made inside the runtime, which runs its publish-ack task.
pub(crate) fn jetstream_context(runtime: &Runtime, client: Client) -> jetstream::Context {
    runtime.block_on(async { jetstream::new(client) })
}

pub struct NatsBroker {
    name: String,
    address: NatsAddress,
    consumer: PullConsumer,
    // Last: the connection goes before the runtime that drives it.
    runtime: Arc<Runtime>,
}

/// Connects, creates the stream (for the subject) and the durable consumer if missing.
/// A consumer that exists keeps its configuration; it must read the same subject.
pub fn open(address: NatsAddress) -> Result<(NatsBroker, NatsAcker)> {
    let name = address.name();
    let runtime = Runtime::start().map_err(|e| StreamError::broker(&name, "start a runtime", e))?;
    let client =
        connect(&runtime, &address.server).map_err(|e| StreamError::broker(&name, "connect", e))?;
    let js = jetstream_context(&runtime, client.clone());
    let stream = runtime
        .block_on(js.get_or_create_stream(stream::Config {
            name: address.stream.clone(),
            subjects: vec![address.subject.clone()],
            ..Default::default()
        }))
        .map_err(|e| StreamError::broker(&name, "find or create the stream", e))?;
    let config = pull::Config {
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
    let consumer = runtime
        .block_on(stream.get_or_create_consumer(&address.durable, config))
        .map_err(|e| StreamError::broker(&name, "find or create the durable consumer", e))?;
    let acker = NatsAcker {
        name: name.clone(),
        client,
        runtime: runtime.clone(),
    };
    Ok((
        NatsBroker {
            name,
            address,
            consumer,
            runtime,
        },
        acker,
    ))
}

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
        // TODO(issue 26): the stream's creation time as its incarnation.
        StreamIdentity {
            broker: format!("nats://{}", self.address.server),
            stream: self.address.stream.clone(),
            consumer: self.address.durable.clone(),
            incarnation: None,
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
    runtime: Arc<Runtime>,
}

impl Acker for NatsAcker {
    /// An empty message to each reply subject (JetStream's `+ACK`), then a flush: once the
    /// server answered the flush's PING it has read every acknowledgement before it, so a
    /// crash of this process after `ack` returns cannot lose them. Acks go by stream
    /// sequence, so a reply subject recorded by an earlier run still acknowledges.
    fn ack(&mut self, messages: &[(String, Option<String>)]) -> Result<AckReport> {
        if messages.is_empty() {
            return Ok(AckReport::default());
        }
        let (name, client) = (&self.name, &self.client);
        self.runtime.block_on(async {
            for (id, reply) in messages {
                let reply = reply.as_deref().filter(|r| !r.is_empty()).ok_or_else(|| {
                    StreamError::broker(name, "ack", format!("message {id} has no reply subject"))
                })?;
                client
                    .publish(reply.to_string(), "".into())
                    .await
                    .map_err(|e| StreamError::broker(name, "ack", e))?;
            }
            client
                .flush()
                .await
                .map_err(|e| StreamError::broker(name, "ack (flush)", e))?;
            // TODO(issue 26): confirmed by the server (double ack), not only flushed.
            Ok(AckReport {
                confirmed: messages.len() as u64,
                ..AckReport::default()
            })
        })
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
