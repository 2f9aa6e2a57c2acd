//! A running `netslo-operator` survives a restart of the API server: its watches come back
//! (a check created afterwards, and a spec change to one created before, get their status
//! written) and the process never exits.
//!
//! A test binary of its own with a control plane of its own: restarting the shared plane would
//! pull the API server from under every other test in the same binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, ControlPlane, StartOptions, TestNamespace};
use netslo_tests::workspace_binary;
use serde_json::json;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

/// Kills a child process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn check(name: &str, interval: &str) -> ConnectivityCheck {
    serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": name},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [{"name": "target", "external": {"host": "127.0.0.1", "port": 9}, "protocol": "TCP"}],
            "schedule": {"interval": interval, "timeout": "500ms"},
        },
    }))
    .unwrap()
}

/// The status describes the check's current spec.
async fn status_current(checks: &Api<ConnectivityCheck>, name: &str) -> Option<i64> {
    let check = checks.get(name).await.ok()?;
    let generation = check.metadata.generation?;
    (check.status?.observed_generation? == generation).then_some(generation)
}

#[tokio::test]
async fn operator_keeps_working_across_an_apiserver_restart() {
    let mut plane = ControlPlane::start(StartOptions::default()).expect("control plane");
    control_plane::install_crds(&plane).unwrap();
    let system = TestNamespace::create(&plane, "netslo-system")
        .await
        .unwrap();
    let shop = TestNamespace::create(&plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();

    let admin = format!("127.0.0.1:{}", free_port());
    let mut operator = Process(
        Command::new(workspace_binary("netslo-operator").unwrap())
            .env("KUBECONFIG", plane.kubeconfig())
            .env("RUST_LOG", "info")
            .args(["--namespace", &system.name, "--admin-addr", &admin])
            .args(["--channel-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );

    let client = plane.client().await.unwrap();
    let checks: Api<ConnectivityCheck> = Api::namespaced(client, &shop.name);
    checks
        .create(&PostParams::default(), &check("before", "1s"))
        .await
        .unwrap();
    eventually(
        "status of the first check",
        Duration::from_secs(90),
        logs,
        async || status_current(&checks, "before").await,
    )
    .await;

    let restart = Instant::now();
    plane.restart_apiserver().unwrap();
    println!("API server restarted in {:?}", restart.elapsed());
    assert!(
        operator.0.try_wait().unwrap().is_none(),
        "the operator exited when the API server went away\n{}",
        logs()
    );

    // A fresh client: the test's own connections died with the old API server process.
    let client = plane.client().await.unwrap();
    let checks: Api<ConnectivityCheck> = Api::namespaced(client, &shop.name);
    checks
        .create(&PostParams::default(), &check("after", "1s"))
        .await
        .unwrap();
    checks
        .patch(
            "before",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": {"interval": "2s"}}})),
        )
        .await
        .unwrap();
    let recovered = Instant::now();
    eventually(
        "status of a check created after the restart",
        Duration::from_secs(120),
        logs,
        async || status_current(&checks, "after").await,
    )
    .await;
    println!(
        "new check's status {:?} after the restart",
        recovered.elapsed()
    );
    // Status writes are paced (at most one per check every 30 s), so this one may wait for
    // the pacer after the first check's earlier write; the deadline allows for it.
    let generation = eventually(
        "status of a spec changed after the restart",
        Duration::from_secs(120),
        logs,
        async || status_current(&checks, "before").await.filter(|g| *g >= 2),
    )
    .await;
    assert_eq!(generation, 2);
    println!(
        "changed spec's status {:?} after the restart",
        recovered.elapsed()
    );

    assert!(
        operator.0.try_wait().unwrap().is_none(),
        "the operator exited\n{}",
        logs()
    );
    assert_eq!(http_status(&admin, "/readyz"), Some(200), "{}", logs());
}
