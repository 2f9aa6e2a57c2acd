//! The destination guard end to end on loopback (no root needed): a refused destination gets
//! no packet and yields `DestinationRefused` (Invalid, never a network failure), with a policy
//! or without one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod common;

use std::time::Duration;

use common::{Reply, Then, probe_one, serve};
use netslo_protocol::verdict::{FailureReason as R, Layer, Outcome, ProbeResult};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};

/// A check probing `address` with `probe`, with `policy` as its `addressPolicy` (none: null).
fn check(probe: Value, address: &str, policy: Value) -> Value {
    let mut c = json!({"name": "g", "timeoutMs": 500, "probe": probe,
        "targets": [{"address": address}]});
    if !policy.is_null() {
        c["addressPolicy"] = policy;
    }
    c
}

fn assert_refused(r: &ProbeResult) {
    assert_refused_after_connecting(r);
    assert_eq!(r.phases.connect_us, None, "no connection was attempted");
}

/// Refused at a later hop (a redirect).
fn assert_refused_after_connecting(r: &ProbeResult) {
    assert_eq!(
        (r.outcome, r.reason, r.layer),
        (
            Outcome::Invalid,
            Some(R::DestinationRefused),
            Some(Layer::Prober)
        ),
        "{r:?}"
    );
}

/// Nothing connected to `l` (the kernel would have queued a connection even unaccepted).
async fn assert_untouched(l: &TcpListener) {
    let accepted = tokio::time::timeout(Duration::from_millis(100), l.accept()).await;
    assert!(accepted.is_err(), "a connection reached the refused server");
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

#[tokio::test]
async fn tcp_loopback_is_refused_unless_a_policy_opens_it() {
    let (l, addr) = listener().await;
    let tcp = json!({"tcp": {}});
    // The safe default: no policy, or an empty policy object.
    for policy in [Value::Null, json!({})] {
        assert_refused(&probe_one(check(tcp.clone(), &addr, policy)).await);
    }
    assert_untouched(&l).await;
    // Other spellings of the same address are the same address.
    let port = l.local_addr().unwrap().port();
    for spelling in [
        format!("0x7f.1:{port}"),
        format!("2130706433:{port}"),
        format!("017700000001:{port}"),
        format!("[::ffff:7f00:1]:{port}"),
        format!("localhost:{port}"),
    ] {
        assert_refused(&probe_one(check(tcp.clone(), &spelling, json!({}))).await);
    }
    assert_untouched(&l).await;
    // Opened by allowLoopback, or by naming the exact destination (a localhost target).
    for policy in [
        json!({"allowLoopback": true}),
        json!({"exemptDestinations": [addr]}),
    ] {
        let r = probe_one(check(tcp.clone(), &addr, policy)).await;
        assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    }
    // Exempt means exactly that ip:port.
    let other = format!("127.0.0.1:{}", port.wrapping_add(1).max(1));
    assert_refused(&probe_one(check(tcp, &other, json!({"exemptDestinations": [addr]}))).await);
}

#[tokio::test]
async fn metadata_is_refused_in_every_mode_and_spelling() {
    for policy in [Value::Null, json!({}), json!({"allowLoopback": true})] {
        for address in [
            "169.254.169.254:80",
            "2852039166:80",
            "0xa9.0xfe.0xa9.0xfe:80",
            "0251.0376.0251.0376:80",
            "169.254.169.254.:80",
            "[::ffff:169.254.169.254]:80",
            "[fd00:ec2::254]:80",
        ] {
            let r = probe_one(check(json!({"tcp": {}}), address, policy.clone())).await;
            assert_refused(&r);
        }
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://0xa9fea9fe/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert_refused(&probe_one(check(json!({"http": {}}), url, policy.clone())).await);
        }
        // ICMP is refused before a socket exists (so even where ping sockets are not allowed).
        assert_refused(&probe_one(check(json!({"icmp": {}}), "0xa9fea9fe", policy.clone())).await);
    }
}

#[tokio::test]
async fn a_refused_deny_target_is_invalid_not_blocked() {
    let mut c = check(json!({"tcp": {}}), "169.254.169.254:80", Value::Null);
    c["expect"] = json!("Deny");
    let r = probe_one(c).await;
    assert_refused(&r);
    assert_eq!(r.blocked_by, None);
}

#[tokio::test]
async fn http_redirects_follow_only_past_the_guard() {
    let (b, b_addr) = listener().await;
    let (a, a_addr) = listener().await;
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://{b_addr}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _a = tokio::spawn(serve(a, None, Reply::raw(redirect.as_bytes(), Then::Close)));
    let http = json!({"http": {"followRedirects": 2}});
    let url = format!("http://{a_addr}/");
    // The first hop is exempt, the redirect's target is not: refused, never contacted.
    let r = probe_one(check(
        http.clone(),
        &url,
        json!({"exemptDestinations": [a_addr]}),
    ))
    .await;
    assert_refused_after_connecting(&r);
    assert!(
        r.phases.ttfb_us.is_some(),
        "the first hop was probed: {r:?}"
    );
    assert_untouched(&b).await;
    // Allowed, the redirect is followed to its target.
    let _b = tokio::spawn(serve(b, None, Reply::ok()));
    let r = probe_one(check(http, &url, json!({"allowLoopback": true}))).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
}

#[tokio::test]
async fn a_destination_rule_admits_exactly_its_destinations_at_every_hop() {
    let (b, b_addr) = listener().await;
    let (a, a_addr) = listener().await;
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://{b_addr}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let _a = tokio::spawn(serve(a, None, Reply::raw(redirect.as_bytes(), Then::Close)));
    let http = json!({"http": {"followRedirects": 2}});
    let url = format!("http://{a_addr}/");
    // Loopback is open, but the rule names only the first hop: the redirect to another
    // port of the same address is refused before it connects.
    let r = probe_one(check(
        http.clone(),
        &url,
        json!({"allowLoopback": true, "destinations": {"cluster": [a_addr]}}),
    ))
    .await;
    assert_refused_after_connecting(&r);
    assert!(
        r.phases.ttfb_us.is_some(),
        "the first hop was probed: {r:?}"
    );
    assert_untouched(&b).await;
    // A TCP probe of an address the rule does not name never connects.
    let r = probe_one(check(
        json!({"tcp": {}}),
        &b_addr,
        json!({"allowLoopback": true, "destinations": {"cluster": [a_addr]}}),
    ))
    .await;
    assert_refused(&r);
    assert_untouched(&b).await;
    // An external grant by host name admits what that name resolves to, and only that name.
    let port = b_addr.rsplit_once(':').unwrap().1;
    let by_name = |host: &str| {
        check(
            json!({"tcp": {}}),
            &format!("localhost:{port}"),
            json!({"allowLoopback": true, "destinations": {"external": [{"hosts": [host]}]}}),
        )
    };
    assert_refused(&probe_one(by_name("otherhost")).await);
    assert_untouched(&b).await;
    let r = probe_one(by_name("localhost")).await;
    assert_ne!(r.reason, Some(R::DestinationRefused), "{r:?}");
}

#[tokio::test]
async fn http_keeps_the_host_header_while_connecting_to_the_checked_address() {
    // A name resolved by the system (localhost → loopback), opened by allowLoopback: the
    // request carries the URL's host in the Host header.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let accepted = tokio::time::timeout(Duration::from_secs(2), l.accept()).await;
        let Ok(Ok((mut s, _))) = accepted else {
            return String::new();
        };
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_lowercase()
    });
    let url = format!("http://localhost:{port}/x");
    let r = probe_one(check(
        json!({"http": {}}),
        &url,
        json!({"allowLoopback": true}),
    ))
    .await;
    let head = seen.await.unwrap();
    // getaddrinfo may list ::1 first, where nothing listens: then the probe fails to connect,
    // but the guard let it through either way.
    assert_ne!(r.reason, Some(R::DestinationRefused), "{r:?}");
    if r.outcome == Outcome::Good {
        assert!(head.contains(&format!("host: localhost:{port}")), "{head}");
    }
}

#[tokio::test]
async fn udp_and_dns_servers_get_no_datagram() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap().to_string();
    assert_refused(&probe_one(check(json!({"udp": {}}), &addr, json!({}))).await);
    let dns = json!({"dns": {"server": addr}});
    assert_refused(&probe_one(check(dns, "web.test.", json!({}))).await);
    let mut buf = [0u8; 512];
    let got = tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await;
    assert!(got.is_err(), "a datagram reached the refused server");
}
