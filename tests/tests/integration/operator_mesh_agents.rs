//! The operator runs the node-mesh agents only when a check needs them: a check without mesh
//! sources or targets leaves no DaemonSet behind, the first mesh check creates exactly one
//! (in the operator's namespace, with the configured image), and further mesh checks share it.

use std::time::Duration;

use crate::operator_common::*;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, ListParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::json;

const IMAGE: &str = "registry.example/netslo:mesh-test";

fn check(name: &str, spec: serde_json::Value) -> ConnectivityCheck {
    serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

#[tokio::test]
async fn mesh_agents_run_once_a_check_needs_them() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _operator = start_operator(
        plane,
        &system.name,
        Some(&shop.name),
        &OperatorPorts::free(),
        &dir.path().join("operator.log"),
        &["--agent-image", IMAGE],
    );
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &shop.name);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &system.name);
    let status_written = async |name: &str| {
        eventually(
            &format!("status of {name}"),
            Duration::from_secs(60),
            async || {
                let check = checks.get(name).await.ok()?;
                let observed = check.status.as_ref()?.observed_generation;
                (observed == check.metadata.generation).then_some(())
            },
        )
        .await
    };

    // No mesh in sight: no mesh agents.
    let external = check(
        "office",
        json!({"source": {"external": {"agents": ["office"]}},
               "targets": [{"name": "t", "external": {"host": "192.0.2.1", "port": 443}}]}),
    );
    checks
        .create(&PostParams::default(), &external)
        .await
        .unwrap();
    status_written("office").await;
    let list = daemonsets.list(&ListParams::default()).await.unwrap();
    assert!(list.items.is_empty(), "{:?}", list.items);

    // A mesh check: one DaemonSet, the operator's image, selecting its own pods.
    for name in ["mesh-a", "mesh-b"] {
        let mesh = check(
            name,
            json!({"source": {"mesh": {}}, "targets": [{"name": "peers", "mesh": {}}]}),
        );
        checks.create(&PostParams::default(), &mesh).await.unwrap();
        status_written(name).await;
    }
    let list = eventually("the mesh DaemonSet", Duration::from_secs(30), async || {
        let list = daemonsets.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(
        list.items.len(),
        1,
        "one DaemonSet shared by every mesh check"
    );
    let daemonset = &list.items[0];
    assert_eq!(daemonset.metadata.name.as_deref(), Some("netslo-agent"));
    let pod = daemonset
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.containers[0].image.as_deref(), Some(IMAGE));
    let managers: Vec<&str> = daemonset
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|f| f.manager.as_deref())
        .collect();
    assert!(managers.contains(&"netslo-operator"), "{managers:?}");
}
