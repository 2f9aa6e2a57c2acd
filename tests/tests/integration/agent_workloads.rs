//! The agent workloads the operator builds pass Pod Security `restricted`, enforced by a real
//! API server, and the same pods with one privilege added do not (so the test can fail).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Capabilities, Namespace, Pod, PodSpec};
use kube::api::{Api, Patch, PatchParams, PostParams};
use netslo_operator::workloads::{self, AgentSettings, CheckRef};
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::json;

fn settings(ns: &str) -> AgentSettings {
    AgentSettings {
        namespace: ns.into(),
        image: "registry.example/netslo:0.1.0".into(),
        mesh_service_account: "default".into(),
        operator_url: format!("https://netslo-operator.{ns}.svc:8443"),
        env: vec![(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            "http://collector:4318".into(),
        )],
        mesh_tolerations: None,
        mesh_priority_class: None,
    }
}

async fn create_pod(pods: &Api<Pod>, name: &str, spec: PodSpec) -> Result<(), String> {
    let mut pod = Pod {
        spec: Some(spec),
        ..Pod::default()
    };
    pod.metadata.name = Some(name.into());
    let params = PostParams {
        dry_run: true,
        field_manager: Some("netslo-tests".into()),
    };
    pods.create(&params, &pod)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn agent_pods_pass_pod_security_restricted() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "psa").await.unwrap();
    let enforce = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(client.clone())
        .patch(&ns.name, &PatchParams::default(), &Patch::Merge(enforce))
        .await
        .unwrap();
    let settings = settings(&ns.name);
    let daemonset = workloads::mesh_daemonset(&settings);
    let check = CheckRef {
        namespace: ns.name.clone(),
        name: "web-to-api".into(),
        uid: "0b7e7d5e-1c6c-4a53-9d9a-4f1d8d6f2c11".into(),
    };
    let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let deployment =
        workloads::workload_deployment(&settings, &check, &ns.name, &labels, "default", 2, None);

    // The workload objects themselves are valid.
    let params = PostParams {
        dry_run: true,
        field_manager: Some("netslo-tests".into()),
    };
    Api::<DaemonSet>::namespaced(client.clone(), &ns.name)
        .create(&params, &daemonset)
        .await
        .unwrap();
    let mut owned = deployment.clone();
    owned.metadata.owner_references = None; // the referenced check does not exist here
    Api::<Deployment>::namespaced(client.clone(), &ns.name)
        .create(&params, &owned)
        .await
        .unwrap();

    // Pods from their templates are admitted under `restricted`.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let mesh_pod = daemonset.spec.unwrap().template.spec.unwrap();
    let workload_pod = deployment.spec.unwrap().template.spec.unwrap();
    create_pod(&pods, "mesh-agent", mesh_pod.clone())
        .await
        .expect("mesh agent is restricted-compliant");
    create_pod(&pods, "workload-agent", workload_pod)
        .await
        .expect("workload agent is restricted-compliant");

    // Negative control: the same pod asking for NET_RAW (what ping usually needs) is refused.
    let mut privileged = mesh_pod;
    privileged.containers[0]
        .security_context
        .as_mut()
        .unwrap()
        .capabilities = Some(Capabilities {
        add: Some(vec!["NET_RAW".into()]),
        drop: Some(vec!["ALL".into()]),
    });
    let err = create_pod(&pods, "privileged-agent", privileged)
        .await
        .expect_err("NET_RAW violates restricted");
    assert!(
        err.contains("restricted") && err.contains("NET_RAW"),
        "{err}"
    );
}
