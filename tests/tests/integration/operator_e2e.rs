//! The whole data path on a real control plane: a ConnectivityCheck applied to the API server
//! becomes an assignment for a real `netslo-agent` (an external vantage point, authenticated
//! with a TokenRequest token through the operator's channel), whose results become SLO status
//! and Events written by a real `netslo-operator`. A fault (the target stops listening) flips
//! the check to not Ready with a verdict naming the layer and reason; recovery is measured too.

use std::process::Stdio;
use std::time::Duration;

use crate::operator_common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::json;

#[tokio::test]
async fn check_to_agent_to_status_and_back() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The target: a TCP server the test controls.
    let target = AcceptingServer::start().await;
    let target_port = target.port;

    // The operator, with its channel on loopback. It publishes its channel's CA; the agent
    // trusts it. An external vantage point named "office": the service account of that name
    // in the operator's namespace, and a token for the netslo audience.
    let office = operator_for_office(
        plane,
        &client,
        &system.name,
        Some(&shop.name),
        dir.path(),
        &[],
        &[],
    )
    .await;

    // The check: probe the target every second from "office", 99% over 28 days, with a
    // short custom alert window so the window is not "too young" for long.
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

    let _agent = start_external_agent(
        "office",
        office.channel_port,
        &office.ca,
        &office.token,
        "none",
        Stdio::null(),
        &dir.path().join("agent.log"),
    );

    // Results arrive: the agent is counted as reporting and the SLI is exactly 1.
    let logs = || logs(dir.path(), &["operator.log", "agent.log"]);
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

    // Fault: the target stops listening. Refused connections breach 99% at once; the verdict
    // follows once two probes failed (one failure alone names no place).
    target.stop().await;
    let broken = eventually(
        "Ready=False and a verdict after the fault",
        Duration::from_secs(60),
        async || {
            let check = checks.get("office-to-target").await.ok()?;
            let verdict = check.status.as_ref()?.verdict.is_some();
            (condition(&check, "Ready")?.0 == "False" && verdict).then_some(check)
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
