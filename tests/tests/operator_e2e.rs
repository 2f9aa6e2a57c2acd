//! The whole data path on a real control plane: a ConnectivityCheck applied to the API server
//! becomes an assignment for a real `netslo-agent` (an external vantage point, authenticated
//! with a TokenRequest token through the operator's channel), whose results become SLO status
//! and Events written by a real `netslo-operator`. A fault (the target stops listening) flips
//! the check to not Ready with a verdict naming the layer and reason; recovery is measured too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace};
use netslo_tests::workspace_binary;
use serde_json::json;

/// Kills a child process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn condition(check: &ConnectivityCheck, type_: &str) -> Option<(String, String)> {
    let status = check.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

#[tokio::test]
async fn check_to_agent_to_status_and_back() {
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The target: a TCP server the test controls.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_port = target.local_addr().unwrap().port();
    target.set_nonblocking(true).unwrap();
    let target = tokio::net::TcpListener::from_std(target).unwrap();
    let serving = tokio::spawn(async move {
        loop {
            if let Ok((socket, _)) = target.accept().await {
                drop(socket);
            }
        }
    });

    // The operator, with its channel on loopback.
    let channel_port = free_port();
    let admin_port = free_port();
    let _operator = Process(
        Command::new(workspace_binary("netslo-operator").unwrap())
            .env("KUBECONFIG", plane.kubeconfig())
            .env("RUST_LOG", "info,netslo_operator=debug")
            .args([
                "--namespace",
                &system.name,
                "--pod-name",
                "netslo-operator-test",
            ])
            .args([
                "--channel-addr",
                &format!("127.0.0.1:{channel_port}"),
                "--channel-names",
                "127.0.0.1",
            ])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("operator.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // The operator publishes its channel's CA; the agent trusts it.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &system.name);
    let ca = eventually(
        "the operator's CA ConfigMap",
        Duration::from_secs(60),
        async || {
            config_maps
                .get_opt("netslo-operator-ca")
                .await
                .ok()??
                .data?
                .get("ca.crt")
                .cloned()
        },
    )
    .await;
    std::fs::write(dir.path().join("ca.crt"), ca).unwrap();

    // An external vantage point named "office": the service account of that name in the
    // operator's namespace, and a token for the netslo audience.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &system.name);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "office"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let request: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": ["netslo"], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let token = accounts
        .create_token_request("office", &PostParams::default(), &request)
        .await
        .unwrap();
    std::fs::write(dir.path().join("token"), token.status.unwrap().token).unwrap();

    // The check: probe the target every second from "office", 99% over 28 days, with a
    // short custom alert window so the window is not "too young" for long.
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &shop.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "office-to-target"},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [{"name": "target", "external": {"host": "127.0.0.1", "port": target_port}, "protocol": "TCP"}],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {
                "availability": {"target": "99"},
                "alerting": {"profile": "Custom", "minEventsToAlert": 1, "burnRateWindows": [
                    {"severity": "Page", "long": "5m", "short": "1m", "budgetPercent": "2"},
                ]},
            },
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();

    let _agent = Process(
        Command::new(workspace_binary("netslo-agent").unwrap())
            .args(["--node-name", "office", "run"])
            .args([
                "--operator-url",
                &format!("https://127.0.0.1:{channel_port}"),
            ])
            .arg("--operator-ca")
            .arg(dir.path().join("ca.crt"))
            .arg("--token-file")
            .arg(dir.path().join("token"))
            .args([
                "--agent-name",
                "office",
                "--window-seconds",
                "1",
                "--output",
                "none",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // Results arrive: the agent is counted as reporting and the SLI is exactly 1.
    let logs = || {
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        format!(
            "--- operator\n{}\n--- agent\n{}",
            read("operator.log"),
            read("agent.log")
        )
    };
    let first = tokio::time::timeout(
        Duration::from_secs(90),
        eventually("results in status", Duration::from_secs(90), async || {
            let check = checks.get("office-to-target").await.ok()?;
            let status = check.status.as_ref()?;
            (status.agents?.reporting == 1).then_some(())?;
            let sli = status.slo.as_ref()?.objectives.first()?.sli.clone()?;
            Some((check.clone(), sli))
        }),
    )
    .await;
    let Ok((check, sli)) = first else {
        panic!("no results reached the status\n{}", logs())
    };
    assert_eq!(sli, "1", "every probe succeeded");
    assert_eq!(check.status.as_ref().unwrap().agents.unwrap().desired, 1);

    // Once the window has data for its shortest alert window, the check is Ready.
    let ready = eventually("Ready=True", Duration::from_secs(150), async || {
        let check = checks.get("office-to-target").await.ok()?;
        (condition(&check, "Ready")? == ("True".into(), "ObjectivesMet".into())).then_some(check)
    })
    .await;
    assert_eq!(condition(&ready, "SLOMet").unwrap().0, "True");
    assert_eq!(condition(&ready, "NoData").unwrap().0, "False");

    // Fault: the target stops listening. Refused connections breach 99% at once.
    serving.abort();
    let _ = serving.await;
    let broken = eventually(
        "Ready=False after the fault",
        Duration::from_secs(60),
        async || {
            let check = checks.get("office-to-target").await.ok()?;
            (condition(&check, "Ready")?.0 == "False").then_some(check)
        },
    )
    .await;
    let status = broken.status.as_ref().unwrap();
    assert_eq!(
        condition(&broken, "SLOMet").unwrap().0,
        "False",
        "{status:?}"
    );
    let verdict = status
        .verdict
        .as_ref()
        .expect("a verdict names the failure");
    assert_eq!(verdict.reason, "TCPRefused", "{verdict:?}");
    assert!(verdict.summary.contains("target"), "{verdict:?}");
    let worst = &status.targets[0];
    assert_eq!(worst.last_failure.as_ref().unwrap().reason, "TCPRefused");
    assert_eq!(worst.last_failure.as_ref().unwrap().source, "office");

    // The transition is an Event on the check.
    let events: Api<Event> = Api::namespaced(client.clone(), &shop.name);
    let reasons = eventually(
        "an Event for the breach",
        Duration::from_secs(30),
        async || {
            let list = events.list(&ListParams::default()).await.ok()?;
            let reasons: Vec<String> = list
                .items
                .iter()
                .filter(|e| {
                    e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("office-to-target")
                })
                .filter_map(|e| e.reason.clone())
                .collect();
            reasons
                .iter()
                .any(|r| r == "ObjectiveBreached")
                .then_some(reasons)
        },
    )
    .await;
    assert!(!reasons.is_empty());
}
