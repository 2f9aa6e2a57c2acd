//! Assignments: which agent probes what. Pure: from the checks (with their resolved targets)
//! and the agents the operator knows, to one [`Assignment`] per agent, which the channel hands
//! out. Agents never discover targets themselves.
//!
//! Naming contract with the agents and the result path:
//! - an agent-side check is one target of one ConnectivityCheck, named
//!   `<namespace>/<check>/<target>` (the agent requires unique check names and one probe kind
//!   per check);
//! - its series are labelled with [`SeriesId::label`](crate::resolve::SeriesId::label)
//!   (`<target>/<via>/<endpoint>`);
//! - the source label is the agent's name (its pod name, or an external agent's name), and
//!   [`AgentInfo`] maps it back to a node and zone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use netslo_crds::v1alpha1::{ConnectivityCheckSpec, ProbeSource};
use netslo_protocol::names::AssignedCheck;
use netslo_protocol::spec::{
    AddressPolicySpec, Assignment, CheckSpec, DEFAULT_INTERVAL_MS, DEFAULT_JITTER_PERCENT,
    DEFAULT_TIMEOUT_MS, DestinationRuleSpec, ExternalGrantSpec, ProbeSpec, TargetSpec,
};

use crate::check_key::CheckKey;
use crate::resolve::{Destination, LabelSelection, NodeIndex, ResolvedTarget, Via};

/// An agent the operator knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    /// Pod name (in-cluster) or registered name (external): the source label of its series.
    pub name: String,
    pub kind: AgentKind,
    pub node: Option<String>,
    pub zone: Option<String>,
    /// The agent's own address (mesh agents are probed by their peers there).
    pub ip: Option<String>,
    /// For workload agents and probe sidecars: the pod, as its pod-bound tokens name it.
    pub pod: Option<AgentPod>,
}

/// The pod an in-cluster agent runs in: what TokenReview reports of its tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentPod {
    pub namespace: String,
    pub name: String,
    pub service_account: String,
    pub uid: Option<String>,
}

/// Where an agent runs and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// A node-mesh agent (DaemonSet).
    Mesh,
    /// A workload-identity agent probing for one check.
    Workload { check: CheckKey },
    /// An agent outside the cluster.
    External,
    /// A probe sidecar inside a workload's pod (label [`LABEL_PROBE_SIDECAR`]), named
    /// `<namespace>/<pod>`: it probes only the `localhost` targets of its own pod.
    ///
    /// [`LABEL_PROBE_SIDECAR`]: crate::workloads::LABEL_PROBE_SIDECAR
    Sidecar,
}

/// A check ready to be assigned: its key, spec and resolved targets.
#[derive(Debug, Clone, Copy)]
pub struct CheckPlan<'a> {
    pub key: &'a CheckKey,
    pub spec: &'a ConnectivityCheckSpec,
    pub targets: &'a [ResolvedTarget],
    /// What the check's namespace is granted ([`crate::policy`]), for the agents' own check.
    pub address_policy: &'a AddressPolicySpec,
}

/// Name of the agent-side check for one target of a ConnectivityCheck, the form agents and
/// their reports carry ([`AssignedCheck`]).
pub fn agent_check_name(check: &CheckKey, target: &str) -> String {
    AssignedCheck {
        namespace: &check.namespace,
        check: &check.name,
        target,
    }
    .to_string()
}

/// Whether every target of a check is a `localhost` target. Such a check is probed only by
/// the sidecars inside its target pods: its `source` then starts no agents of its own.
pub fn localhost_only(spec: &ConnectivityCheckSpec) -> bool {
    !spec.targets.is_empty() && spec.targets.iter().all(|t| t.localhost.is_some())
}

/// The agents that probe for a check: those its source names, and the probe sidecars inside
/// the pods of its `localhost` targets.
pub fn sources<'a>(
    plan: &CheckPlan<'_>,
    agents: &'a [AgentInfo],
    nodes: &NodeIndex<'_>,
) -> Vec<&'a AgentInfo> {
    let only_localhost = localhost_only(plan.spec);
    let inside: BTreeSet<&str> = plan
        .targets
        .iter()
        .flat_map(|t| &t.endpoints)
        .filter_map(|e| e.inside_pod.as_deref())
        .collect();
    // Compiled once per check, not per agent.
    let node_selection = plan
        .spec
        .source
        .mesh
        .as_ref()
        .and_then(|m| m.node_selector.as_ref())
        .map(LabelSelection::new);
    agents
        .iter()
        .filter(|agent| match agent.kind {
            AgentKind::Sidecar => inside.contains(agent.name.as_str()),
            _ => {
                !only_localhost
                    && source_includes(
                        &plan.spec.source,
                        node_selection.as_ref(),
                        plan.key,
                        agent,
                        nodes,
                    )
            }
        })
        .collect()
}

fn source_includes(
    source: &ProbeSource,
    node_selection: Option<&LabelSelection>,
    check_key: &CheckKey,
    agent: &AgentInfo,
    nodes: &NodeIndex<'_>,
) -> bool {
    if let Some(mesh) = &source.mesh {
        if agent.kind != AgentKind::Mesh {
            return false;
        }
        if !mesh.zones.is_empty() && !agent.zone.as_ref().is_some_and(|z| mesh.zones.contains(z)) {
            return false;
        }
        if let Some(selection) = node_selection {
            let labels = agent
                .node
                .as_deref()
                .and_then(|n| nodes.get(n))
                .and_then(|node| node.metadata.labels.as_ref());
            return labels.is_some() && selection.selects(labels);
        }
        return true;
    }
    if let Some(workload) = &source.workload {
        // The check label alone is not enough: anyone may label a pod of their own namespace
        // with it. Only pods in the namespace the check's probe pods run in speak for it.
        let namespace = workload
            .namespace
            .as_deref()
            .unwrap_or(&check_key.namespace);
        return matches!(&agent.kind, AgentKind::Workload { check } if check == check_key)
            && agent.pod.as_ref().is_some_and(|p| p.namespace == namespace);
    }
    if let Some(external) = &source.external {
        return agent.kind == AgentKind::External && external.agents.contains(&agent.name);
    }
    false
}

/// Builds every agent's assignment. `node_addresses` are every node's own addresses
/// ([`node_addresses`]), `cluster_cidrs` the cluster's own address space
/// ([`crate::cluster_space`]); `mesh_peers` gives, for a mesh target, the peers a given agent
/// probes this round (the rotation lives in [`crate::mesh`]).
pub fn assignments<'a>(
    plans: &[CheckPlan<'_>],
    agents: &'a [AgentInfo],
    nodes: &[Arc<Node>],
    node_addresses: &Arc<[IpAddr]>,
    cluster_cidrs: &[String],
    mut mesh_peers: impl FnMut(
        &CheckPlan<'_>,
        &ResolvedTarget,
        &AgentInfo,
        &[&'a AgentInfo],
    ) -> Vec<&'a AgentInfo>,
) -> BTreeMap<String, Assignment> {
    // Every node's addresses (kubelets, node services) are off limits to every agent, external
    // ones included, unless a check is granted node addresses; NodePorts and mesh peers are
    // exempt exactly.
    let node_index = NodeIndex::new(nodes);
    let mut out: BTreeMap<String, Assignment> = agents
        .iter()
        .map(|a| {
            (
                a.name.clone(),
                Assignment {
                    source: Some(a.name.clone()),
                    checks: Vec::new(),
                    node_addresses: node_addresses.clone(),
                    cluster_cidrs: cluster_cidrs.to_vec(),
                    one_shots: Vec::new(),
                },
            )
        })
        .collect();
    for plan in plans {
        if plan.spec.suspend == Some(true) {
            continue;
        }
        let sources = sources(plan, agents, &node_index);
        // Sidecars probe their own pod's localhost and nothing else: they are no mesh peers.
        let mesh_sources: Vec<&AgentInfo> = sources
            .iter()
            .copied()
            .filter(|a| a.kind != AgentKind::Sidecar)
            .collect();
        let schedule = plan.spec.schedule.clone().unwrap_or_default();
        let interval_ms = interval_ms(plan.spec);
        let timeout_ms = schedule
            .timeout
            .map_or(DEFAULT_TIMEOUT_MS, |d| millis(d.get()));
        let jitter = f64::from(
            schedule
                .jitter_percent
                .unwrap_or(DEFAULT_JITTER_PERCENT.into())
                .clamp(0, 50),
        ) / 100.0;
        let latency_thresholds_us: Vec<u64> = plan
            .spec
            .objectives
            .as_ref()
            .and_then(|o| o.latency.as_ref())
            .map(|l| vec![u64::try_from(l.threshold.get().as_micros()).unwrap_or(u64::MAX)])
            .unwrap_or_default();
        for target in plan.targets {
            let probing = if target.mesh { &mesh_sources } else { &sources };
            for agent in probing {
                let mut destinations: Vec<Destination> = Vec::new();
                let targets: Vec<TargetSpec> = if target.mesh {
                    mesh_peers(plan, target, agent, &mesh_sources)
                        .into_iter()
                        .filter_map(|peer| {
                            let (spec, destination) = mesh_target(target, agent, peer)?;
                            destinations.push(destination);
                            Some(spec)
                        })
                        .collect()
                } else {
                    target
                        .endpoints
                        .iter()
                        // Localhost endpoints are probed only from inside their own pod, and a
                        // sidecar probes nothing else.
                        .filter(|e| match &e.inside_pod {
                            Some(pod) => *pod == agent.name,
                            None => agent.kind != AgentKind::Sidecar,
                        })
                        .map(|e| {
                            destinations.extend(e.destinations.iter().cloned());
                            TargetSpec {
                                name: Some(e.series.label()),
                                address: e.address.clone(),
                            }
                        })
                        .collect()
                };
                if targets.is_empty() {
                    continue;
                }
                let Some(assignment) = out.get_mut(&agent.name) else {
                    continue;
                };
                let address_policy =
                    target_address_policy(plan.address_policy, target, &targets, destinations);
                assignment.checks.push(CheckSpec {
                    name: agent_check_name(plan.key, &target.name),
                    interval_ms,
                    timeout_ms,
                    jitter,
                    latency_thresholds_us: latency_thresholds_us.clone(),
                    expect: target.expect,
                    blocked_by: target.blocked_by.clone(),
                    probe: target.probe.clone(),
                    targets,
                    address_policy: Some(address_policy),
                });
            }
        }
    }
    out
}

/// The namespace's grant plus what the operator resolved from cluster state for this agent's
/// share of the target: its in-cluster destinations (the only ones inside the cluster the
/// agent may reach), host names the cluster gave (a LoadBalancer's), and the exact
/// destinations of paths that are sensitive by nature, exempt from the sensitive classes: a
/// `localhost` target's loopback port inside its own pod, a NodePort on a node address.
fn target_address_policy(
    granted: &AddressPolicySpec,
    target: &ResolvedTarget,
    targets: &[TargetSpec],
    mut destinations: Vec<Destination>,
) -> AddressPolicySpec {
    let mut policy = granted.clone();
    destinations.sort();
    destinations.dedup();
    let rule = policy
        .destinations
        .get_or_insert_with(DestinationRuleSpec::default);
    for destination in destinations {
        match destination {
            Destination::Address {
                ip,
                port: Some(port),
            } => {
                rule.cluster.push(std::net::SocketAddr::new(ip, port));
            }
            Destination::Address { ip, port: None } => rule.cluster_ips.push(ip),
            Destination::Name { host, port } => rule.external.push(ExternalGrantSpec {
                hosts: vec![host],
                ports: port.into_iter().collect(),
                ..ExternalGrantSpec::default()
            }),
        }
    }
    if target.mesh {
        // Peers may run on their node's address (host network): their echo port is exempt.
        policy.exempt_destinations = rule.cluster.clone();
        return policy;
    }
    // A set: every pod's localhost endpoint has the same address.
    let exempt: BTreeSet<std::net::SocketAddr> = target
        .endpoints
        .iter()
        .filter(|e| matches!(e.series.via, Via::Localhost | Via::NodePort))
        .filter(|e| targets.iter().any(|t| t.address == e.address))
        .filter_map(|e| socket_address_of(&e.address))
        .collect();
    policy.exempt_destinations = exempt.into_iter().collect();
    policy
}

/// The socket address an endpoint connects to: `ip:port`, or an HTTP(S) URL's `ip:port`
/// authority. Names and URLs without an explicit port have none.
fn socket_address_of(address: &str) -> Option<std::net::SocketAddr> {
    let authority = match address.split_once("://") {
        Some((_, rest)) => rest.split(['/', '?', '#']).next().unwrap_or(rest),
        None => address,
    };
    authority.parse().ok()
}

/// Every node's InternalIP and ExternalIP addresses, sorted, each once.
/// Every node's internal and external addresses, sorted.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<IpAddr> {
    let set: BTreeSet<IpAddr> = nodes
        .iter()
        .filter_map(|n| n.status.as_ref()?.addresses.as_ref())
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    set.into_iter()
        .take(netslo_protocol::spec::MAX_NODE_ADDRESSES)
        .collect()
}

/// A mesh peer as a target: its echo responder, labelled with the peer's name so verdicts can
/// tell same-node from cross-node pairs through [`AgentInfo`], and the destination it is.
fn mesh_target(
    target: &ResolvedTarget,
    agent: &AgentInfo,
    peer: &AgentInfo,
) -> Option<(TargetSpec, Destination)> {
    if peer.name == agent.name {
        return None;
    }
    let ip = peer.ip.as_deref()?;
    let peer_ip: IpAddr = ip.parse().ok()?;
    let port = crate::workloads::ECHO_PORT;
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    let (address, destination_port) = match &target.probe {
        ProbeSpec::Icmp(_) => (ip.to_string(), None),
        ProbeSpec::Http(_) => (
            format!("http://{host}:{}/", crate::workloads::ECHO_HTTP_PORT),
            Some(crate::workloads::ECHO_HTTP_PORT),
        ),
        _ => (format!("{host}:{port}"), Some(port)),
    };
    let series = crate::resolve::SeriesId {
        target: target.name.clone(),
        via: Via::Pod,
        endpoint: peer.name.clone(),
    };
    let destination = Destination::Address {
        ip: peer_ip,
        port: destination_port.and_then(|p| u16::try_from(p).ok()),
    };
    Some((
        TargetSpec {
            name: Some(series.label()),
            address,
        },
        destination,
    ))
}

/// Why the agents could not compile a resolved target, if they could not: an address or a
/// setting the API server let through but the probe engine refuses (`field` and message from
/// the engine). Checked before anything is assigned, because an agent refuses a whole
/// assignment it cannot compile: one tenant's target must never stop other checks.
pub fn unprobeable(check: &CheckKey, target: &ResolvedTarget) -> Option<String> {
    if target.mesh || target.endpoints.is_empty() {
        return None;
    }
    let spec = CheckSpec {
        name: agent_check_name(check, &target.name),
        interval_ms: DEFAULT_INTERVAL_MS,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        jitter: 0.0,
        latency_thresholds_us: Vec::new(),
        expect: target.expect,
        blocked_by: target.blocked_by.clone(),
        probe: target.probe.clone(),
        targets: target
            .endpoints
            .iter()
            .map(|e| TargetSpec {
                name: Some(e.series.label()),
                address: e.address.clone(),
            })
            .collect(),
        address_policy: None,
    };
    let assignment = Assignment {
        source: None,
        checks: vec![spec],
        node_addresses: Arc::default(),
        cluster_cidrs: Vec::new(),
        one_shots: Vec::new(),
    };
    let error = netslo_protocol::target::check_assignment(&assignment).err()?;
    Some(match error {
        // The engine names its own field (`checks[0].targets[3].address`): say which part of
        // the target it is, the engine's message says what is wrong.
        netslo_protocol::spec::SpecError::Invalid { field, message } => {
            let part = field.strip_prefix("checks[0].").unwrap_or(&field);
            match part.split_once('.') {
                Some((t, "address")) if t.starts_with("targets[") => {
                    format!("resolved address: {message}")
                }
                _ => format!("{part}: {message}"),
            }
        }
        other => other.to_string(),
    })
}

/// A check's probe interval, default applied: also the length of a mesh round.
pub fn interval_ms(spec: &ConnectivityCheckSpec) -> u64 {
    spec.schedule
        .as_ref()
        .and_then(|s| s.interval.as_ref())
        .map_or(DEFAULT_INTERVAL_MS, |d| millis(d.get()))
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::ZONE_LABEL;
    use crate::resolve::{ClusterSnapshot, resolve};
    use k8s_openapi::api::core::v1::{Pod, Service};
    use netslo_crds::v1alpha1::ConnectivityCheck;
    use netslo_protocol::spec::Expect;
    use serde_json::json;

    static NO_GRANTS: AddressPolicySpec = AddressPolicySpec {
        allow_link_local: false,
        allow_loopback: false,
        allow_node_addresses: false,
        destinations: None,
        exempt_destinations: Vec::new(),
    };

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn agent(name: &str, kind: AgentKind, node: &str, zone: &str, ip: &str) -> AgentInfo {
        AgentInfo {
            name: name.into(),
            kind,
            node: Some(node.into()),
            zone: Some(zone.into()),
            ip: Some(ip.into()),
            pod: None,
        }
    }

    fn agents() -> Vec<AgentInfo> {
        vec![
            agent("mesh-a", AgentKind::Mesh, "node-a", "zone-a", "10.244.1.2"),
            agent("mesh-b", AgentKind::Mesh, "node-b", "zone-b", "10.244.2.2"),
            AgentInfo {
                pod: Some(AgentPod {
                    namespace: "shop".into(),
                    name: "web-probe-1".into(),
                    service_account: "web".into(),
                    uid: None,
                }),
                ..agent(
                    "web-probe-1",
                    AgentKind::Workload {
                        check: CheckKey::new("shop", "web-to-api"),
                    },
                    "node-a",
                    "zone-a",
                    "10.244.1.9",
                )
            },
            // A pod of another namespace carrying the same check label: it speaks for nothing.
            AgentInfo {
                pod: Some(AgentPod {
                    namespace: "elsewhere".into(),
                    name: "forged".into(),
                    service_account: "default".into(),
                    uid: None,
                }),
                ..agent(
                    "forged",
                    AgentKind::Workload {
                        check: CheckKey::new("shop", "web-to-api"),
                    },
                    "node-b",
                    "zone-b",
                    "10.244.2.9",
                )
            },
            AgentInfo {
                name: "office".into(),
                kind: AgentKind::External,
                node: None,
                zone: None,
                ip: None,
                pod: None,
            },
            // Only the first checkout pod runs the probe sidecar.
            agent(
                "shop/checkout-1",
                AgentKind::Sidecar,
                "node-a",
                "zone-a",
                "10.244.1.20",
            ),
        ]
    }

    fn checkout_pods() -> Vec<Arc<Pod>> {
        ["checkout-1", "checkout-2"]
            .into_iter()
            .map(|name| {
                Arc::new(from(json!({
                    "metadata": {"namespace": "shop", "name": name, "labels": {"app": "checkout"}},
                    "spec": {"nodeName": "node-a"},
                    "status": {"phase": "Running", "podIP": "10.244.1.20",
                               "conditions": [{"type": "Ready", "status": "True"}]}
                })))
            })
            .collect()
    }

    fn nodes() -> Vec<Arc<Node>> {
        vec![
            Arc::new(from(
                json!({"metadata": {"name": "node-a", "labels": {ZONE_LABEL: "zone-a", "pool": "general"}},
                       "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"},
                                                {"type": "Hostname", "address": "node-a"}]}}),
            )),
            Arc::new(from(
                json!({"metadata": {"name": "node-b", "labels": {ZONE_LABEL: "zone-b", "pool": "gpu"}}}),
            )),
        ]
    }

    fn check(name: &str, spec: serde_json::Value) -> ConnectivityCheck {
        from(
            json!({"apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"namespace": "shop", "name": name}, "spec": spec}),
        )
    }

    fn services() -> Vec<Arc<Service>> {
        vec![Arc::new(from(
            json!({"metadata": {"namespace": "shop", "name": "api"},
            "spec": {"clusterIP": "10.96.1.1", "ports": [{"name": "http", "port": 80}]}}),
        ))]
    }

    fn plan_and_assign(checks: &[ConnectivityCheck]) -> BTreeMap<String, Assignment> {
        let services = services();
        let nodes = nodes();
        let pods = checkout_pods();
        let snapshot = ClusterSnapshot {
            pods: &pods,
            services: &services,
            endpoint_slices: &[],
            nodes: &nodes,
            ingresses: &[],
            cluster_domain: "cluster.local",
            cluster_ca_pem: None,
        };
        let resolutions: Vec<_> = checks
            .iter()
            .map(|c| resolve("shop", &c.spec.targets, &snapshot))
            .collect();
        let keys: Vec<CheckKey> = checks
            .iter()
            .map(|c| CheckKey::new("shop", c.metadata.name.as_deref().unwrap()))
            .collect();
        let plans: Vec<CheckPlan<'_>> = checks
            .iter()
            .zip(&resolutions)
            .zip(&keys)
            .map(|((c, r), key)| CheckPlan {
                key,
                spec: &c.spec,
                targets: &r.targets,
                address_policy: &NO_GRANTS,
            })
            .collect();
        let agents = agents();
        let cluster_cidrs = ["10.244.0.0/16".to_string()];
        let addresses = node_addresses(&nodes).into();
        let out = assignments(
            &plans,
            &agents,
            &nodes,
            &addresses,
            &cluster_cidrs,
            |_, _, _, peers| peers.to_vec(),
        );
        // Every assignment is one the agent accepts.
        for assignment in out.values() {
            assignment
                .validate()
                .expect("the agent accepts what the operator sends");
        }
        out
    }

    fn check_names(out: &BTreeMap<String, Assignment>, agent: &str) -> Vec<String> {
        out[agent].checks.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn localhost_targets_run_only_in_the_sidecar_of_their_own_pod() {
        let c = check(
            "local",
            json!({"source": {"mesh": {}},
            "targets": [{"name": "app", "localhost": {"podSelector": {"matchLabels": {"app": "checkout"}}, "port": 9091},
                         "protocol": "HTTP", "http": {"path": "/ready"}}]}),
        );
        assert!(localhost_only(&c.spec));
        let out = plan_and_assign(std::slice::from_ref(&c));
        let sidecar = &out["shop/checkout-1"].checks;
        assert_eq!(check_names(&out, "shop/checkout-1"), ["shop/local/app"]);
        assert_eq!(
            sidecar[0].targets[0].name.as_deref(),
            Some("app/Localhost/checkout-1"),
            "only its own pod's endpoint"
        );
        assert_eq!(sidecar[0].targets[0].address, "http://127.0.0.1:9091/ready");
        assert_eq!(
            sidecar[0]
                .address_policy
                .as_ref()
                .unwrap()
                .exempt_destinations,
            ["127.0.0.1:9091".parse::<std::net::SocketAddr>().unwrap()],
            "its own loopback port is exempt from the loopback refusal, also as a URL"
        );
        for other in ["mesh-a", "mesh-b", "web-probe-1", "office"] {
            assert!(out[other].checks.is_empty(), "{other} probes no localhost");
        }
    }

    #[test]
    fn a_mixed_check_keeps_its_source_and_sidecars_probe_only_localhost() {
        let c = check(
            "mixed",
            json!({"source": {"mesh": {}},
            "targets": [{"name": "api", "service": {"name": "api", "port": 80, "via": ["ClusterIP"]}},
                        {"name": "peers", "mesh": {}},
                        {"name": "app", "localhost": {"podSelector": {"matchLabels": {"app": "checkout"}}, "port": 9091}}]}),
        );
        assert!(!localhost_only(&c.spec));
        let out = plan_and_assign(std::slice::from_ref(&c));
        assert_eq!(
            check_names(&out, "mesh-a"),
            ["shop/mixed/api", "shop/mixed/peers"]
        );
        assert_eq!(
            out["mesh-a"].checks[1].targets.len(),
            1,
            "the sidecar is no mesh peer"
        );
        assert_eq!(check_names(&out, "shop/checkout-1"), ["shop/mixed/app"]);
    }

    #[test]
    fn socket_addresses_of_endpoints() {
        for (address, expected) in [
            ("127.0.0.1:9091", Some("127.0.0.1:9091")),
            ("http://127.0.0.1:9091/ready?x=1", Some("127.0.0.1:9091")),
            ("https://[::1]:8443/", Some("[::1]:8443")),
            ("http://127.0.0.1/", None),
            ("http://localhost:80/", None),
            ("192.0.2.1", None),
        ] {
            assert_eq!(
                socket_address_of(address),
                expected.map(|e| e.parse().unwrap()),
                "{address}"
            );
        }
    }

    #[test]
    fn mesh_source_reaches_every_mesh_agent_with_schedule_and_thresholds() {
        let c = check(
            "api",
            json!({"source": {"mesh": {}},
            "targets": [{"name": "api", "service": {"name": "api", "port": 80, "via": ["ClusterIP"]}}],
            "schedule": {"interval": "30s", "timeout": "3s", "jitterPercent": 20},
            "objectives": {"latency": {"threshold": "5ms", "target": "99"}}}),
        );
        let out = plan_and_assign(&[c]);
        for name in ["mesh-a", "mesh-b"] {
            let a = &out[name];
            assert_eq!(a.source.as_deref(), Some(name));
            assert_eq!(a.checks.len(), 1);
            let spec = &a.checks[0];
            assert_eq!(spec.name, "shop/api/api");
            assert_eq!((spec.interval_ms, spec.timeout_ms), (30_000, 3_000));
            assert!((spec.jitter - 0.2).abs() < 1e-9);
            assert_eq!(spec.latency_thresholds_us, [5_000]);
            assert_eq!(
                spec.targets[0].name.as_deref(),
                Some("api/ClusterIP/10.96.1.1:80")
            );
            a.validate()
                .expect("the agent accepts what the operator sends");
        }
        assert!(out["web-probe-1"].checks.is_empty() && out["office"].checks.is_empty());
    }

    #[test]
    fn zones_node_selectors_workloads_and_external_pick_their_agents() {
        let by_zone = check(
            "z",
            json!({"source": {"mesh": {"zones": ["zone-b"]}},
            "targets": [{"name": "t", "external": {"host": "192.0.2.1", "port": 443}}]}),
        );
        let by_selector = check(
            "s",
            json!({"source": {"mesh": {"nodeSelector": {"matchLabels": {"pool": "general"}}}},
            "targets": [{"name": "t", "external": {"host": "192.0.2.1", "port": 443}}]}),
        );
        let workload = check(
            "web-to-api",
            json!({"source": {"workload": {"podLabels": {"app": "web"}, "serviceAccountName": "web"}},
            "targets": [{"name": "t", "external": {"host": "192.0.2.1", "port": 443}, "expect": "Deny"}]}),
        );
        let external = check(
            "e",
            json!({"source": {"external": {"agents": ["office"]}},
            "targets": [{"name": "t", "external": {"host": "192.0.2.1", "port": 443}}]}),
        );
        let out = plan_and_assign(&[by_zone, by_selector, workload, external]);
        let names = |agent: &str| {
            out[agent]
                .checks
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names("mesh-a"), ["shop/s/t"]);
        assert_eq!(names("mesh-b"), ["shop/z/t"]);
        assert_eq!(names("web-probe-1"), ["shop/web-to-api/t"]);
        assert_eq!(out["web-probe-1"].checks[0].expect, Expect::Deny);
        assert!(
            names("forged").is_empty(),
            "a check label in another namespace"
        );
        assert_eq!(names("office"), ["shop/e/t"]);
    }

    #[test]
    fn mesh_targets_probe_peer_echo_responders_never_themselves() {
        let c = check(
            "mesh",
            json!({"source": {"mesh": {}}, "targets": [{"name": "peers", "mesh": {}}]}),
        );
        let out = plan_and_assign(&[c]);
        let targets = &out["mesh-a"].checks[0].targets;
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].name.as_deref(), Some("peers/Pod/mesh-b"));
        assert_eq!(
            targets[0].address,
            format!("10.244.2.2:{}", crate::workloads::ECHO_PORT)
        );
    }

    #[test]
    fn suspended_checks_assign_nothing() {
        let c = check(
            "api",
            json!({"suspend": true, "source": {"mesh": {}},
            "targets": [{"name": "api", "service": {"name": "api", "port": 80}}]}),
        );
        assert!(plan_and_assign(&[c]).values().all(|a| a.checks.is_empty()));
    }

    #[test]
    fn agent_check_names_are_the_protocols() {
        let name = agent_check_name(&CheckKey::new("shop", "web-to-api"), "api");
        assert_eq!(
            AssignedCheck::parse(&name),
            Some(AssignedCheck {
                namespace: "shop",
                check: "web-to-api",
                target: "api"
            })
        );
    }

    #[test]
    fn agents_are_told_their_own_node_and_each_check_its_grants() {
        let out = plan_and_assign(&[check(
            "c",
            json!({"source": {"mesh": {}},
                   "targets": [{"name": "t", "external": {"host": "192.0.2.1", "port": 443}}]}),
        )]);
        let a = &out["mesh-a"];
        assert_eq!(*a.node_addresses, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            out["mesh-b"].node_addresses, a.node_addresses,
            "every node's addresses, whichever node the agent is on"
        );
        assert_eq!(
            out["office"].node_addresses, a.node_addresses,
            "external agents too"
        );
        let policy = a.checks[0]
            .address_policy
            .as_ref()
            .expect("every check carries one");
        assert_eq!(
            policy,
            &AddressPolicySpec {
                destinations: Some(DestinationRuleSpec::default()),
                ..NO_GRANTS.clone()
            },
            "nothing sensitive granted, nothing exempt, nothing resolved in the cluster"
        );
        assert_eq!(a.cluster_cidrs, ["10.244.0.0/16"], "the cluster's space");
    }

    #[test]
    fn targets_the_engine_cannot_compile_are_found_before_assignment() {
        let services = services();
        let nodes = nodes();
        let snapshot = ClusterSnapshot {
            pods: &[],
            services: &services,
            endpoint_slices: &[],
            nodes: &nodes,
            ingresses: &[],
            cluster_domain: "cluster.local",
            cluster_ca_pem: None,
        };
        let targets: Vec<netslo_crds::v1alpha1::Target> = from(json!([
            {"name": "ok", "external": {"url": "https://example.com/"}},
            // A port the API server refuses, as an older CRD would have let it through.
            {"name": "bad", "external": {"url": "https://example.com:65536/"}, "protocol": "HTTPS"},
            {"name": "ping", "external": {"host": "example.com"}, "protocol": "ICMP"},
        ]));
        let resolution = resolve("shop", &targets, &snapshot);
        let found: Vec<(String, Option<String>)> = resolution
            .targets
            .iter()
            .map(|t| (t.name.clone(), unprobeable(&CheckKey::new("shop", "c"), t)))
            .collect();
        assert_eq!(found[0], ("ok".to_string(), None));
        let bad = found[1].1.as_deref().unwrap_or_default();
        assert!(bad.contains("the port must be 1 to 65535"), "{bad}");
        let ping = found[2].1.as_deref().unwrap_or_default();
        assert!(ping.contains("is not an IP address"), "{ping}");
    }

    #[test]
    fn each_check_reaches_exactly_what_the_operator_resolved_for_it() {
        let out = plan_and_assign(&[
            check(
                "svc",
                json!({"source": {"mesh": {}},
                       "targets": [{"name": "api", "service": {"name": "api", "port": 80, "via": ["ClusterIP", "DNSName"]}}]}),
            ),
            check(
                "peers",
                json!({"source": {"mesh": {}}, "targets": [{"name": "m", "mesh": {}}]}),
            ),
        ]);
        let rule = |agent: &str, check: &str| {
            out[agent]
                .checks
                .iter()
                .find(|c| c.name == check)
                .and_then(|c| c.address_policy.clone()?.destinations)
                .expect("a destination rule")
        };
        let svc = rule("mesh-a", "shop/svc/api");
        assert_eq!(
            svc.cluster,
            ["10.96.1.1:80".parse::<std::net::SocketAddr>().unwrap()],
            "the ClusterIP, once for both paths"
        );
        assert!(svc.external.is_empty());
        let peers = rule("mesh-a", "shop/peers/m");
        assert_eq!(
            peers.cluster,
            [std::net::SocketAddr::new(
                "10.244.2.2".parse().unwrap(),
                u16::try_from(crate::workloads::ECHO_PORT).unwrap()
            )],
            "its peer's echo port, never its own"
        );
    }
}
