//! Registering stand-ins for real nodes and pods on a control plane without kubelets: Node
//! objects with addresses and zones, and Pods bound to them whose status (Running, Ready, pod
//! IP) the test writes itself. The processes behind them run in network namespaces on this
//! machine, at those IPs, so Services, EndpointSlices (maintained by the real
//! kube-controller-manager) and netslo's target resolution see them as the real thing.

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, Service, ServiceAccount};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::Error;

const FIELD_MANAGER: &str = "netslo-tests";

/// Registers a Ready node with an InternalIP and a zone label.
pub async fn register_node(
    client: &Client,
    name: &str,
    ip: &str,
    zone: &str,
) -> Result<Node, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": zone,
        }},
    }))
    .map_err(|e| Error::NotReady(format!("node object: {e}")))?;
    nodes
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&node),
        )
        .await?;
    let status = json!({
        "apiVersion": "v1", "kind": "Node",
        "status": {
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "stand-in node"}],
        },
    });
    Ok(nodes
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(status),
        )
        .await?)
}

/// Registers a running, Ready pod bound to `node` with `ip`.
pub async fn register_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    labels: &BTreeMap<String, String>,
    node: &str,
    ip: &str,
) -> Result<Pod, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "nodeName": node,
            "automountServiceAccountToken": false,
            "containers": [{"name": "stand-in", "image": "registry.k8s.io/pause:3.10.1"}],
        },
    }))
    .map_err(|e| Error::NotReady(format!("pod object: {e}")))?;
    pods.create(&PostParams::default(), &pod).await?;
    set_pod_ready(client, namespace, name, ip, true).await
}

/// Flips a registered pod's readiness (what a failing readiness probe would do).
pub async fn set_pod_ready(
    client: &Client,
    namespace: &str,
    name: &str,
    ip: &str,
    ready: bool,
) -> Result<Pod, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let status = if ready { "True" } else { "False" };
    let patch = json!({
        "apiVersion": "v1", "kind": "Pod",
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": status},
                {"type": "Ready", "status": status},
            ],
        },
    });
    Ok(pods
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?)
}

/// Creates a ClusterIP Service selecting `selector`, with one TCP port named `name`.
pub async fn create_service(
    client: &Client,
    namespace: &str,
    name: &str,
    selector: &BTreeMap<String, String>,
    port_name: &str,
    port: i32,
    target_port: i32,
) -> Result<Service, Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": port_name, "port": port, "targetPort": target_port, "protocol": "TCP"}]},
    }))
    .map_err(|e| Error::NotReady(format!("service object: {e}")))?;
    Ok(services.create(&PostParams::default(), &service).await?)
}

/// Registers the stand-in of a node-mesh agent pod as the operator finds its agents: a pod in
/// the operator's namespace labelled `app.kubernetes.io/component=mesh-agent`, bound to `node`,
/// running as `service_account`, Ready with `ip`. It is on the host network (its IP is the
/// node's), so the agent's probes leave from the node's address. Only the component label is
/// set, not the mesh DaemonSet's whole selector, so no DaemonSet could adopt the stand-in.
pub async fn register_mesh_agent(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    ip: &str,
    service_account: &str,
) -> Result<Pod, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/component": "mesh-agent"}},
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "serviceAccountName": service_account,
            "automountServiceAccountToken": false,
            "containers": [{"name": "agent", "image": "registry.k8s.io/pause:3.10.1"}],
        },
    }))
    .map_err(|e| Error::NotReady(format!("pod object: {e}")))?;
    pods.create(&PostParams::default(), &pod).await?;
    set_pod_ready(client, namespace, name, ip, true).await
}

/// Creates a service account (if missing).
pub async fn ensure_service_account(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<(), Error> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    if accounts.get_opt(name).await?.is_none() {
        let account: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}}))
                .map_err(|e| Error::NotReady(format!("service account object: {e}")))?;
        accounts.create(&PostParams::default(), &account).await?;
    }
    Ok(())
}

/// A token of `pod`'s service account for `audience`, bound to the pod (TokenRequest with a
/// `boundObjectRef`), as a projected token volume gives a real pod: the API server records the
/// pod and its node in the token, and TokenReview reports them.
pub async fn pod_bound_token(
    client: &Client,
    pod: &Pod,
    audience: &str,
    expiration_seconds: i64,
) -> Result<String, Error> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let request: TokenRequest = serde_json::from_value(json!({"spec": {
        "audiences": [audience],
        "expirationSeconds": expiration_seconds,
        "boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod",
            "name": pod.metadata.name, "uid": pod.metadata.uid,
        },
    }}))
    .map_err(|e| Error::NotReady(format!("token request: {e}")))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let response = accounts
        .create_token_request(&account, &PostParams::default(), &request)
        .await?;
    response
        .status
        .map(|s| s.token)
        .ok_or_else(|| Error::NotReady(format!("no token for {namespace}/{account}")))
}
