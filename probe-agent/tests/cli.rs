//! The `netslo-agent` binary: flags, clear errors on bad input, and real runs on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: failing loudly is the point.

use std::io::Write;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netslo-agent"))
        .args(args)
        .env_remove("NETSLO_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs")
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn help_lists_real_flags_with_env() {
    let out = agent(&["run", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--output",
        "--max-concurrency",
        "--max-lag-ms",
        "--echo-listen",
        "--echo-http-listen",
        "--node-name",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
    for env in [
        "NETSLO_CONFIG",
        "NETSLO_MAX_CONCURRENCY",
        "NETSLO_ECHO_LISTEN",
        "NODE_NAME",
    ] {
        assert!(help.contains(env), "{env} missing");
    }
    let top = String::from_utf8_lossy(&agent(&["--help"]).stdout).into_owned();
    for cmd in ["run", "once", "validate", "echo"] {
        assert!(top.contains(cmd));
    }
}

#[test]
fn bad_config_gives_a_clear_error() {
    let cases = [
        ("{\"checks\": [", "malformed assignment"),
        ("{\"checks\": [], \"extra\": true}", "unknown field"),
        (
            r#"{"checks":[{"name":"c","intervalMs":1,"probe":{"tcp":{}},"targets":[{"address":"127.0.0.1:1"}]}]}"#,
            "checks[0].intervalMs",
        ),
        (
            r#"{"checks":[{"name":"c","probe":{"http":{}},"targets":[{"address":"gopher://x/"}]}]}"#,
            "checks[0].targets[0].address",
        ),
        ("\u{0}\u{1}\u{2}", "malformed assignment"),
    ];
    for (text, want) in cases {
        let f = config(text);
        for cmd in ["validate", "once"] {
            let out = agent(&[cmd, "--config", f.path().to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(1), "{cmd} {text}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(want), "{cmd} {text}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = agent(&["validate", "--config", "/nonexistent/netslo.json"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read assignment"));
}

#[test]
fn once_prints_one_json_line_per_target_and_exits_3_when_one_fails() {
    let closed = free_port();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let assignment = |port: u16| {
        config(&format!(
            r#"{{"checks":[{{"name":"ns/c","timeoutMs":500,"probe":{{"tcp":{{}}}},"targets":[{{"address":"127.0.0.1:{port}"}}],"addressPolicy":{{"allowLoopback":true}}}}]}}"#
        ))
    };
    let once = |f: &tempfile::NamedTempFile| {
        agent(&[
            "--node-name",
            "n1",
            "once",
            "--config",
            f.path().to_str().unwrap(),
        ])
    };
    let good = once(&assignment(open_port));
    assert_eq!(
        good.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(line["outcome"], "Good");

    let out = once(&assignment(closed));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 1 probes did not meet"));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["outcome"], "Bad");
    assert_eq!(line["reason"], "TCPRefused");
    assert_eq!(line["layer"], "TCP");
    assert_eq!(line["source"], "n1");
}

#[test]
fn run_probes_its_own_echo_responder() {
    let port = free_port();
    let http = free_port();
    let f = config(&format!(
        r#"{{"checks":[
            {{"name":"tcp","intervalMs":200,"timeoutMs":200,"probe":{{"tcp":{{}}}},"targets":[{{"address":"127.0.0.1:{port}"}}],"addressPolicy":{{"allowLoopback":true}}}},
            {{"name":"udp","intervalMs":200,"timeoutMs":200,"probe":{{"udp":{{}}}},"targets":[{{"address":"127.0.0.1:{port}"}}],"addressPolicy":{{"allowLoopback":true}}}},
            {{"name":"http","intervalMs":200,"timeoutMs":200,"probe":{{"http":{{"bodyContains":"ok"}}}},"targets":[{{"address":"http://127.0.0.1:{http}/"}}],"addressPolicy":{{"allowLoopback":true}}}}]}}"#
    ));
    for (output, min_lines) in [("raw", 9), ("summary", 3)] {
        let out = agent(&[
            "run",
            "--config",
            f.path().to_str().unwrap(),
            "--output",
            output,
            "--duration-seconds",
            "2",
            "--window-seconds",
            "1",
            "--echo-listen",
            &format!("127.0.0.1:{port}"),
            "--echo-http-listen",
            &format!("127.0.0.1:{http}"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(lines.len() >= min_lines, "{output}: {text}");
        for l in &lines {
            if output == "raw" {
                // The very first probe may race the responder's start; later ones must be good.
                assert!(l["outcome"] == "Good" || l["outcome"] == "Invalid", "{l}");
            } else {
                assert_eq!(l["bad"], 0, "{l}");
            }
        }
    }
}
