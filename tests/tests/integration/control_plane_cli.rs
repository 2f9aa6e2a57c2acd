//! `netslo-control-plane up` starts a plane that outlives the command and serves kubectl;
//! `down` stops every process and removes its files.

use std::process::Command;

use netslo_tests::control_plane;

#[test]
fn up_serves_kubectl_and_down_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap().keep().join("plane");
    let cli = env!("CARGO_BIN_EXE_netslo-control-plane");
    let up = Command::new(cli)
        .arg("--dir")
        .arg(&dir)
        .arg("up")
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let stdout = String::from_utf8(up.stdout).unwrap();
    let kubeconfig = stdout.lines().last().unwrap().trim().to_string();
    assert!(kubeconfig.ends_with("admin.kubeconfig"), "{stdout}");

    let pids: Vec<u32> = std::fs::read_to_string(dir.join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );

    let kubectl = control_plane::binaries().unwrap().join("kubectl");
    let crds = Command::new(&kubectl)
        .env("KUBECONFIG", &kubeconfig)
        .args(["get", "crd", "connectivitychecks.netslo.io", "-o", "name"])
        .output()
        .unwrap();
    assert!(
        crds.status.success(),
        "{}",
        String::from_utf8_lossy(&crds.stderr)
    );

    let down = Command::new(cli)
        .arg("--dir")
        .arg(&dir)
        .arg("down")
        .output()
        .unwrap();
    assert!(
        down.status.success(),
        "down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    for pid in pids {
        // A killed child of a detached setsid is reaped by init; it may linger as a zombie for
        // a moment, never as a running process.
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let running = state
            .split_whitespace()
            .nth(2)
            .is_some_and(|s| s != "Z" && s != "X");
        assert!(!running, "process {pid} still runs after down: {state}");
    }
    assert!(!dir.exists(), "down left {} behind", dir.display());
}
