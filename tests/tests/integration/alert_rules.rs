//! The alerting rules shipped in `config/alerting/` load in Prometheus's own rule checker
//! (`promtool`, built from the Go module proxy by `tests/otel/build.sh`), and their unit tests
//! pass: a healthy check alerts on nothing, a fast burn pages, a slow burn opens a ticket,
//! recovery ends both. That the metric and label names they use are what netslo exports is
//! asserted by `otel_export.rs` against a real collector.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn promtool() -> PathBuf {
    let root = netslo_tests::control_plane::repo_root();
    let build = Command::new("bash")
        .arg(root.join("tests/otel/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/otel/build.sh runs");
    assert!(build.status.success(), "tests/otel/build.sh failed");
    let bin_dir = String::from_utf8(build.stdout).unwrap();
    Path::new(bin_dir.lines().last().unwrap().trim()).join("promtool")
}

fn run(promtool: &Path, args: &[&str]) {
    let root = netslo_tests::control_plane::repo_root();
    let out = Command::new(promtool)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_load_and_their_unit_tests_pass() {
    let promtool = promtool();
    run(
        &promtool,
        &["check", "rules", "config/alerting/netslo-rules.yaml"],
    );
    run(
        &promtool,
        &["test", "rules", "config/alerting/netslo-rules.test.yaml"],
    );
}
