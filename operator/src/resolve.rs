//! Target resolution: from a check's targets and a snapshot of the cluster to the concrete
//! addresses agents probe, each labelled with the path it exercises.
//!
//! Pure on purpose. The reconciler is the only component that watches Pods, Services,
//! EndpointSlices, Nodes and Ingresses (agents never do: that load would grow with the cluster);
//! it hands this module a snapshot of its caches and gets back, per target, the probe to run and
//! every address to run it against. A target that cannot be resolved becomes a
//! [`Problem`] naming it, which the status turns into `Stalled` or `NoData`, never a crash.
//!
//! Mesh targets are not resolved here: their peers rotate per round and per agent
//! ([`crate::mesh`]); this module only reports the protocol to use.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Selector, SelectorExt};
use netslo_crds::v1alpha1::{
    BlockedOutcome, DnsRcode, DnsRecordType, Expectation, HttpMethod, HttpProbe, Protocol,
    ServicePath, Target,
};
use netslo_protocol::names::SeriesLabel;
use netslo_protocol::spec::{
    DnsSpec, Expect, HttpSpec, IcmpSpec, ProbeSpec, Rcode, RecordKind, TcpSpec, UdpSpec,
};
use netslo_protocol::verdict::BlockMode;

/// The well-known label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming the controller that manages an EndpointSlice, and the value of the
/// Kubernetes endpointslice controller, which builds slices from a Service's selector.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const ENDPOINTSLICE_CONTROLLER: &str = "endpointslice-controller.k8s.io";
/// The well-known zone label of nodes.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// What the reconciler knows of the cluster, from its caches.
#[derive(Debug, Clone, Copy)]
pub struct ClusterSnapshot<'a> {
    pub pods: &'a [Arc<Pod>],
    pub services: &'a [Arc<Service>],
    pub endpoint_slices: &'a [Arc<EndpointSlice>],
    pub nodes: &'a [Arc<Node>],
    pub ingresses: &'a [Arc<Ingress>],
    /// The cluster's DNS domain, e.g. `cluster.local`.
    pub cluster_domain: &'a str,
    /// PEM of the cluster CA (the `kube-root-ca.crt` ConfigMap), for API server probes.
    pub cluster_ca_pem: Option<&'a str>,
}

/// The path a probe exercises, reported on its own so a verdict can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    Pod,
    ClusterIP,
    DNSName,
    Endpoint,
    NodePort,
    LoadBalancer,
    Ingress,
    External,
    Dns,
    ApiServer,
    Localhost,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::ClusterIP => "ClusterIP",
            Self::DNSName => "DNSName",
            Self::Endpoint => "Endpoint",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
            Self::Ingress => "Ingress",
            Self::External => "External",
            Self::Dns => "Dns",
            Self::ApiServer => "ApiServer",
            Self::Localhost => "Localhost",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Pod,
            Self::ClusterIP,
            Self::DNSName,
            Self::Endpoint,
            Self::NodePort,
            Self::LoadBalancer,
            Self::Ingress,
            Self::External,
            Self::Dns,
            Self::ApiServer,
            Self::Localhost,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// The API's name for a Service path, where this is one.
    pub fn service_path(self) -> Option<ServicePath> {
        match self {
            Self::ClusterIP => Some(ServicePath::ClusterIP),
            Self::DNSName => Some(ServicePath::DNSName),
            Self::Endpoint => Some(ServicePath::Endpoints),
            Self::NodePort => Some(ServicePath::NodePort),
            Self::LoadBalancer => Some(ServicePath::LoadBalancer),
            _ => None,
        }
    }
}

/// Identity of one probed series within a check: target, path and endpoint. Encoded as the
/// agent-side target label `<target>/<via>/<endpoint>`; target names are DNS labels and
/// `via` a fixed word, so the first two slashes split it unambiguously (endpoints may contain
/// slashes and colons: URLs, IPv6).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesId {
    pub target: String,
    pub via: Via,
    pub endpoint: String,
}

impl SeriesId {
    pub fn label(&self) -> String {
        SeriesLabel {
            target: &self.target,
            path: self.via.as_str(),
            endpoint: &self.endpoint,
        }
        .to_string()
    }

    /// Reads a label back; `None` for anything this operator did not produce.
    pub fn parse(label: &str) -> Option<Self> {
        let label = SeriesLabel::parse(label)?;
        Some(Self {
            target: label.target.to_string(),
            via: Via::parse(label.path)?,
            endpoint: label.endpoint.to_string(),
        })
    }
}

/// One address to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub series: SeriesId,
    /// What the agent connects to: `host:port`, a URL, a DNS name or an IP, per probe kind.
    pub address: String,
    /// Node hosting the endpoint, where known (for same-node vs cross-node and zone verdicts).
    pub node: Option<String>,
    pub zone: Option<String>,
    /// For localhost targets: the pod inside which the probe must run, as `<namespace>/<pod>`,
    /// which is also the name of the probe sidecar agent in that pod.
    pub inside_pod: Option<String>,
    /// What its probes may reach inside the cluster, resolved here from cluster state: the
    /// agents refuse every other in-cluster address. Empty for external and DNS targets,
    /// which only the namespace's external grants admit.
    pub destinations: Vec<Destination>,
}

/// A destination the operator vouches for, from cluster state it trusts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Destination {
    /// `ip:port`, or the address alone for probes without ports (ICMP).
    Address { ip: IpAddr, port: Option<u16> },
    /// A host name the cluster gave (a LoadBalancer's or an Ingress's `hostname`): what it
    /// resolves to outside the cluster's own address space.
    Name { host: String, port: Option<u16> },
}

impl Destination {
    /// `host` as a destination: an address if it is an IP literal, else a name; no port for
    /// ICMP.
    fn of(protocol: Protocol, host: &str, port: i32) -> Destination {
        let port = (protocol != Protocol::ICMP)
            .then(|| u16::try_from(port).ok())
            .flatten();
        match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => Destination::Address { ip, port },
            Err(_) => Destination::Name {
                host: host.trim_end_matches('.').to_string(),
                port,
            },
        }
    }
}

/// A resolved target: the probe and every address to run it against.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTarget {
    pub name: String,
    pub protocol: Protocol,
    pub probe: ProbeSpec,
    pub expect: Expect,
    pub blocked_by: Vec<BlockMode>,
    /// Namespace whose objects the target reaches into, for tenancy checks.
    pub namespace: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// Mesh targets resolve per agent and round, not here.
    pub mesh: bool,
    /// Hosts outside the cluster that cluster objects point the target at (an ExternalName
    /// Service's name), with their ports: the namespace needs an external grant for each.
    pub external_hosts: Vec<(String, u16)>,
}

/// Why a target (or one path of it) cannot be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub target: String,
    pub kind: ProblemKind,
    pub message: String,
}

/// Kinds of problem. `Stalled` ones need the user (or a missing object) to act; the others
/// mean there is nothing to probe right now, which shows as missing data, never as good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// A referenced object does not exist.
    NotFound,
    /// The object exists but lacks what the target needs (a port, a node port, an address).
    Unresolvable,
    /// Nothing ready to probe right now (no ready pods or endpoints).
    NothingReady,
    /// The cluster objects behind the target are not ones netslo trusts to say where it is
    /// (an EndpointSlice written by hand, or naming addresses that are no pods of the
    /// Service's namespace): a tenant could point it anywhere. Nothing of it is probed.
    Untrusted,
}

impl ProblemKind {
    /// Whether the spec cannot be acted on as it stands (kstatus `Stalled`).
    pub fn stalls(self) -> bool {
        matches!(self, Self::NotFound | Self::Unresolvable | Self::Untrusted)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "target {}: {}", self.target, self.message)
    }
}

/// Everything resolved for one check.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resolution {
    pub targets: Vec<ResolvedTarget>,
    pub problems: Vec<Problem>,
}

/// Resolves every target of a check in namespace `namespace`.
pub fn resolve(namespace: &str, targets: &[Target], cluster: &ClusterSnapshot<'_>) -> Resolution {
    let mut out = Resolution::default();
    for target in targets {
        let mut problems = Vec::new();
        if let Some(resolved) = resolve_target(namespace, target, cluster, &mut problems) {
            out.targets.push(resolved);
        }
        out.problems
            .extend(problems.into_iter().map(|(kind, message)| Problem {
                target: target.name.clone(),
                kind,
                message,
            }));
    }
    out
}

type Problems = Vec<(ProblemKind, String)>;

fn resolve_target(
    check_ns: &str,
    target: &Target,
    cluster: &ClusterSnapshot<'_>,
    problems: &mut Problems,
) -> Option<ResolvedTarget> {
    let protocol = protocol_of(target);
    let expect = match target.expect.unwrap_or_default() {
        Expectation::Allow => Expect::Allow,
        Expectation::Deny => Expect::Deny,
    };
    let blocked_by = target
        .blocked_outcomes
        .iter()
        .flatten()
        .map(|o| match o {
            BlockedOutcome::Timeout => BlockMode::Timeout,
            BlockedOutcome::Refused => BlockMode::Refused,
            BlockedOutcome::Reset => BlockMode::Reset,
            BlockedOutcome::Unreachable => BlockMode::Unreachable,
        })
        .collect();
    let mut resolved = ResolvedTarget {
        name: target.name.clone(),
        protocol,
        probe: probe_spec(protocol, target, cluster),
        expect,
        blocked_by,
        namespace: None,
        endpoints: Vec::new(),
        mesh: false,
        external_hosts: Vec::new(),
    };
    let name = target.name.as_str();
    let path = target.http.as_ref().and_then(|h| h.path.as_deref());
    if let Some(pods) = &target.pods {
        let ns = pods.namespace.as_deref().unwrap_or(check_ns);
        resolved.namespace = Some(ns.to_string());
        let selection = LabelSelection::new(&pods.selector);
        let ready: Vec<&Arc<Pod>> = cluster
            .pods
            .iter()
            .filter(|p| in_namespace(&p.metadata.namespace, ns))
            .filter(|p| selection.selects(p.metadata.labels.as_ref()))
            .filter(|p| pod_ready(p))
            .collect();
        if ready.is_empty() {
            problems.push((
                ProblemKind::NothingReady,
                format!("no ready pods match the selector in namespace {ns}"),
            ));
        }
        for pod in ready {
            let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
                continue;
            };
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            let (address, endpoint) = match pods.port {
                Some(port) => (address_for(protocol, ip, port, path), host_port(ip, port)),
                None => (ip.to_string(), ip.to_string()),
            };
            // Without a port only ICMP can probe the pod.
            let destination = Destination::of(protocol, ip, pods.port.unwrap_or(0));
            resolved.endpoints.push(Endpoint {
                series: series(name, Via::Pod, &endpoint),
                address,
                zone: node.as_deref().and_then(|n| zone_of(cluster.nodes, n)),
                node,
                inside_pod: None,
                destinations: vec![destination],
            });
        }
    } else if let Some(svc_target) = &target.service {
        let ns = svc_target.namespace.as_deref().unwrap_or(check_ns);
        resolved.namespace = Some(ns.to_string());
        resolve_service(
            name,
            ns,
            svc_target,
            protocol,
            path,
            cluster,
            &mut resolved,
            problems,
        );
    } else if let Some(ing) = &target.ingress {
        let ns = ing.namespace.as_deref().unwrap_or(check_ns);
        resolved.namespace = Some(ns.to_string());
        resolve_ingress(
            name,
            ns,
            ing,
            protocol,
            path,
            cluster,
            &mut resolved,
            problems,
        );
    } else if let Some(ext) = &target.external {
        let (address, endpoint) = match (&ext.url, &ext.host, ext.port) {
            (Some(url), _, _) => (url.clone(), url.clone()),
            (None, Some(host), Some(port)) => (
                address_for(protocol, host, port, path),
                host_port(host, port),
            ),
            (None, Some(host), None) => (host.clone(), host.clone()),
            (None, None, _) => {
                problems.push((
                    ProblemKind::Unresolvable,
                    "external target has neither host nor url".into(),
                ));
                return None;
            }
        };
        resolved.endpoints.push(plain(
            series(name, Via::External, &endpoint),
            address,
            Vec::new(),
        ));
    } else if let Some(dns) = &target.dns {
        let fqdn = if dns.name.ends_with('.') {
            dns.name.clone()
        } else {
            format!("{}.", dns.name)
        };
        resolved.endpoints.push(plain(
            series(name, Via::Dns, &fqdn),
            fqdn.clone(),
            Vec::new(),
        ));
    } else if target.api_server.is_some() {
        match kubernetes_service_address(cluster.services) {
            Some((ip, port)) => {
                let url = url_for(protocol, &ip, port, path.or(Some("/readyz")));
                resolved.endpoints.push(plain(
                    series(name, Via::ApiServer, &host_port(&ip, port)),
                    url,
                    vec![Destination::of(protocol, &ip, port)],
                ));
            }
            None => problems.push((
                ProblemKind::NotFound,
                "Service default/kubernetes not found".into(),
            )),
        }
    } else if let Some(local) = &target.localhost {
        resolved.namespace = Some(check_ns.to_string());
        let selection = LabelSelection::new(&local.pod_selector);
        let pods: Vec<&Arc<Pod>> = cluster
            .pods
            .iter()
            .filter(|p| in_namespace(&p.metadata.namespace, check_ns))
            .filter(|p| selection.selects(p.metadata.labels.as_ref()))
            .filter(|p| pod_ready(p))
            .collect();
        if pods.is_empty() {
            problems.push((
                ProblemKind::NothingReady,
                format!("no ready pods match the podSelector in namespace {check_ns}"),
            ));
        }
        for pod in pods {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            resolved.endpoints.push(Endpoint {
                series: series(name, Via::Localhost, &pod_name),
                address: address_for(protocol, "127.0.0.1", local.port, path),
                zone: node.as_deref().and_then(|n| zone_of(cluster.nodes, n)),
                node,
                inside_pod: Some(format!("{check_ns}/{pod_name}")),
                destinations: vec![Destination::of(protocol, "127.0.0.1", local.port)],
            });
        }
    } else if target.mesh.is_some() {
        resolved.mesh = true;
    } else {
        problems.push((ProblemKind::Unresolvable, "no target kind set".into()));
        return None;
    }
    Some(resolved)
}

#[allow(clippy::too_many_arguments)] // one call site; the arguments are the resolution's context
fn resolve_service(
    name: &str,
    ns: &str,
    target: &netslo_crds::v1alpha1::ServiceTarget,
    protocol: Protocol,
    path: Option<&str>,
    cluster: &ClusterSnapshot<'_>,
    resolved: &mut ResolvedTarget,
    problems: &mut Problems,
) {
    let endpoints = &mut resolved.endpoints;
    let Some(svc) = cluster.services.iter().find(|s| {
        in_namespace(&s.metadata.namespace, ns)
            && s.metadata.name.as_deref() == Some(target.name.as_str())
    }) else {
        problems.push((
            ProblemKind::NotFound,
            format!("Service {ns}/{} not found", target.name),
        ));
        return;
    };
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    if spec.type_.as_deref() == Some("ExternalName") {
        external_name_service(name, ns, target, &spec, protocol, path, resolved, problems);
        return;
    }
    // kube-proxy routes the ClusterIP to every slice of the Service, so one untrusted slice
    // makes every path of it untrusted.
    if let Some(why) = untrusted_endpoint_slice(ns, &target.name, cluster) {
        problems.push((ProblemKind::Untrusted, why));
        return;
    }
    let Some(port) = ports
        .iter()
        .find(|p| match (&target.port, &target.port_name) {
            (Some(number), _) => p.port == *number,
            (None, Some(port_name)) => p.name.as_deref() == Some(port_name.as_str()),
            (None, None) => false,
        })
    else {
        let wanted = target
            .port
            .map(|p| p.to_string())
            .or_else(|| target.port_name.clone())
            .unwrap_or_default();
        problems.push((
            ProblemKind::Unresolvable,
            format!("Service {ns}/{} has no port {wanted}", target.name),
        ));
        return;
    };
    let vias: Vec<ServicePath> = if target.via.is_empty() {
        vec![
            ServicePath::ClusterIP,
            ServicePath::DNSName,
            ServicePath::Endpoints,
        ]
    } else {
        target.via.clone()
    };
    for via in vias {
        match via {
            ServicePath::ClusterIP => match spec
                .cluster_ip
                .as_deref()
                .filter(|ip| !ip.is_empty() && *ip != "None")
            {
                Some(ip) => endpoints.push(plain(
                    series(name, Via::ClusterIP, &host_port(ip, port.port)),
                    address_for(protocol, ip, port.port, path),
                    vec![Destination::of(protocol, ip, port.port)],
                )),
                None => problems.push((
                    ProblemKind::Unresolvable,
                    format!("Service {ns}/{} has no cluster IP (headless)", target.name),
                )),
            },
            ServicePath::DNSName => {
                let host = format!(
                    "{}.{ns}.svc.{}.",
                    target.name,
                    cluster.cluster_domain.trim_end_matches('.')
                );
                // The name resolves to the ClusterIP, or for a headless Service to its
                // endpoints, on the Service's port.
                let destinations = match spec
                    .cluster_ip
                    .as_deref()
                    .filter(|ip| !ip.is_empty() && *ip != "None")
                {
                    Some(ip) => vec![Destination::of(protocol, ip, port.port)],
                    None => service_endpoints(ns, &target.name, port, cluster)
                        .iter()
                        .map(|(ip, ..)| Destination::of(protocol, ip, port.port))
                        .collect(),
                };
                endpoints.push(plain(
                    series(name, Via::DNSName, &host_port(&host, port.port)),
                    address_for(protocol, &host, port.port, path),
                    destinations,
                ));
            }
            ServicePath::Endpoints => {
                let found = service_endpoints(ns, &target.name, port, cluster);
                if found.is_empty() {
                    problems.push((
                        ProblemKind::NothingReady,
                        format!("Service {ns}/{} has no ready endpoints", target.name),
                    ));
                }
                for (ip, target_port, node, zone) in found {
                    endpoints.push(Endpoint {
                        series: series(name, Via::Endpoint, &host_port(&ip, target_port)),
                        address: address_for(protocol, &ip, target_port, path),
                        zone: zone
                            .or_else(|| node.as_deref().and_then(|n| zone_of(cluster.nodes, n))),
                        node,
                        inside_pod: None,
                        destinations: vec![Destination::of(protocol, &ip, target_port)],
                    });
                }
            }
            ServicePath::NodePort => match port.node_port {
                Some(node_port) => {
                    let mut any = false;
                    for node in cluster.nodes {
                        let Some(ip) = node_address(node) else {
                            continue;
                        };
                        let node_name = node.metadata.name.clone().unwrap_or_default();
                        any = true;
                        endpoints.push(Endpoint {
                            series: series(
                                name,
                                Via::NodePort,
                                &format!("{node_name}/{}", host_port(&ip, node_port)),
                            ),
                            address: address_for(protocol, &ip, node_port, path),
                            zone: zone_of(cluster.nodes, &node_name),
                            node: Some(node_name),
                            inside_pod: None,
                            destinations: vec![Destination::of(protocol, &ip, node_port)],
                        });
                    }
                    if !any {
                        problems.push((
                            ProblemKind::NothingReady,
                            "no node has an address to probe the NodePort on".into(),
                        ));
                    }
                }
                None => problems.push((
                    ProblemKind::Unresolvable,
                    format!(
                        "Service {ns}/{} has no node port (type {})",
                        target.name,
                        spec.type_.as_deref().unwrap_or("ClusterIP")
                    ),
                )),
            },
            ServicePath::LoadBalancer => {
                let ingress = svc
                    .status
                    .as_ref()
                    .and_then(|s| s.load_balancer.as_ref())
                    .and_then(|lb| lb.ingress.clone())
                    .unwrap_or_default();
                let addresses: Vec<String> = ingress
                    .iter()
                    .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                    .collect();
                if addresses.is_empty() {
                    problems.push((
                        ProblemKind::NothingReady,
                        format!(
                            "Service {ns}/{} has no LoadBalancer address yet",
                            target.name
                        ),
                    ));
                }
                for address in addresses {
                    endpoints.push(plain(
                        series(name, Via::LoadBalancer, &host_port(&address, port.port)),
                        address_for(protocol, &address, port.port, path),
                        vec![Destination::of(protocol, &address, port.port)],
                    ));
                }
            }
        }
    }
}

/// An ExternalName Service is an external host under a cluster name: it is probed as that
/// host (`spec.externalName`), which the namespace must be granted like any external target.
#[allow(clippy::too_many_arguments)] // one call site; the arguments are the resolution's context
fn external_name_service(
    name: &str,
    ns: &str,
    target: &netslo_crds::v1alpha1::ServiceTarget,
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    protocol: Protocol,
    path: Option<&str>,
    resolved: &mut ResolvedTarget,
    problems: &mut Problems,
) {
    let Some(host) = spec
        .external_name
        .as_deref()
        .map(|h| h.trim_end_matches('.'))
        .filter(|h| !h.is_empty())
    else {
        problems.push((
            ProblemKind::Unresolvable,
            format!(
                "Service {ns}/{} is ExternalName without a name",
                target.name
            ),
        ));
        return;
    };
    // An ExternalName Service forwards no ports: a named port is looked up in its spec.
    let port = target.port.or_else(|| {
        spec.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == target.port_name.as_deref())
            .map(|p| p.port)
    });
    let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
        problems.push((
            ProblemKind::Unresolvable,
            format!(
                "Service {ns}/{} has no port {}",
                target.name,
                target.port_name.as_deref().unwrap_or_default()
            ),
        ));
        return;
    };
    resolved.external_hosts.push((host.to_string(), port));
    resolved.endpoints.push(plain(
        series(name, Via::DNSName, &host_port(host, i32::from(port))),
        address_for(protocol, host, i32::from(port), path),
        Vec::new(),
    ));
}

/// Why a Service's EndpointSlices cannot be trusted to say where it is, if they cannot: a
/// slice that the Kubernetes endpointslice controller does not manage (anyone who may write
/// EndpointSlices in the namespace could point it anywhere), or an address in one that is no
/// pod of the Service's namespace.
fn untrusted_endpoint_slice(
    ns: &str,
    service: &str,
    cluster: &ClusterSnapshot<'_>,
) -> Option<String> {
    let mut pod_ips: Option<HashSet<&str>> = None;
    for slice in service_slices(ns, service, cluster) {
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let managed_by = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY_LABEL))
            .map(String::as_str);
        if managed_by != Some(ENDPOINTSLICE_CONTROLLER) {
            return Some(format!(
                "EndpointSlice {ns}/{slice_name} of Service {ns}/{service} is not managed by the Kubernetes endpointslice controller ({MANAGED_BY_LABEL}={}): only slices it builds from the Service's selector are probed",
                managed_by.unwrap_or("<unset>")
            ));
        }
        let ips = pod_ips.get_or_insert_with(|| {
            cluster
                .pods
                .iter()
                .filter(|p| in_namespace(&p.metadata.namespace, ns))
                .filter_map(|p| p.status.as_ref())
                .flat_map(|s| {
                    s.pod_ip
                        .iter()
                        .map(String::as_str)
                        .chain(s.pod_ips.iter().flatten().map(|ip| ip.ip.as_str()))
                })
                .collect()
        });
        if let Some(address) = slice
            .endpoints
            .iter()
            .flat_map(|e| &e.addresses)
            .find(|a| !ips.contains(a.as_str()))
        {
            return Some(format!(
                "EndpointSlice {ns}/{slice_name} of Service {ns}/{service} names {address}, which is no pod of namespace {ns}"
            ));
        }
    }
    None
}

fn service_slices<'a>(
    ns: &'a str,
    service: &'a str,
    cluster: &ClusterSnapshot<'a>,
) -> impl Iterator<Item = &'a Arc<EndpointSlice>> {
    cluster.endpoint_slices.iter().filter(move |s| {
        in_namespace(&s.metadata.namespace, ns)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(service)
    })
}

/// Ready endpoints of a Service for one of its ports: (address, target port, node, zone).
fn service_endpoints(
    ns: &str,
    service: &str,
    port: &ServicePort,
    cluster: &ClusterSnapshot<'_>,
) -> Vec<(String, i32, Option<String>, Option<String>)> {
    let mut found = Vec::new();
    for slice in service_slices(ns, service, cluster) {
        // EndpointSlice ports carry the Service port's name and the resolved target port.
        let Some(target_port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name == port.name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // `ready` unset means ready (EndpointSlice API contract).
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in &endpoint.addresses {
                found.push((
                    address.clone(),
                    target_port,
                    endpoint.node_name.clone(),
                    endpoint.zone.clone(),
                ));
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[allow(clippy::too_many_arguments)] // one call site; the arguments are the resolution's context
fn resolve_ingress(
    name: &str,
    ns: &str,
    target: &netslo_crds::v1alpha1::IngressTarget,
    protocol: Protocol,
    path: Option<&str>,
    cluster: &ClusterSnapshot<'_>,
    resolved: &mut ResolvedTarget,
    problems: &mut Problems,
) {
    let Some(ingress) = cluster.ingresses.iter().find(|i| {
        in_namespace(&i.metadata.namespace, ns)
            && i.metadata.name.as_deref() == Some(target.name.as_str())
    }) else {
        problems.push((
            ProblemKind::NotFound,
            format!("Ingress {ns}/{} not found", target.name),
        ));
        return;
    };
    let host = target.host.clone().or_else(|| {
        ingress
            .spec
            .as_ref()?
            .rules
            .as_ref()?
            .iter()
            .find_map(|r| r.host.clone())
    });
    let addresses: Vec<String> = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| i.ip.or(i.hostname))
        .collect();
    if addresses.is_empty() {
        problems.push((
            ProblemKind::NothingReady,
            format!("Ingress {ns}/{} has no address yet", target.name),
        ));
    }
    let port = target
        .port
        .unwrap_or(if protocol == Protocol::HTTPS { 443 } else { 80 });
    // The request goes to the ingress address, named as the host: Host header and SNI.
    if let (Some(host), ProbeSpec::Http(http)) = (&host, &mut resolved.probe) {
        http.host.get_or_insert_with(|| host.clone());
        if protocol == Protocol::HTTPS {
            http.server_name
                .get_or_insert_with(|| host.trim_end_matches('.').to_string());
        }
    }
    for address in addresses {
        resolved.endpoints.push(plain(
            series(name, Via::Ingress, &host_port(&address, port)),
            address_for(protocol, &address, port, path),
            vec![Destination::of(protocol, &address, port)],
        ));
    }
}

/// The protocol a target is probed with, defaults applied (as documented on the field).
pub fn protocol_of(target: &Target) -> Protocol {
    if let Some(protocol) = target.protocol {
        return protocol;
    }
    if target.dns.is_some() {
        Protocol::DNS
    } else if target.api_server.is_some() {
        Protocol::HTTPS
    } else if let Some(url) = target.external.as_ref().and_then(|e| e.url.as_deref()) {
        if url.starts_with("https://") {
            Protocol::HTTPS
        } else {
            Protocol::HTTP
        }
    } else {
        Protocol::TCP
    }
}

fn probe_spec(protocol: Protocol, target: &Target, cluster: &ClusterSnapshot<'_>) -> ProbeSpec {
    match protocol {
        Protocol::TCP => ProbeSpec::Tcp(TcpSpec::default()),
        Protocol::UDP => ProbeSpec::Udp(UdpSpec::default()),
        Protocol::ICMP => ProbeSpec::Icmp(IcmpSpec::default()),
        Protocol::DNS => {
            let dns = target.dns.clone().unwrap_or_default();
            ProbeSpec::Dns(DnsSpec {
                record_type: match dns.record_type.unwrap_or(DnsRecordType::A) {
                    DnsRecordType::A => RecordKind::A,
                    DnsRecordType::AAAA => RecordKind::Aaaa,
                    DnsRecordType::SRV => RecordKind::Srv,
                    DnsRecordType::CNAME => RecordKind::Cname,
                },
                server: dns
                    .server
                    .map(|ip| host_port(&ip, dns.server_port.unwrap_or(53))),
                expected_answers: dns.expected_answers.unwrap_or_default(),
                expected_rcode: match dns.expected_rcode.unwrap_or(DnsRcode::NoError) {
                    DnsRcode::NoError => Rcode::NoError,
                    DnsRcode::NXDomain => Rcode::NxDomain,
                    DnsRcode::ServFail => Rcode::ServFail,
                    DnsRcode::Refused => Rcode::Refused,
                },
            })
        }
        Protocol::HTTP | Protocol::HTTPS => {
            let http = target.http.clone().unwrap_or_default();
            let tls = target.tls.clone().unwrap_or_default();
            let mut spec = http_spec(&http);
            spec.server_name = tls.server_name;
            if target.api_server.is_some() {
                // The API server's certificate names kubernetes.default.svc and is signed by the
                // cluster CA, whatever address the probe connects to.
                spec.server_name
                    .get_or_insert_with(|| "kubernetes.default.svc".into());
                spec.ca_bundle = cluster.cluster_ca_pem.map(str::to_string);
            }
            ProbeSpec::Http(spec)
        }
    }
}

fn http_spec(http: &HttpProbe) -> HttpSpec {
    HttpSpec {
        method: http.method.map(|m| {
            match m {
                HttpMethod::GET => "GET",
                HttpMethod::HEAD => "HEAD",
                HttpMethod::POST => "POST",
                HttpMethod::PUT => "PUT",
                HttpMethod::OPTIONS => "OPTIONS",
            }
            .to_string()
        }),
        expected_status: http
            .expected_status_codes
            .iter()
            .flatten()
            .filter_map(|c| u16::try_from(*c).ok())
            .collect(),
        body_contains: http.body_contains.clone(),
        host: http.host.clone(),
        follow_redirects: if http.follow_redirects.unwrap_or(false) {
            5
        } else {
            0
        },
        reuse_connection: http.reuse_connections.unwrap_or(false),
        ..HttpSpec::default()
    }
}

/// The agent-side address for a protocol: a URL for HTTP(S), `host:port` otherwise.
fn address_for(protocol: Protocol, host: &str, port: i32, path: Option<&str>) -> String {
    match protocol {
        Protocol::HTTP | Protocol::HTTPS => url_for(protocol, host, port, path),
        Protocol::ICMP => host.trim_end_matches('.').to_string(),
        _ => host_port(host, port),
    }
}

fn url_for(protocol: Protocol, host: &str, port: i32, path: Option<&str>) -> String {
    let scheme = if protocol == Protocol::HTTPS {
        "https"
    } else {
        "http"
    };
    // A trailing dot keeps search domains out of the lookup but is not valid in a URL
    // authority for every client; the agent qualifies names itself.
    let host = host.trim_end_matches('.');
    format!(
        "{scheme}://{}{}",
        host_port(host, port),
        path.unwrap_or("/")
    )
}

/// `host:port`, bracketing IPv6 literals.
fn host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn series(target: &str, via: Via, endpoint: &str) -> SeriesId {
    SeriesId {
        target: target.to_string(),
        via,
        endpoint: endpoint.to_string(),
    }
}

fn plain(series: SeriesId, address: String, destinations: Vec<Destination>) -> Endpoint {
    Endpoint {
        series,
        address,
        node: None,
        zone: None,
        inside_pod: None,
        destinations,
    }
}

fn in_namespace(object_ns: &Option<String>, ns: &str) -> bool {
    object_ns.as_deref() == Some(ns)
}

fn pod_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && status.phase.as_deref() == Some("Running")
        && pod.metadata.deletion_timestamp.is_none()
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The address to probe a node on: InternalIP first, ExternalIP otherwise.
pub fn node_address(node: &Node) -> Option<String> {
    let addresses = node.status.as_ref()?.addresses.as_ref()?;
    ["InternalIP", "ExternalIP"].iter().find_map(|kind| {
        addresses
            .iter()
            .find(|a| a.type_ == *kind)
            .map(|a| a.address.clone())
    })
}

/// The zone label of a node by name.
/// Nodes by name, built once per pass over many agents or endpoints: a lookup per agent
/// must not scan every node (N agents × N nodes at thousands of nodes).
#[derive(Debug, Default)]
pub struct NodeIndex<'a>(HashMap<&'a str, &'a Node>);

impl<'a> NodeIndex<'a> {
    pub fn new(nodes: &'a [Arc<Node>]) -> Self {
        NodeIndex(
            nodes
                .iter()
                .filter_map(|n| Some((n.metadata.name.as_deref()?, n.as_ref())))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&'a Node> {
        self.0.get(name).copied()
    }

    /// The node's zone label.
    pub fn zone_of(&self, name: &str) -> Option<String> {
        self.get(name)?
            .metadata
            .labels
            .as_ref()?
            .get(ZONE_LABEL)
            .cloned()
    }
}

pub fn zone_of(nodes: &[Arc<Node>], node_name: &str) -> Option<String> {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node_name))
        .and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned())
}

fn kubernetes_service_address(services: &[Arc<Service>]) -> Option<(String, i32)> {
    let svc = services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some("default")
            && s.metadata.name.as_deref() == Some("kubernetes")
    })?;
    let spec = svc.spec.as_ref()?;
    let ip = spec
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")?;
    let port = spec
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("https"))
        .or(spec.ports.as_ref()?.first())?
        .port;
    Some((ip, port))
}

/// A label selector parsed once, to match many objects (Kubernetes semantics: an empty
/// selector selects everything). An invalid requirement (an unknown operator, In or NotIn
/// without values, Exists or DoesNotExist with values) makes it select nothing, as the API
/// server's own selector parsing refuses it: a selector that grants must fail closed.
#[derive(Debug, Clone)]
pub struct LabelSelection(Option<Selector>);

impl LabelSelection {
    pub fn new(selector: &LabelSelector) -> Self {
        // kube's conversion accepts `In`/`NotIn` with an empty list and `Exists`/
        // `DoesNotExist` with values, which would select everything or ignore the values.
        let well_formed = selector.match_expressions.iter().flatten().all(|req| {
            let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
            match req.operator.as_str() {
                "In" | "NotIn" => has_values,
                "Exists" | "DoesNotExist" => !has_values,
                _ => false,
            }
        });
        LabelSelection(
            well_formed
                .then(|| Selector::try_from(selector.clone()).ok())
                .flatten(),
        )
    }

    /// Whether it selects an object with these labels.
    pub fn selects(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        self.0
            .as_ref()
            .is_some_and(|s| s.matches(labels.unwrap_or(&empty)))
    }
}

/// Whether `selector` selects an object with these labels ([`LabelSelection`]'s semantics).
pub fn selects(selector: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    LabelSelection::new(selector).selects(labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn node(name: &str, ip: &str, zone: &str) -> Arc<Node> {
        Arc::new(from(
            json!({"metadata": {"name": name, "labels": {ZONE_LABEL: zone}},
            "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}}),
        ))
    }

    fn pod(ns: &str, name: &str, app: &str, ip: &str, node: &str, ready: bool) -> Arc<Pod> {
        Arc::new(from(
            json!({"metadata": {"namespace": ns, "name": name, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        ))
    }

    fn service(ns: &str, name: &str, cluster_ip: &str, node_port: Option<i32>) -> Arc<Service> {
        let mut port = json!({"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"});
        if let Some(np) = node_port {
            port["nodePort"] = json!(np);
        }
        Arc::new(from(json!({"metadata": {"namespace": ns, "name": name},
            "spec": {"clusterIP": cluster_ip, "type": if node_port.is_some() { "NodePort" } else { "ClusterIP" }, "ports": [port]}})))
    }

    fn slice(
        ns: &str,
        service: &str,
        endpoints: &[(&str, Option<bool>, &str)],
    ) -> Arc<EndpointSlice> {
        let eps: Vec<_> = endpoints
            .iter()
            .map(|(ip, ready, node)| {
                let mut e = json!({"addresses": [ip], "nodeName": node});
                if let Some(r) = ready {
                    e["conditions"] = json!({"ready": r});
                }
                e
            })
            .collect();
        Arc::new(from(
            json!({"metadata": {"namespace": ns, "name": format!("{service}-abc"),
                "labels": {SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: ENDPOINTSLICE_CONTROLLER}},
            "addressType": "IPv4", "endpoints": eps, "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        ))
    }

    struct World {
        pods: Vec<Arc<Pod>>,
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
        nodes: Vec<Arc<Node>>,
        ingresses: Vec<Arc<Ingress>>,
    }

    impl World {
        fn new() -> Self {
            Self {
                pods: vec![
                    pod("shop", "api-1", "api", "10.244.1.5", "node-a", true),
                    pod("shop", "api-2", "api", "10.244.2.6", "node-b", true),
                    pod("shop", "api-3", "api", "10.244.2.7", "node-b", false),
                    pod("other", "api-x", "api", "10.244.3.8", "node-b", true),
                ],
                services: vec![
                    service("shop", "api", "10.96.12.34", Some(30080)),
                    Arc::new(from(
                        json!({"metadata": {"namespace": "default", "name": "kubernetes"},
                        "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}}),
                    )),
                ],
                slices: vec![slice(
                    "shop",
                    "api",
                    &[
                        ("10.244.1.5", Some(true), "node-a"),
                        ("10.244.2.6", None, "node-b"),
                        ("10.244.2.7", Some(false), "node-b"),
                    ],
                )],
                nodes: vec![
                    node("node-a", "192.0.2.1", "zone-a"),
                    node("node-b", "192.0.2.2", "zone-b"),
                ],
                ingresses: vec![Arc::new(from(
                    json!({"metadata": {"namespace": "shop", "name": "web"},
                    "spec": {"rules": [{"host": "shop.example.com"}]},
                    "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}}}),
                ))],
            }
        }

        fn snapshot(&self) -> ClusterSnapshot<'_> {
            ClusterSnapshot {
                pods: &self.pods,
                services: &self.services,
                endpoint_slices: &self.slices,
                nodes: &self.nodes,
                ingresses: &self.ingresses,
                cluster_domain: "cluster.local",
                cluster_ca_pem: Some("CA PEM"),
            }
        }
    }

    fn target(v: serde_json::Value) -> Target {
        from(v)
    }

    fn destinations(r: &ResolvedTarget) -> Vec<String> {
        r.endpoints
            .iter()
            .flat_map(|e| &e.destinations)
            .map(|d| match d {
                Destination::Address { ip, port: Some(p) } => format!("{ip}:{p}"),
                Destination::Address { ip, port: None } => ip.to_string(),
                Destination::Name { host, port } => format!("name {host}:{port:?}"),
            })
            .collect()
    }

    #[test]
    fn every_path_carries_the_destinations_it_reaches() {
        let mut world = World::new();
        world.services.push(Arc::new(from(json!({
            "metadata": {"namespace": "shop", "name": "lb"},
            "spec": {"clusterIP": "10.96.0.50", "type": "LoadBalancer",
                "ports": [{"name": "http", "port": 80, "nodePort": 30081}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.elb.example.com"}, {"ip": "203.0.113.5"}]}},
        }))));
        let t = target(json!({"name": "api", "service": {"name": "api", "portName": "http"}}));
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(
            destinations(&r.targets[0]),
            [
                "10.96.12.34:80",
                "10.96.12.34:80",
                "10.244.1.5:8080",
                "10.244.2.6:8080"
            ],
            "ClusterIP, the DNS name (to the ClusterIP), each ready endpoint"
        );
        let t = target(
            json!({"name": "lb", "service": {"name": "lb", "port": 80, "via": ["LoadBalancer"]}}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(
            destinations(&r.targets[0]),
            ["name lb.elb.example.com:Some(80)", "203.0.113.5:80"]
        );
        let t = target(
            json!({"name": "p", "pods": {"selector": {"matchLabels": {"app": "api"}}}, "protocol": "ICMP"}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(destinations(&r.targets[0]), ["10.244.1.5", "10.244.2.6"]);
        let t = target(json!({"name": "e", "external": {"host": "example.com", "port": 443}}));
        let r = resolve("shop", &[t], &world.snapshot());
        assert!(
            destinations(&r.targets[0]).is_empty(),
            "granted, not resolved"
        );
        // A headless Service's name resolves to its endpoints, on the Service's port.
        world
            .services
            .push(service("shop", "headless", "None", None));
        world
            .slices
            .push(slice("shop", "headless", &[("10.244.1.5", None, "node-a")]));
        let t = target(
            json!({"name": "h", "service": {"name": "headless", "port": 80, "via": ["DNSName"]}}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(destinations(&r.targets[0]), ["10.244.1.5:80"]);
    }

    #[test]
    fn endpoint_slices_a_tenant_could_write_are_not_probed() {
        let forge = |labels: serde_json::Value, address: &str| -> Arc<EndpointSlice> {
            Arc::new(from(json!({
                "metadata": {"namespace": "shop", "name": "forged", "labels": labels},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [address]}],
                "ports": [{"name": "http", "port": 8080}],
            })))
        };
        let t = target(json!({"name": "api", "service": {"name": "api", "port": 80}}));
        for (slice, why) in [
            (
                forge(json!({SERVICE_NAME_LABEL: "api"}), "10.244.3.8"),
                "EndpointSlice shop/forged of Service shop/api is not managed by the Kubernetes endpointslice controller (endpointslice.kubernetes.io/managed-by=<unset>)",
            ),
            (
                forge(
                    json!({SERVICE_NAME_LABEL: "api", MANAGED_BY_LABEL: "my-controller"}),
                    "10.244.3.8",
                ),
                "(endpointslice.kubernetes.io/managed-by=my-controller)",
            ),
            // The controller's label can be forged too: its addresses must be this namespace's pods.
            (
                forge(
                    json!({SERVICE_NAME_LABEL: "api", MANAGED_BY_LABEL: ENDPOINTSLICE_CONTROLLER}),
                    "10.244.3.8",
                ),
                "EndpointSlice shop/forged of Service shop/api names 10.244.3.8, which is no pod of namespace shop",
            ),
        ] {
            let mut world = World::new();
            world.slices.push(slice);
            let r = resolve("shop", std::slice::from_ref(&t), &world.snapshot());
            assert!(
                r.targets[0].endpoints.is_empty(),
                "nothing of the Service is probed"
            );
            assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
            assert_eq!(r.problems[0].kind, ProblemKind::Untrusted);
            assert!(r.problems[0].kind.stalls());
            assert!(
                r.problems[0].message.contains(why),
                "{}",
                r.problems[0].message
            );
        }
    }

    #[test]
    fn external_name_services_are_external_hosts() {
        let mut world = World::new();
        world.services.push(Arc::new(from(json!({
            "metadata": {"namespace": "shop", "name": "partner"},
            "spec": {"type": "ExternalName", "externalName": "api.partner.example."},
        }))));
        let t = target(json!({"name": "p", "service": {"name": "partner", "port": 443}}));
        let r = resolve("shop", &[t], &world.snapshot());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let resolved = &r.targets[0];
        assert_eq!(
            resolved.external_hosts,
            [("api.partner.example".to_string(), 443)]
        );
        assert_eq!(labels(resolved), ["p/DNSName/api.partner.example:443"]);
        assert_eq!(resolved.endpoints[0].address, "api.partner.example:443");
        assert!(destinations(resolved).is_empty(), "only a grant admits it");
        let t = target(json!({"name": "p", "service": {"name": "partner", "portName": "https"}}));
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(r.problems[0].kind, ProblemKind::Unresolvable);
    }

    fn labels(r: &ResolvedTarget) -> Vec<String> {
        r.endpoints.iter().map(|e| e.series.label()).collect()
    }

    #[test]
    fn service_resolves_every_path_with_only_ready_endpoints() {
        let world = World::new();
        let t = target(
            json!({"name": "api", "service": {"name": "api", "portName": "http"}, "protocol": "HTTP", "http": {"path": "/healthz"}}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let resolved = &r.targets[0];
        assert_eq!(
            labels(resolved),
            [
                "api/ClusterIP/10.96.12.34:80",
                "api/DNSName/api.shop.svc.cluster.local.:80",
                "api/Endpoint/10.244.1.5:8080",
                "api/Endpoint/10.244.2.6:8080",
            ]
        );
        let addresses: Vec<&str> = resolved
            .endpoints
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(addresses[0], "http://10.96.12.34:80/healthz");
        assert_eq!(addresses[1], "http://api.shop.svc.cluster.local:80/healthz");
        assert_eq!(addresses[2], "http://10.244.1.5:8080/healthz");
        assert_eq!(
            resolved.endpoints[3].zone.as_deref(),
            Some("zone-b"),
            "zone comes from the endpoint's node"
        );
    }

    #[test]
    fn node_port_and_load_balancer_paths() {
        let world = World::new();
        let t = target(
            json!({"name": "edge", "service": {"name": "api", "port": 80, "via": ["NodePort", "LoadBalancer"]}}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(
            labels(&r.targets[0]),
            [
                "edge/NodePort/node-a/192.0.2.1:30080",
                "edge/NodePort/node-b/192.0.2.2:30080"
            ]
        );
        assert_eq!(r.targets[0].endpoints[0].address, "192.0.2.1:30080");
        assert_eq!(
            r.problems.len(),
            1,
            "no LoadBalancer address yet is reported"
        );
        assert_eq!(r.problems[0].kind, ProblemKind::NothingReady);
    }

    #[test]
    fn missing_objects_and_ports_are_named_problems_not_crashes() {
        let world = World::new();
        let targets = [
            target(json!({"name": "gone", "service": {"name": "nope", "port": 80}})),
            target(json!({"name": "badport", "service": {"name": "api", "port": 81}})),
            target(json!({"name": "noingress", "ingress": {"name": "nope"}, "protocol": "HTTP"})),
            target(
                json!({"name": "nopods", "pods": {"selector": {"matchLabels": {"app": "none"}}, "port": 1}}),
            ),
        ];
        let r = resolve("shop", &targets, &world.snapshot());
        let got: Vec<(String, ProblemKind)> = r
            .problems
            .iter()
            .map(|p| (p.target.clone(), p.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("gone".into(), ProblemKind::NotFound),
                ("badport".into(), ProblemKind::Unresolvable),
                ("noingress".into(), ProblemKind::NotFound),
                ("nopods".into(), ProblemKind::NothingReady),
            ]
        );
        assert!(
            r.problems[0]
                .message
                .contains("Service shop/nope not found")
        );
        assert!(ProblemKind::NotFound.stalls() && !ProblemKind::NothingReady.stalls());
    }

    #[test]
    fn pods_by_selector_in_their_namespace_ready_only() {
        let world = World::new();
        let t = target(
            json!({"name": "p", "pods": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]}, "port": 8080}}),
        );
        let r = resolve("shop", std::slice::from_ref(&t), &world.snapshot());
        assert_eq!(
            labels(&r.targets[0]),
            ["p/Pod/10.244.1.5:8080", "p/Pod/10.244.2.6:8080"]
        );
        assert_eq!(r.targets[0].endpoints[0].node.as_deref(), Some("node-a"));
        let icmp = target(
            json!({"name": "p", "pods": {"selector": {"matchLabels": {"app": "api"}}}, "protocol": "ICMP"}),
        );
        let r = resolve("other", &[icmp], &world.snapshot());
        assert_eq!(r.targets[0].endpoints[0].address, "10.244.3.8");
        assert_eq!(r.targets[0].namespace.as_deref(), Some("other"));
    }

    #[test]
    fn ingress_sends_host_header_and_sni_to_the_ingress_address() {
        let world = World::new();
        let t = target(
            json!({"name": "web", "ingress": {"name": "web"}, "protocol": "HTTPS", "http": {"path": "/"}}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        let resolved = &r.targets[0];
        assert_eq!(resolved.endpoints[0].address, "https://198.51.100.7:443/");
        let ProbeSpec::Http(http) = &resolved.probe else {
            panic!("http probe")
        };
        assert_eq!(http.host.as_deref(), Some("shop.example.com"));
        assert_eq!(http.server_name.as_deref(), Some("shop.example.com"));
    }

    #[test]
    fn api_server_dns_external_and_localhost() {
        let world = World::new();
        let targets = [
            target(json!({"name": "apiserver", "apiServer": {}})),
            target(
                json!({"name": "dns", "dns": {"name": "kubernetes.default.svc.cluster.local", "expectedAnswers": ["10.96.0.1"]}}),
            ),
            target(json!({"name": "ext", "external": {"url": "https://example.com/health"}})),
            target(json!({"name": "ping", "external": {"host": "192.0.2.53"}, "protocol": "ICMP"})),
            target(
                json!({"name": "sidecar", "localhost": {"podSelector": {"matchLabels": {"app": "api"}}, "port": 9090}}),
            ),
        ];
        let r = resolve("shop", &targets, &world.snapshot());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let api = &r.targets[0];
        assert_eq!(api.protocol, Protocol::HTTPS);
        assert_eq!(api.endpoints[0].address, "https://10.96.0.1:443/readyz");
        let ProbeSpec::Http(http) = &api.probe else {
            panic!("http probe")
        };
        assert_eq!(http.ca_bundle.as_deref(), Some("CA PEM"));
        assert_eq!(http.server_name.as_deref(), Some("kubernetes.default.svc"));
        assert_eq!(
            r.targets[1].endpoints[0].address, "kubernetes.default.svc.cluster.local.",
            "queried fully qualified"
        );
        assert!(
            matches!(&r.targets[1].probe, ProbeSpec::Dns(d) if d.expected_answers == ["10.96.0.1"])
        );
        assert_eq!(
            r.targets[2].protocol,
            Protocol::HTTPS,
            "protocol follows the URL's scheme"
        );
        assert_eq!(r.targets[3].endpoints[0].address, "192.0.2.53");
        assert_eq!(
            labels(&r.targets[4]),
            ["sidecar/Localhost/api-1", "sidecar/Localhost/api-2"]
        );
        assert_eq!(r.targets[4].endpoints[0].address, "127.0.0.1:9090");
        assert_eq!(
            r.targets[4].endpoints[0].inside_pod.as_deref(),
            Some("shop/api-1")
        );
    }

    #[test]
    fn deny_targets_carry_their_blocked_outcomes() {
        let world = World::new();
        let t = target(
            json!({"name": "db", "service": {"name": "api", "port": 80, "via": ["ClusterIP"]},
            "expect": "Deny", "blockedOutcomes": ["Timeout", "Refused"]}),
        );
        let r = resolve("shop", &[t], &world.snapshot());
        assert_eq!(r.targets[0].expect, Expect::Deny);
        assert_eq!(
            r.targets[0].blocked_by,
            [BlockMode::Timeout, BlockMode::Refused]
        );
    }

    #[test]
    fn series_labels_round_trip_even_with_slashes_and_ipv6() {
        for (target, via, endpoint) in [
            ("api", Via::Endpoint, "[fd00::1]:8080"),
            ("edge", Via::NodePort, "node-a/192.0.2.1:30080"),
            ("ext", Via::External, "https://example.com/a/b"),
        ] {
            let id = SeriesId {
                target: target.into(),
                via,
                endpoint: endpoint.into(),
            };
            assert_eq!(SeriesId::parse(&id.label()), Some(id));
        }
        for bad in ["", "api", "api/Nope/x", "/ClusterIP/x"] {
            assert_eq!(SeriesId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn selector_semantics() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let sel = |v: serde_json::Value| -> LabelSelector { from(v) };
        assert!(selects(&sel(json!({})), Some(&labels)), "empty selects all");
        assert!(selects(
            &sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]})),
            Some(&labels)
        ));
        assert!(!selects(
            &sel(
                json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]})
            ),
            Some(&labels)
        ));
        assert!(!selects(
            &sel(json!({"matchExpressions": [{"key": "app", "operator": "Bogus"}]})),
            Some(&labels)
        ));
        // Invalid requirements select nothing rather than everything: a policy's
        // `NotIn` with an empty list must not grant every namespace.
        for invalid in [
            json!({"key": "tier", "operator": "NotIn", "values": []}),
            json!({"key": "tier", "operator": "NotIn"}),
            json!({"key": "app", "operator": "In", "values": []}),
            json!({"key": "app", "operator": "Exists", "values": ["web"]}),
            json!({"key": "tier", "operator": "DoesNotExist", "values": ["x"]}),
        ] {
            assert!(
                !selects(
                    &sel(json!({"matchExpressions": [invalid.clone()]})),
                    Some(&labels)
                ),
                "{invalid}"
            );
            assert!(
                !selects(&sel(json!({"matchExpressions": [invalid.clone()]})), None),
                "{invalid}"
            );
        }
        assert!(selects(
            &sel(
                json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})
            ),
            Some(&labels)
        ));
    }
}
