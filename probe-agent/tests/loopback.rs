//! Probes against servers on loopback (no root needed).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod common;

use std::time::{Duration, Instant};

use common::{Reply, Then, closed_port, serve, test_pki};
use netslo_agent::echo::Echo;
use netslo_agent::engine::{Engine, EngineConfig};
use netslo_agent::testbed::{DnsMode, DnsServer};
use netslo_protocol::verdict::ProbeResult;
use netslo_protocol::verdict::{FailureReason as R, Layer, Outcome};
use serde_json::{Value, json};
use tokio::net::{TcpListener, UdpSocket};

/// The servers of these tests listen on loopback, which a check reaches only when its address
/// policy opens it.
static LOOPBACK: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({"allowLoopback": true}));

fn on_loopback(mut check: Value) -> Value {
    check["addressPolicy"] = LOOPBACK.clone();
    check
}

async fn probe_all(check: Value) -> Vec<ProbeResult> {
    common::probe_all(on_loopback(check)).await
}

async fn probe_one(check: Value) -> ProbeResult {
    common::probe_one(on_loopback(check)).await
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap().to_string();
    (l, a)
}

async fn echo() -> (String, String, tokio::task::JoinHandle<()>) {
    let e = Echo::bind(
        &["127.0.0.1:0".parse().unwrap()],
        &["127.0.0.1:0".parse().unwrap()],
        "node-x",
    )
    .await
    .unwrap();
    let (echo, http) = e.local_addrs();
    (
        echo[0].to_string(),
        http[0].to_string(),
        tokio::spawn(e.serve()),
    )
}

#[tokio::test]
async fn tcp_connect_good_and_refused() {
    let (addr, _, _srv) = echo().await;
    let refused = format!("127.0.0.1:{}", closed_port());
    let r = probe_all(json!({"name": "t", "timeoutMs": 1000, "probe": {"tcp": {}},
        "targets": [{"address": addr}, {"address": refused}]}))
    .await;
    assert_eq!(r[0].outcome, Outcome::Good, "{:?}", r[0]);
    assert!(r[0].phases.connect_us.is_some());
    assert!(r[0].latency_us < 1_000_000);
    assert_eq!(
        (r[1].outcome, r[1].reason, r[1].layer),
        (Outcome::Bad, Some(R::TcpRefused), Some(Layer::Tcp))
    );
}

#[tokio::test]
async fn udp_echo_good_and_refused() {
    let (addr, _, _srv) = echo().await;
    let closed = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let r = probe_all(
        json!({"name": "u", "timeoutMs": 500, "probe": {"udp": {"payloadBytes": 64}},
        "targets": [{"address": addr}, {"address": closed_addr}]}),
    )
    .await;
    assert_eq!(r[0].outcome, Outcome::Good, "{:?}", r[0]);
    assert_eq!(r[1].reason, Some(R::UdpRefused), "{:?}", r[1]);
}

#[tokio::test]
async fn http_against_the_echo_endpoint() {
    let (_, http, _srv) = echo().await;
    let r = probe_one(
        json!({"name": "h", "probe": {"http": {"bodyContains": "ok"}},
        "targets": [{"address": format!("http://{http}/")}]}),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    let p = r.phases;
    assert!(
        p.connect_us.is_some() && p.ttfb_us.is_some() && p.total_us.is_some() && p.tls_us.is_none()
    );
    assert_eq!(r.latency_us, p.total_us.unwrap());
}

#[tokio::test]
async fn http_status_body_and_redirects() {
    let (l1, a1) = listener().await;
    let (l2, a2) = listener().await;
    let (l3, a3) = listener().await;
    let _s1 = tokio::spawn(serve(l1, None, Reply::status(503, "down")));
    let _s2 = tokio::spawn(serve(l2, None, Reply::status(200, "hello")));
    let redirect =
        format!("HTTP/1.1 302 Found\r\nLocation: http://{a2}/x\r\nContent-Length: 0\r\n\r\n");
    let _s3 = tokio::spawn(serve(
        l3,
        None,
        Reply::raw(redirect.as_bytes(), Then::Close),
    ));
    let check = |spec: Value, addr: &str| json!({"name": "h", "probe": {"http": spec}, "targets": [{"address": format!("http://{addr}/")}]});
    let r = probe_one(check(json!({}), &a1)).await;
    assert_eq!(
        (r.outcome, r.reason, r.layer),
        (Outcome::Bad, Some(R::HttpStatus), Some(Layer::Http))
    );
    assert_eq!(
        probe_one(check(json!({"expectedStatus": [503]}), &a1))
            .await
            .outcome,
        Outcome::Good
    );
    assert_eq!(
        probe_one(check(json!({"bodyContains": "hello"}), &a2))
            .await
            .outcome,
        Outcome::Good
    );
    let r = probe_one(check(json!({"bodyContains": "bye"}), &a2)).await;
    assert_eq!(r.reason, Some(R::BodyMismatch));
    // Redirects are judged as they are unless following is asked for.
    assert_eq!(
        probe_one(check(json!({}), &a3)).await.reason,
        Some(R::HttpStatus)
    );
    let r = probe_one(check(
        json!({"followRedirects": 1, "bodyContains": "hello"}),
        &a3,
    ))
    .await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
}

#[tokio::test]
async fn https_with_test_ca_and_certificate_errors() {
    let pki = test_pki(&["server.test", "127.0.0.1"]);
    let other = test_pki(&["server.test"]);
    let (l, addr) = listener().await;
    let _s = tokio::spawn(serve(l, Some(pki.server.clone()), Reply::ok()));
    let url = format!("https://{addr}/");
    let check =
        |spec: Value| json!({"name": "s", "probe": {"http": spec}, "targets": [{"address": url}]});
    let r = probe_one(check(json!({"caBundle": pki.ca_pem}))).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    assert!(r.phases.tls_us.is_some());
    let r = probe_one(check(
        json!({"caBundle": pki.ca_pem, "serverName": "server.test", "host": "server.test"}),
    ))
    .await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    // Untrusted issuer, then a name the certificate does not cover.
    let r = probe_one(check(json!({"caBundle": other.ca_pem}))).await;
    assert_eq!(
        (r.reason, r.layer),
        (Some(R::TlsCertificate), Some(Layer::Tls)),
        "{r:?}"
    );
    let r = probe_one(check(
        json!({"caBundle": pki.ca_pem, "serverName": "elsewhere.test"}),
    ))
    .await;
    assert_eq!(r.reason, Some(R::TlsCertificate), "{r:?}");
    // A plain-HTTP server spoken to with TLS.
    let (_, http, _srv) = echo().await;
    let r = probe_one(
        json!({"name": "s", "probe": {"http": {"caBundle": pki.ca_pem}},
        "targets": [{"address": format!("https://{http}/")}]}),
    )
    .await;
    assert_eq!(r.reason, Some(R::TlsHandshake), "{r:?}");
}

#[tokio::test]
async fn delaying_server_adds_its_delay() {
    let (l, addr) = listener().await;
    let _s = tokio::spawn(serve(
        l,
        None,
        Reply::ok().delayed(Duration::from_millis(200)),
    ));
    let r = probe_one(json!({"name": "d", "probe": {"http": {}}, "targets": [{"address": format!("http://{addr}/")}]})).await;
    assert_eq!(r.outcome, Outcome::Good);
    assert!(
        r.latency_us >= 200_000 && r.latency_us < 200_000 + 150_000,
        "{r:?}"
    );
    assert!(r.phases.ttfb_us.unwrap() >= 200_000);
}

#[tokio::test]
async fn hostile_servers_give_clear_verdicts_without_hanging() {
    let endless = Reply::raw(
        b"HTTP/1.1 200 OK\r\n",
        Then::Repeat(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"),
    );
    let huge = Reply::raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000000000\r\n\r\n",
        Then::Repeat(&[b'z'; 8192]),
    );
    let silent = Reply::raw(b"", Then::Hold);
    let never_closes = Reply::raw(b"HTTP/1.1 200 OK\r\n\r\nok", Then::Hold);
    let garbage = Reply::raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n", Then::Close);
    let cases = [
        (endless, Some(R::HttpProtocol)),
        (huge, None),
        (silent, Some(R::HttpTimeout)),
        (never_closes, Some(R::HttpTimeout)),
        (garbage, Some(R::HttpProtocol)),
    ];
    for (reply, want) in cases {
        let (l, addr) = listener().await;
        let desc = format!("{reply:?}");
        let s = tokio::spawn(serve(l, None, reply));
        let t = Instant::now();
        let r = probe_one(json!({"name": "x", "timeoutMs": 700, "probe": {"http": {}},
            "targets": [{"address": format!("http://{addr}/")}]}))
        .await;
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{desc} took {:?}",
            t.elapsed()
        );
        assert_eq!(r.reason, want, "{desc}: {r:?}");
        s.abort();
    }
}

#[tokio::test]
async fn dns_reasons_against_a_local_server() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = sock.local_addr().unwrap().to_string();
    let dns = DnsServer::new(DnsMode::Answer("10.1.2.3".parse().unwrap()));
    let _s = tokio::spawn(dns.clone().serve(sock));
    let check = |spec: Value| {
        let mut spec = spec;
        spec["server"] = json!(server);
        json!({"name": "d", "timeoutMs": 500, "probe": {"dns": spec}, "targets": [{"address": "web.test"}]})
    };
    let r = probe_one(check(json!({"expectedAnswers": ["10.1.2.3"]}))).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    assert!(r.phases.dns_us.is_some());
    let r = probe_one(check(json!({"expectedAnswers": ["10.9.9.9"]}))).await;
    assert_eq!(
        (r.reason, r.layer),
        (Some(R::DnsWrongAnswer), Some(Layer::Dns))
    );
    for (mode, want) in [
        (DnsMode::NxDomain, R::DnsNxDomain),
        (DnsMode::ServFail, R::DnsServFail),
        (DnsMode::Silent, R::DnsTimeout),
    ] {
        dns.set(mode);
        let t = Instant::now();
        let r = probe_one(check(json!({}))).await;
        assert_eq!(r.reason, Some(want), "{mode:?}: {r:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    dns.set(DnsMode::NxDomain);
    assert_eq!(
        probe_one(check(json!({"expectedRcode": "NXDomain"})))
            .await
            .outcome,
        Outcome::Good
    );
}

#[tokio::test]
async fn expected_deny_on_loopback() {
    let (addr, _, _srv) = echo().await;
    let refused = format!("127.0.0.1:{}", closed_port());
    let r = probe_all(
        json!({"name": "deny", "expect": "Deny", "blockedBy": ["Refused"], "probe": {"tcp": {}},
        "targets": [{"address": refused}, {"address": addr}]}),
    )
    .await;
    assert_eq!(
        (r[0].outcome, r[0].blocked_by),
        (Outcome::Good, Some(R::TcpRefused))
    );
    assert_eq!(
        (r[1].outcome, r[1].reason, r[1].layer),
        (
            Outcome::Bad,
            Some(R::UnexpectedlyReachable),
            Some(Layer::Policy)
        )
    );
}

#[tokio::test]
async fn engine_schedules_aggregates_and_a_slow_target_delays_nothing() {
    let (addr, _, _srv) = echo().await;
    let (l, slow) = listener().await;
    let _s = tokio::spawn(serve(l, None, Reply::raw(b"", Then::Hold)));
    let jobs = {
        let doc = json!({"checks": [
            {"name": "tcp", "intervalMs": 100, "timeoutMs": 100, "latencyThresholdsUs": [1000000],
             "probe": {"tcp": {}}, "targets": [{"name": "fast", "address": addr}],
             "addressPolicy": LOOPBACK.clone()},
            {"name": "http", "intervalMs": 100, "timeoutMs": 90,
             "probe": {"http": {}}, "targets": [{"name": "slow", "address": format!("http://{slow}/")}],
             "addressPolicy": LOOPBACK.clone()}]});
        let a = netslo_protocol::spec::Assignment::from_json(doc.to_string().as_bytes()).unwrap();
        netslo_agent::engine::compile(&a, "me").unwrap()
    };
    let cfg = EngineConfig {
        window: Duration::from_millis(500),
        max_lag: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let (engine, mut raw) = Engine::with_raw_results(cfg, 1024);
    let (_tx, rx) = tokio::sync::watch::channel(jobs);
    engine
        .run(rx, tokio::time::sleep(Duration::from_millis(2_050)))
        .await;
    let mut fast = 0;
    let mut slow_timeouts = 0;
    while let Ok(rec) = raw.try_recv() {
        match &*rec.target {
            "fast" => {
                assert_eq!(rec.result.outcome, Outcome::Good, "{rec:?}");
                fast += 1;
            }
            _ => {
                assert_eq!(rec.result.reason, Some(R::HttpTimeout), "{rec:?}");
                slow_timeouts += 1;
            }
        }
    }
    // 2 s at 100 ms: about 20 rounds each (phase and jitter shift a round or two).
    assert!((17..=21).contains(&fast), "fast target probed {fast} times");
    assert!(
        (15..=21).contains(&slow_timeouts),
        "slow target probed {slow_timeouts} times"
    );
    let buckets = engine.with_aggregator(|a| a.drain());
    let fast_total: u64 = buckets
        .iter()
        .filter(|b| &*b.target == "fast")
        .map(|b| b.bucket.total)
        .sum();
    assert_eq!(fast_total, fast as u64);
    let good_within: u64 = buckets
        .iter()
        .filter(|b| &*b.target == "fast")
        .map(|b| b.bucket.good_within[0])
        .sum();
    assert_eq!(good_within, fast as u64);
    assert!(buckets.iter().all(|b| &*b.source == "me"));
    assert!(
        buckets
            .iter()
            .filter(|b| &*b.target == "slow")
            .all(|b| b.bucket.bad == b.bucket.total)
    );
}

#[tokio::test]
async fn http_connections_are_fresh_unless_reuse_is_asked() {
    let (_, http, _srv) = echo().await;
    let jobs = |reuse: bool| {
        common::jobs(on_loopback(
            json!({"name": "r", "probe": {"http": {"reuseConnection": reuse}},
            "targets": [{"address": format!("http://{http}/")}]}),
        ))
    };
    let engine = Engine::new(EngineConfig {
        max_lag: Duration::from_secs(1),
        ..EngineConfig::default()
    });
    let fresh = jobs(false);
    for _ in 0..3 {
        let r = engine.probe_once(&fresh[0]).await;
        assert_eq!(r.outcome, Outcome::Good);
        assert!(r.phases.connect_us.is_some(), "every probe connects: {r:?}");
    }
    let reused = jobs(true);
    let first = engine.probe_once(&reused[0]).await;
    assert!(first.phases.connect_us.is_some());
    let second = engine.probe_once(&reused[0]).await;
    assert_eq!(second.outcome, Outcome::Good);
    assert!(
        second.phases.connect_us.is_none(),
        "kept connection reused: {second:?}"
    );
}

#[tokio::test]
async fn garbage_udp_and_dns_answers_are_judged_not_panicked_on() {
    // A UDP "echo" that answers something else, and a DNS server that answers garbage.
    let bogus = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = bogus.local_addr().unwrap().to_string();
    let _s = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = bogus.recv_from(&mut buf).await {
            let mut reply = buf[..n].to_vec();
            reply.reverse();
            let _ = bogus.send_to(&reply, peer).await;
            let _ = bogus.send_to(&[0xff; 3000][..], peer).await;
        }
    });
    let r = probe_one(json!({"name": "u", "timeoutMs": 300, "probe": {"udp": {}}, "targets": [{"address": addr}]})).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Bad, Some(R::UdpMismatch)),
        "{r:?}"
    );

    let dns = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = dns.local_addr().unwrap().to_string();
    let _d = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, peer)) = dns.recv_from(&mut buf).await {
            // Same id, then noise.
            let mut reply = buf[..n.min(2)].to_vec();
            reply.extend_from_slice(&[0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0xde, 0xad]);
            let _ = dns.send_to(&reply, peer).await;
        }
    });
    let t = Instant::now();
    let r = probe_one(
        json!({"name": "d", "timeoutMs": 400, "probe": {"dns": {"server": server}},
        "targets": [{"address": "x.test."}]}),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Bad, "{r:?}");
    assert!(
        matches!(r.reason, Some(R::DnsError | R::DnsTimeout)),
        "{r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn reassignment_stops_removed_targets_and_keeps_the_others() {
    let (addr, _, _srv) = echo().await;
    let doc = |targets: Value| {
        let doc = json!({"checks": [{"name": "c", "intervalMs": 100, "timeoutMs": 100, "probe": {"tcp": {}}, "targets": targets,
            "addressPolicy": LOOPBACK.clone()}]});
        let a = netslo_protocol::spec::Assignment::from_json(doc.to_string().as_bytes()).unwrap();
        netslo_agent::engine::compile(&a, "me").unwrap()
    };
    let both = doc(json!([{"name": "a", "address": addr}, {"name": "b", "address": addr}]));
    let only_a = doc(json!([{"name": "a", "address": addr}]));
    let cfg = EngineConfig {
        max_lag: Duration::from_millis(50),
        ..EngineConfig::default()
    };
    let (engine, mut raw) = Engine::with_raw_results(cfg, 1024);
    let (tx, rx) = tokio::sync::watch::channel(both);
    let run = engine.run(rx, tokio::time::sleep(Duration::from_millis(1_600)));
    let switch = async {
        tokio::time::sleep(Duration::from_millis(600)).await;
        tx.send(only_a).unwrap();
        // Drain what was probed before the switch.
        let mut before = Vec::new();
        while let Ok(r) = raw.try_recv() {
            before.push(r.target.to_string());
        }
        before
    };
    let ((), before) = tokio::join!(run, switch);
    let mut after = Vec::new();
    while let Ok(r) = raw.try_recv() {
        after.push(r.target.to_string());
    }
    assert!(before.iter().any(|t| t == "b"), "{before:?}");
    // At most one in-flight probe of b may land after the switch.
    assert!(after.iter().filter(|t| *t == "b").count() <= 1, "{after:?}");
    let a_after = after.iter().filter(|t| *t == "a").count();
    assert!(
        (8..=11).contains(&a_after),
        "a kept its schedule: {a_after} probes in 1 s"
    );
}
