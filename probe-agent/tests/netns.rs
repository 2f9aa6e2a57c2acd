//! Probes across real network namespaces joined by veth pairs and a bridge, with faults
//! injected by iptables. Needs root, iproute2 and iptables.
//!
//! Every test builds its own topology (unique names, so tests run in parallel): host 0
//! (10.77.0.1) runs the probes, host 1 (10.77.0.2) the servers. Dropping the topology deletes
//! its namespaces with every interface and rule in them, also when a test panics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{Reply, probe_all, serve, test_pki};
use netslo_agent::echo::Echo;
use netslo_agent::engine::{Engine, EngineConfig};
use netslo_agent::probe::trace::{self, TraceSettings};
use netslo_agent::testbed::{self, DnsMode, DnsServer, Netns, RoutedPath, Topology};
use netslo_protocol::trace::{HopAnswer, PathTrace, TraceEnd};
use netslo_protocol::verdict::{FailureReason as R, Layer, Outcome, ProbeResult};
use serde_json::{Value, json};

const SERVER: &str = "10.77.0.2";

fn topology() -> Topology {
    testbed::require();
    Topology::star(2).expect("topology")
}

/// Probes every target of `check` once from inside `ns`.
async fn probe_in(ns: &Netns, check: Value) -> Vec<ProbeResult> {
    ns.run(move || probe_all(check))
        .await
        .expect("ran in namespace")
}

async fn probe_one_in(ns: &Netns, check: Value) -> ProbeResult {
    probe_in(ns, check).await.remove(0)
}

fn tcp_listener(ns: &Netns, addr: &str) -> tokio::net::TcpListener {
    let addr: SocketAddr = addr.parse().unwrap();
    let l = ns
        .enter(move || {
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .unwrap();
    tokio::net::TcpListener::from_std(l).unwrap()
}

fn udp_socket(ns: &Netns, addr: &str) -> tokio::net::UdpSocket {
    let addr: SocketAddr = addr.parse().unwrap();
    let s = ns
        .enter(move || {
            let s = std::net::UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .unwrap();
    tokio::net::UdpSocket::from_std(s).unwrap()
}

/// The agent's own echo responder in `ns`: UDP and TCP echo on :7000, HTTP on :8080.
fn echo_in(ns: &Netns, ip: &str) -> tokio::task::JoinHandle<()> {
    let echo = Echo {
        udp: vec![udp_socket(ns, &format!("{ip}:7000"))],
        tcp: vec![tcp_listener(ns, &format!("{ip}:7000"))],
        http: vec![tcp_listener(ns, &format!("{ip}:8080"))],
        node: Arc::from("server"),
    };
    tokio::spawn(echo.serve())
}

fn tcp_check(timeout_ms: u64) -> Value {
    json!({"name": "tcp", "timeoutMs": timeout_ms, "probe": {"tcp": {}}, "targets": [{"address": format!("{SERVER}:7000")}]})
}

#[tokio::test]
async fn tcp_drop_reject_and_unreachable() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let _echo = echo_in(server, SERVER);
    let r = probe_one_in(client, tcp_check(300)).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    // A pod address passes the guard's safe default (an empty policy object).
    let mut guarded = tcp_check(300);
    guarded["addressPolicy"] = json!({});
    let r = probe_one_in(client, guarded).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");

    let rule = server
        .iptables("INPUT", &["-p", "tcp", "--dport", "7000", "-j", "DROP"])
        .unwrap();
    let r = probe_one_in(client, tcp_check(300)).await;
    assert_eq!(
        (r.outcome, r.reason, r.layer),
        (Outcome::Bad, Some(R::TcpTimeout), Some(Layer::Tcp)),
        "{r:?}"
    );
    assert!(r.latency_us >= 300_000);
    rule.remove().unwrap();

    let rule = server
        .iptables(
            "INPUT",
            &[
                "-p",
                "tcp",
                "--dport",
                "7000",
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ],
        )
        .unwrap();
    assert_eq!(
        probe_one_in(client, tcp_check(300)).await.reason,
        Some(R::TcpRefused)
    );
    rule.remove().unwrap();

    let _rule = server
        .iptables(
            "INPUT",
            &[
                "-p",
                "tcp",
                "--dport",
                "7000",
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-host-unreachable",
            ],
        )
        .unwrap();
    let r = probe_one_in(client, tcp_check(300)).await;
    assert_eq!(
        (r.reason, r.layer),
        (Some(R::HostUnreachable), Some(Layer::Ip)),
        "{r:?}"
    );

    // No route at all from the client's namespace.
    let r = probe_one_in(
        client,
        json!({"name": "t", "timeoutMs": 300, "probe": {"tcp": {}},
        "targets": [{"address": "10.99.0.1:80"}]}),
    )
    .await;
    assert_eq!(r.reason, Some(R::NetUnreachable), "{r:?}");
}

#[tokio::test]
async fn random_loss_is_measured_within_tolerance() {
    const N: usize = 1_000;
    const P: f64 = 0.2;
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let _echo = echo_in(server, SERVER);
    // Drop 20% of SYNs: each probe is lost with probability 0.2 (a dropped SYN is retried by the
    // kernel only after 1 s, past the 250 ms timeout).
    let _rule = server
        .iptables(
            "INPUT",
            &[
                "-p",
                "tcp",
                "--dport",
                "7000",
                "--syn",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.2",
                "-j",
                "DROP",
            ],
        )
        .unwrap();
    let jobs = common::jobs(tcp_check(250));
    let results = client
        .run(move || async move {
            let engine = Arc::new(Engine::new(EngineConfig {
                max_lag: Duration::from_secs(1),
                ..EngineConfig::default()
            }));
            let mut out = Vec::with_capacity(N);
            for _batch in 0..N / 100 {
                let mut set = tokio::task::JoinSet::new();
                for _ in 0..100 {
                    let (engine, job) = (engine.clone(), jobs[0].clone());
                    set.spawn(async move { engine.probe_once(&job).await });
                }
                while let Some(r) = set.join_next().await {
                    out.push(r.unwrap());
                }
            }
            out
        })
        .await
        .unwrap();
    assert_eq!(results.len(), N);
    let lost = results.iter().filter(|r| r.outcome == Outcome::Bad).count();
    assert!(
        results
            .iter()
            .filter(|r| r.outcome == Outcome::Bad)
            .all(|r| r.reason == Some(R::TcpTimeout))
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| r.outcome == Outcome::Invalid)
            .count(),
        0
    );
    // Binomial(N, P): a 5-sigma band fails by chance with probability < 1e-6.
    let measured = lost as f64 / N as f64;
    let sigma = (P * (1.0 - P) / N as f64).sqrt();
    assert!(
        (measured - P).abs() <= 5.0 * sigma,
        "measured loss {measured:.3}, injected {P} ± {:.3}",
        5.0 * sigma
    );
}

#[tokio::test]
async fn delaying_server_and_https_across_namespaces() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let slow = tcp_listener(server, &format!("{SERVER}:8081"));
    let _slow = tokio::spawn(serve(
        slow,
        None,
        Reply::ok().delayed(Duration::from_millis(200)),
    ));
    let r = probe_one_in(
        client,
        json!({"name": "slow", "probe": {"http": {}},
        "targets": [{"address": format!("http://{SERVER}:8081/")}]}),
    )
    .await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    assert!(r.latency_us >= 200_000 && r.latency_us < 350_000, "{r:?}");

    let pki = test_pki(&["server.test", SERVER]);
    let wrong = test_pki(&["server.test", SERVER]);
    let tls = tcp_listener(server, &format!("{SERVER}:8443"));
    let _tls = tokio::spawn(serve(tls, Some(pki.server.clone()), Reply::ok()));
    let check = |ca: &str, name: &str| {
        json!({"name": "tls", "probe": {"http": {"caBundle": ca, "serverName": name, "bodyContains": "ok"}},
            "targets": [{"address": format!("https://{SERVER}:8443/")}]})
    };
    let r = probe_one_in(client, check(&pki.ca_pem, "server.test")).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    let p = r.phases;
    assert!(p.connect_us.is_some() && p.tls_us.is_some() && p.ttfb_us.is_some());
    let r = probe_one_in(client, check(&wrong.ca_pem, "server.test")).await;
    assert_eq!(
        (r.reason, r.layer),
        (Some(R::TlsCertificate), Some(Layer::Tls)),
        "{r:?}"
    );
    let r = probe_one_in(client, check(&pki.ca_pem, "other.test")).await;
    assert_eq!(r.reason, Some(R::TlsCertificate), "{r:?}");
}

#[tokio::test]
async fn dns_nxdomain_servfail_and_silence() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let dns = DnsServer::new(DnsMode::Answer("10.77.0.2".parse().unwrap()));
    let _dns = tokio::spawn(
        dns.clone()
            .serve(udp_socket(server, &format!("{SERVER}:53"))),
    );
    let check = json!({"name": "dns", "timeoutMs": 400,
        "probe": {"dns": {"server": SERVER, "expectedAnswers": ["10.77.0.2"]}},
        "targets": [{"address": "web.default.svc.cluster.local"}]});
    let r = probe_one_in(client, check.clone()).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    dns.set(DnsMode::Answer("10.77.0.9".parse().unwrap()));
    assert_eq!(
        probe_one_in(client, check.clone()).await.reason,
        Some(R::DnsWrongAnswer)
    );
    for (mode, want) in [
        (DnsMode::NxDomain, R::DnsNxDomain),
        (DnsMode::ServFail, R::DnsServFail),
        (DnsMode::Silent, R::DnsTimeout),
    ] {
        dns.set(mode);
        let r = probe_one_in(client, check.clone()).await;
        assert_eq!(
            (r.outcome, r.reason, r.layer),
            (Outcome::Bad, Some(want), Some(Layer::Dns)),
            "{mode:?}: {r:?}"
        );
    }
    // A firewall dropping DNS looks like silence.
    dns.set(DnsMode::Answer("10.77.0.2".parse().unwrap()));
    let _rule = server
        .iptables("INPUT", &["-p", "udp", "--dport", "53", "-j", "DROP"])
        .unwrap();
    assert_eq!(
        probe_one_in(client, check).await.reason,
        Some(R::DnsTimeout)
    );
}

#[tokio::test]
async fn expected_deny_becomes_reachable() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let _echo = echo_in(server, SERVER);
    let deny = json!({"name": "deny", "expect": "Deny", "blockedBy": ["Timeout"], "timeoutMs": 300,
        "probe": {"tcp": {}}, "targets": [{"address": format!("{SERVER}:7000")}]});
    let deny_http = json!({"name": "deny-http", "expect": "Deny", "timeoutMs": 300,
        "probe": {"http": {}}, "targets": [{"address": format!("http://{SERVER}:8080/")}]});
    let rule = server
        .iptables("INPUT", &["-p", "tcp", "-j", "DROP"])
        .unwrap();
    let r = probe_one_in(client, deny.clone()).await;
    assert_eq!(
        (r.outcome, r.blocked_by, r.reason),
        (Outcome::Good, Some(R::TcpTimeout), None),
        "{r:?}"
    );
    assert_eq!(
        probe_one_in(client, deny_http.clone()).await.outcome,
        Outcome::Good
    );
    rule.remove().unwrap();
    // Blocked, but by a reset rather than the expected drop: not the policy we expect.
    let rule = server
        .iptables(
            "INPUT",
            &["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"],
        )
        .unwrap();
    let r = probe_one_in(client, deny.clone()).await;
    assert_eq!(
        (r.outcome, r.reason),
        (Outcome::Bad, Some(R::TcpRefused)),
        "{r:?}"
    );
    rule.remove().unwrap();
    // The hole opens.
    for check in [deny, deny_http] {
        let r = probe_one_in(client, check).await;
        assert_eq!(
            (r.outcome, r.reason, r.layer),
            (
                Outcome::Bad,
                Some(R::UnexpectedlyReachable),
                Some(Layer::Policy)
            ),
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn udp_echo_between_agents() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let _echo = echo_in(server, SERVER);
    let check = json!({"name": "udp", "timeoutMs": 300, "probe": {"udp": {}}, "targets": [{"address": format!("{SERVER}:7000")}]});
    let r = probe_one_in(client, check.clone()).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    let rule = server
        .iptables("INPUT", &["-p", "udp", "--dport", "7000", "-j", "DROP"])
        .unwrap();
    assert_eq!(
        probe_one_in(client, check.clone()).await.reason,
        Some(R::UdpTimeout)
    );
    rule.remove().unwrap();
    let _rule = server
        .iptables(
            "INPUT",
            &[
                "-p",
                "udp",
                "--dport",
                "7000",
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-port-unreachable",
            ],
        )
        .unwrap();
    let r = probe_one_in(client, check).await;
    assert_eq!(
        (r.reason, r.layer),
        (Some(R::UdpRefused), Some(Layer::Udp)),
        "{r:?}"
    );
}

#[tokio::test]
async fn icmp_echo_and_unavailable_ping_sockets() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let check = json!({"name": "icmp", "timeoutMs": 300, "probe": {"icmp": {}}, "targets": [{"address": SERVER}]});
    // A new namespace starts with ping_group_range "1 0": nobody may open ping sockets.
    client.set_ping_group_range(1, 0).unwrap();
    let r = probe_one_in(client, check.clone()).await;
    assert_eq!(
        (r.outcome, r.reason, r.layer),
        (
            Outcome::Invalid,
            Some(R::IcmpUnavailable),
            Some(Layer::Prober)
        ),
        "{r:?}"
    );
    client.set_ping_group_range(0, 2_147_483_647).unwrap();
    let r = probe_one_in(client, check.clone()).await;
    assert_eq!(r.outcome, Outcome::Good, "{r:?}");
    assert!(r.latency_us > 0);
    let _rule = server
        .iptables("INPUT", &["-p", "icmp", "-j", "DROP"])
        .unwrap();
    let r = probe_one_in(client, check).await;
    assert_eq!(
        (r.outcome, r.reason, r.layer),
        (Outcome::Bad, Some(R::IcmpTimeout), Some(Layer::Icmp)),
        "{r:?}"
    );
}

#[tokio::test]
async fn engine_in_a_namespace_aggregates_per_target() {
    let topo = topology();
    let (client, server) = (&topo.hosts[0].ns, &topo.hosts[1].ns);
    let _echo = echo_in(server, SERVER);
    let _rule = server
        .iptables("INPUT", &["-p", "tcp", "--dport", "8080", "-j", "DROP"])
        .unwrap();
    let doc = json!({"checks": [{"name": "ns/mesh", "intervalMs": 200, "timeoutMs": 150,
        "latencyThresholdsUs": [50000], "probe": {"tcp": {}},
        "targets": [{"name": "open", "address": format!("{SERVER}:7000")},
                    {"name": "dropped", "address": format!("{SERVER}:8080")}]}]});
    let buckets = client
        .run(move || async move {
            let a =
                netslo_protocol::spec::Assignment::from_json(doc.to_string().as_bytes()).unwrap();
            let jobs = netslo_agent::engine::compile(&a, "node-0").unwrap();
            let cfg = EngineConfig {
                window: Duration::from_secs(1),
                max_lag: Duration::from_millis(50),
                ..EngineConfig::default()
            };
            let engine = Engine::new(cfg);
            let (_tx, rx) = tokio::sync::watch::channel(jobs);
            engine
                .run(rx, tokio::time::sleep(Duration::from_millis(2_100)))
                .await;
            engine.with_aggregator(|a| a.drain())
        })
        .await
        .unwrap();
    let sum = |t: &str, f: fn(&netslo_protocol::bucket::BucketReport) -> u64| -> u64 {
        buckets.iter().filter(|b| &*b.target == t).map(f).sum()
    };
    let open_total = sum("open", |b| b.bucket.total);
    assert!(
        (9..=11).contains(&open_total),
        "open probed {open_total} times"
    );
    assert_eq!(sum("open", |b| b.bucket.good), open_total);
    assert_eq!(sum("open", |b| b.bucket.good_within[0]), open_total);
    assert_eq!(
        sum("dropped", |b| b.bucket.bad),
        sum("dropped", |b| b.bucket.total)
    );
    let first = buckets
        .iter()
        .find_map(|b| b.bucket.first_failure.clone())
        .unwrap();
    assert_eq!((first.reason, first.layer), (R::TcpTimeout, Layer::Tcp));
    assert!(
        buckets
            .iter()
            .filter(|b| &*b.target == "open")
            .any(|b| b.p50_us.is_some())
    );
}

/// Traces from the path's source to its destination with short waits.
async fn trace_in(path: &RoutedPath) -> PathTrace {
    let destination = path.destination.ip.into();
    let settings = TraceSettings {
        hop_timeout: Duration::from_millis(500),
        ..TraceSettings::default()
    };
    path.source
        .ns
        .run(move || trace::trace(destination, None, settings))
        .await
        .expect("ran in namespace")
        .expect("traced")
}

fn answered(trace: &PathTrace) -> Vec<(u8, Option<IpAddr>, Option<HopAnswer>)> {
    trace
        .hops
        .iter()
        .map(|h| (h.ttl, h.address, h.answer))
        .collect()
}

#[tokio::test]
async fn path_trace_names_the_last_hop_that_answered() {
    testbed::require();
    let path = RoutedPath::new(2).expect("routed path");
    let [r1, r2] = [path.routers[0].ip, path.routers[1].ip].map(IpAddr::from);
    let destination = IpAddr::from(path.destination.ip);

    // Open: each router's TTL runs out in turn, then the destination answers.
    let open = trace_in(&path).await;
    assert_eq!(open.end, TraceEnd::Reached, "{open:?}");
    assert_eq!(
        answered(&open),
        [
            (1, Some(r1), Some(HopAnswer::TimeExceeded)),
            (2, Some(r2), Some(HopAnswer::TimeExceeded)),
            (3, Some(destination), Some(HopAnswer::Reached)),
        ]
    );
    assert!(open.hops.iter().all(|h| h.rtt_us.is_some()));

    // The second router drops what it forwards to the destination: its own TTL answer still
    // comes (it expires before forwarding), then silence.
    let dropping = path.routers[1]
        .ns
        .iptables(
            "FORWARD",
            &["-d", &path.destination.ip.to_string(), "-j", "DROP"],
        )
        .unwrap();
    let dropped = trace_in(&path).await;
    assert_eq!(dropped.end, TraceEnd::Silent, "{dropped:?}");
    let last = dropped.last_answered().unwrap();
    assert_eq!((last.ttl, last.address), (2, Some(r2)));
    assert!(dropped.hops[2..].iter().all(|h| h.answer.is_none()));
    assert_eq!(dropped.hops.len(), 2 + 3, "stops after three silent hops");
    drop(dropping);

    // A firewall that rejects names itself.
    let _reject = path.routers[1]
        .ns
        .iptables(
            "FORWARD",
            &[
                "-d",
                &path.destination.ip.to_string(),
                "-j",
                "REJECT",
                "--reject-with",
                "icmp-admin-prohibited",
            ],
        )
        .unwrap();
    let refused = trace_in(&path).await;
    assert_eq!(refused.end, TraceEnd::Refused, "{refused:?}");
    let last = refused.last_answered().unwrap();
    assert_eq!(
        (last.ttl, last.address, last.answer),
        (3, Some(r2), Some(HopAnswer::Prohibited))
    );

    drop(_reject);
    // iptables' default REJECT answers Port Unreachable: from a router, that is a firewall's
    // refusal, not the destination reached.
    let port_reject = path.routers[1]
        .ns
        .iptables(
            "FORWARD",
            &["-d", &path.destination.ip.to_string(), "-j", "REJECT"],
        )
        .unwrap();
    let rejected = trace_in(&path).await;
    assert_eq!(rejected.end, TraceEnd::Refused, "{rejected:?}");
    assert_eq!(rejected.last_answered().unwrap().address, Some(r2));
    drop(port_reject);

    // A TCP probe that times out behind the dropping router traces to its own destination.
    let _drop_again = path.routers[1]
        .ns
        .iptables(
            "FORWARD",
            &["-d", &path.destination.ip.to_string(), "-j", "DROP"],
        )
        .unwrap();
    let check = json!({"name": "tcp", "timeoutMs": 300, "probe": {"tcp": {}},
        "targets": [{"address": format!("{destination}:7000")}]});
    let traced = path
        .source
        .ns
        .run(move || common::probe_and_trace(check))
        .await
        .unwrap();
    assert_eq!(traced.0.reason, Some(R::TcpTimeout));
    let trace = traced.1.expect("a timed-out TCP probe is traced").unwrap();
    assert_eq!(trace.destination, destination);
    assert_eq!(trace.last_answered().unwrap().address, Some(r2));
}

#[tokio::test]
async fn once_with_trace_prints_where_a_failed_probe_was_last_seen() {
    testbed::require();
    let path = RoutedPath::new(2).expect("routed path");
    let destination = path.destination.ip.to_string();
    let _dropping = path.routers[1]
        .ns
        .iptables("FORWARD", &["-d", &destination, "-j", "DROP"])
        .unwrap();
    let mut config = tempfile::NamedTempFile::new().unwrap();
    let assignment = json!({"source": "node-a", "checks": [{"name": "payments", "timeoutMs": 300,
        "probe": {"tcp": {}}, "targets": [{"name": "api", "address": format!("{destination}:8443")}]}]});
    std::io::Write::write_all(&mut config, assignment.to_string().as_bytes()).unwrap();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", path.source.ns.name()])
        .arg(env!("CARGO_BIN_EXE_netslo-agent"))
        .args(["once", "--trace", "--config"])
        .arg(config.path())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["reason"], "TCPTimeout");
    assert_eq!(lines[1]["target"], "api");
    let r2 = path.routers[1].ip.to_string();
    assert_eq!(
        lines[1]["summary"],
        format!("silent after hop 2 ({r2}): a hop past it drops the traffic to {destination}")
    );
    assert_eq!(lines[1]["trace"]["end"], "Silent");
}
