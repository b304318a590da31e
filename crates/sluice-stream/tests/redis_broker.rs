//! The Redis broker against a real `redis-server`: `XACK` counts (what was still pending,
//! what was acknowledged before), an acknowledgement across a broken connection, the
//! group's lag and pending count, pending entries coming again to a restarted consumer,
//! credentials, a percent-encoded key, and the `claim_idle` minimum.

use std::time::{Duration, Instant};

use sluice_stream::redis::{self, RedisAddress};
use sluice_stream::testing::{redis_connection, redis_connection_as, redis_publish, Server};
use sluice_stream::{AckReport, Acker, Broker, Message, Outstanding};

fn address(url: &str) -> RedisAddress {
    RedisAddress::parse(&url::Url::parse(url).expect("a URL")).expect("a valid address")
}

fn url(port: u16, stream: &str) -> String {
    format!("redis://127.0.0.1:{port}/{stream}?group=g&consumer=c")
}

fn payloads(n: u64) -> impl Iterator<Item = String> {
    (0..n).map(|i| format!(r#"{{"id": {i}}}"#))
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

fn pending_count(con: &mut ::redis::Connection, stream: &str) -> u64 {
    sluice_stream::testing::redis_pending(con, stream, "g")
}

#[test]
fn xack_reports_what_was_pending_and_what_was_acknowledged_before() {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "counts", payloads(10));
    let (mut broker, mut acker) = redis::open(address(&url(server.port, "counts"))).expect("open");
    let messages = fetch_n(&mut broker, 10);
    assert_eq!(messages.len(), 10);
    let report = acker.ack(&acks(&messages[..4])).expect("ack");
    assert_eq!(
        report,
        AckReport {
            confirmed: 4,
            ..AckReport::default()
        }
    );
    assert_eq!(pending_count(&mut con, "counts"), 6);
    // All ten again: four of them acknowledged before.
    let report = acker.ack(&acks(&messages)).expect("ack");
    assert_eq!(
        report,
        AckReport {
            confirmed: 10,
            already_acknowledged: 4,
            ..AckReport::default()
        }
    );
    assert_eq!(pending_count(&mut con, "counts"), 0);
}

#[test]
fn an_ack_after_the_connection_was_killed_reconnects_and_is_confirmed() {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "killed", payloads(20));
    let (mut broker, mut acker) = redis::open(address(&url(server.port, "killed"))).expect("open");
    let messages = fetch_n(&mut broker, 20);
    assert_eq!(messages.len(), 20);
    // Every other client's connection closed by the server (the acker's among them).
    let killed: u64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut con)
        .expect("CLIENT KILL");
    assert!(
        killed >= 2,
        "the broker's and the acker's connections: {killed}"
    );
    let report = acker
        .ack(&acks(&messages))
        .expect("ack after a reconnection");
    assert_eq!(report.confirmed, 20, "{report:?}");
    assert_eq!(
        report.retried, 20,
        "sent again on a new connection: {report:?}"
    );
    assert_eq!(report.unconfirmed, 0);
    assert_eq!(pending_count(&mut con, "killed"), 0);
}

#[test]
fn outstanding_is_the_groups_lag_and_pending_count() {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    let (mut broker, mut acker) = redis::open(address(&url(server.port, "lag"))).expect("open");
    let outstanding = |undelivered, unacknowledged| Outstanding {
        undelivered,
        unacknowledged,
    };
    assert_eq!(
        broker.outstanding().expect("outstanding"),
        outstanding(0, 0)
    );
    redis_publish(&mut con, "lag", payloads(300));
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
fn outstanding_without_a_lag_from_redis_is_never_0_while_entries_wait() {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "holes", payloads(10));
    let (mut broker, _acker) = redis::open(address(&url(server.port, "holes"))).expect("open");
    let ids: Vec<String> = ::redis::cmd("XRANGE")
        .arg("holes")
        .arg("-")
        .arg("+")
        .query::<::redis::streams::StreamRangeReply>(&mut con)
        .expect("XRANGE")
        .ids
        .into_iter()
        .map(|e| e.id)
        .collect();
    // A deleted entry ahead of the group: Redis can no longer count its lag (nil).
    let deleted: u64 = ::redis::cmd("XDEL")
        .arg("holes")
        .arg(&ids[5])
        .query(&mut con)
        .expect("XDEL");
    assert_eq!(deleted, 1);
    let lag = sluice_stream::testing::redis_lag_value(&mut con, "holes", "g");
    assert_eq!(
        lag,
        ::redis::Value::Nil,
        "the case under test: no lag from Redis"
    );
    // Nothing delivered yet: the stream's length is exact.
    assert_eq!(broker.outstanding().expect("outstanding").undelivered, 9);
    let first = fetch_n(&mut broker, 3);
    assert_eq!(first.len(), 3);
    let waiting = broker.outstanding().expect("outstanding");
    assert!(
        (6..=9).contains(&waiting.undelivered),
        "an upper bound, never 0 while 6 wait: {waiting:?}"
    );
    assert_eq!(waiting.unacknowledged, 3);
    let rest = fetch_n(&mut broker, 6);
    assert_eq!(rest.len(), 6);
    assert_eq!(broker.outstanding().expect("outstanding").undelivered, 0);
}

#[test]
fn a_restarted_consumer_gets_its_pending_entries_again_at_once() {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "again", payloads(50));
    // claim_idle far beyond the test: what comes again is the consumer's own pending.
    let from = format!(
        "redis://127.0.0.1:{}/again?group=g&consumer=c&claim_idle=600000",
        server.port
    );
    let (mut broker, mut acker) = redis::open(address(&from)).expect("open");
    let first = fetch_n(&mut broker, 30);
    assert_eq!(first.len(), 30);
    acker.ack(&acks(&first[..10])).expect("ack");
    drop((broker, acker)); // a crash: 20 delivered, never acknowledged
    let (mut broker, mut acker) = redis::open(address(&from)).expect("reopen");
    // release is a no-op for Redis: the restarted consumer reads its pending list first.
    acker.release(&acks(&first[10..])).expect("release");
    let again = broker.fetch(100, Duration::from_millis(1)).expect("fetch");
    let again_ids: Vec<&str> = again.iter().map(|m| m.id.as_str()).collect();
    let held: Vec<&str> = first[10..].iter().map(|m| m.id.as_str()).collect();
    assert_eq!(again_ids, held, "the 20 held, first, in one fetch");
    let rest = fetch_n(&mut broker, 20);
    assert_eq!(rest.len(), 20, "then the 20 never delivered");
    assert_eq!(pending_count(&mut con, "again"), 40);
}

#[test]
fn a_server_with_a_password_is_read_with_the_urls_credentials() {
    let server = Server::redis_with(&["--requirepass", "pa ss/word"], ":pa%20ss%2Fword@");
    let mut con = redis_connection_as(server.port, ":pa%20ss%2Fword@");
    redis_publish(&mut con, "auth", payloads(10));
    let refused = redis::open(address(&url(server.port, "auth")))
        .err()
        .expect("refused without the password")
        .to_string();
    assert!(refused.to_lowercase().contains("auth"), "{refused}");
    let from = format!(
        "redis://:pa%20ss%2Fword@127.0.0.1:{}/auth?group=g&consumer=c",
        server.port
    );
    let (mut broker, mut acker) = redis::open(address(&from)).expect("open");
    let messages = fetch_n(&mut broker, 10);
    assert_eq!(messages.len(), 10);
    assert_eq!(acker.ack(&acks(&messages)).expect("ack").confirmed, 10);
    let shown = format!(
        "{} {:?} {:?}",
        broker.name(),
        broker.identity(),
        address(&from)
    );
    assert!(
        !shown.contains("pa ss") && !shown.contains("pa%20ss"),
        "{shown}"
    );
}

#[test]
fn an_acl_user_is_read_with_the_urls_user_and_password() {
    let server = Server::redis_with(
        &[
            "--user", "reader", "on", ">s3cret", "~*", "&*", "+@all", "--user", "default", "off",
        ],
        "reader:s3cret@",
    );
    let mut con = redis_connection_as(server.port, "reader:s3cret@");
    redis_publish(&mut con, "acl", payloads(5));
    let from = format!(
        "redis://reader:s3cret@127.0.0.1:{}/acl?group=g&consumer=c",
        server.port
    );
    let (mut broker, _acker) = redis::open(address(&from)).expect("open as the ACL user");
    assert_eq!(fetch_n(&mut broker, 5).len(), 5);
    let wrong = format!(
        "redis://reader:wrong@127.0.0.1:{}/acl?group=g&consumer=c",
        server.port
    );
    assert!(redis::open(address(&wrong)).is_err(), "a wrong password");
    assert!(!broker.identity().broker.contains("s3cret"));
}

#[test]
fn a_percent_encoded_key_names_the_decoded_key() {
    let server = Server::redis();
    let mut con = redis_connection(server.port);
    redis_publish(&mut con, "my stream/2", payloads(7));
    let (mut broker, _acker) =
        redis::open(address(&url(server.port, "my%20stream%2F2"))).expect("open");
    assert_eq!(broker.identity().stream, "my stream/2");
    assert_eq!(fetch_n(&mut broker, 7).len(), 7);
}

#[test]
fn a_claim_idle_below_one_second_is_refused() {
    for ms in [0, 999] {
        let e = sluice_stream::Address::parse(&format!(
            "redis://h/s?group=g&consumer=c&claim_idle={ms}"
        ))
        .expect_err("refused")
        .to_string();
        assert!(e.contains("minimum, 1000 ms"), "{e}");
    }
    assert_eq!(
        address("redis://h/s?claim_idle=1000").claim_idle,
        Duration::from_secs(1)
    );
    let e = sluice_stream::Address::parse("redis://h/s?tls_ca=/ca.pem")
        .expect_err("refused")
        .to_string();
    assert!(e.contains("tls_ca= is for TLS connections"), "{e}");
}
