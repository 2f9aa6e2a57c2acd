//! `ConnectivityPolicy`: what checks may target, owned by cluster admins.
//!
//! A namespaced check must never make netslo a confused deputy: with no policy at all, a check
//! targets only its own namespace, the agent mesh, cluster DNS and the API server. Each policy
//! widens that for the namespaces it selects; policies add up, none narrows another, and the
//! tightest limits win. Enforcement is the operator's (targets outside every grant are never
//! probed and the check reports `Stalled` with reason TargetNotPermitted), with the agents
//! checking resolved addresses again right before they connect.

// `#[kube(printcolumn(...))]` repeats keys such as `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{DNS_LABEL, optional_label_selector};
use crate::duration::GoDuration;

/// Spec of a ConnectivityPolicy.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "netslo.io",
    version = "v1alpha1",
    kind = "ConnectivityPolicy",
    plural = "connectivitypolicies",
    singular = "connectivitypolicy",
    shortname = "connpol",
    category = "netslo",
    status = "ConnectivityPolicyStatus",
    doc = "ConnectivityPolicy (cluster-scoped, for cluster admins) grants ConnectivityChecks in the selected \
           namespaces what they may probe beyond their own namespace: other namespaces, external hosts, \
           domains and CIDRs, and sensitive addresses; and limits how much they may probe.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityPolicySpec {
    /// Namespaces whose checks this policy applies to. Empty selector: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_label_selector")]
    pub namespace_selector: Option<LabelSelector>,

    /// Namespaces whose pods, Services and Ingresses the checks may target, and where workload
    /// sources may run probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespaces: Option<NamespaceGrant>,

    /// External destinations the checks may probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalGrant>,

    /// Sensitive destinations that are refused unless allowed here, whatever else matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive_destinations: Option<SensitiveDestinations>,

    /// Limits per namespace; with several policies the tightest applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// Namespaces that may be targeted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.selector) || has(self.names)",
        "message": "set selector, names or both",
    },
]))]
pub struct NamespaceGrant {
    /// Namespaces with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_label_selector")]
    pub selector: Option<LabelSelector>,

    /// Namespaces with these names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Option<Vec<String>>,
}

/// External destinations that may be probed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalGrant {
    /// Host names: exact ("api.example.com") or a suffix wildcard ("*.example.com", which
    /// matches sub-domains but not example.com itself). Resolved addresses are checked again.
    /// A last label that is numeric ("127.1", "0x7f000001") is an address, not a name:
    /// addresses are granted with `cidrs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
            )
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(h, !h.matches(r'(^|\\.)(0x[0-9a-f]*|[0-9]+)$'))",
            "message": "each entry must be a host name whose last label is not numeric; grant IP addresses with cidrs",
        },
    ]))]
    pub hosts: Vec<String>,

    /// Address ranges in CIDR notation ("203.0.113.0/24", "2001:db8::/32").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 49)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())",
            "message": "each entry must be a CIDR with no host bits set, e.g. 203.0.113.0/24",
        },
    ]))]
    pub cidrs: Vec<String>,

    /// Ports that may be probed on those destinations. Empty: any port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(range(min = 1, max = 65535)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub ports: Vec<i32>,

    /// Whether these hosts and CIDRs may reach the cluster's own address space: the pod
    /// ranges (Node podCIDRs and addresses of pods outside them) and the Service ranges
    /// (ServiceCIDR objects). Off by default, so a granted name that resolves, or is rebound,
    /// to a pod or a ClusterIP is refused; in-cluster targets are granted per namespace
    /// (`targetNamespaces`), not here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cluster_addresses: Option<bool>,
}

/// Destinations that are refused unless allowed here.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SensitiveDestinations {
    /// Link-local addresses, including cloud metadata (169.254.0.0/16, fe80::/10, fd00:ec2::254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_link_local: Option<bool>,

    /// Loopback (127.0.0.0/8, ::1) other than a localhost target inside the check's own pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_loopback: Option<bool>,

    /// The nodes' own addresses (kubelet, node services), other than NodePort targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_node_addresses: Option<bool>,
}

/// Per-namespace limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.minInterval) || (duration(self.minInterval) >= duration('1s') && duration(self.minInterval) <= duration('1h'))",
        "message": "minInterval must be between 1s and 1h",
        "fieldPath": ".minInterval",
    },
]))]
pub struct Limits {
    /// Most checks per namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10000))]
    pub max_checks: Option<i32>,

    /// Most targets per check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_targets_per_check: Option<i32>,

    /// Shortest probe interval allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_interval: Option<GoDuration>,
}

/// Observed state of a ConnectivityPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Accepted: the policy is in force.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
