//! Measurement overhead: the agent's TCP connect p50 on loopback minus a bare connect loop's
//! p50, measured in the same run against the same listener (goal: at most 15 µs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netslo_agent::engine::{Engine, EngineConfig, compile};
use netslo_protocol::spec::Assignment;
use socket2::{Domain, Socket, Type};
use support::{echo_responder, free_port, line, percentile};

const ROUNDS: usize = 10;
const PER_ROUND: usize = 1_000;

/// One blocking connect, timed from `connect()` to established, closed with RST like the agent.
fn bare_connect(addr: SocketAddr) -> u64 {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let t = Instant::now();
    s.connect(&addr.into()).unwrap();
    let us = t.elapsed().as_nanos() as u64 / 1_000;
    s.set_linger(Some(Duration::ZERO)).unwrap();
    us
}

fn main() {
    let (port, http) = (free_port(), free_port());
    let _responder = echo_responder(port, http);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let doc = format!(
        r#"{{"checks":[{{"name":"b","timeoutMs":1000,"probe":{{"tcp":{{}}}},"targets":[{{"address":"{addr}"}}],"addressPolicy":{{"allowLoopback":true}}}}]}}"#
    );
    let jobs = compile(&Assignment::from_json(doc.as_bytes()).unwrap(), "bench").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = Engine::new(EngineConfig {
        max_lag: Duration::from_secs(1),
        ..EngineConfig::default()
    });

    let (mut bare, mut agent) = (Vec::new(), Vec::new());
    let mut not_good = 0u32;
    // Warm up, then alternate blocks so drift hits both sides alike.
    for _ in 0..200 {
        bare_connect(addr);
    }
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            bare.push(bare_connect(addr));
        }
        rt.block_on(async {
            for _ in 0..PER_ROUND {
                let r = engine.probe_once(&jobs[0]).await;
                if r.outcome == netslo_protocol::verdict::Outcome::Good {
                    agent.push(r.latency_us);
                } else {
                    not_good += 1;
                }
            }
        });
    }
    bare.sort_unstable();
    agent.sort_unstable();
    let (b50, a50) = (percentile(&bare, 0.5), percentile(&agent, 0.5));
    line("tcp_connect_p50_bare_loop", b50 as f64, "us");
    line("tcp_connect_p50_agent", a50 as f64, "us");
    line(
        "tcp_connect_p99_bare_loop",
        percentile(&bare, 0.99) as f64,
        "us",
    );
    line(
        "tcp_connect_p99_agent",
        percentile(&agent, 0.99) as f64,
        "us",
    );
    line(
        "agent_probes_not_good",
        f64::from(not_good),
        "probes (excluded)",
    );
    line(
        "measurement_overhead_p50",
        a50 as f64 - b50 as f64,
        "us (goal <= 15)",
    );
}
