//! `rediss://` and `tls://` against real servers accepting TLS only, with a certificate
//! signed by a CA made for the test (trusted through `?tls_ca=`): messages read and
//! acknowledged; a plain connection, or one not trusting the CA, fails.

use std::time::{Duration, Instant};

use sluice_stream::nats::NatsAuth;
use sluice_stream::testing::{redis_connection_tls, redis_publish, NatsClient, Server, TestTls};
use sluice_stream::{Acker, Address, Broker, Message};

fn payloads(n: u64) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!(r#"{{"id": {i}}}"#))
}

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

fn open(url: &str) -> sluice_stream::Result<(Box<dyn Broker>, Box<dyn Acker>)> {
    Ok(match Address::parse(url)? {
        Address::Redis(a) => {
            let (b, k) = sluice_stream::redis::open(a)?;
            (Box::new(b), Box::new(k))
        }
        Address::Nats(a) => {
            let (b, k) = sluice_stream::nats::open(a)?;
            (Box::new(b), Box::new(k))
        }
    })
}

#[test]
fn rediss_reads_and_acknowledges_over_tls() {
    let tls = TestTls::new();
    let server = Server::redis_tls(&tls);
    let mut con = redis_connection_tls(server.port, &tls.ca);
    redis_publish(&mut con, "secure", payloads(25));
    let ca = tls.ca.display().to_string();
    let from = format!(
        "rediss://127.0.0.1:{}/secure?group=g&consumer=c&tls_ca={ca}",
        server.port
    );
    let (mut broker, mut acker) = open(&from).expect("open over TLS");
    assert!(broker.name().starts_with("rediss://"), "{}", broker.name());
    let messages = fetch_n(broker.as_mut(), 25);
    assert_eq!(messages.len(), 25);
    assert_eq!(acker.ack(&acks(&messages)).expect("ack").confirmed, 25);
    assert_eq!(
        sluice_stream::testing::redis_pending(&mut con, "secure", "g"),
        0
    );

    let plain = format!(
        "redis://127.0.0.1:{}/secure?group=g&consumer=c",
        server.port
    );
    assert!(open(&plain).is_err(), "no TLS, no connection");
    let untrusted = format!(
        "rediss://127.0.0.1:{}/secure?group=g&consumer=c",
        server.port
    );
    assert!(
        open(&untrusted).is_err(),
        "the system's roots do not hold the test CA"
    );
}

#[test]
fn nats_tls_reads_and_acknowledges_over_tls() {
    let tls = TestTls::new();
    let server = Server::nats_tls(&tls);
    let client =
        NatsClient::connect_with(server.port, &NatsAuth::None, Some(&tls.ca)).expect("connect");
    client.publish("SEC", "sec", payloads(25));
    let ca = tls.ca.display().to_string();
    let from = format!(
        "tls://127.0.0.1:{}/sec?stream=SEC&durable=etl&tls_ca={ca}",
        server.port
    );
    let (mut broker, mut acker) = open(&from).expect("open over TLS");
    assert!(broker.name().starts_with("tls://"), "{}", broker.name());
    assert_eq!(
        broker.identity().broker,
        format!("nats://127.0.0.1:{}", server.port)
    );
    let messages = fetch_n(broker.as_mut(), 25);
    assert_eq!(messages.len(), 25);
    let report = acker.ack(&acks(&messages)).expect("ack");
    assert_eq!((report.confirmed, report.unconfirmed), (25, 0));
    assert_eq!(client.pending("SEC", "etl"), (0, 0));

    let untrusted = format!("tls://127.0.0.1:{}/sec?stream=SEC&durable=etl", server.port);
    assert!(
        open(&untrusted).is_err(),
        "the system's roots do not hold the test CA"
    );
}
