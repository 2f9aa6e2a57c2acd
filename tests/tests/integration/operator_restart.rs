//! The SLO window survives the operator: a real operator is killed (SIGKILL, no chance to flush)
//! while a real agent keeps probing, a new operator process starts, and in the end the stored
//! window holds exactly as many probes as the agent ran: none lost while the operator was away,
//! none counted twice when the agent resent what the dead operator never acknowledged, and the
//! window (its first result) carried over rather than reset. Deleting the check then removes
//! its stored window.

use std::process::Stdio;
use std::time::Duration;

use crate::operator_common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_operator::check_key::CheckKey;
use netslo_operator::persist::stored_windows;
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::json;

/// What the stored window says: probes counted in the last hour and the first result's time.
async fn stored_window(windows: &Api<ConfigMap>, check: &CheckKey) -> Option<(u64, i64)> {
    let stored = stored_windows(windows).await.ok()?.remove(check)?;
    let now = netslo_operator::slo::now_ms();
    Some((
        stored.history.window(now, 3_600_000).counts.total,
        stored.history.first_result_ms()?,
    ))
}

#[tokio::test]
async fn an_operator_restart_loses_no_results_and_keeps_the_window() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_files = ["operator.log", "agent.log"];

    // The target: a TCP server that accepts every connection.
    let target = AcceptingServer::start().await;
    let target_port = target.port;

    let ports = OperatorPorts::free();
    let operator_log = dir.path().join("operator.log");
    let fast_flush = ["--persist-interval-seconds", "1"];
    // The same operator, started again on the same ports and log after the first is killed.
    let operator = || {
        start_operator(
            plane,
            &system.name,
            Some(&shop.name),
            &ports,
            &operator_log,
            &fast_flush,
        )
    };
    let mut first_operator = operator();
    let ca = fetch_operator_ca(&client, &system.name, dir.path()).await;
    let token = external_agent_token(&client, &system.name, "office", dir.path()).await;

    // The target is on loopback, outside the cluster: the admins must grant it.
    grant_external(&client, &shop.name, &["127.0.0.0/8"]).await;
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &shop.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "office-to-target"},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [{"name": "target", "external": {"host": "127.0.0.1", "port": target_port}, "protocol": "TCP"}],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {"availability": {"target": "99"}},
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();

    // The agent prints one line per probe it runs: the ground truth to count against.
    let probes_file = dir.path().join("probes.jsonl");
    let mut agent = start_external_agent(
        "office",
        ports.channel,
        &ca,
        &token,
        "raw",
        Stdio::from(std::fs::File::create(&probes_file).unwrap()),
        &dir.path().join("agent.log"),
    );

    let windows: Api<ConfigMap> = Api::namespaced(client.clone(), &system.name);
    let stored_check = CheckKey::new(&shop.name, "office-to-target");
    let before = tokio::time::timeout(
        Duration::from_secs(120),
        eventually("results persisted", Duration::from_secs(120), async || {
            stored_window(&windows, &stored_check)
                .await
                .filter(|(total, _)| *total >= 5)
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("no results persisted\n{}", logs(dir.path(), &log_files)));

    // SIGKILL: whatever the operator held in memory and had not written is gone with it.
    first_operator.0.kill().unwrap();
    first_operator.0.wait().unwrap();
    // The agent keeps probing and buffers its results meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let old_ca = std::fs::read_to_string(&ca).unwrap();
    let _second_operator = operator();
    // The new process serves with a new certificate and publishes its CA; the agent re-reads
    // its CA file on every new connection, and in a pod the kubelet rewrites that file from the
    // ConfigMap. Here the test does what the kubelet would.
    eventually(
        "the new operator's CA",
        Duration::from_secs(60),
        async || {
            let ca_now = fetch_operator_ca(&client, &system.name, dir.path()).await;
            (std::fs::read_to_string(&ca_now).unwrap() != old_ca).then_some(())
        },
    )
    .await;

    // The new operator counts on from the stored window, including the buffered results.
    let after = tokio::time::timeout(
        Duration::from_secs(90),
        eventually(
            "the buffered results persisted by the new operator",
            Duration::from_secs(90),
            async || {
                stored_window(&windows, &stored_check)
                    .await
                    .filter(|(total, _)| *total >= before.0 + 6)
            },
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the new operator did not take over\n{}",
            logs(dir.path(), &log_files)
        )
    });
    assert_eq!(after.1, before.1, "the window carried over, not restarted");
    let reporting = eventually(
        "status from the new operator",
        Duration::from_secs(60),
        async || {
            let check = checks.get("office-to-target").await.ok()?;
            let agents = check.status?.agents?;
            (agents.reporting == 1).then_some(agents)
        },
    )
    .await;
    assert_eq!(reporting.desired, 1);

    // The agent stops and sends what it still holds; then every probe it ran is counted once.
    assert!(
        agent.terminate(Duration::from_secs(40)),
        "the agent did not stop"
    );
    let agent_log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        !agent_log.contains("unacknowledged"),
        "the agent stopped with results left\n{agent_log}"
    );
    let probes = std::fs::read_to_string(&probes_file)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    let settled = eventually("the last flush", Duration::from_secs(30), async || {
        stored_window(&windows, &stored_check)
            .await
            .filter(|(total, _)| *total >= probes)
    })
    .await;
    assert_eq!(
        settled.0,
        probes,
        "stored probes vs probes the agent ran\n{}",
        logs(dir.path(), &log_files)
    );

    // Deleting the check removes its stored window.
    checks
        .delete("office-to-target", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        eventually(
            "the stored window deleted with its check",
            Duration::from_secs(65),
            async || {
                let stored = stored_windows(&windows).await.ok()?;
                (!stored.contains_key(&stored_check)).then_some(())
            },
        ),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the stored window outlived its check\n{}",
            logs(dir.path(), &["operator.log"])
        )
    });
}
