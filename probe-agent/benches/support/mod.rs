//! Shared helpers of the benchmarks: process CPU and memory from /proc, percentiles, and the
//! agent binary as a child process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ is 100 on Linux).
const TICKS: f64 = 100.0;

/// User + system CPU seconds of a process (`self` or a pid).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f[11].parse().unwrap();
    let stime: f64 = f[12].parse().unwrap();
    (utime + stime) / TICKS
}

/// Resident set size in KiB.
pub fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (by its pid) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `netslo-agent echo` on the given ports and waits until it accepts.
pub fn echo_responder(port: u16, http_port: u16) -> ChildGuard {
    let child = Command::new(env!("CARGO_BIN_EXE_netslo-agent"))
        .args(["echo", "--echo-listen", &format!("127.0.0.1:{port}")])
        .args(["--echo-http-listen", &format!("127.0.0.1:{http_port}")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("netslo-agent runs");
    let guard = ChildGuard(child);
    wait_for(port);
    wait_for(http_port);
    guard
}

pub fn wait_for(port: u16) {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing listens on {port}");
}

pub fn line(name: &str, value: f64, unit: &str) {
    println!("{name}: {value:.1} {unit}");
}

/// An assignment file: `targets` TCP targets, all the echo responder on loopback `port`
/// (opened by the check's address policy), probed every 10 s.
pub fn loopback_assignment(port: u16, targets: usize) -> tempfile::NamedTempFile {
    use std::io::Write;
    let targets: Vec<String> = (0..targets)
        .map(|i| format!(r#"{{"name":"t{i}","address":"127.0.0.1:{port}"}}"#))
        .collect();
    let doc = format!(
        r#"{{"checks":[{{"name":"bench/mesh","intervalMs":10000,"timeoutMs":1000,"latencyThresholdsUs":[1000,10000,100000],"probe":{{"tcp":{{}}}},"targets":[{}],"addressPolicy":{{"allowLoopback":true}}}}]}}"#,
        targets.join(",")
    );
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(doc.as_bytes()).unwrap();
    file
}
