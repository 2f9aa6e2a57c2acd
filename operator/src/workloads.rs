//! The agent workloads the operator runs, built as plain objects (pure) and applied by the
//! reconciler with server-side apply.
//!
//! - One DaemonSet for the node mesh, shared by every mesh check, in the operator's namespace.
//! - Per workload-identity check, a Deployment in the source namespace whose pods carry the
//!   workload's labels and run as its service account, spread across nodes, so NetworkPolicies
//!   (and mesh authorisation) treat the probes exactly as the workload.
//!
//! Every pod is Pod Security `restricted`: non-root, no privilege escalation, all capabilities
//! dropped, read-only root filesystem, seccomp RuntimeDefault. ICMP needs no `NET_RAW`: the pod
//! sets the namespaced, safe sysctl `net.ipv4.ping_group_range` to admit its own group to
//! unprivileged ICMP sockets. The Kubernetes API token is never mounted; the agent gets only a
//! projected token with the `netslo` audience, which the operator's channel verifies.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, Deployment, DeploymentSpec,
    RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Sysctl, TCPSocketAction, Toleration, TopologySpreadConstraint,
    Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use netslo_protocol::hash::fnv1a_32;

use crate::check_key::CheckKey;

/// Audience of the projected tokens agents present to the operator.
pub const TOKEN_AUDIENCE: &str = "netslo";
/// Lifetime of those tokens; the kubelet rotates them at 80%.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3600;
/// UID and GID the agent runs as (the conventional "nonroot").
pub const AGENT_UID: i64 = 65532;
/// Port of the agent's echo responder (TCP and UDP), which peers probe.
pub const ECHO_PORT: i32 = 9476;
/// Port of the agent's HTTP echo endpoint.
pub const ECHO_HTTP_PORT: i32 = 9477;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// On workload agents: `<namespace>.<name>` of the check they probe for.
pub const LABEL_CHECK: &str = "netslo.io/check";
/// On workload agents in another namespace than their check (owner references cannot cross
/// namespaces): the check's namespace, name and UID, for the sweeper.
pub const LABEL_OWNER_NAMESPACE: &str = "netslo.io/owner-namespace";
pub const LABEL_OWNER_NAME: &str = "netslo.io/owner-name";
pub const LABEL_OWNER_UID: &str = "netslo.io/owner-uid";
/// Label (value `"true"`) of a workload pod that runs the netslo probe sidecar, which probes
/// the `localhost` targets of that pod (README: container to container).
pub const LABEL_PROBE_SIDECAR: &str = "netslo.io/probe-sidecar";

const TOKEN_DIR: &str = "/var/run/secrets/netslo";
const CA_DIR: &str = "/etc/netslo/ca";
const STATE_DIR: &str = "/var/lib/netslo";
/// ConfigMap the operator publishes its channel CA certificate in (key `ca.crt`).
pub const OPERATOR_CA_CONFIGMAP: &str = "netslo-operator-ca";

/// What every agent pod needs to know, from the operator's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    /// Namespace of the operator (and the mesh DaemonSet).
    pub namespace: String,
    pub image: String,
    /// Service account of mesh agents (it has no API permissions).
    pub mesh_service_account: String,
    /// URL agents report to, e.g. `https://netslo-operator.netslo-system.svc:8443`.
    pub operator_url: String,
    /// Extra environment of every agent container (`--agent-env`): telemetry settings.
    pub env: Vec<(String, String)>,
    /// Tolerations of the mesh agents (`--agent-tolerations`); `None`: every taint.
    pub mesh_tolerations: Option<Vec<Toleration>>,
    /// PriorityClass of the mesh agents (`--agent-priority-class`).
    pub mesh_priority_class: Option<String>,
}

/// Name of the mesh DaemonSet.
pub const MESH_DAEMONSET: &str = "netslo-agent";

/// The node-mesh agent DaemonSet.
pub fn mesh_daemonset(settings: &AgentSettings) -> DaemonSet {
    let labels = BTreeMap::from([
        (LABEL_NAME.to_string(), "netslo-agent".to_string()),
        (LABEL_COMPONENT.to_string(), "mesh-agent".to_string()),
        (LABEL_MANAGED_BY.to_string(), "netslo-operator".to_string()),
    ]);
    let mut pod = agent_pod_spec(settings, &settings.mesh_service_account, true);
    // A mesh agent belongs on every node, tainted ones included: a node the mesh skips is a
    // node whose network nobody watches. Unless the admins say which taints to tolerate.
    pod.tolerations = Some(settings.mesh_tolerations.clone().unwrap_or_else(|| {
        vec![Toleration {
            operator: Some("Exists".into()),
            ..Toleration::default()
        }]
    }));
    pod.priority_class_name = settings.mesh_priority_class.clone();
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(MESH_DAEMONSET.into()),
            namespace: Some(settings.namespace.clone()),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("10%".into())),
                    ..RollingUpdateDaemonSet::default()
                }),
            }),
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// The check a workload agent Deployment probes for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Name of the Deployment probing for a check: `netslo-<check>`, shortened with a stable hash
/// when the check's name is too long for a DNS label.
pub fn workload_deployment_name(check: &CheckRef) -> String {
    let base = format!("netslo-{}", check.name);
    if base.len() <= 63 {
        return base;
    }
    let hash = fnv1a_32(format!("{}/{}", check.namespace, check.name).as_bytes());
    format!("{}-{hash:08x}", base[..54].trim_end_matches('-'))
}

/// The check a workload agent's [`LABEL_CHECK`] value names: `<namespace>.<name>`, as
/// [`workload_deployment`] writes it (a namespace holds no dot, so the first one splits).
pub fn check_of_label(value: &str) -> Option<CheckKey> {
    let (namespace, name) = value.split_once('.')?;
    (!namespace.is_empty() && !name.is_empty()).then(|| CheckKey::new(namespace, name))
}

/// The Deployment that probes as a workload identity.
pub fn workload_deployment(
    settings: &AgentSettings,
    check: &CheckRef,
    source_namespace: &str,
    pod_labels: &BTreeMap<String, String>,
    service_account: &str,
    replicas: i32,
    node_selector: Option<&BTreeMap<String, String>>,
) -> Deployment {
    let check_label = format!("{}.{}", check.namespace, check.name);
    // The check label alone selects this Deployment's pods: user labels may also select the
    // real workload's pods, which a selector must never adopt.
    let selector = BTreeMap::from([
        (LABEL_CHECK.to_string(), truncate_label_value(&check_label)),
        (LABEL_COMPONENT.to_string(), "workload-agent".to_string()),
    ]);
    let mut labels = pod_labels.clone();
    labels.extend(selector.clone());
    labels.insert(LABEL_MANAGED_BY.into(), "netslo-operator".into());
    labels
        .entry(LABEL_NAME.into())
        .or_insert_with(|| "netslo-agent".into());

    let mut metadata_labels = BTreeMap::from([
        (LABEL_NAME.to_string(), "netslo-agent".to_string()),
        (LABEL_MANAGED_BY.to_string(), "netslo-operator".to_string()),
        (LABEL_CHECK.to_string(), truncate_label_value(&check_label)),
    ]);
    let same_namespace = source_namespace == check.namespace;
    let owner_references = same_namespace.then(|| {
        vec![OwnerReference {
            api_version: "netslo.io/v1alpha1".into(),
            kind: "ConnectivityCheck".into(),
            name: check.name.clone(),
            uid: check.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]
    });
    if !same_namespace {
        metadata_labels.insert(LABEL_OWNER_NAMESPACE.into(), check.namespace.clone());
        metadata_labels.insert(LABEL_OWNER_NAME.into(), truncate_label_value(&check.name));
        metadata_labels.insert(LABEL_OWNER_UID.into(), check.uid.clone());
    }

    let mut pod = agent_pod_spec(settings, service_account, false);
    pod.node_selector = node_selector.cloned();
    pod.topology_spread_constraints = Some(vec![TopologySpreadConstraint {
        max_skew: 1,
        topology_key: "kubernetes.io/hostname".into(),
        // Spread when possible, but still probe on a cluster smaller than the replica count.
        when_unsatisfiable: "ScheduleAnyway".into(),
        label_selector: Some(LabelSelector {
            match_labels: Some(selector.clone()),
            ..LabelSelector::default()
        }),
        ..TopologySpreadConstraint::default()
    }]);
    Deployment {
        metadata: ObjectMeta {
            name: Some(workload_deployment_name(check)),
            namespace: Some(source_namespace.into()),
            labels: Some(metadata_labels),
            owner_references,
            ..ObjectMeta::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn agent_pod_spec(settings: &AgentSettings, service_account: &str, mesh: bool) -> PodSpec {
    // Downward API: the agent's own identity and address.
    let env = [
        ("NODE_NAME", "spec.nodeName"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_IP", "status.podIP"),
    ]
    .into_iter()
    .map(|(name, path)| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    })
    .chain(settings.env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        ..EnvVar::default()
    }))
    .collect::<Vec<_>>();
    let mut args = vec![
        "run".to_string(),
        format!("--operator-url={}", settings.operator_url),
        format!("--operator-ca={CA_DIR}/ca.crt"),
        format!("--token-file={TOKEN_DIR}/token"),
        // An agent restarted while the operator is away keeps probing its last assignment.
        format!("--assignment-cache={STATE_DIR}/assignment.json"),
        format!("--echo-listen=0.0.0.0:{ECHO_PORT}"),
        format!("--echo-http-listen=0.0.0.0:{ECHO_HTTP_PORT}"),
    ];
    if !mesh {
        // Mesh agents are named by their node (one per node, bound to it); workload agents,
        // several per node, by their pod.
        args.push("--agent-name=$(POD_NAME)".into());
    }
    let quantity = |q: &str| Quantity(q.into());
    let container = Container {
        name: "agent".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args),
        env: Some(env),
        ports: Some(vec![
            ContainerPort {
                name: Some("echo-tcp".into()),
                container_port: ECHO_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("echo-udp".into()),
                container_port: ECHO_PORT,
                protocol: Some("UDP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("echo-http".into()),
                container_port: ECHO_HTTP_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(ECHO_PORT),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        // Requests sized for ~10 probes/s; no CPU limit: CFS throttling would show up as network
        // latency (the agent marks late probes invalid, but a starved agent measures nothing).
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), quantity("20m")),
                ("memory".into(), quantity("32Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), quantity("128Mi"))])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "netslo-token".into(),
                mount_path: TOKEN_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "operator-ca".into(),
                mount_path: CA_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "state".into(),
                mount_path: STATE_DIR.into(),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    PodSpec {
        service_account_name: Some(service_account.into()),
        // The agent needs no Kubernetes API access: no API token in the pod at all.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(AGENT_UID),
            run_as_group: Some(AGENT_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            sysctls: Some(vec![Sysctl {
                name: "net.ipv4.ping_group_range".into(),
                value: format!("{AGENT_UID} {AGENT_UID}"),
            }]),
            ..PodSecurityContext::default()
        }),
        containers: vec![container],
        termination_grace_period_seconds: Some(if mesh { 10 } else { 5 }),
        volumes: Some(vec![
            Volume {
                name: "netslo-token".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(TOKEN_AUDIENCE.into()),
                            expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                            path: "token".into(),
                        }),
                        ..VolumeProjection::default()
                    }]),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "operator-ca".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: OPERATOR_CA_CONFIGMAP.into(),
                            optional: Some(false),
                            ..ConfigMapProjection::default()
                        }),
                        ..VolumeProjection::default()
                    }]),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "state".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("16Mi".into())),
                    ..EmptyDirVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// Label values are at most 63 characters.
fn truncate_label_value(value: &str) -> String {
    if value.len() <= 63 {
        return value.to_string();
    }
    let hash = fnv1a_32(value.as_bytes());
    format!("{}-{hash:08x}", value[..54].trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> AgentSettings {
        AgentSettings {
            namespace: "netslo-system".into(),
            image: "ghcr.io/netslo/netslo:0.1.0".into(),
            mesh_service_account: "netslo-agent".into(),
            operator_url: "https://netslo-operator.netslo-system.svc:8443".into(),
            env: vec![(
                "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                "http://otel-collector.monitoring:4318".into(),
            )],
            mesh_tolerations: None,
            mesh_priority_class: None,
        }
    }

    #[test]
    fn mesh_agents_tolerate_every_taint_unless_told_which_and_take_a_priority_class() {
        let pod = |settings: &AgentSettings| {
            mesh_daemonset(settings)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
        };
        let default = pod(&settings());
        let tolerations = default.tolerations.unwrap();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(
            (
                tolerations[0].key.as_deref(),
                tolerations[0].operator.as_deref()
            ),
            (None, Some("Exists"))
        );
        assert_eq!(default.priority_class_name, None);

        let only_edge = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("edge".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }];
        let told = pod(&AgentSettings {
            mesh_tolerations: Some(only_edge.clone()),
            mesh_priority_class: Some("netslo-agent".into()),
            ..settings()
        });
        assert_eq!(told.tolerations, Some(only_edge));
        assert_eq!(told.priority_class_name.as_deref(), Some("netslo-agent"));
    }

    fn check(ns: &str, name: &str) -> CheckRef {
        CheckRef {
            namespace: ns.into(),
            name: name.into(),
            uid: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
        }
    }

    #[test]
    fn pods_are_restricted_and_carry_no_api_token() {
        for pod in [
            mesh_daemonset(&settings())
                .spec
                .unwrap()
                .template
                .spec
                .unwrap(),
            workload_deployment(
                &settings(),
                &check("shop", "web"),
                "shop",
                &BTreeMap::new(),
                "web",
                2,
                None,
            )
            .spec
            .unwrap()
            .template
            .spec
            .unwrap(),
        ] {
            assert_eq!(pod.automount_service_account_token, Some(false));
            let psc = pod.security_context.unwrap();
            assert_eq!(psc.run_as_non_root, Some(true));
            assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
            assert_eq!(
                psc.sysctls.unwrap()[0].value,
                "65532 65532",
                "ICMP for the agent's own group"
            );
            let sc = pod.containers[0].security_context.clone().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
            let token = pod.volumes.unwrap()[0]
                .projected
                .clone()
                .unwrap()
                .sources
                .unwrap()[0]
                .service_account_token
                .clone()
                .unwrap();
            assert_eq!(token.audience.as_deref(), Some(TOKEN_AUDIENCE));
            // The operator's --agent-env reaches every agent, after the downward API's.
            let env = pod.containers[0].env.clone().unwrap();
            assert_eq!(env[0].name, "NODE_NAME");
            let otel = env
                .iter()
                .find(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
                .unwrap();
            assert_eq!(
                otel.value.as_deref(),
                Some("http://otel-collector.monitoring:4318")
            );
        }
    }

    #[test]
    fn workload_agents_wear_the_workload_identity_but_select_only_themselves() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let d = workload_deployment(
            &settings(),
            &check("shop", "web-to-api"),
            "shop",
            &labels,
            "web",
            3,
            None,
        );
        let spec = d.spec.unwrap();
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels.get("app").map(String::as_str), Some("web"));
        let selector = spec.selector.match_labels.unwrap();
        assert!(
            !selector.contains_key("app"),
            "must never adopt the real workload's pods"
        );
        assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
        assert_eq!(
            spec.template.spec.unwrap().service_account_name.as_deref(),
            Some("web")
        );
        assert_eq!(spec.replicas, Some(3));
        let owner = d.metadata.owner_references.unwrap();
        assert_eq!(owner[0].kind, "ConnectivityCheck");
    }

    #[test]
    fn cross_namespace_agents_get_owner_labels_instead_of_references() {
        let d = workload_deployment(
            &settings(),
            &check("netslo-checks", "frontend"),
            "shop",
            &BTreeMap::new(),
            "frontend",
            1,
            None,
        );
        assert!(
            d.metadata.owner_references.is_none(),
            "owner references cannot cross namespaces"
        );
        let labels = d.metadata.labels.unwrap();
        assert_eq!(labels[LABEL_OWNER_NAMESPACE], "netslo-checks");
        assert_eq!(labels[LABEL_OWNER_NAME], "frontend");
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn long_names_are_shortened_stably_within_dns_label_limits() {
        let long = "a".repeat(80);
        let name = workload_deployment_name(&check("shop", &long));
        assert!(name.len() <= 63, "{name}");
        assert_eq!(name, workload_deployment_name(&check("shop", &long)));
        assert_ne!(name, workload_deployment_name(&check("other", &long)));
        assert!(truncate_label_value(&format!("shop.{long}")).len() <= 63);
    }
}
