//! The JetStream broker against a real `nats-server -js`: acknowledgements the server
//! confirms (applied when `ack` returns, unanswered ones reported), NAKs that redeliver
//! at once, the stream's incarnation, what the consumer holds, credentials, and a durable
//! whose configuration differs from the URL's.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use sluice_stream::nats::{self, NatsAddress, NatsAuth};
use sluice_stream::testing::{NatsClient, Server};
use sluice_stream::{Acker, Broker, Message, Outstanding};

fn address(url: &str) -> NatsAddress {
    NatsAddress::parse(&url::Url::parse(url).expect("a URL")).expect("a valid address")
}

fn url(port: u16, subject: &str, stream: &str, ack_wait_ms: u64) -> String {
    format!("nats://127.0.0.1:{port}/{subject}?stream={stream}&durable=etl&ack_wait={ack_wait_ms}")
}

fn payload(i: u64) -> String {
    format!(r#"{{"id": {i}}}"#)
}

/// Fetches until `n` messages came (or 30 s passed: then the caller's counts fail).
fn fetch_n(broker: &mut dyn Broker, n: usize) -> Vec<Message> {
    let started = Instant::now();
    let mut out = Vec::new();
    while out.len() < n && started.elapsed() < Duration::from_secs(30) {
        out.extend(
            broker
                .fetch(n - out.len(), Duration::from_millis(200))
                .expect("fetch"),
        );
    }
    out
}

fn acks(messages: &[Message]) -> Vec<(String, Option<String>)> {
    messages
        .iter()
        .map(|m| (m.id.clone(), m.ack.clone()))
        .collect()
}

#[test]
fn acks_are_applied_by_the_server_when_ack_returns() {
    const N: usize = 60_000;
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.publish("BIG", "big", (0..N as u64).map(payload));
    let (mut broker, mut acker) =
        nats::open(address(&url(server.port, "big", "BIG", 60_000))).expect("open");
    let messages = fetch_n(&mut broker, N);
    assert_eq!(messages.len(), N, "every message delivered");
    assert_eq!(client.pending("BIG", "etl"), (0, N as u64));
    // One large batch (the ledger sends 5,000 at a time; larger here, so that acks merely
    // written to the socket would still be queued in the server when `ack` returns).
    let report = acker.ack(&acks(&messages)).expect("ack");
    // Asked at once, no waiting: `ack` returned only after the server applied every ack.
    assert_eq!(
        client.pending("BIG", "etl"),
        (0, 0),
        "(undelivered, unacknowledged) right after ack returned"
    );
    assert_eq!(report.confirmed, N as u64);
    assert_eq!((report.retried, report.unconfirmed), (0, 0));
}

#[test]
fn acks_of_messages_acknowledged_before_are_confirmed_without_retries() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.publish("TWICE", "twice", (0..500).map(payload));
    let from = url(server.port, "twice", "TWICE", 60_000);
    let (mut broker, mut acker) = nats::open(address(&from)).expect("open");
    let messages = fetch_n(&mut broker, 500);
    assert_eq!(messages.len(), 500);
    assert_eq!(acker.ack(&acks(&messages)).expect("ack").confirmed, 500);
    drop((broker, acker));
    // A restart acknowledging the reply subjects an earlier run recorded (its ledger's
    // committed rows), already acknowledged: answered by the server, nothing retried.
    let (_broker, mut acker) = nats::open(address(&from)).expect("reopen");
    let started = Instant::now();
    let report = acker.ack(&acks(&messages)).expect("ack again");
    assert_eq!(report.confirmed, 500, "{report:?}");
    assert_eq!((report.retried, report.unconfirmed), (0, 0), "{report:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no round waited for a missing answer: {:?}",
        started.elapsed()
    );
    assert_eq!(client.pending("TWICE", "etl"), (0, 0));
}

#[test]
fn acks_the_server_does_not_answer_are_retried_then_reported_unconfirmed() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.publish("ODD", "odd", (0..3).map(payload));
    let (mut broker, mut acker) =
        nats::open(address(&url(server.port, "odd", "ODD", 60_000))).expect("open");
    let messages = fetch_n(&mut broker, 3);
    assert_eq!(messages.len(), 3);
    let mut batch = acks(&messages);
    // No consumer reads this subject: the core server answers "no responders".
    batch.push(("91".into(), Some("$JS.ACK.ODD.gone.1.91.91.0.0".into())));
    // Our consumer, a sequence it never delivered: JetStream stays silent.
    batch.push(("92".into(), Some("$JS.ACK.ODD.etl.1.92.92.0.0".into())));
    let started = Instant::now();
    let report = acker.ack(&batch).expect("ack");
    assert_eq!(report.confirmed, 3, "{report:?}");
    assert_eq!(report.unconfirmed, 2, "{report:?}");
    assert_eq!(
        report.retried, 4,
        "two tries more for each of the two: {report:?}"
    );
    // Three rounds of at most 2 s each wait for the silent one: bounded.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.pending("ODD", "etl"), (0, 0));
}

#[test]
fn released_messages_are_delivered_again_at_once() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.publish("NAK", "nak", (0..200).map(payload));
    // An ack_wait far longer than the test: a redelivery within it comes from the NAK.
    let (mut broker, mut acker) =
        nats::open(address(&url(server.port, "nak", "NAK", 600_000))).expect("open");
    let first = fetch_n(&mut broker, 200);
    assert_eq!(first.len(), 200);
    assert_eq!(client.pending("NAK", "etl"), (0, 200));
    acker.release(&acks(&first[..120])).expect("release");
    let started = Instant::now();
    let again = fetch_n(&mut broker, 120);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "redelivered well before ack_wait (600 s): {:?}",
        started.elapsed()
    );
    let released: HashSet<&str> = first[..120].iter().map(|m| m.id.as_str()).collect();
    let redelivered: HashSet<&str> = again.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        redelivered, released,
        "the released messages, by stream sequence"
    );
    assert_eq!(again.len(), 120, "each once");
    assert!(
        broker
            .fetch(10, Duration::from_millis(300))
            .expect("fetch")
            .is_empty(),
        "nothing else: the other 80 are still held"
    );
}

#[test]
fn a_stream_deleted_and_created_again_has_another_incarnation() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    let from = url(server.port, "inc", "INC", 30_000);
    let (broker, _acker) = nats::open(address(&from)).expect("open");
    let first = broker.identity();
    drop(broker);
    let (broker, _acker) = nats::open(address(&from)).expect("reopen");
    assert_eq!(
        broker.identity(),
        first,
        "the same stream, the same identity"
    );
    drop(broker);
    client.delete_stream("INC");
    let (broker, _acker) = nats::open(address(&from)).expect("recreate");
    let second = broker.identity();
    assert!(first.incarnation.is_some());
    assert_ne!(second.incarnation, first.incarnation, "created again");
    assert_eq!(
        (&second.broker, &second.stream, &second.consumer),
        (&first.broker, &first.stream, &first.consumer)
    );
}

#[test]
fn outstanding_follows_publish_delivery_and_acks() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.create_stream("OUT", "out");
    let (mut broker, mut acker) =
        nats::open(address(&url(server.port, "out", "OUT", 60_000))).expect("open");
    let outstanding = |undelivered, unacknowledged| Outstanding {
        undelivered,
        unacknowledged,
    };
    assert_eq!(
        broker.outstanding().expect("outstanding"),
        outstanding(0, 0)
    );
    client.publish("OUT", "out", (0..300).map(payload));
    assert_eq!(
        broker.outstanding().expect("outstanding"),
        outstanding(300, 0)
    );
    let messages = fetch_n(&mut broker, 100);
    assert_eq!(messages.len(), 100);
    assert_eq!(
        broker.outstanding().expect("outstanding"),
        outstanding(200, 100)
    );
    acker.ack(&acks(&messages[..40])).expect("ack");
    assert_eq!(
        broker.outstanding().expect("outstanding"),
        outstanding(200, 60)
    );
}

#[test]
fn a_server_with_user_and_password_is_read_with_the_urls_credentials() {
    let auth = NatsAuth::UserPassword {
        user: "reader".into(),
        password: "s3cret/pw".into(),
    };
    let server = Server::nats_with(&["--user", "reader", "--pass", "s3cret/pw"], &auth);
    let client = NatsClient::connect_as(server.port, &auth).expect("connect");
    client.publish("AUTH", "auth", (0..10).map(payload));
    let no_credentials = nats::open(address(&url(server.port, "auth", "AUTH", 30_000)));
    let refused = no_credentials.err().expect("refused without credentials");
    assert!(
        refused.to_string().to_lowercase().contains("auth"),
        "{refused}"
    );
    let from = format!(
        "nats://reader:s3cret%2Fpw@127.0.0.1:{}/auth?stream=AUTH&durable=etl",
        server.port
    );
    let (mut broker, mut acker) = nats::open(address(&from)).expect("open with credentials");
    let messages = fetch_n(&mut broker, 10);
    assert_eq!(messages.len(), 10);
    assert_eq!(acker.ack(&acks(&messages)).expect("ack").confirmed, 10);
    let shown = format!(
        "{} {:?} {:?}",
        broker.name(),
        broker.identity(),
        address(&from)
    );
    assert!(!shown.contains("s3cret"), "a password shown: {shown}");
}

#[test]
fn a_server_with_a_token_is_read_with_the_urls_token() {
    let auth = NatsAuth::Token("t0ken".into());
    let server = Server::nats_with(&["--auth", "t0ken"], &auth);
    let client = NatsClient::connect_as(server.port, &auth).expect("connect");
    client.publish("TOK", "tok", (0..5).map(payload));
    for from in [
        format!(
            "nats://t0ken@127.0.0.1:{}/tok?stream=TOK&durable=etl",
            server.port
        ),
        format!(
            "nats://127.0.0.1:{}/tok?stream=TOK&durable=etl&token=t0ken",
            server.port
        ),
    ] {
        let (mut broker, _acker) = nats::open(address(&from)).expect("open with the token");
        assert_eq!(broker.outstanding().expect("outstanding").undelivered, 5);
        assert!(!broker.name().contains("t0ken"), "{}", broker.name());
        assert!(!format!("{:?}", broker.identity()).contains("t0ken"));
    }
    let wrong = format!(
        "nats://wrong@127.0.0.1:{}/tok?stream=TOK&durable=etl",
        server.port
    );
    assert!(
        nats::open(address(&wrong)).is_err(),
        "a wrong token is refused"
    );
}

#[test]
fn an_existing_durable_with_another_ack_wait_is_updated_to_the_urls() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.publish("WAIT", "wait", (0..10).map(payload));
    let (mut broker, mut acker) =
        nats::open(address(&url(server.port, "wait", "WAIT", 30_000))).expect("open");
    let messages = fetch_n(&mut broker, 4);
    acker.ack(&acks(&messages)).expect("ack");
    drop((broker, acker));
    assert_eq!(
        client.consumer_info("WAIT", "etl").config.ack_wait,
        Duration::from_secs(30)
    );
    let (mut broker, _acker) =
        nats::open(address(&url(server.port, "wait", "WAIT", 90_000))).expect("reopen");
    let info = client.consumer_info("WAIT", "etl");
    assert_eq!(info.config.ack_wait, Duration::from_secs(90), "updated");
    // The same durable, its state kept: the 4 acknowledged are not delivered again.
    assert_eq!(info.num_pending, 6);
    let rest = fetch_n(&mut broker, 6);
    let ids: Vec<u64> = rest
        .iter()
        .map(|m| m.id.parse().expect("a sequence"))
        .collect();
    assert_eq!(ids, (5..=10).collect::<Vec<u64>>());
}

#[test]
fn an_existing_durable_reading_another_subject_is_refused() {
    let server = Server::nats();
    let client = NatsClient::connect(server.port).expect("connect");
    client.create_stream("MULTI", "multi.>");
    client.create_consumer(
        "MULTI",
        "etl",
        async_nats::jetstream::consumer::pull::Config {
            filter_subject: "multi.a".into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        },
    );
    let e = nats::open(address(&url(server.port, "multi.b", "MULTI", 30_000)))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("reads multi.a") && e.contains("names subject multi.b"),
        "{e}"
    );
    // The same subject is accepted.
    nats::open(address(&url(server.port, "multi.a", "MULTI", 30_000))).expect("same subject");

    client.create_consumer(
        "MULTI",
        "all",
        async_nats::jetstream::consumer::pull::Config {
            filter_subject: "multi.a".into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::All,
            ..Default::default()
        },
    );
    let e = nats::open(address(&format!(
        "nats://127.0.0.1:{}/multi.a?stream=MULTI&durable=all",
        server.port
    )))
    .err()
    .expect("refused")
    .to_string();
    assert!(e.contains("not each message explicitly"), "{e}");
}

#[test]
fn url_credentials_tokens_and_unsupported_settings() {
    let a = address("nats://u:p%40ss@h:1/s?stream=S&durable=d");
    assert_eq!(
        a.auth,
        NatsAuth::UserPassword {
            user: "u".into(),
            password: "p@ss".into()
        }
    );
    assert!(!format!("{a:?}").contains("p@ss"));
    assert_eq!(
        address("nats://tok@h:1/s?stream=S&durable=d").auth,
        NatsAuth::Token("tok".into())
    );
    assert_eq!(
        address("nats://h:1/s?stream=S&durable=d&token=tok").auth,
        NatsAuth::Token("tok".into())
    );
    assert_eq!(
        address("nats://h:1/s?stream=S&durable=d").auth,
        NatsAuth::None
    );
    let tls = address("tls://h:1/s?stream=S&durable=d&tls_ca=/ca.pem");
    assert!(tls.tls);
    assert_eq!(tls.tls_ca.as_deref(), Some(std::path::Path::new("/ca.pem")));
    assert!(!address("nats://h:1/s?stream=S&durable=d").tls);
    for (url, says) in [
        ("nats://u:p@h:1/s?stream=S&durable=d&token=t", "give one"),
        (
            "nats://h:1/s?stream=S&durable=d&creds=/x.creds",
            "not supported yet",
        ),
    ] {
        let e = sluice_stream::Address::parse(url)
            .expect_err("refused")
            .to_string();
        assert!(e.contains(says), "{url}: {e}");
    }
}
