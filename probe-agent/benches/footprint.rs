//! Footprint: resident memory and CPU of the real `netslo-agent` binary probing 1,000 loopback
//! targets every 10 s (goal: at most 16 MiB), against the same binary serving only the echo
//! responder (the idle reference) in the same run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{
    ChildGuard, cpu_seconds, echo_responder, free_port, line, loopback_assignment, rss_kib,
};

const TARGETS: usize = 1_000;
const WARMUP: Duration = Duration::from_secs(12);
const MEASURE: Duration = Duration::from_secs(30);

fn main() {
    let (port, http) = (free_port(), free_port());
    let responder = echo_responder(port, http);
    let cfg = loopback_assignment(port, TARGETS);
    let agent = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_netslo-agent"))
            .args([
                "run",
                "--config",
                cfg.path().to_str().unwrap(),
                "--output",
                "summary",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = agent.0.id().to_string();
    std::thread::sleep(WARMUP);
    let cpu0 = cpu_seconds(&pid);
    let t0 = Instant::now();
    let mut max_rss = 0;
    while t0.elapsed() < MEASURE {
        max_rss = max_rss.max(rss_kib(&pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let cpu = (cpu_seconds(&pid) - cpu0) / t0.elapsed().as_secs_f64();
    let idle_rss = rss_kib(&responder.0.id().to_string());
    line(
        "agent_rss_1000_targets_10s",
        max_rss as f64 / 1024.0,
        "MiB (max over 30 s; goal <= 16)",
    );
    line(
        "reference_idle_agent_rss",
        idle_rss as f64 / 1024.0,
        "MiB (echo responder only)",
    );
    line(
        "agent_cpu_1000_targets_10s",
        cpu * 1000.0,
        "millicores (100 probes/s)",
    );
    line(
        "agent_cpu_per_probe",
        cpu * 1e6 / (TARGETS as f64 / 10.0),
        "us",
    );
}
