//! What OpenTelemetry export costs the agent: two real `netslo-agent` processes probe the same
//! 1,000 loopback targets every 10 s side by side, one with export off (the reference) and one
//! exporting metrics over OTLP/HTTP every 5 s (12× the SDK's default rate) to a sink that
//! accepts every request, with a series per target (1,000 counters and histograms). Printed:
//! CPU and peak resident memory of both, and the differences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::{
    ChildGuard, cpu_seconds, echo_responder, free_port, line, loopback_assignment, rss_kib,
};

const TARGETS: usize = 1_000;
const WARMUP: Duration = Duration::from_secs(12);
const MEASURE: Duration = Duration::from_secs(30);

/// An OTLP/HTTP sink: answers every request 200 and counts them.
fn sink() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut length = 0usize;
                    let mut header = String::new();
                    loop {
                        header.clear();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = header.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    counted.fetch_add(1, Ordering::Relaxed);
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if conn.write_all(ok).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, requests)
}

fn agent(config: &std::path::Path, export_to: Option<u16>) -> ChildGuard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_netslo-agent"));
    cmd.args([
        "run",
        "--config",
        config.to_str().unwrap(),
        "--output",
        "none",
    ])
    .env("RUST_LOG", "warn")
    .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
    .stdout(Stdio::null());
    if let Some(port) = export_to {
        cmd.env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "5000");
    }
    ChildGuard(cmd.spawn().unwrap())
}

fn main() {
    let (port, http) = (free_port(), free_port());
    let _responder = echo_responder(port, http);
    let cfg = loopback_assignment(port, TARGETS);
    let (sink_port, exports) = sink();
    let off = agent(cfg.path(), None);
    let on = agent(cfg.path(), Some(sink_port));
    let (off_pid, on_pid) = (off.0.id().to_string(), on.0.id().to_string());
    std::thread::sleep(WARMUP);
    let (off_cpu0, on_cpu0) = (cpu_seconds(&off_pid), cpu_seconds(&on_pid));
    let exports0 = exports.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let (mut off_rss, mut on_rss) = (0, 0);
    while t0.elapsed() < MEASURE {
        off_rss = off_rss.max(rss_kib(&off_pid));
        on_rss = on_rss.max(rss_kib(&on_pid));
        std::thread::sleep(Duration::from_millis(500));
    }
    let secs = t0.elapsed().as_secs_f64();
    let off_cpu = (cpu_seconds(&off_pid) - off_cpu0) / secs * 1000.0;
    let on_cpu = (cpu_seconds(&on_pid) - on_cpu0) / secs * 1000.0;
    let sent = exports.load(Ordering::Relaxed) - exports0;
    assert!(sent > 0, "the exporting agent sent nothing");
    line(
        "agent_cpu_export_off",
        off_cpu,
        "millicores (reference, same run)",
    );
    line(
        "agent_cpu_export_on",
        on_cpu,
        "millicores (OTLP/HTTP every 5 s, 1,000 series)",
    );
    line("agent_cpu_export_extra", on_cpu - off_cpu, "millicores");
    line(
        "agent_rss_export_off",
        off_rss as f64 / 1024.0,
        "MiB (reference, same run)",
    );
    line("agent_rss_export_on", on_rss as f64 / 1024.0, "MiB");
    line(
        "agent_rss_export_extra",
        (on_rss as f64 - off_rss as f64) / 1024.0,
        "MiB",
    );
    line("otlp_exports_received", sent as f64, "requests in 30 s");
}
