//! The CRDs install into a real API server and become Established.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use netslo_tests::control_plane;

#[tokio::test]
async fn crds_install_and_become_established() {
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in [
        "connectivitychecks.netslo.io",
        "connectivitypolicies.netslo.io",
    ] {
        let crd = crds.get(name).await.unwrap();
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        let established = conditions
            .iter()
            .find(|c| c.type_ == "Established")
            .map(|c| c.status.as_str());
        assert_eq!(established, Some("True"), "{name}: {conditions:?}");
    }
}
