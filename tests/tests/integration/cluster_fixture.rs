//! Stand-in nodes and pods behave like real ones to the control plane: the real
//! kube-controller-manager builds EndpointSlices from them and follows their readiness.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use netslo_tests::cluster::{create_service, register_node, register_pod, set_pod_ready};
use netslo_tests::control_plane::{self, TestNamespace};

async fn endpoints(slices: &Api<EndpointSlice>) -> Vec<(String, bool)> {
    let list = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=api"))
        .await
        .unwrap();
    let mut out: Vec<(String, bool)> = list
        .items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .map(|e| {
            (
                e.addresses[0].clone(),
                e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            )
        })
        .collect();
    out.sort();
    out
}

async fn eventually(slices: &Api<EndpointSlice>, want: &[(&str, bool)]) {
    let want: Vec<(String, bool)> = want.iter().map(|(a, r)| (a.to_string(), *r)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = endpoints(slices).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "EndpointSlices show {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn controller_manager_builds_endpoint_slices_from_stand_in_pods() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "fixture").await.unwrap();
    let node_a = format!("{}-a", ns.name);
    let node_b = format!("{}-b", ns.name);
    register_node(&client, &node_a, "10.77.1.1", "zone-a")
        .await
        .unwrap();
    register_node(&client, &node_b, "10.77.2.1", "zone-b")
        .await
        .unwrap();
    let labels = BTreeMap::from([("app".to_string(), "api".to_string())]);
    register_pod(&client, &ns.name, "api-1", &labels, &node_a, "10.77.1.10")
        .await
        .unwrap();
    register_pod(&client, &ns.name, "api-2", &labels, &node_b, "10.77.2.10")
        .await
        .unwrap();
    create_service(&client, &ns.name, "api", &labels, "http", 80, 8080)
        .await
        .unwrap();

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.name);
    eventually(&slices, &[("10.77.1.10", true), ("10.77.2.10", true)]).await;
    set_pod_ready(&client, &ns.name, "api-2", "10.77.2.10", false)
        .await
        .unwrap();
    eventually(&slices, &[("10.77.1.10", true), ("10.77.2.10", false)]).await;
}
