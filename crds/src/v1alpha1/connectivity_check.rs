//! `ConnectivityCheck`: expected connectivity, how to probe it, and the objectives it must meet.
//!
//! One-of groups (the source kind, the target kind) are structs of optional members with a CEL
//! rule that exactly one is set, the way core Kubernetes APIs (volume sources) shape them: the
//! YAML stays flat and `kubectl explain` documents every member.

// `#[kube(printcolumn(...))]` repeats keys such as `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ConnectivityCheckStatus;
use super::validation::{
    DNS_LABEL, DNS_NAME, DNS_SUBDOMAIN, HOSTNAME, LABEL_VALUE, label_selector,
    optional_label_selector, optional_node_labels, pod_labels,
};
use crate::duration::GoDuration;

/// A percentage with at most four decimals ("99", "99.95"); bounds are checked by CEL.
const PERCENT: &str = r"^[0-9]{1,3}(\.[0-9]{1,4})?$";

/// Spec of a ConnectivityCheck: from where (source), to what (targets), how (protocol, schedule)
/// and how well (objectives).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "netslo.io",
    version = "v1alpha1",
    kind = "ConnectivityCheck",
    plural = "connectivitychecks",
    singular = "connectivitycheck",
    shortname = "conncheck",
    shortname = "ncc",
    category = "netslo",
    namespaced,
    status = "ConnectivityCheckStatus",
    doc = "ConnectivityCheck declares connectivity that must hold (or, for Deny targets, must stay blocked), \
           how netslo probes it, and the objectives it is judged against. Its status carries the SLIs, the \
           error budget, burn rates, a verdict naming the failing layer and place, and a Ready condition \
           that GitOps tools gate on.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "SLI",
        type_ = "string",
        json_path = ".status.slo.objectives[?(@.name==\"Availability\")].sli",
        description = "Availability SLI over the window"
    ),
    printcolumn(
        name = "Budget",
        type_ = "string",
        json_path = ".status.slo.objectives[?(@.name==\"Availability\")].errorBudgetRemaining",
        description = "Fraction of the availability error budget left"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Verdict",
        type_ = "string",
        json_path = ".status.verdict.summary",
        priority = "1"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityCheckSpec {
    /// What this check protects, for humans reading `kubectl describe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Stops probing while true. Status keeps its last figures and Ready turns False with reason
    /// Suspended, so a paused check never looks healthy by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Where probes originate. The kind of source (mesh, workload or external) cannot change once
    /// the check exists: delete and recreate the check instead.
    pub source: ProbeSource,

    /// What to probe: 1 to 64 targets, each with a unique name.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub targets: Vec<Target>,

    /// How often and how patiently to probe. Defaults: every 10s, 2s timeout, 10% jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,

    /// The service level objectives the results are judged against. Default: 99.9% availability
    /// over a rolling 28d window with the standard burn-rate alerting profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objectives: Option<Objectives>,
}

// ---------------------------------------------------------------------------------------------
// Sources
// ---------------------------------------------------------------------------------------------

/// Where probes originate: exactly one of mesh, workload or external.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.mesh), has(self.workload), has(self.external)].filter(x, x).size() == 1",
        "message": "exactly one source kind must be set: mesh, workload or external",
    },
    {
        "rule": "has(self.mesh) == has(oldSelf.mesh) && has(self.workload) == has(oldSelf.workload) && has(self.external) == has(oldSelf.external)",
        "message": "the source kind is immutable: delete and recreate the check to change it",
    },
]))]
pub struct ProbeSource {
    /// The node mesh: netslo's agent DaemonSet, one agent per selected node. Use it for node to
    /// node and pod network health, and as the vantage point for Service and DNS checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshSource>,

    /// Probes from a real workload identity: netslo runs agent replicas in the given namespace
    /// with the given pod labels and service account, spread across nodes, so NetworkPolicies
    /// and mesh authorisation apply to the probes exactly as to the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadSource>,

    /// Agents running outside the cluster (external vantage points), identified by the names
    /// they register with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSource>,
}

/// Agents of the node mesh, picked by node labels and zones.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshSource {
    /// Only agents on nodes matching this selector probe. Empty: every node with an agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_label_selector")]
    pub node_selector: Option<LabelSelector>,

    /// Only agents on nodes in these zones (label topology.kubernetes.io/zone) probe.
    /// Empty: every zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 63), regex(pattern = LABEL_VALUE))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub zones: Vec<String>,
}

/// A workload identity to probe from.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.namespace) == has(oldSelf.namespace)",
        "message": "namespace is immutable: delete and recreate the check to probe from another namespace",
        "fieldPath": ".namespace",
    },
]))]
pub struct WorkloadSource {
    /// Namespace the probing pods run in. Default: the check's own namespace. Another namespace
    /// needs a ConnectivityPolicy that allows it. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    // Kept on the field: the same comparison one level up is priced >100x over budget by the
    // API server's CEL cost estimator.
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self == oldSelf",
            "message": "namespace is immutable: delete and recreate the check to probe from another namespace",
        },
    ]))]
    pub namespace: Option<String>,

    /// Labels the probing pods carry, so NetworkPolicies select them as they select the workload.
    /// netslo adds its own labels beside these.
    #[schemars(schema_with = "pod_labels")]
    pub pod_labels: BTreeMap<String, String>,

    /// Service account the probing pods run as (its token is never mounted into the agent).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub service_account_name: String,

    /// Number of probing pods, spread across nodes. Default: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub replicas: Option<i32>,

    /// Schedules the probing pods only on nodes with these labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_node_labels")]
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// Agents running outside the cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSource {
    /// Names of external agents (each runs `netslo-agent` with `--external-name` and a token).
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub agents: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

/// One thing to probe: exactly one target kind, the protocol to probe it with, and whether it
/// must be reachable (Allow) or must stay blocked (Deny).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.pods), has(self.service), has(self.ingress), has(self.external), has(self.dns), has(self.apiServer), has(self.localhost), has(self.mesh)].filter(x, x).size() == 1",
        "message": "exactly one target kind must be set: pods, service, ingress, external, dns, apiServer, localhost or mesh",
    },
    {
        "rule": "!has(self.protocol) || (self.protocol == 'DNS') == has(self.dns)",
        "message": "protocol DNS is for dns targets, and dns targets are probed with protocol DNS",
        "fieldPath": ".protocol",
    },
    {
        "rule": "!has(self.http) || (has(self.protocol) ? self.protocol in ['HTTP', 'HTTPS'] : (has(self.apiServer) || (has(self.external) && has(self.external.url))))",
        "message": "http settings need protocol HTTP or HTTPS (the default only for apiServer targets and external URLs)",
        "fieldPath": ".http",
    },
    {
        "rule": "!has(self.tls) || (has(self.protocol) ? self.protocol == 'HTTPS' : (has(self.apiServer) || (has(self.external) && has(self.external.url) && self.external.url.startsWith('https://'))))",
        "message": "tls settings need protocol HTTPS (the default only for apiServer targets and https:// URLs)",
        "fieldPath": ".tls",
    },
    {
        "rule": "!has(self.protocol) || self.protocol != 'ICMP' || has(self.pods) || has(self.external) || has(self.mesh)",
        "message": "protocol ICMP is for pods, external and mesh targets (Service VIPs, ingresses and localhost do not answer echo requests)",
        "fieldPath": ".protocol",
    },
    {
        "rule": "!has(self.protocol) || self.protocol != 'UDP' || has(self.pods) || has(self.service) || has(self.external) || has(self.mesh) || has(self.localhost)",
        "message": "protocol UDP (echo) is for pods, service, external, localhost and mesh targets",
        "fieldPath": ".protocol",
    },
    {
        "rule": "!has(self.external) || !has(self.external.url) || !has(self.protocol) || (self.protocol == 'HTTP' && self.external.url.startsWith('http://')) || (self.protocol == 'HTTPS' && self.external.url.startsWith('https://'))",
        "message": "external.url needs protocol HTTP or HTTPS matching the URL's scheme (or no protocol: the scheme's)",
        "fieldPath": ".external.url",
    },
    {
        "rule": "!has(self.external) || !has(self.external.host) || has(self.external.port) || (has(self.protocol) && self.protocol == 'ICMP')",
        "message": "external.port is required unless the protocol is ICMP",
        "fieldPath": ".external.port",
    },
    {
        "rule": "!has(self.pods) || has(self.pods.port) || (has(self.protocol) && self.protocol == 'ICMP')",
        "message": "pods.port is required unless the protocol is ICMP",
        "fieldPath": ".pods.port",
    },
    {
        "rule": "!has(self.blockedOutcomes) || (has(self.expect) && self.expect == 'Deny')",
        "message": "blockedOutcomes only applies to targets with expect: Deny",
        "fieldPath": ".blockedOutcomes",
    },
    {
        "rule": "!has(self.expect) || self.expect != 'Deny' || !has(self.dns)",
        "message": "expect: Deny is for connection targets; DNS targets state their expected rcode instead",
        "fieldPath": ".expect",
    },
]))]
pub struct Target {
    /// Name of the target, unique within the check; used in status, Events and metrics.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,

    /// Pods chosen by label selector, each probed at its pod IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodsTarget>,

    /// A Service, probed through its ClusterIP, its DNS name, each ready endpoint behind it,
    /// its NodePort or its LoadBalancer address, as listed in `via`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,

    /// An Ingress, probed at its host and path through the ingress controller's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressTarget>,

    /// A host, IP address or URL outside the cluster (or not managed by Kubernetes). Needs a
    /// ConnectivityPolicy that allows the destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalTarget>,

    /// A DNS name queried through the cluster resolver (or a given server), with the expected
    /// answer. Probed with protocol DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsTarget>,

    /// The Kubernetes API server, through the in-cluster `kubernetes.default` Service. Probed
    /// with HTTPS on /readyz by default. Takes no fields (`apiServer: {}`): set the path with
    /// `http.path` and TLS with `tls`; a field written here is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerTarget>,

    /// A port on localhost inside each selected pod: container to container in one pod. The
    /// probe runs from netslo's probe container inside those pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localhost: Option<LocalhostTarget>,

    /// The other agents of the mesh (each agent probes a bounded, rotating set of peers, same
    /// node and cross node reported apart). Use with a mesh source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshTarget>,

    /// How to probe. Default: DNS for dns targets, HTTPS for apiServer, the URL's scheme for
    /// external URLs, TCP otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,

    /// HTTP settings, for protocol HTTP or HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbe>,

    /// TLS settings, for protocol HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsProbe>,

    /// Allow (default): the target must be reachable. Deny: it must stay blocked, which turns a
    /// NetworkPolicy into a continuously verified contract; a probe that connects is a violation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expectation>,

    /// For expect: Deny, which outcomes count as blocked. Default: all of Timeout, Refused,
    /// Reset and Unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub blocked_outcomes: Option<Vec<BlockedOutcome>>,
}

/// Pods chosen by label selector.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodsTarget {
    /// Namespace of the pods. Default: the check's namespace; another one needs a
    /// ConnectivityPolicy that allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: Option<String>,

    /// Which pods. Only ready pods with an IP are probed.
    #[schemars(schema_with = "label_selector")]
    pub selector: LabelSelector,

    /// Port to probe on each pod (not needed for ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// A Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.port) != has(self.portName)",
        "message": "set exactly one of port (a number) or portName (a named Service port)",
    },
]))]
pub struct ServiceTarget {
    /// Name of the Service.
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub name: String,

    /// Namespace of the Service. Default: the check's namespace; another one needs a
    /// ConnectivityPolicy that allows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: Option<String>,

    /// Service port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Name of a Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 15), regex(pattern = DNS_LABEL))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches('[a-z]') && !self.contains('--')",
            "message": "must be a Service port name (IANA service name): at least one letter and no '--'",
        },
    ]))]
    pub port_name: Option<String>,

    /// The paths to the Service to probe, each reported on its own so a verdict can tell a
    /// broken VIP from a broken endpoint. Default: ClusterIP, DNSName and Endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub via: Vec<ServicePath>,
}

/// One path to a Service.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum ServicePath {
    /// The Service's cluster IP (kube-proxy or its replacement).
    ClusterIP,
    /// The Service's DNS name `<name>.<namespace>.svc.<cluster domain>.`, resolved per probe.
    DNSName,
    /// Each ready endpoint from the Service's EndpointSlices, directly.
    Endpoints,
    /// The NodePort on each node's address.
    NodePort,
    /// Each LoadBalancer ingress address.
    LoadBalancer,
}

/// An Ingress.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressTarget {
    /// Name of the Ingress.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,

    /// Namespace of the Ingress. Default: the check's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: Option<String>,

    /// Host to request (sent as Host header and TLS server name). Default: the Ingress's first
    /// rule host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME))]
    pub host: Option<String>,

    /// Port on the ingress address. Default: 80 for HTTP, 443 for HTTPS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// A destination outside the cluster: a host name or IP address with a port, or a URL.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.host) != has(self.url)",
        "message": "set exactly one of host (with port) or url",
    },
    {
        "rule": "!has(self.url) || !has(self.port)",
        "message": "port goes into the url, not beside it",
        "fieldPath": ".port",
    },
]))]
pub struct ExternalTarget {
    /// Host name (RFC 1123; a trailing dot marks it fully qualified) or IP address in canonical
    /// form ("10.0.0.1", "2001:db8::1"; no hex, octal or zero-padded spellings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "isIP(self) || (self.matches('^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\\\.?$') && !self.matches('(^|\\\\.)(0x[0-9a-f]*|[0-9]+)\\\\.?$'))",
            "message": "must be a host name (lower-case RFC 1123, last label not numeric) or an IP address",
        },
        {
            "rule": "!isIP(self) || ip.isCanonical(self)",
            "message": "IP addresses must be written in canonical form",
        },
    ]))]
    pub host: Option<String>,

    /// Port, with host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// An http:// or https:// URL, without user info or fragment: `scheme://host[:port]`
    /// then an optional path and query. The host is a host name (RFC 1123, last label not
    /// numeric) or an IP address in canonical form, IPv6 in brackets and without a zone; the
    /// port, if written, is 1 to 65535. Printable ASCII only: percent-encode the rest, write
    /// international host names in their "xn--" form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.startsWith('http://') || self.startsWith('https://')",
            "message": "must be an http:// or https:// URL (lower-case scheme)",
        },
        {
            "rule": "!self.matches(r'^[^/?#]*//[^/?#]*@')",
            "message": "must be a URL without user info (user@host)",
        },
        {
            "rule": "!self.contains('#')",
            "message": "must be a URL without fragment (#...)",
        },
        {
            "rule": "self.matches(r'^[!#-;=?-\\[\\]-_a-~]*$')",
            "message": "must be printable ASCII without spaces, backslashes or any of \" < > ` (percent-encode them; international host names in their xn-- form)",
        },
        {
            "rule": "!self.matches(r'%([^0-9A-Fa-f]|.[^0-9A-Fa-f]|.?$)')",
            "message": "each % must start a percent-escape: % and two hex digits",
        },
        {
            "rule": "!self.matches(r'^https?://') || self.matches(r'^https?://(([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?\\.?|\\[[0-9a-fA-F:.]+\\])(:[0-9]*)?([/?].*)?$')",
            "message": "the URL's host must be a host name (RFC 1123) or an IP address (IPv6 in [brackets], no zone id), optionally followed by :port",
        },
        {
            "rule": "!self.matches(r'^https?://[^/?#]*:[0-9]+([/?#].*)?$') || self.matches(r'^https?://[^/?#]*:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])([/?#].*)?$')",
            "message": "the URL's port must be a number from 1 to 65535",
        },
        {
            "rule": "!self.matches(r'^https?://([^/?#:\\[\\]]*\\.)?(0[xX][0-9a-fA-F]*|[0-9]+)\\.?(:[0-9]*)?([/?].*)?$') || self.matches(r'^https?://((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(:[0-9]*)?([/?].*)?$')",
            "message": "the URL's host must be a host name whose last label is not numeric, or an IPv4 address in canonical form (no hex, octal, decimal or short spellings)",
        },
        {
            "rule": "!self.matches(r'^https?://\\[[0-9a-fA-F:.]+\\]') || (isIP(self.substring(self.indexOf('[') + 1, self.indexOf(']'))) && ip(self.substring(self.indexOf('[') + 1, self.indexOf(']'))).family() == 6 && ip.isCanonical(self.substring(self.indexOf('[') + 1, self.indexOf(']'))))",
            "message": "an IPv6 host in [brackets] must be an IPv6 address in canonical form, without zone id",
        },
    ]))]
    pub url: Option<String>,
}

/// A DNS name and the answer it must get.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.expectedAnswers) || !has(self.expectedRcode) || self.expectedRcode == 'NoError'",
        "message": "expectedAnswers only make sense with expectedRcode NoError",
        "fieldPath": ".expectedAnswers",
    },
    {
        "rule": "!has(self.server) || (isIP(self.server) && ip.isCanonical(self.server))",
        "message": "server must be an IP address in canonical form",
        "fieldPath": ".server",
    },
]))]
pub struct DnsTarget {
    /// Name to query. Queried fully qualified (a trailing dot is implied), so search domains
    /// and ndots never blur the measurement. Labels may hold underscores, as SRV names do
    /// ("_http._tcp.web.default.svc.cluster.local.").
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_NAME))]
    pub name: String,

    /// Record type. Default: A.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_type: Option<DnsRecordType>,

    /// Resolver to ask. Default: the cluster resolver from the agent's resolv.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 45))]
    pub server: Option<String>,

    /// Resolver port. Default: 53.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub server_port: Option<i32>,

    /// The answer must contain each of these (addresses for A/AAAA, names for CNAME,
    /// "priority weight port target" for SRV). Empty: any non-empty answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 253)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub expected_answers: Option<Vec<String>>,

    /// Expected response code. Default: NoError.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_rcode: Option<DnsRcode>,
}

/// The Kubernetes API server. Takes no fields: the request is set with `http` (path
/// default "/readyz") and `tls` beside it, and a field written here is refused rather than
/// dropped.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
// Unknown fields are kept only so that `maxProperties: 0` sees and refuses them: a structural
// schema would otherwise prune `apiServer: {path: /livez}` and the probe keep its default.
#[schemars(extend("maxProperties" = 0, "x-kubernetes-preserve-unknown-fields" = true))]
pub struct ApiServerTarget {}

/// A port on localhost inside each selected pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalhostTarget {
    /// Pods (in the check's namespace) inside which to probe localhost.
    #[schemars(schema_with = "label_selector")]
    pub pod_selector: LabelSelector,

    /// Port on localhost.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Container expected to listen on the port, named in verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub container: Option<String>,
}

/// The agents of the mesh as targets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshTarget {
    /// Peers each agent probes per round; the set rotates every round so that every pair of
    /// agents is covered within a period reported in status. Default: 16.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub peers_per_agent: Option<i32>,

    /// Only peers on nodes matching this selector are probed. Default: every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_label_selector")]
    pub node_selector: Option<LabelSelector>,
}

/// How a target is probed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Protocol {
    /// TCP connect: reachable once the handshake completes.
    TCP,
    /// An HTTP request over a fresh connection.
    HTTP,
    /// An HTTPS request over a fresh connection, certificate verified.
    HTTPS,
    /// A DNS query.
    DNS,
    /// ICMP echo through an unprivileged datagram socket.
    ICMP,
    /// UDP echo against netslo's echo responder.
    UDP,
}

/// HTTP method.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum HttpMethod {
    GET,
    HEAD,
    POST,
    PUT,
    OPTIONS,
}

/// What an HTTP(S) probe sends and expects.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// Request method. Default: GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,

    /// Request path and query. Default: "/" ("/readyz" for apiServer targets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Printable ASCII except space, '"', '#', '<', '>', '\' and '`', which must be percent-encoded.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^/[!$-;=?-\[\]-_a-~]*$")
    )]
    pub path: Option<String>,

    /// Host header: a host name (lower-case RFC 1123) or IP address (IPv6 in brackets),
    /// optionally with ":port" (1 to 65535). Default: the host the request is sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 259))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.matches(r'^(([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\\.?|\\[[0-9a-f:.]+\\])(:[0-9]{1,5})?$')",
            "message": "must be a host name (lower-case RFC 1123) or an IP address (IPv6 in [brackets]), optionally with :port; no spaces, paths or user info",
        },
        {
            "rule": "!self.matches(r':[0-9]{1,5}$') || self.matches(r':([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$')",
            "message": "the port must be a number from 1 to 65535",
        },
        {
            "rule": "!self.matches(r'^[^:]+(:[0-9]{1,5})?$') || (isIP(self.split(':')[0]) ? ip.isCanonical(self.split(':')[0]) : !self.split(':')[0].matches(r'(^|\\.)(0x[0-9a-f]*|[0-9]+)\\.?$'))",
            "message": "the host must be a host name whose last label is not numeric, or an IP address in canonical form",
        },
        {
            "rule": "!self.matches(r'^\\[[0-9a-f:.]+\\](:[0-9]{1,5})?$') || (isIP(self.substring(1, self.indexOf(']'))) && ip(self.substring(1, self.indexOf(']'))).family() == 6 && ip.isCanonical(self.substring(1, self.indexOf(']'))))",
            "message": "an address in [brackets] must be an IPv6 address in canonical form",
        },
    ]))]
    pub host: Option<String>,

    /// Status codes that count as success. Default: any 2xx or 3xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), inner(range(min = 100, max = 599)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub expected_status_codes: Option<Vec<i32>>,

    /// The first 4 KiB of the body must contain this text. The body itself is never stored or
    /// reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub body_contains: Option<String>,

    /// Follow redirects (at most 5). Default: false; the redirect response itself is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_redirects: Option<bool>,

    /// Reuse connections between probes. Default: false, so latency objectives measure what a
    /// new client experiences (handshakes included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse_connections: Option<bool>,
}

/// TLS verification for HTTPS probes. The certificate chain and validity are always verified.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsProbe {
    /// Server name sent (SNI) and verified. Default: the host the request is sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = HOSTNAME))]
    pub server_name: Option<String>,

    /// CA bundle to verify the server with, instead of the system roots. For apiServer targets
    /// the cluster CA is used by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<ConfigMapKeyReference>,
}

/// A key of a ConfigMap in the check's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyReference {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN))]
    pub name: String,

    /// Key holding PEM certificates.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self != '.' && !self.startsWith('..')",
            "message": "must be a ConfigMap key: not '.' and not starting with '..'",
        },
    ]))]
    pub key: String,
}

/// Whether a target must be reachable or must stay blocked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum Expectation {
    /// Reachable: a probe is good when it connects (and the protocol's checks pass).
    #[default]
    Allow,
    /// Blocked: a probe is good when the path stays blocked; connecting is a violation.
    Deny,
}

/// An outcome that counts as "blocked" for expect: Deny.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum BlockedOutcome {
    /// No answer within the timeout (a DROP rule).
    Timeout,
    /// Connection refused (a REJECT rule, or nothing listening).
    Refused,
    /// Connection reset.
    Reset,
    /// Network or host unreachable (an ICMP error).
    Unreachable,
}

/// DNS record type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DnsRecordType {
    A,
    AAAA,
    SRV,
    CNAME,
}

/// DNS response code.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum DnsRcode {
    NoError,
    NXDomain,
    ServFail,
    Refused,
}

// ---------------------------------------------------------------------------------------------
// Schedule
// ---------------------------------------------------------------------------------------------

/// Probe timing.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.interval) || (duration(self.interval) >= duration('1s') && duration(self.interval) <= duration('1h'))",
        "message": "interval must be between 1s and 1h",
        "fieldPath": ".interval",
    },
    {
        "rule": "!has(self.timeout) || (duration(self.timeout) >= duration('1ms') && duration(self.timeout) <= duration('30s'))",
        "message": "timeout must be between 1ms and 30s",
        "fieldPath": ".timeout",
    },
    {
        "rule": "duration(has(self.timeout) ? self.timeout : '2s') < duration(has(self.interval) ? self.interval : '10s')",
        "message": "timeout must be shorter than interval (defaults: timeout 2s, interval 10s)",
        "fieldPath": ".timeout",
    },
]))]
pub struct Schedule {
    /// Time between probes of one target from one source, 1s to 1h. Default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<GoDuration>,

    /// How long a probe may take, 1ms to 30s and shorter than interval. Default: 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,

    /// Random spread of each probe's start, in percent of interval (0 to 50), so agents never
    /// probe in lockstep. Default: 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 50))]
    pub jitter_percent: Option<i32>,
}

// ---------------------------------------------------------------------------------------------
// Objectives
// ---------------------------------------------------------------------------------------------

/// Service level objectives, judged over a rolling window.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.availability) || has(self.latency)",
        "message": "set at least one objective: availability or latency",
    },
    {
        "rule": "!has(self.timeslice) || (has(self.budgetingMethod) && self.budgetingMethod == 'Timeslices')",
        "message": "timeslice only applies with budgetingMethod: Timeslices",
        "fieldPath": ".timeslice",
    },
]))]
pub struct Objectives {
    /// Rolling window the objectives are judged over. Default: 28d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<SloWindow>,

    /// Occurrences (default): every probe counts once, good for fixed target lists.
    /// Timeslices: the window is cut into slices, each good or bad as a whole; good for mesh
    /// checks whose probe count follows the node count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgeting_method: Option<BudgetingMethod>,

    /// Slice settings for budgetingMethod: Timeslices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeslice: Option<Timeslice>,

    /// Availability: at least `target` percent of probes must be good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<AvailabilityObjective>,

    /// Latency: at least `target` percent of probes must complete within `threshold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyObjective>,

    /// Burn-rate alerting (BudgetBurning condition, Events, alert rules). Default: Standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<Alerting>,

    /// NoData turns True after this long without results. Default: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "duration(self) >= duration('30s') && duration(self) <= duration('24h')",
            "message": "noDataAfter must be between 30s and 24h",
        },
    ]))]
    pub no_data_after: Option<GoDuration>,
}

/// Rolling window length.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum SloWindow {
    #[serde(rename = "7d")]
    Days7,
    #[serde(rename = "14d")]
    Days14,
    #[default]
    #[serde(rename = "28d")]
    Days28,
    #[serde(rename = "30d")]
    Days30,
}

/// How the error budget is counted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum BudgetingMethod {
    #[default]
    Occurrences,
    Timeslices,
}

/// A timeslice is good when at least `goodPercent` of its probes are good.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.duration) || (duration(self.duration) >= duration('1m') && duration(self.duration) <= duration('1h'))",
        "message": "duration must be between 1m and 1h",
        "fieldPath": ".duration",
    },
    {
        "rule": "!has(self.goodPercent) || (double(self.goodPercent) > 0.0 && double(self.goodPercent) <= 100.0)",
        "message": "goodPercent must be above 0 and at most 100",
        "fieldPath": ".goodPercent",
    },
]))]
pub struct Timeslice {
    /// Slice length, 1m to 1h. Default: 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<GoDuration>,

    /// Percent of good probes that makes a slice good. Default: "99".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8), regex(pattern = PERCENT))]
    pub good_percent: Option<String>,
}

/// Availability objective.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "double(self.target) >= 50.0 && double(self.target) <= 99.999",
        "message": "target must be a percentage from 50 to 99.999 (e.g. \"99.9\"; 100 leaves no error budget)",
        "fieldPath": ".target",
    },
]))]
pub struct AvailabilityObjective {
    /// Percent of probes that must be good, as a string: "99.9".
    #[schemars(length(min = 1, max = 8), regex(pattern = PERCENT))]
    pub target: String,
}

/// Latency objective: at least `target` percent of probes at or below `threshold`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "double(self.target) >= 50.0 && double(self.target) <= 99.999",
        "message": "target must be a percentage from 50 to 99.999 (e.g. \"99\")",
        "fieldPath": ".target",
    },
    {
        "rule": "duration(self.threshold) >= duration('50us') && duration(self.threshold) <= duration('60s')",
        "message": "threshold must be between 50us and 60s",
        "fieldPath": ".threshold",
    },
]))]
pub struct LatencyObjective {
    /// Latency a probe must stay at or below to count as good: "5ms".
    pub threshold: GoDuration,

    /// Percent of probes that must be at or below the threshold: "99".
    #[schemars(length(min = 1, max = 8), regex(pattern = PERCENT))]
    pub target: String,
}

/// Burn-rate alerting.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.profile) && self.profile == 'Custom') == has(self.burnRateWindows)",
        "message": "burnRateWindows are required with profile Custom and not allowed otherwise",
        "fieldPath": ".burnRateWindows",
    },
]))]
pub struct Alerting {
    /// Standard (default): 1h/5m at 2% and 6h/30m at 5% of the budget page; 1d/2h and 3d/6h at
    /// 10% open a ticket. Factors follow from the window. Custom: burnRateWindows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<AlertingProfile>,

    /// Window pairs for profile Custom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8))]
    pub burn_rate_windows: Option<Vec<BurnRateWindow>>,

    /// A burn-rate alert needs at least this many bad probes in its long window, so a single
    /// failure on a quiet check does not page. Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub min_events_to_alert: Option<i32>,
}

/// Alerting profile.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AlertingProfile {
    #[default]
    Standard,
    Custom,
}

/// One multi-window burn-rate alert: fires when both windows burn faster than
/// `budgetPercent` of the budget in the long window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "duration(self.short) < duration(self.long)",
        "message": "short must be shorter than long",
        "fieldPath": ".short",
    },
    {
        "rule": "duration(self.long) >= duration('5m') && duration(self.long) <= duration('168h')",
        "message": "long must be between 5m and 168h (7d)",
        "fieldPath": ".long",
    },
    {
        "rule": "double(self.budgetPercent) > 0.0 && double(self.budgetPercent) <= 100.0",
        "message": "budgetPercent must be above 0 and at most 100",
        "fieldPath": ".budgetPercent",
    },
]))]
pub struct BurnRateWindow {
    /// Page or Ticket.
    pub severity: AlertSeverity,
    /// Long window.
    pub long: GoDuration,
    /// Short window (typically long/12), which lets the alert reset soon after recovery.
    pub short: GoDuration,
    /// Share of the whole error budget that, spent within `long`, fires the alert: "2".
    #[schemars(length(min = 1, max = 8), regex(pattern = PERCENT))]
    pub budget_percent: String,
}

/// Alert severity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AlertSeverity {
    Page,
    Ticket,
}
