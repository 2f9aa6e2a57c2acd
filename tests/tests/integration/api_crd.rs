//! The CRDs install into a real API server and become Established.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use netslo_tests::control_plane;

#[tokio::test]
async fn crds_install_and_become_established() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
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
