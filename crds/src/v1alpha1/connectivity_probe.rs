//! `ConnectivityProbe`: one question asked once ("can worker-2 reach payments right now?"),
//! answered by the netslo agent that stands where it was asked, attempt by attempt with each
//! phase's timing, and with a path trace when an attempt failed on the way.
//!
//! Creating one is the permission check: RBAC on `connectivityprobes` in a namespace says who
//! may ask, and the operator resolves and grants its destination exactly as it would a
//! ConnectivityCheck's target in that namespace (ConnectivityPolicy), so a probe can reach and
//! reveal nothing a check there could not. `kubectl netslo probe` creates one, waits for its
//! answer, prints it and deletes it.

// `#[kube(printcolumn(...))]` repeats keys such as `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connectivity_check::{ExternalTarget, Protocol, ServiceTarget};
use super::validation::DNS_LABEL;
use crate::duration::GoDuration;

/// Spec of a ConnectivityProbe; it cannot change once created.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "netslo.io",
    version = "v1alpha1",
    kind = "ConnectivityProbe",
    plural = "connectivityprobes",
    singular = "connectivityprobe",
    shortname = "cprobe",
    category = "netslo",
    namespaced,
    status = "ConnectivityProbeStatus",
    doc = "ConnectivityProbe runs one probe once, from where it says, to what it says, and reports each \
           attempt's phases and a path trace; the destination is granted as a ConnectivityCheck's in \
           the same namespace would be.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.from.node"),
    printcolumn(
        name = "Deployment",
        type_ = "string",
        json_path = ".spec.from.deployment"
    ),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "a ConnectivityProbe cannot change: create another"},
    {
        "rule": "!has(self.timeout) || duration(self.timeout) <= duration('30s')",
        "message": "timeout is at most 30s",
        "fieldPath": ".timeout",
    },
]))]
pub struct ConnectivityProbeSpec {
    /// Where the probe runs from.
    pub from: ProbeOrigin,

    /// What it probes.
    pub to: ProbeDestination,

    /// How to probe. Default: the URL's scheme for URLs, TCP otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,

    /// Attempts at each path to the destination, a second after the previous one's timeout
    /// (at most 5 s apart). Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub count: Option<i32>,

    /// Longest an attempt may take. Default 2s, at most 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// Where a probe runs from: exactly one of node, deployment or pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.node) ? 1 : 0) + (has(self.deployment) ? 1 : 0) + (has(self.pod) ? 1 : 0) == 1",
        "message": "set exactly one of node, deployment or pod",
    },
]))]
pub struct ProbeOrigin {
    /// The node whose netslo agent runs the probe (from the node's network, as the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub node: Option<String>,

    /// A Deployment in the probe's namespace: the probe runs from a short-lived pod with the
    /// labels and service account of its pod template, so NetworkPolicies and mesh
    /// authorisation apply to it as to the Deployment's own pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub deployment: Option<String>,

    /// A pod in the probe's namespace: as deployment, with that pod's labels and service
    /// account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pod: Option<String>,
}

impl ProbeOrigin {
    /// "node/NAME", "deploy/NAME" or "pod/NAME", as `kubectl netslo probe --from` takes it.
    pub fn describe(&self) -> String {
        match (&self.node, &self.deployment, &self.pod) {
            (Some(n), _, _) => format!("node/{n}"),
            (_, Some(d), _) => format!("deploy/{d}"),
            (_, _, Some(p)) => format!("pod/{p}"),
            _ => "nowhere".to_owned(),
        }
    }
}

/// What a probe probes: exactly one of service, pod or external.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.service) ? 1 : 0) + (has(self.pod) ? 1 : 0) + (has(self.external) ? 1 : 0) == 1",
        "message": "set exactly one of service, pod or external",
    },
]))]
pub struct ProbeDestination {
    /// A Service: its ClusterIP, its DNS name and each ready endpoint, each attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceTarget>,

    /// One pod, at its IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodDestination>,

    /// A host and port or a URL outside the cluster; needs a ConnectivityPolicy grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalTarget>,
}

/// One pod, by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDestination {
    /// Name of the pod.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,

    /// Namespace of the pod. Default: the probe's; another one needs a ConnectivityPolicy
    /// that grants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL))]
    pub namespace: Option<String>,

    /// Port to probe (not needed for ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Where a probe stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ProbePhase {
    /// Assigned to the agent; no answer yet.
    Running,
    /// Every attempt met its expectation.
    Succeeded,
    /// An attempt failed, or no answer came in time.
    Failed,
    /// Not run: the destination is not granted, not found, or no agent stands there.
    Refused,
}

impl ProbePhase {
    /// Whether the probe is over.
    pub fn is_final(self) -> bool {
        self != ProbePhase::Running
    }
}

/// Most attempts listed in status.
pub const MAX_PROBE_ATTEMPTS: usize = 100;

/// What the probe found, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityProbeStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ProbePhase>,

    /// Why it was refused or failed, or a summary of what it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,

    /// The agent that ran it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub agent: Option<String>,

    /// Each attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub attempts: Vec<ProbeAttempt>,

    /// The path to the destination of the last attempt that failed on the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathTraceStatus>,

    /// When the answer came (or the wait for it ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// One attempt at one path.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeAttempt {
    /// The path attempted: how (ClusterIP, DNSName, Endpoints, Pod, External) and where.
    #[schemars(length(max = 2048))]
    pub path: String,

    /// Good, Bad or Invalid.
    #[schemars(length(max = 16))]
    pub outcome: String,

    /// Why it failed, e.g. TCPTimeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub reason: Option<String>,

    /// The layer it failed at, e.g. TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub layer: Option<String>,

    /// Name lookup, in microseconds (names only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_micros: Option<i64>,
    /// TCP connect (or the datagram's round trip), in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_micros: Option<i64>,
    /// TLS handshake, in microseconds (HTTPS only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_micros: Option<i64>,
    /// From the request written to the response head, in microseconds (HTTP only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_micros: Option<i64>,
    /// The whole attempt, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_micros: Option<i64>,
}

/// A path trace (tracepath-style, from the agent).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathTraceStatus {
    /// The address traced to.
    #[schemars(length(max = 64))]
    pub destination: String,

    /// Reached, Refused, Silent, HopLimit or NoRoute.
    #[schemars(length(max = 16))]
    pub end: String,

    /// Where the path was last seen alive, in words.
    #[schemars(length(max = 256))]
    pub summary: String,

    /// Each TTL, from the first router on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub hops: Vec<TraceHop>,
}

/// One TTL of a trace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TraceHop {
    /// The datagram's TTL: 1 is the first router.
    pub ttl: i32,

    /// Who answered; absent when nothing did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub address: Option<String>,

    /// TimeExceeded (a router on the way), Reached, NetUnreachable, HostUnreachable,
    /// Prohibited or Unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub answer: Option<String>,

    /// From sending to the answer, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_micros: Option<i64>,
}
