//! `--watch-namespace`: two installations side by side on one cluster, each for one team's
//! namespace. Each operator acts on its own namespace's checks only (their status and Events
//! are its own), and a check in a namespace neither watches is left alone.

use std::time::Duration;

use crate::operator_common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::json;

/// A check whose probes would run from a namespace it was not granted: the operator that
/// acts on it marks it Stalled at once, without agents.
fn ungranted_check(probes_from: &str) -> ConnectivityCheck {
    serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "from-elsewhere"},
        "spec": {
            "source": {"workload": {"namespace": probes_from, "podLabels": {"app": "client"}, "serviceAccountName": "default"}},
            "targets": [{"name": "kube", "apiServer": {}}],
        },
    }))
    .unwrap()
}

/// The instances that reported Events about objects in `namespace`.
async fn reporters(events: &Api<Event>) -> Vec<String> {
    let mut instances: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    instances.sort();
    instances.dedup();
    instances
}

#[tokio::test]
async fn operators_watching_one_namespace_each_act_only_on_its_checks() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system_a = TestNamespace::create(plane, "netslo-a").await.unwrap();
    let system_b = TestNamespace::create(plane, "netslo-b").await.unwrap();
    let team_a = TestNamespace::create(plane, "team-a").await.unwrap();
    let team_b = TestNamespace::create(plane, "team-b").await.unwrap();
    let unwatched = TestNamespace::create(plane, "unwatched").await.unwrap();
    let elsewhere = TestNamespace::create(plane, "elsewhere").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _operator_a = start_operator(
        plane,
        &system_a.name,
        Some(&team_a.name),
        &OperatorPorts::free(),
        &dir.path().join("operator-a.log"),
        &[],
    );
    let _operator_b = start_operator(
        plane,
        &system_b.name,
        Some(&team_b.name),
        &OperatorPorts::free(),
        &dir.path().join("operator-b.log"),
        &[],
    );
    let logs = || {
        ["operator-a.log", "operator-b.log"]
            .iter()
            .map(|f| {
                let log = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
                format!("--- {f}\n{log}")
            })
            .collect::<String>()
    };

    // The unwatched namespace's check exists before either operator acts on anything.
    let unwatched_checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &unwatched.name);
    unwatched_checks
        .create(&PostParams::default(), &ungranted_check(&elsewhere.name))
        .await
        .unwrap();
    for team in [&team_a, &team_b] {
        let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &team.name);
        checks
            .create(&PostParams::default(), &ungranted_check(&elsewhere.name))
            .await
            .unwrap();
    }

    // Each team's check is marked Stalled, and only its own operator reported about it.
    for (team, system) in [(&team_a, &system_a), (&team_b, &system_b)] {
        let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &team.name);
        let events: Api<Event> = Api::namespaced(client.clone(), &team.name);
        let own = format!("netslo-operator-{}", system.name);
        eventually_every(
            &format!("{}'s check stalled, and an Event from {own}", team.name),
            Duration::from_secs(60),
            Duration::from_millis(500),
            logs,
            async || {
                let check = checks.get("from-elsewhere").await.ok()?;
                let (status, reason) = condition(&check, "Stalled")?;
                let reported = reporters(&events).await;
                (status == "True" && reason == "TargetNotPermitted" && !reported.is_empty())
                    .then_some(())
            },
        )
        .await;
        assert_eq!(reporters(&events).await, vec![own], "{}", logs());
    }

    // Both operators have acted (a full resync included: their controllers list at start);
    // the check neither watches has only the CRD's "not observed yet" status and no Events.
    // An operator acting on every namespace would have marked it Stalled as fast as the others.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let check = unwatched_checks.get("from-elsewhere").await.unwrap();
    let unobserved = netslo_crds::v1alpha1::ConnectivityCheckStatus {
        observed_generation: Some(0),
        ..Default::default()
    };
    assert_eq!(check.status, Some(unobserved), "{}", logs());
    let events: Api<Event> = Api::namespaced(client.clone(), &unwatched.name);
    assert!(reporters(&events).await.is_empty(), "{}", logs());
}
