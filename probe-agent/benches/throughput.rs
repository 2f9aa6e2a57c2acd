//! Throughput: TCP connect and HTTP probes per CPU-second of the prober (the responder runs in
//! another process), each against a bare loop doing the same network work in the same run.
//! Reference figure: blackbox_exporter does about 1,000 probes per core.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netslo_agent::engine::{Engine, EngineConfig, compile};
use netslo_protocol::spec::Assignment;
use netslo_protocol::verdict::Outcome;
use support::{cpu_seconds, echo_responder, free_port, line};

const WALL: Duration = Duration::from_secs(6);
const CONCURRENCY: usize = 32;

/// Runs the agent's probe of `doc`'s only target for `WALL`, `CONCURRENCY` at a time on one
/// thread; returns good probes per CPU-second.
fn agent_rate(doc: &str) -> f64 {
    let jobs = compile(&Assignment::from_json(doc.as_bytes()).unwrap(), "bench").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Arc::new(Engine::new(EngineConfig {
        max_lag: Duration::from_secs(1),
        ..EngineConfig::default()
    }));
    let cpu0 = cpu_seconds("self");
    let n: usize = rt.block_on(async {
        let end = Instant::now() + WALL;
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..CONCURRENCY {
            let (engine, job) = (engine.clone(), jobs[0].clone());
            set.spawn(async move {
                let mut good = 0;
                while Instant::now() < end {
                    if engine.probe_once(&job).await.outcome == Outcome::Good {
                        good += 1;
                    }
                }
                good
            });
        }
        let mut total = 0;
        while let Some(n) = set.join_next().await {
            total += n.unwrap();
        }
        total
    });
    n as f64 / (cpu_seconds("self") - cpu0)
}

/// A bare blocking loop for `WALL`; returns iterations per CPU-second.
fn bare_rate(mut f: impl FnMut()) -> f64 {
    let cpu0 = cpu_seconds("self");
    let end = Instant::now() + WALL;
    let mut n = 0u64;
    while Instant::now() < end {
        f();
        n += 1;
    }
    n as f64 / (cpu_seconds("self") - cpu0)
}

fn main() {
    let (port, http) = (free_port(), free_port());
    let _responder = echo_responder(port, http);
    let tcp: SocketAddr = ([127, 0, 0, 1], port).into();
    let web: SocketAddr = ([127, 0, 0, 1], http).into();

    let bare_tcp = bare_rate(|| {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.connect(&tcp.into()).unwrap();
        let _ = s.set_linger(Some(Duration::ZERO));
    });
    let agent_tcp = agent_rate(&format!(
        r#"{{"checks":[{{"name":"t","probe":{{"tcp":{{}}}},"targets":[{{"address":"{tcp}"}}],"addressPolicy":{{"allowLoopback":true}}}}]}}"#
    ));
    line(
        "tcp_probes_per_cpu_second_agent",
        agent_tcp,
        "probes/cpu-s (goal >= 10000; blackbox_exporter ~1000)",
    );
    line(
        "tcp_connects_per_cpu_second_bare_loop",
        bare_tcp,
        "connects/cpu-s",
    );
    line("tcp_agent_vs_bare_loop", 100.0 * agent_tcp / bare_tcp, "%");

    let bare_http = bare_rate(|| {
        let mut s = TcpStream::connect(web).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 1024];
        while s.read(&mut buf).map(|n| n > 0).unwrap_or(false) {}
    });
    let agent_http = agent_rate(&format!(
        r#"{{"checks":[{{"name":"h","probe":{{"http":{{"bodyContains":"ok"}}}},"targets":[{{"address":"http://{web}/"}}],"addressPolicy":{{"allowLoopback":true}}}}]}}"#
    ));
    line(
        "http_probes_per_cpu_second_agent",
        agent_http,
        "probes/cpu-s",
    );
    line(
        "http_requests_per_cpu_second_bare_loop",
        bare_http,
        "requests/cpu-s",
    );
    line(
        "http_agent_vs_bare_loop",
        100.0 * agent_http / bare_http,
        "%",
    );
}
