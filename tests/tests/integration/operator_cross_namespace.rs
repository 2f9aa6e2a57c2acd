//! Probes from a workload identity in another namespace than the check: refused without a
//! ConnectivityPolicy grant (no probe pods, the check Stalled naming the grant); with one, the
//! operator runs the probe Deployment there, labelled with its check (owner references cannot
//! cross namespaces), and deleting the check makes the sweeper delete it.

use std::time::Duration;

use crate::operator_common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityPolicy};
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::json;

#[tokio::test]
async fn probe_pods_in_another_namespace_need_a_grant_and_go_with_their_check() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let app = TestNamespace::create(plane, "app").await.unwrap();
    let probes = TestNamespace::create(plane, "probes").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _operator = start_operator(
        plane,
        &system.name,
        Some(&app.name),
        &OperatorPorts::free(),
        &dir.path().join("operator.log"),
        &[],
    );

    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &app.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "from-probes"},
        "spec": {
            "source": {"workload": {"namespace": probes.name, "podLabels": {"app": "client"}, "serviceAccountName": "default"}},
            "targets": [{"name": "kube", "apiServer": {}}],
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &probes.name);

    // No grant: refused, and no probe pods anywhere.
    let message = eventually("the refusal", Duration::from_secs(60), async || {
        let check = checks.get("from-probes").await.ok()?;
        let c = check
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Stalled" && c.status == "True")?;
        (c.reason == "TargetNotPermitted").then_some(c.message)
    })
    .await;
    assert!(
        message.contains(&format!(
            "probing from namespace {} is not granted",
            probes.name
        )),
        "{message}"
    );
    let list = deployments.list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty(), "no probe pods without a grant");

    // The grant: the Deployment appears in the source namespace, labelled with its check.
    let policies: Api<ConnectivityPolicy> = Api::all(client.clone());
    let grant_name = format!("grant-{}", app.name);
    let grant: ConnectivityPolicy = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
        "metadata": {"name": grant_name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": app.name}},
            "targetNamespaces": {"names": [probes.name]},
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    let uid = checks.get("from-probes").await.unwrap().uid().unwrap();
    let deployment = eventually(
        "the probe Deployment in the source namespace",
        Duration::from_secs(90),
        async || {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().next()
        },
    )
    .await;
    let labels = deployment.labels();
    assert_eq!(labels.get("netslo.io/owner-uid"), Some(&uid), "{labels:?}");
    assert_eq!(
        labels.get("netslo.io/owner-namespace"),
        Some(&app.name),
        "{labels:?}"
    );
    assert!(
        deployment.owner_references().is_empty(),
        "no owner reference across namespaces"
    );

    // Deleting the check: the sweeper deletes the Deployment it could not own.
    checks
        .delete("from-probes", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the probe Deployment swept",
        Duration::from_secs(60),
        async || {
            let list = deployments.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .all(|d| d.metadata.deletion_timestamp.is_some())
                .then_some(())
        },
    )
    .await;
    let _ = policies.delete(&grant_name, &DeleteParams::default()).await;
}
