//! ConnectivityMatrices: a check's source × destination grid, made when someone asks.
//!
//! [`grid`] is pure: from the check's plan, the agents and the results the store holds, one
//! row per source node (or zone) and one column per destination (each endpoint of each
//! target; for mesh targets, each peer's node), each cell the success ratio, the p99 where
//! the agents report latency per path, and whether it fails the availability objective.
//! Non-mesh cells cover the summary span (the last hour); mesh pairs are rotated through, so
//! their cells cover what the store keeps per pair, the evidence span verdicts read. The
//! answer goes into the request's status; the operator deletes answered requests after an
//! hour (the plugin deletes its own at once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use netslo_crds::v1alpha1::{
    ConnectivityMatrix, ConnectivityMatrixStatus, MAX_MATRIX_SIDE, MatrixCell, MatrixPhase,
    MatrixRow, MatrixRows,
};
use netslo_protocol::histogram::Histogram;

use super::Context;
use super::plan::PlannedCheck;
use super::reconcile::SUMMARY_SPAN_MS;
use crate::assign::{self, AgentInfo};
use crate::check_key::CheckKey;
use crate::resolve::SeriesId;
use crate::slo::config::SloConfig;
use crate::slo::{Ppm, UnixMs, now_ms};
use crate::status::quantise;
use crate::status::verdict;
use crate::store::Recent;

/// How long an answered request stays before the operator deletes it.
const KEEP_ANSWERED: Duration = Duration::from_secs(3_600);
/// Longest column name the CRD takes.
const MAX_COLUMN_CHARS: usize = 512;
/// How often requests are looked at.
const TICK: Duration = Duration::from_secs(1);

/// One cell's counts while the grid is built.
#[derive(Debug, Default)]
struct Tally {
    good: u64,
    bad: u64,
    latency: Option<Histogram>,
}

/// The grid of a check (pure). `availability` is the objective a cell is failing below;
/// without one, any bad probe marks a cell.
pub(super) fn grid(
    plan: &PlannedCheck,
    agents: &[AgentInfo],
    recent: &Recent,
    availability: Option<Ppm>,
    rows_by: Option<MatrixRows>,
) -> ConnectivityMatrixStatus {
    let by_name: HashMap<&str, &AgentInfo> = agents.iter().map(|a| (a.name.as_str(), a)).collect();
    let node_of = |agent: &str| -> String {
        by_name
            .get(agent)
            .and_then(|a| a.node.clone())
            .unwrap_or_else(|| agent.to_owned())
    };
    let zone_of = |agent: &str| -> String {
        by_name
            .get(agent)
            .and_then(|a| a.zone.clone())
            .unwrap_or_else(|| "(no zone)".to_owned())
    };
    let sources: BTreeSet<&str> = recent
        .paths
        .iter()
        .map(|((source, _), _)| source.as_str())
        .chain(recent.mesh_pairs.iter().map(|p| &*p.source))
        .collect();
    let source_nodes: BTreeSet<String> = sources.iter().map(|s| node_of(s)).collect();
    let rows_by = rows_by.unwrap_or(if source_nodes.len() > MAX_MATRIX_SIDE {
        MatrixRows::Zone
    } else {
        MatrixRows::Node
    });
    let row_of = |agent: &str| match rows_by {
        MatrixRows::Node => node_of(agent),
        MatrixRows::Zone => zone_of(agent),
    };
    let targets: BTreeSet<&str> = plan.targets.iter().map(|t| t.name.as_str()).collect();
    let mut cells: BTreeMap<(String, String), Tally> = BTreeMap::new();
    for ((source, label), view) in &recent.paths {
        let Some(series) = SeriesId::parse(label).filter(|s| targets.contains(s.target.as_str()))
        else {
            continue;
        };
        let column = format!(
            "{} {} {}",
            series.target,
            series.via.as_str(),
            series.endpoint
        );
        let tally = cells.entry((row_of(source), column)).or_default();
        tally.good += view.summary.good;
        tally.bad += view.summary.bad;
        tally
            .latency
            .get_or_insert_with(Histogram::new)
            .merge(&view.summary.latency);
    }
    for pair in &recent.mesh_pairs {
        let Some(series) =
            SeriesId::parse(&pair.peer).filter(|s| targets.contains(s.target.as_str()))
        else {
            continue;
        };
        // A mesh peer's endpoint is its agent: the column is where it stands.
        let place = match rows_by {
            MatrixRows::Node => format!("node {}", node_of(&series.endpoint)),
            MatrixRows::Zone => format!("zone {}", zone_of(&series.endpoint)),
        };
        let tally = cells
            .entry((row_of(&pair.source), format!("{} {place}", series.target)))
            .or_default();
        tally.good += u64::from(pair.good);
        tally.bad += u64::from(pair.bad);
    }
    let failing = |t: &Tally| {
        let valid = t.good + t.bad;
        valid > 0
            && match availability {
                Some(target) => {
                    u128::from(t.good) * u128::from(Ppm::ONE.0)
                        < u128::from(target.0) * u128::from(valid)
                }
                None => t.bad > 0,
            }
    };
    // Columns: the failing ones first when there are too many, then by name.
    let mut failing_columns: BTreeSet<&str> = BTreeSet::new();
    let mut all_columns: BTreeSet<&str> = BTreeSet::new();
    let mut failing_rows: BTreeSet<&str> = BTreeSet::new();
    let mut all_rows: BTreeSet<&str> = BTreeSet::new();
    for ((row, column), tally) in &cells {
        all_columns.insert(column);
        all_rows.insert(row);
        if failing(tally) {
            failing_columns.insert(column);
            failing_rows.insert(row);
        }
    }
    let mut columns: Vec<&str> = failing_columns.iter().copied().collect();
    columns.extend(all_columns.iter().filter(|c| !failing_columns.contains(*c)));
    let omitted_columns = columns.len().saturating_sub(MAX_MATRIX_SIDE);
    columns.truncate(MAX_MATRIX_SIDE);
    columns.sort_unstable();
    // Rows likewise: the failing ones kept first, then shown in order.
    let mut rows: Vec<&str> = failing_rows.iter().copied().collect();
    rows.extend(all_rows.iter().filter(|r| !failing_rows.contains(*r)));
    let omitted_rows = rows.len().saturating_sub(MAX_MATRIX_SIDE);
    rows.truncate(MAX_MATRIX_SIDE);
    rows.sort_unstable();
    let rows: Vec<MatrixRow> = rows
        .into_iter()
        .map(|row| MatrixRow {
            source: row.to_owned(),
            cells: columns
                .iter()
                .map(
                    |column| match cells.get(&(row.to_owned(), (*column).to_owned())) {
                        None => MatrixCell::default(),
                        Some(t) => MatrixCell {
                            success_ratio: (t.good + t.bad > 0).then(|| {
                                quantise::decimals_down(
                                    i128::from(t.good),
                                    u128::from(t.good + t.bad),
                                    4,
                                )
                            }),
                            p99: t
                                .latency
                                .as_ref()
                                .and_then(|h| h.quantile(0.99))
                                .map(quantise::duration_us),
                            failing: Some(failing(t)),
                        },
                    },
                )
                .collect(),
        })
        .collect();
    let message = (omitted_rows + omitted_columns > 0).then(|| {
        format!(
            "{omitted_rows} sources and {omitted_columns} destinations left out (at most {MAX_MATRIX_SIDE} of each; failing destinations first)"
        )
    });
    ConnectivityMatrixStatus {
        phase: Some(MatrixPhase::Ready),
        message,
        rows_by: Some(rows_by),
        // Within the schema's bound (a URL endpoint may be long).
        columns: columns
            .into_iter()
            .map(|c| c.chars().take(MAX_COLUMN_CHARS).collect())
            .collect(),
        rows,
        generated_at: None,
    }
}

/// Runs the matrix controller until `shutdown` turns true.
pub async fn run_matrices(ctx: Arc<Context>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let api: Api<ConnectivityMatrix> = match &ctx.settings.watch_namespace {
        Some(namespace) => Api::namespaced(ctx.client.clone(), namespace),
        None => Api::all(ctx.client.clone()),
    };
    let (store, writer) = reflector::store();
    let watch = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|_| futures::future::ready(()));
    let watching = tokio::spawn(watch);
    tokio::select! {
        ready = store.wait_until_ready() => if ready.is_err() { return },
        _ = shutdown.wait_for(|stop| *stop) => { watching.abort(); return },
    }
    loop {
        step(&ctx, &store).await;
        tokio::select! {
            () = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    watching.abort();
}

/// Answers every new request; deletes the ones answered over an hour ago.
async fn step(ctx: &Context, store: &Store<ConnectivityMatrix>) {
    let now = now_ms();
    for request in store.state() {
        let Some(namespace) = request.namespace() else {
            continue;
        };
        let api: Api<ConnectivityMatrix> = Api::namespaced(ctx.client.clone(), &namespace);
        let name = request.name_any();
        if let Some(status) = &request.status {
            let answered = status.generated_at.as_ref().map(|t| t.0.as_millisecond());
            if answered.is_some_and(|at| now - at > KEEP_ANSWERED.as_millis() as i64) {
                let _ = api.delete(&name, &DeleteParams::default()).await;
            }
            continue;
        }
        let key = CheckKey::new(&namespace, request.spec.check.clone());
        let mut status = answer(ctx, &key, request.spec.rows_by, now);
        status.generated_at = Some(super::probes::time_at(now));
        let patch = serde_json::json!({
            "apiVersion": ConnectivityMatrix::api_version(&()),
            "kind": ConnectivityMatrix::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force();
        if let Err(err) = api.patch_status(&name, &params, &Patch::Apply(patch)).await {
            tracing::warn!(matrix = %name, %namespace, "cannot write the matrix: {err}");
        }
    }
}

/// The grid of the check `key`, or why there is none.
fn answer(
    ctx: &Context,
    key: &CheckKey,
    rows_by: Option<MatrixRows>,
    now: UnixMs,
) -> ConnectivityMatrixStatus {
    let refused = |message: String| ConnectivityMatrixStatus {
        phase: Some(MatrixPhase::Refused),
        message: Some(message),
        ..ConnectivityMatrixStatus::default()
    };
    let Some(plan) = ctx.state().plans.get(key).cloned() else {
        return refused(format!(
            "connectivitycheck {key} is not known to the operator (it does not exist, or is not planned yet)"
        ));
    };
    let cluster = ctx.cache.snapshot();
    let agents = super::known_agents(ctx, &cluster, &ctx.state().plans);
    let spans = verdict::evidence_spans(assign::interval_ms(&plan.spec));
    let Some(recent) = ctx
        .results
        .read(key, now, SUMMARY_SPAN_MS, spans, |_, recent| recent)
        .filter(|_| ctx.results.window_uid(key).as_deref() == Some(plan.uid.as_str()))
    else {
        return refused(format!("no results of connectivitycheck {key} yet"));
    };
    let availability = SloConfig::from_spec(plan.spec.objectives.as_ref())
        .ok()
        .and_then(|s| s.availability);
    grid(&plan, &agents, &recent, availability, rows_by)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::AgentKind;
    use crate::resolve::{ResolvedTarget, Via};
    use crate::store::{MeshPairView, SeriesStats, SeriesView};
    use netslo_crds::v1alpha1::{ConnectivityCheckSpec, Protocol};
    use netslo_protocol::spec::{AddressPolicySpec, Expect, ProbeSpec};

    fn agent(name: &str, node: &str, zone: &str) -> AgentInfo {
        AgentInfo {
            name: name.into(),
            kind: AgentKind::Mesh,
            node: Some(node.into()),
            zone: Some(zone.into()),
            ip: None,
            pod: None,
        }
    }

    fn target(name: &str, mesh: bool) -> ResolvedTarget {
        ResolvedTarget {
            name: name.into(),
            protocol: Protocol::TCP,
            probe: serde_json::from_value::<ProbeSpec>(serde_json::json!({"tcp": {}})).unwrap(),
            expect: Expect::Allow,
            blocked_by: Vec::new(),
            namespace: None,
            endpoints: Vec::new(),
            mesh,
            external_hosts: Vec::new(),
        }
    }

    fn plan() -> PlannedCheck {
        PlannedCheck {
            key: CheckKey::new("shop", "web"),
            uid: "uid-1".into(),
            spec: serde_json::from_value::<ConnectivityCheckSpec>(serde_json::json!({
                "source": {"mesh": {}}, "targets": [{"name": "api", "pods": {"selector": {}}}]
            }))
            .unwrap(),
            targets: vec![target("api", false), target("peers", true)],
            address_policy: AddressPolicySpec::default(),
            counting: None,
        }
    }

    fn label(target: &str, via: Via, endpoint: &str) -> String {
        SeriesId {
            target: target.into(),
            via,
            endpoint: endpoint.into(),
        }
        .label()
    }

    fn path(
        source: &str,
        label: String,
        good: u64,
        bad: u64,
        latency_us: u64,
    ) -> ((String, String), SeriesView) {
        let mut latency = Histogram::new();
        latency.record_n(latency_us, good);
        (
            (source.into(), label),
            SeriesView {
                summary: SeriesStats {
                    good,
                    bad,
                    latency,
                    ..SeriesStats::default()
                },
                ..SeriesView::default()
            },
        )
    }

    fn pair(source: &str, peer: &str, good: u32, bad: u32) -> MeshPairView {
        MeshPairView {
            source: Arc::from(source),
            peer: Arc::from(label("peers", Via::Pod, peer).as_str()),
            good,
            bad,
            answered: good,
            slow: 0,
            reason: None,
            held_bad: 0,
            silent: false,
        }
    }

    #[test]
    fn each_source_node_to_each_destination_with_the_failing_cells_marked() {
        let agents = [
            agent("agent-a", "node-a", "zone-1"),
            agent("agent-b", "node-b", "zone-1"),
            agent("agent-c", "node-c", "zone-2"),
        ];
        let endpoint_1 = label("api", Via::Pod, "10.0.0.7:8080");
        let endpoint_2 = label("api", Via::Pod, "10.0.0.8:8080");
        let recent = Recent {
            paths: vec![
                path("agent-a", endpoint_1.clone(), 0, 60, 0),
                path("agent-a", endpoint_2.clone(), 60, 0, 400),
                path("agent-b", endpoint_1.clone(), 999, 1, 3_000),
                path("agent-c", endpoint_2, 60, 0, 500),
                // Not one of the check's targets (a removed one): left out.
                path("agent-c", label("gone", Via::Pod, "10.0.0.9:80"), 1, 0, 1),
            ],
            mesh_pairs: vec![
                pair("agent-a", "agent-b", 5, 0),
                pair("agent-c", "agent-a", 3, 2),
            ],
            ..Recent::default()
        };
        let grid = grid(&plan(), &agents, &recent, Some(Ppm(999_000)), None);
        assert_eq!(grid.phase, Some(MatrixPhase::Ready));
        assert_eq!(grid.rows_by, Some(MatrixRows::Node));
        assert_eq!(
            grid.columns,
            [
                "api Pod 10.0.0.7:8080",
                "api Pod 10.0.0.8:8080",
                "peers node node-a",
                "peers node node-b"
            ]
        );
        let sources: Vec<&str> = grid.rows.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["node-a", "node-b", "node-c"]);
        let cell = |row: usize, column: usize| {
            let c = &grid.rows[row].cells[column];
            (c.success_ratio.as_deref(), c.p99.as_deref(), c.failing)
        };
        assert_eq!(cell(0, 0), (Some("0"), None, Some(true)));
        assert_eq!(cell(0, 1), (Some("1"), Some("400us"), Some(false)));
        // 999 of 1,000 meets 99.9%: not failing.
        assert_eq!(cell(1, 0), (Some("0.999"), Some("3ms"), Some(false)));
        assert_eq!(cell(1, 1), (None, None, None));
        assert_eq!(cell(0, 3), (Some("1"), None, Some(false)));
        assert_eq!(cell(2, 2), (Some("0.6"), None, Some(true)));
        assert_eq!(grid.message, None);

        // By zone: node-a and node-b's rows merge, and so do their peers' columns.
        let by_zone = grid_by_zone(&agents, &recent);
        let sources: Vec<&str> = by_zone.rows.iter().map(|r| r.source.as_str()).collect();
        assert_eq!(sources, ["zone-1", "zone-2"]);
        assert!(by_zone.columns.contains(&"peers zone zone-1".to_owned()));
        let merged = &by_zone.rows[0].cells[0];
        assert_eq!(merged.success_ratio.as_deref(), Some("0.9424"));
        assert_eq!(merged.failing, Some(true));

        // Without an availability objective, any failure marks a cell.
        let strict = grid_without_objective(&agents, &recent);
        assert_eq!(strict.rows[1].cells[0].failing, Some(true));
    }

    fn grid_by_zone(agents: &[AgentInfo], recent: &Recent) -> ConnectivityMatrixStatus {
        grid(
            &plan(),
            agents,
            recent,
            Some(Ppm(999_000)),
            Some(MatrixRows::Zone),
        )
    }

    fn grid_without_objective(agents: &[AgentInfo], recent: &Recent) -> ConnectivityMatrixStatus {
        grid(&plan(), agents, recent, None, None)
    }

    #[test]
    fn a_large_grid_keeps_the_failing_destinations_and_says_what_it_left_out() {
        let agents: Vec<AgentInfo> = (0..3)
            .map(|i| agent(&format!("a{i}"), &format!("n{i}"), "z"))
            .collect();
        let mut paths = Vec::new();
        for e in 0..100 {
            let bad = u64::from(e == 77);
            paths.push(path(
                "a0",
                label("api", Via::Pod, &format!("10.0.1.{e}:80")),
                10,
                bad,
                100,
            ));
        }
        let recent = Recent {
            paths,
            ..Recent::default()
        };
        let grid = grid(&plan(), &agents, &recent, Some(Ppm(999_000)), None);
        assert_eq!(grid.columns.len(), MAX_MATRIX_SIDE);
        assert!(grid.columns.contains(&"api Pod 10.0.1.77:80".to_owned()));
        assert_eq!(
            grid.message.as_deref(),
            Some(
                "0 sources and 36 destinations left out (at most 64 of each; failing destinations first)"
            )
        );
    }
}
