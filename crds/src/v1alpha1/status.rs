//! `ConnectivityCheck` status: what a reader (a person, kstatus, Flux, Argo CD) needs, bounded in
//! size whatever the cluster's size, and quantised so that a steady state writes nothing.
//!
//! Ratios are decimal strings ("0.99953") rather than floats: they render identically on every
//! client, compare exactly, and change only when a rounded figure changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::connectivity_check::{Protocol, ServicePath};

/// Most targets listed in status, worst first.
pub const MAX_TARGET_SUMMARIES: usize = 10;

/// Observed state of a ConnectivityCheck, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityCheckStatus {
    /// The generation of the spec this status describes; 0 until the operator has seen the
    /// check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, SLOMet, BudgetBurning, NoData, Reconciling and Stalled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// SLO figures over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloStatus>,

    /// Where and at which layer connectivity fails, when it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,

    /// Per-target summaries, worst first, at most 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub targets: Vec<TargetSummary>,

    /// Agents expected to probe for this check and agents whose results arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents: Option<AgentCounts>,

    /// Mesh coverage, for mesh targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshCoverage>,
}

/// SLO figures.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloStatus {
    /// The rolling window, e.g. "28d".
    #[schemars(length(max = 8))]
    pub window: String,

    /// Fraction of the window covered by results ("0.4286" for a check 12 days into a 28d
    /// window, or with agents missing). Missing data never counts as good.
    #[schemars(length(max = 16))]
    pub coverage: String,

    /// One entry per objective.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub objectives: Vec<ObjectiveStatus>,
}

/// Which objective a figure belongs to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ObjectiveName {
    Availability,
    Latency,
}

/// Figures of one objective.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectiveStatus {
    /// Availability or Latency.
    pub name: ObjectiveName,

    /// The objective as a fraction ("0.999").
    #[schemars(length(max = 16))]
    pub target: String,

    /// Good probes over valid probes in the window ("0.99953"); absent without data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub sli: Option<String>,

    /// Fraction of the error budget left, clamped to [-1, 1] ("0.53").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub error_budget_remaining: Option<String>,

    /// Burn rate per window: 1.0 spends the budget exactly over the period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["window"]))]
    pub burn_rates: Vec<BurnRate>,
}

/// Burn rate over one window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BurnRate {
    /// Window, e.g. "1h".
    #[schemars(length(max = 16))]
    pub window: String,
    /// Burn rate rounded to 0.1, e.g. "14.4".
    #[schemars(length(max = 16))]
    pub rate: String,
}

/// The network layer a failure was seen at.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Layer {
    DNS,
    TCP,
    TLS,
    HTTP,
    ICMP,
    UDP,
    /// A connection that should have been blocked was not, or a path blocked by policy.
    Policy,
    /// The agent could not probe (its own fault, not the network's).
    Prober,
}

/// Where failures concentrate.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum FailureScope {
    /// Name resolution fails while the addresses behind the name answer.
    DNS,
    /// The Service VIP fails while its endpoints answer directly.
    ServiceRouting,
    /// One endpoint fails from every source.
    Endpoint,
    /// A node is cut off both ways: nothing it sends and nothing sent to it answers.
    Node,
    /// Every target fails from one source node.
    SourceNode,
    /// Traffic between nodes fails while traffic within each node answers.
    CrossNode,
    /// Traffic from one zone to another fails; other zone pairs are fine.
    ZonePair,
    /// A target fails from everywhere.
    Target,
    /// An expected-deny target was reachable.
    PolicyViolation,
}

/// The localised verdict: which layer failed, where, with the evidence.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// Layer the failure was seen at.
    pub layer: Layer,

    /// Where the failures concentrate.
    pub scope: FailureScope,

    /// Probe failure reason, e.g. TCPTimeout, DNSNXDomain, UnexpectedlyReachable.
    #[schemars(length(max = 64))]
    pub reason: String,

    /// One line for `kubectl get -o wide`: "endpoint 10.0.1.7:8080 fails from 3/3 sources (TCPTimeout)".
    #[schemars(length(max = 256))]
    pub summary: String,

    /// Sources (node or zone names) that see the failure, at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 253)))]
    pub sources: Vec<String>,

    /// Targets or endpoints that fail, at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 253)))]
    pub destinations: Vec<String>,

    /// When this verdict was first reached; unchanged while it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// Summary of one target (or one path/endpoint of it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSummary {
    /// Target name from the spec.
    #[schemars(length(max = 63))]
    pub name: String,

    /// The path the figures are for, for Service targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<ServicePath>,

    /// The endpoint ("10.0.1.7:8080"), when the figures are for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300))]
    pub endpoint: Option<String>,

    /// Whether the figures are for sources on the endpoint's own node or on other nodes,
    /// where the endpoint's node is known (pods, Service endpoints, mesh peers): the two
    /// paths are reported apart, as only traffic across nodes crosses the overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,

    /// Protocol probed.
    pub protocol: Protocol,

    /// Good over valid probes in the last hour ("0.9986").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub success_ratio: Option<String>,

    /// Latency percentiles over the last hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySummary>,

    /// The latest failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<FailureSummary>,
}

/// Where a path runs relative to the nodes.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum Locality {
    /// From a source on the endpoint's own node.
    SameNode,
    /// From sources on other nodes.
    CrossNode,
}

/// Latency percentiles, as durations ("412us", "3.1ms").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Median.
    #[schemars(length(max = 16))]
    pub p50: String,
    /// 90th percentile.
    #[schemars(length(max = 16))]
    pub p90: String,
    /// 99th percentile.
    #[schemars(length(max = 16))]
    pub p99: String,
}

/// A failure and where it was seen.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureSummary {
    /// Failure reason, e.g. TCPRefused.
    #[schemars(length(max = 64))]
    pub reason: String,

    /// Layer it was seen at.
    pub layer: Layer,

    /// Source node (and zone) that saw it.
    #[schemars(length(max = 253))]
    pub source: String,

    /// Minute it was seen in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Agent counts.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCounts {
    /// Agents that should be probing for this check.
    pub desired: i32,
    /// Agents whose results arrived within noDataAfter.
    pub reporting: i32,
}

/// How much of the mesh the rotating peer sets cover.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeshCoverage {
    /// Peers each agent probes per round.
    pub peers_per_agent: i32,

    /// Time for every ordered pair of agents to be probed once ("52m").
    #[schemars(length(max = 16))]
    pub rotation_period: String,

    /// Fraction of ordered agent pairs probed within the last rotation period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub pairs_covered: Option<String>,
}
