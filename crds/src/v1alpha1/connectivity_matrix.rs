//! `ConnectivityMatrix`: a check's source × destination grid, asked for once — the picture
//! Goldpinger's graph gives, for a terminal. Each cell is one source (a node, or a zone) to one
//! destination (an endpoint, or a mesh peer's node) over the last hour: its success ratio, its
//! p99 where the agents report latency per path, and whether it fails the check's objective.
//!
//! The grid is the operator's, from results it holds in memory; a check's status stays small
//! (a few KiB), so the grid is written only when someone asks, into the request's own status.
//! Creating one is the permission check: RBAC on `connectivitymatrices` in the check's
//! namespace says who may look. `kubectl netslo matrix` creates one, prints it and deletes it.

// `#[kube(printcolumn(...))]` repeats keys such as `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most rows and columns of a grid; more sources are grouped by zone, more destinations left
/// out (the failing ones kept first).
pub const MAX_MATRIX_SIDE: usize = 64;

/// Spec of a ConnectivityMatrix; it cannot change once created.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "netslo.io",
    version = "v1alpha1",
    kind = "ConnectivityMatrix",
    plural = "connectivitymatrices",
    singular = "connectivitymatrix",
    shortname = "cmatrix",
    category = "netslo",
    namespaced,
    status = "ConnectivityMatrixStatus",
    doc = "ConnectivityMatrix asks the operator once for a ConnectivityCheck's source × destination grid \
           (success ratio and p99 per cell over the last hour, failing cells marked), answered in its status.",
    printcolumn(name = "Check", type_ = "string", json_path = ".spec.check"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self == oldSelf", "message": "a ConnectivityMatrix cannot change: create another"},
]))]
pub struct ConnectivityMatrixSpec {
    /// The ConnectivityCheck, in this namespace, whose grid to show.
    #[schemars(length(min = 1, max = 253))]
    pub check: String,

    /// One row per source node, or per zone. Default: Node, or Zone when the check has more
    /// than 64 source nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_by: Option<MatrixRows>,
}

/// What a row of the grid is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MatrixRows {
    Node,
    Zone,
}

/// Where a matrix request stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MatrixPhase {
    /// The grid is in the status.
    Ready,
    /// No grid: the check does not exist or the operator holds no results for it.
    Refused,
}

/// The grid, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectivityMatrixStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MatrixPhase>,

    /// Why there is no grid, or what was left out of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,

    /// What a row is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_by: Option<MatrixRows>,

    /// The destinations, one per column: "<target> <path> <endpoint>", or "<target> node
    /// <name>" for mesh peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub columns: Vec<String>,

    /// One row per source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub rows: Vec<MatrixRow>,

    /// When the grid was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_at: Option<Time>,
}

/// One source's cells, in the order of the columns.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatrixRow {
    /// The source node or zone.
    #[schemars(length(max = 253))]
    pub source: String,

    /// One cell per column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub cells: Vec<MatrixCell>,
}

/// One source to one destination over the last hour; empty when that source did not probe it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatrixCell {
    /// Good over valid probes ("0.9986").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub success_ratio: Option<String>,

    /// 99th percentile latency ("3.1ms"), where the agents report latency per path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub p99: Option<String>,

    /// Below the check's availability objective (any failure, without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<bool>,
}
