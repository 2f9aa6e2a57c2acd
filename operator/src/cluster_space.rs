//! The cluster's own address space: the pod and Service ranges. An external grant (a host
//! name or a CIDR in a ConnectivityPolicy) must not become a way into the cluster: a granted
//! name that resolves, or is rebound, to another namespace's pod or a ClusterIP is refused
//! by the agents unless the grant opens the cluster explicitly. In-cluster targets reach
//! exactly the destinations the operator resolved for them ([`crate::resolve`]).
//!
//! Learned from the cluster, not configured: ServiceCIDR objects (the Service ranges), Node
//! `spec.podCIDRs` (the pod ranges where the CNI uses them), and, for CNIs that allocate pod
//! addresses elsewhere (Calico and Cilium pools, for instance), every pod address outside
//! those ranges, as is every ClusterIP outside the ServiceCIDRs. Such addresses are taken
//! exactly (an external host may share a subnet with pods), aggregated; past
//! [`MAX_EXACT`] entries, as their /24 (IPv4) or /64 (IPv6) networks, so the list the agents
//! get stays bounded in clusters of many such pods.
//!
//! Pure: the objects come from the cluster cache.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::networking::v1::ServiceCIDR;
use netslo_protocol::guard::{Cidr, canonical};

/// Most entries of the exact form; past it addresses outside the ranges are taken as their
/// networks of these prefix lengths.
pub const MAX_EXACT: usize = 16_384;
const V4_NETWORK: u8 = 24;
const V6_NETWORK: u8 = 64;

/// The cluster's pod and Service ranges, aggregated, in CIDR notation.
pub fn cluster_space(
    service_cidrs: &[Arc<ServiceCIDR>],
    nodes: &[Arc<Node>],
    pods: &[Arc<Pod>],
    services: &[Arc<Service>],
) -> Vec<String> {
    let parse = |text: &str| text.parse::<Cidr>().ok();
    let service_ranges: Vec<Cidr> = service_cidrs
        .iter()
        .filter_map(|s| s.spec.as_ref()?.cidrs.as_ref())
        .flatten()
        .filter_map(|c| parse(c))
        .collect();
    // Per node: its pod ranges, so each pod is judged against its own node's (O(pods)).
    let mut pod_ranges: HashMap<&str, Vec<Cidr>> = HashMap::new();
    let mut node_addresses: Vec<IpAddr> = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let spec = node.spec.as_ref();
        let ranges: Vec<Cidr> = spec
            .and_then(|s| s.pod_cidrs.as_ref())
            .into_iter()
            .flatten()
            .chain(spec.and_then(|s| s.pod_cidr.as_ref()))
            .filter_map(|c| parse(c))
            .collect();
        pod_ranges.insert(name, ranges);
        node_addresses.extend(
            node.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|a| a.address.parse::<IpAddr>().ok())
                .map(canonical),
        );
    }
    let mut ranges: Vec<Cidr> = service_ranges.clone();
    ranges.extend(pod_ranges.values().flatten().copied());
    let mut outside: Vec<IpAddr> = Vec::new();
    for pod in pods {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let own_ranges = node.and_then(|n| pod_ranges.get(n));
        for ip in pod_addresses(pod) {
            // Host-network pods have their node's address, judged as a node address.
            if node_addresses.contains(&ip) || own_ranges.is_some_and(|r| covered(r, ip)) {
                continue;
            }
            outside.push(ip);
        }
    }
    for service in services {
        let ips = service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.parse::<IpAddr>().ok());
        for ip in ips {
            if !covered(&service_ranges, ip) {
                outside.push(canonical(ip));
            }
        }
    }
    let with = |prefix_of: fn(IpAddr) -> u8| {
        let mut all = ranges.clone();
        all.extend(outside.iter().map(|ip| Cidr::covering(*ip, prefix_of(*ip))));
        Cidr::aggregate(&all)
    };
    let mut space = with(|_| 128);
    if space.len() > MAX_EXACT {
        space = with(|ip| if ip.is_ipv4() { V4_NETWORK } else { V6_NETWORK });
    }
    space.iter().map(ToString::to_string).collect()
}

fn pod_addresses(pod: &Pod) -> impl Iterator<Item = IpAddr> + '_ {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .chain(status.and_then(|s| s.pod_ip.as_deref()))
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(canonical)
}

fn covered(ranges: &[Cidr], ip: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn service_and_pod_ranges_with_pods_outside_them() {
        let service_cidrs: Vec<Arc<ServiceCIDR>> = vec![from(json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"cidrs": ["10.96.0.0/12", "fd00:96::/112"]},
        }))];
        let nodes: Vec<Arc<Node>> = vec![
            from(json!({
                "metadata": {"name": "a"},
                "spec": {"podCIDRs": ["10.244.0.0/24", "10.244.1.0/24"]},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]},
            })),
            from(json!({
                "metadata": {"name": "b"},
                "spec": {"podCIDR": "10.245.0.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.11"}]},
            })),
        ];
        let pod = |name: &str, node: &str, ip: &str| -> Arc<Pod> {
            from(json!({
                "metadata": {"name": name, "namespace": "x"},
                "spec": {"nodeName": node, "containers": []},
                "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
            }))
        };
        let pods = vec![
            pod("in-range", "a", "10.244.1.7"),
            // A pool address outside its node's podCIDR (Calico-style IPAM).
            pod("pooled", "b", "172.20.3.9"),
            pod("pooled-v6", "b", "fd00:20::1:5"),
            // Host network: the node's own address.
            pod("host", "a", "192.168.1.10"),
        ];
        let services: Vec<Arc<Service>> = vec![
            from(json!({"metadata": {"name": "in"}, "spec": {"clusterIPs": ["10.96.0.10"]}})),
            from(json!({"metadata": {"name": "old"}, "spec": {"clusterIPs": ["10.0.7.1"]}})),
            from(json!({"metadata": {"name": "headless"}, "spec": {"clusterIPs": ["None"]}})),
        ];
        let space = cluster_space(&service_cidrs, &nodes, &pods, &services);
        assert_eq!(
            space,
            [
                "10.0.7.1/32",
                "10.96.0.0/12",
                "10.244.0.0/23",
                "10.245.0.0/24",
                "172.20.3.9/32",
                "fd00:20::1:5/128",
                "fd00:96::/112",
            ]
        );
        let cidrs: Vec<Cidr> = space.iter().map(|c| c.parse().unwrap()).collect();
        for (ip, inside) in [
            ("10.244.1.200", true),
            ("172.20.3.9", true),
            ("172.20.3.10", false),
            ("10.100.0.1", true),
            ("192.168.1.10", false),
            ("198.51.100.1", false),
        ] {
            assert_eq!(covered(&cidrs, ip.parse().unwrap()), inside, "{ip}");
        }
        assert!(cluster_space(&[], &[], &[], &[]).is_empty());
    }

    #[test]
    fn many_scattered_pods_are_taken_by_network() {
        // One pod in every other /24 of 10.0.0.0/8: too many to list exactly.
        let pods: Vec<Arc<Pod>> = (0..(MAX_EXACT as u32 + 1))
            .map(|i| {
                let ip = std::net::Ipv4Addr::from(0x0a00_0005 + (i << 9));
                from(json!({"metadata": {"name": format!("p{i}")}, "status": {"podIP": ip.to_string()}}))
            })
            .collect();
        let space = cluster_space(&[], &[], &pods, &[]);
        assert_eq!(space.len(), MAX_EXACT + 1);
        assert!(
            space.iter().all(|c| c.ends_with("/24")),
            "{:?}",
            &space[..3]
        );
    }
}
