//! A running `netslo-operator` survives a restart of the API server: its watches come back
//! (a check created afterwards, and a spec change to one created before, get their status
//! written) and the process never exits.
//!
//! A test binary of its own with a control plane of its own: restarting the shared plane would
//! pull the API server from under every other test in the same binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::operator_common::{Process, eventually_every, free_port, http_status};
use kube::api::{Api, Patch, PatchParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, ControlPlane, StartOptions, TestNamespace};
use netslo_tests::workspace_binary;
use serde_json::json;

/// How often waits poll: handovers are timed to within a poll.
const POLL: Duration = Duration::from_millis(250);

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
    eventually_every(
        "status of the first check",
        Duration::from_secs(90),
        POLL,
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
    eventually_every(
        "status of a check created after the restart",
        Duration::from_secs(120),
        POLL,
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
    let generation = eventually_every(
        "status of a spec changed after the restart",
        Duration::from_secs(120),
        POLL,
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
