//! The pure plan of one check. From the check, what the reconcile gathered ([`Gathered`]) and
//! `now`: what the check wants before anything is applied ([`desired`]: what stalls it, its
//! children, what the planner assigns and how the store counts its results) and, once the
//! children are applied, its status ([`status`]). Nothing here touches the Context, the client
//! or the result store: every rule is a function of plain values.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use netslo_crds::v1alpha1::{
    AgentCounts, ConnectivityCheck, ConnectivityCheckSpec, ConnectivityCheckStatus, Expectation,
    Locality, MeshCoverage,
};
use netslo_protocol::spec::{AddressPolicySpec, Expect, ProbeSpec};

use crate::assign::{self, AgentInfo, AgentKind, CheckPlan, sources};
use crate::cache::OwnedSnapshot;
use crate::check_key::CheckKey;
use crate::mesh::{self, MeshPlan};
use crate::metrics::ObjectiveFigures;
use crate::policy::Grants;
use crate::resolve::{self, NodeIndex, ProblemKind, ResolvedTarget, SeriesId, Via};
use crate::slo::UnixMs;
use crate::slo::config::SloConfig;
use crate::slo::evaluate::{Evaluation, evaluate};
use crate::slo::window::History;
use crate::status::conditions::{Setup, Stall, StallReason};
use crate::status::verdict::{self, Cell, LastFailure, Name, TargetStats};
use crate::status::{StatusInput, desired_status, material_change, urgent_change};
use crate::store::{CheckConfig, EvidenceStats, Recent, SLOT_MS};
use crate::workloads::{self, CheckRef};

use super::Settings;

/// How long agents may stay silent before they count as not reporting, when the check's
/// objectives cannot be read (the objectives' `noDataAfter` default).
const DEFAULT_NO_DATA_AFTER_MS: i64 = 300_000;

/// What the reconcile gathered for one check before planning it.
#[derive(Debug, Clone, Default)]
pub(super) struct Gathered {
    /// The cluster as the cache last saw it.
    pub cluster: Arc<OwnedSnapshot>,
    /// Every check in the check's namespace, as (creation time in ms, name), for the
    /// policies' limit on checks per namespace; `None` until the controller has listed them.
    pub checks_in_namespace: Option<Vec<(Option<i64>, String)>>,
    /// The agents the operator knows, as the planner sees them.
    pub agents: Arc<[AgentInfo]>,
    /// The check's window and recent series; `None` when the store holds no window of this
    /// check object (a new check, or one created again under the same name).
    pub results: Option<StoredResults>,
    /// The status last written (or, after a restart, read): what a change is measured against.
    pub previous: Option<ConnectivityCheckStatus>,
}

/// One check's results as the store held them when gathered.
#[derive(Debug, Clone)]
pub(super) struct StoredResults {
    pub history: History,
    pub recent: Recent,
}

/// A check as the planner needs it: what it assigns to agents, and how the result store
/// counts the check's results (configured by the planner before it assigns agents).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PlannedCheck {
    pub key: CheckKey,
    /// The check object's UID: a check created again under the same name starts a new window.
    pub uid: String,
    pub spec: ConnectivityCheckSpec,
    /// The targets to probe: resolved, probeable and granted.
    pub targets: Vec<ResolvedTarget>,
    pub address_policy: AddressPolicySpec,
    /// `None` while the objectives cannot be read: the store keeps counting as before.
    pub counting: Option<CheckConfig>,
}

impl PlannedCheck {
    pub fn as_check_plan(&self) -> CheckPlan<'_> {
        CheckPlan {
            key: &self.key,
            spec: &self.spec,
            targets: &self.targets,
            address_policy: &self.address_policy,
        }
    }
}

/// What a check wants before anything is applied.
#[derive(Debug, Clone)]
pub(super) struct Desired {
    /// `None` when the objectives cannot be read (the stall says why).
    pub slo: Option<SloConfig>,
    /// What stalls the check as far as its spec, the cluster and the policies tell.
    pub stall: Option<Stall>,
    pub children: Children,
    pub planned: PlannedCheck,
}

/// The objects a check needs, applied in this order.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Children {
    /// The mesh agent DaemonSet, shared by every check that probes from or to mesh agents.
    pub mesh_agents: bool,
    /// Namespaces where agents of this check (probe sidecars, workload probe pods) verify the
    /// channel with the CA published there.
    pub channel_ca_namespaces: Vec<String>,
    /// The probe Deployment running as the check's workload identity.
    pub workload: Option<Deployment>,
}

/// What applying the children came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Applied {
    /// The probe Deployment's pods are not all ready yet.
    pub rolling_out: bool,
    /// The namespace whose probe Deployment the API server refused to the operator (403).
    pub workload_forbidden_in: Option<String>,
}

/// The status a reader should see and whether (and how urgently) to write it.
#[derive(Debug, Clone)]
pub(super) struct StatusPlan {
    pub status: ConnectivityCheckStatus,
    /// `None`: a reader would see no difference, so nothing is written.
    pub write: Option<StatusWrite>,
    /// The objectives' figures as just evaluated, for the metrics.
    pub objectives: Vec<ObjectiveFigures>,
    /// When to evaluate again.
    pub revisit: Duration,
}

/// Re-evaluate at least this often: windows move while nothing else does.
const REVISIT: Duration = Duration::from_secs(15);

/// When to evaluate a check again. While a fault is in progress (a series failed within the
/// hold span, went silent, or answered later than the latency objective allows) its verdict moves with time alone: an agent's silence grows,
/// the evidence from before the fault ages out, a hold runs out. No result arrives to say
/// so, so the check is evaluated once per probe interval (at least a second apart) until
/// the fault is over; otherwise at the routine pace.
fn revisit(cells: &[Cell], interval_ms: u64) -> Duration {
    if cells
        .iter()
        .any(|c| c.held_bad > 0 || c.silent || c.slow >= verdict::MIN_BAD)
    {
        Duration::from_millis(interval_ms.max(1_000)).min(REVISIT)
    } else {
        REVISIT
    }
}

/// How a status write is paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StatusWrite {
    /// Figures moved: written at the routine pace.
    Routine,
    /// A condition or verdict changed: written as soon as the transition pace allows.
    Urgent,
}

/// What `check` wants: objectives, targets, what stalls it (the first of: objectives that
/// cannot be read, targets the engine cannot probe, missing grants, missing objects), its
/// children and its plan.
pub(super) fn desired(
    check: &ConnectivityCheck,
    key: &CheckKey,
    gathered: &Gathered,
    settings: &Settings,
) -> Desired {
    let spec = &check.spec;
    let namespace = key.namespace.as_str();
    let mut stall: Option<Stall> = None;
    let slo = match SloConfig::from_spec(spec.objectives.as_ref()) {
        Ok(slo) => Some(slo),
        Err(err) => {
            stall = Some(Stall {
                reason: StallReason::InvalidSpec,
                message: err.to_string(),
            });
            None
        }
    };
    let cluster = gathered
        .cluster
        .view(&settings.cluster_domain, settings.cluster_ca_pem.as_deref());
    let mut resolution = resolve::resolve(namespace, &spec.targets, &cluster);
    if stall.is_none()
        && let Some(problem) = resolution.problems.iter().find(|p| p.kind.stalls())
    {
        let reason = match problem.kind {
            ProblemKind::NotFound => StallReason::TargetNotFound,
            // Cluster objects a tenant could have pointed anywhere: a tenancy refusal.
            ProblemKind::Untrusted => StallReason::TargetNotPermitted,
            _ => StallReason::InvalidSpec,
        };
        stall = Some(Stall {
            reason,
            message: problem.to_string(),
        });
    }

    // Targets the probe engine would refuse are never assigned: an agent refuses a whole
    // assignment it cannot compile, which would stop every other check on it.
    let mut unprobeable = Vec::new();
    resolution
        .targets
        .retain(|t| match assign::unprobeable(key, t) {
            Some(why) => {
                let index = spec.targets.iter().position(|s| s.name == t.name);
                unprobeable.push(format!(
                    "spec.targets[{}] ({}): the probe engine cannot run it: {why}",
                    index.unwrap_or_default(),
                    t.name
                ));
                false
            }
            None => true,
        });
    if let Some(first) = unprobeable.first()
        && !stalled_by(&stall, StallReason::InvalidSpec)
    {
        stall = Some(Stall {
            reason: StallReason::InvalidSpec,
            message: first.clone(),
        });
    }

    // Tenancy: targets the admins' policies do not grant are never probed.
    let grants = Grants::for_namespace(
        namespace,
        &gathered.cluster.policies,
        &gathered.cluster.namespaces,
    );
    let mut denials = grants.denials(spec);
    denials.extend(grants.resolved_denials(&resolution.targets));
    if let Some(in_namespace) = &gathered.checks_in_namespace {
        denials.extend(grants.check_count_denial(&key.name, in_namespace));
    }
    // A check the policies refuse as a whole (its source namespace, its limits) probes
    // nothing and runs no probe pods.
    let check_denied = denials.iter().any(|d| d.target.is_none());
    if let Some(first) = denials.first() {
        resolution.targets.retain(|t| {
            !check_denied
                && !denials
                    .iter()
                    .any(|d| d.target.as_deref() == Some(t.name.as_str()))
        });
        // A spec that cannot be read at all says so first; a missing grant outranks a
        // missing object.
        if !stalled_by(&stall, StallReason::InvalidSpec) {
            stall = Some(Stall {
                reason: StallReason::TargetNotPermitted,
                message: format!("{first}{}", and_more(denials.len(), "")),
            });
        }
    }

    // Results for this check are counted as its spec says.
    let counting = slo.as_ref().map(|slo| CheckConfig {
        latency_threshold_us: slo.latency.as_ref().map(|l| l.threshold_us),
        deny_targets: spec
            .targets
            .iter()
            .filter(|t| t.expect == Some(Expectation::Deny))
            .map(|t| t.name.clone())
            .collect(),
        slice: slo.slice,
        mesh_targets: spec
            .targets
            .iter()
            .filter(|t| t.mesh.is_some())
            .map(|t| t.name.clone())
            .collect(),
    });
    let uid = check.uid().unwrap_or_default();
    let children = children(check, key, &uid, check_denied, settings);
    Desired {
        slo,
        stall,
        children,
        planned: PlannedCheck {
            key: key.clone(),
            uid,
            spec: spec.clone(),
            targets: resolution.targets,
            address_policy: grants.address_policy(),
            counting,
        },
    }
}

fn stalled_by(stall: &Option<Stall>, reason: StallReason) -> bool {
    stall.as_ref().is_some_and(|s| s.reason == reason)
}

/// `" (and N more<what>)"` after the first of `count` findings, or nothing for one.
fn and_more(count: usize, what: &str) -> String {
    match count {
        0 | 1 => String::new(),
        n => format!(" (and {} more{what})", n - 1),
    }
}

/// The objects `check` needs. A check of localhost targets only is probed by the sidecars in
/// its target pods: its source starts no agents.
fn children(
    check: &ConnectivityCheck,
    key: &CheckKey,
    uid: &str,
    check_denied: bool,
    settings: &Settings,
) -> Children {
    let spec = &check.spec;
    let localhost_only = assign::localhost_only(spec);
    let mesh_agents = !localhost_only
        && (spec.source.mesh.is_some() || spec.targets.iter().any(|t| t.mesh.is_some()));
    let mut channel_ca_namespaces = Vec::new();
    // Probe sidecars verify the channel with the CA in their own namespace.
    if spec.targets.iter().any(|t| t.localhost.is_some()) {
        channel_ca_namespaces.push(key.namespace.clone());
    }
    let workload = spec
        .source
        .workload
        .as_ref()
        .filter(|_| !localhost_only && !check_denied)
        .map(|workload| {
            let source_namespace = workload
                .namespace
                .clone()
                .unwrap_or_else(|| key.namespace.clone());
            let check_ref = CheckRef {
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                uid: uid.to_owned(),
            };
            let deployment = workloads::workload_deployment(
                &settings.agent,
                &check_ref,
                &source_namespace,
                &workload.pod_labels,
                &workload.service_account_name,
                workload.replicas.unwrap_or(2),
                workload.node_selector.as_ref(),
            );
            channel_ca_namespaces.push(source_namespace);
            deployment
        });
    Children {
        mesh_agents,
        channel_ca_namespaces,
        workload,
    }
}

/// The status of the check once its children are applied: the stalls only applying and the
/// results can tell (after those of [`desired`]: a refused probe Deployment, a missing probe
/// sidecar, destinations the agents refused), the objectives evaluated, failures localised,
/// and whether a reader would see a change.
pub(super) fn status(
    check: &ConnectivityCheck,
    key: &CheckKey,
    desired: &Desired,
    applied: &Applied,
    gathered: &Gathered,
    now: UnixMs,
) -> StatusPlan {
    let mut stall = desired.stall.clone();
    // Running probe pods as a workload's identity is granted per namespace.
    if let Some(namespace) = &applied.workload_forbidden_in {
        stall.get_or_insert(Stall {
            reason: StallReason::TargetNotPermitted,
            message: format!(
                "the operator may not run probe pods in namespace {namespace}: bind the ClusterRole netslo-workload-agents to it there"
            ),
        });
    }
    let planned = &desired.planned;
    // The agents this check probes from: what `agents.desired` counts and what its mesh
    // coverage is measured over, the same set the planner assigns.
    let source_agents = sources(
        &planned.as_check_plan(),
        &gathered.agents,
        &NodeIndex::new(&gathered.cluster.nodes),
    );
    let mesh_agents: Vec<&AgentInfo> = source_agents
        .iter()
        .copied()
        .filter(|a| a.kind != AgentKind::Sidecar)
        .collect();
    if stall.is_none()
        && let Some(message) = missing_sidecars(
            planned
                .targets
                .iter()
                .flat_map(|t| &t.endpoints)
                .filter_map(|e| e.inside_pod.as_deref()),
            &gathered.agents,
        )
    {
        stall = Some(Stall {
            reason: StallReason::SidecarMissing,
            message,
        });
    }
    let figures = ResultFigures::of(
        desired.slo.as_ref(),
        gathered.results.as_ref(),
        planned,
        &gathered.agents,
        &mesh_agents,
        now,
    );
    // Agents refused to send probes the plan allowed: a granted name resolved to an address
    // the namespace is not granted (loopback, link-local or metadata, the node itself, a pod
    // or ClusterIP the operator did not resolve for the check), or a redirect led there. The
    // check cannot run as written: say so like any missing grant.
    if stall.is_none()
        && let Some(first) = figures.refused_targets.first()
    {
        stall = Some(Stall {
            reason: StallReason::TargetNotPermitted,
            message: format!(
                "target {first}: the agents refused its destination, which resolves or redirects to an address no ConnectivityPolicy grants to namespace {} (loopback, link-local/metadata, a node's own, another pod or Service of the cluster, or outside every external grant){}",
                key.namespace,
                and_more(figures.refused_targets.len(), " targets"),
            ),
        });
    }
    let setup = Setup {
        generation: check.metadata.generation,
        suspended: check.spec.suspend == Some(true),
        stalled: stall,
        agents: AgentCounts {
            desired: i32::try_from(source_agents.len()).unwrap_or(i32::MAX),
            reporting: i32::try_from(figures.reporting).unwrap_or(i32::MAX),
        },
        agents_rolling_out: applied.rolling_out,
        agents_due: figures.agents_due,
    };
    let input = StatusInput {
        setup: &setup,
        evaluation: figures.evaluation.as_ref(),
        cells: &figures.cells,
        targets: &figures.targets,
        mesh: figures.mesh,
    };
    let previous = gathered.previous.as_ref();
    let status = desired_status(&input, previous, now);
    let failing = |c: &&Cell| c.bad > 0;
    tracing::debug!(
        check = %key,
        cells = figures.cells.len(),
        failing = figures.cells.iter().filter(failing).count(),
        silent = figures.cells.iter().filter(|c| c.silent).count(),
        verdict = status.verdict.as_ref().map(|v| v.summary.as_str()),
        "evaluated"
    );
    let write = if !material_change(previous, &status) {
        None
    } else if urgent_change(previous, &status) {
        Some(StatusWrite::Urgent)
    } else {
        Some(StatusWrite::Routine)
    };
    StatusPlan {
        status,
        write,
        revisit: revisit(&figures.cells, assign::interval_ms(&desired.planned.spec)),
        objectives: figures
            .evaluation
            .as_ref()
            .map(ObjectiveFigures::of)
            .unwrap_or_default(),
    }
}

/// What a check's results come to: the objectives evaluated, the failure matrix, the
/// per-target summaries, who reports, mesh coverage and refused destinations.
#[derive(Debug, Clone, Default)]
struct ResultFigures {
    /// `None` when the objectives cannot be read.
    evaluation: Option<Evaluation>,
    cells: Vec<Cell>,
    targets: Vec<TargetStats>,
    /// Sources with results within the objectives' `noDataAfter`.
    reporting: usize,
    mesh: Option<MeshCoverage>,
    /// Targets (by name) whose probes the agents refused within the summary span.
    refused_targets: Vec<String>,
    /// Whether the check has had results for `noDataAfter`: silent agents are then missing.
    agents_due: bool,
}

impl ResultFigures {
    fn of(
        slo: Option<&SloConfig>,
        stored: Option<&StoredResults>,
        plan: &PlannedCheck,
        agents: &[AgentInfo],
        mesh_agents: &[&AgentInfo],
        now: UnixMs,
    ) -> Self {
        let no_data_after = slo.map_or(DEFAULT_NO_DATA_AFTER_MS, |s| s.no_data_after_ms);
        let nothing = Recent::default();
        // The planner configures the store from this plan: until it has, the window is the
        // one configuring will give it. A new check (or one created again under the same
        // name) starts an empty window now; a new timeslice rule settles the open slices
        // under the old one first.
        let (history, recent): (Cow<'_, History>, &Recent) = match (stored, slo) {
            (Some(stored), Some(slo)) if stored.history.slice_rule() != slo.slice => {
                let mut history = stored.history.clone();
                history.set_slice_rule(slo.slice, now);
                history.advance(now);
                (Cow::Owned(history), &stored.recent)
            }
            (Some(stored), _) => (Cow::Borrowed(&stored.history), &stored.recent),
            (None, Some(slo)) => (Cow::Owned(History::new(slo.slice, now)), &nothing),
            // Objectives that cannot be read configure nothing: there is nothing to count.
            (None, None) => {
                return ResultFigures {
                    mesh: mesh_coverage(plan, mesh_agents, &nothing, now),
                    ..ResultFigures::default()
                };
            }
        };
        let reporting = recent
            .sources
            .values()
            .filter(|s| s.last_slot_ms + SLOT_MS >= now - no_data_after)
            .count();
        let agents = AgentsByName::new(agents);
        ResultFigures {
            evaluation: slo.map(|s| evaluate(s, &history, now)),
            cells: failure_matrix(plan, &agents, recent, now),
            targets: target_stats(plan, &agents, recent),
            reporting,
            mesh: mesh_coverage(plan, mesh_agents, recent, now),
            refused_targets: refused_targets(recent),
            agents_due: history
                .first_result_ms()
                .is_some_and(|first| now - first >= no_data_after),
        }
    }
}

/// The pods of `localhost` targets (`<namespace>/<pod>`) that run no probe sidecar, as a
/// stall message, or `None` when every such pod has one.
fn missing_sidecars<'a>(
    inside_pods: impl Iterator<Item = &'a str>,
    agents: &[AgentInfo],
) -> Option<String> {
    let sidecars: BTreeSet<&str> = agents
        .iter()
        .filter(|a| a.kind == AgentKind::Sidecar)
        .map(|a| a.name.as_str())
        .collect();
    let missing: BTreeSet<&str> = inside_pods.filter(|pod| !sidecars.contains(pod)).collect();
    let first = missing.first()?;
    Some(format!(
        "pod {first}{} runs no netslo probe sidecar: localhost targets are probed from inside the pod, by a sidecar in pods labelled {}=true",
        and_more(missing.len(), ""),
        workloads::LABEL_PROBE_SIDECAR
    ))
}

/// The rotating peer plan of a mesh target over `agents`.
pub(super) fn mesh_plan_for<'a>(
    spec: &ConnectivityCheckSpec,
    target: &str,
    agents: impl Iterator<Item = &'a AgentInfo>,
) -> MeshPlan {
    let agents = agents
        .map(|a| mesh::Agent {
            node: a.node.clone().unwrap_or_default(),
            name: a.name.clone(),
            zone: a.zone.clone(),
        })
        .collect();
    let k = spec
        .targets
        .iter()
        .find(|t| t.name == target)
        .and_then(|t| t.mesh.as_ref())
        .and_then(|m| m.peers_per_agent);
    MeshPlan::new(agents, k)
}

/// Targets (by name) whose probes the agents refused within the summary span.
fn refused_targets(recent: &Recent) -> Vec<String> {
    let paths = recent
        .paths
        .iter()
        .map(|((_, label), v)| (label, &v.summary));
    let pooled = recent.pooled.iter().map(|(label, v)| (label, &v.summary));
    let names: BTreeSet<String> = paths
        .chain(pooled)
        .filter(|(_, summary)| summary.refused > 0)
        .filter_map(|(label, _)| SeriesId::parse(label).map(|s| s.target))
        .collect();
    names.into_iter().collect()
}

/// Mesh coverage over the check's own source agents: the rotation, and the fraction of
/// ordered pairs probed within the last rotation period. Each agent probes the peers the
/// rotation gives each of its rounds, so its share of its N − 1 pairs is its share of the
/// period's minutes in which it reported the mesh (the store's resolution).
fn mesh_coverage(
    plan: &PlannedCheck,
    source_agents: &[&AgentInfo],
    recent: &Recent,
    now: UnixMs,
) -> Option<MeshCoverage> {
    let target = plan.spec.targets.iter().find(|t| t.mesh.is_some())?;
    let mesh_plan = mesh_plan_for(&plan.spec, &target.name, source_agents.iter().copied());
    let interval = Duration::from_millis(assign::interval_ms(&plan.spec));
    let period_ms =
        i64::try_from(mesh_plan.rotation_period(interval).as_millis()).unwrap_or(i64::MAX);
    let since = now.saturating_sub(period_ms);
    let period_minutes = u64::try_from(period_ms)
        .unwrap_or(0)
        .div_ceil(SLOT_MS as u64)
        .max(1);
    let peers = mesh_plan.agents().len().saturating_sub(1) as u64;
    let probed = mesh_plan
        .agents()
        .iter()
        .filter_map(|agent| recent.sources.get(&agent.name))
        .filter_map(|source| source.mesh_minutes.get(&target.name))
        .map(|minutes| {
            let reported = u64::from(minutes.count_since(since)).min(period_minutes);
            peers * reported / period_minutes
        })
        .sum();
    Some(mesh_plan.coverage(interval, Some(probed)))
}

/// Agents by name: looked up once per series, of which a mesh has thousands.
struct AgentsByName<'a>(HashMap<&'a str, &'a AgentInfo>);

impl<'a> AgentsByName<'a> {
    fn new(agents: &'a [AgentInfo]) -> Self {
        AgentsByName(agents.iter().map(|a| (a.name.as_str(), a)).collect())
    }

    fn get(&self, name: &str) -> Option<&'a AgentInfo> {
        self.0.get(name).copied()
    }
}

/// Names shared by the cells that name them, and each place worked out once: a mesh has
/// N·k cells per round naming N nodes.
struct CellNames<'a> {
    plan: &'a PlannedCheck,
    agents: &'a AgentsByName<'a>,
    names: HashMap<String, Name>,
    sources: HashMap<&'a str, (Name, Option<Name>)>,
    /// A series' cell but for its source and counts, by target label; `None` when the label
    /// is not one of the check's targets.
    destinations: HashMap<&'a str, Option<Cell>>,
}

impl<'a> CellNames<'a> {
    fn new(plan: &'a PlannedCheck, agents: &'a AgentsByName<'a>) -> Self {
        CellNames {
            plan,
            agents,
            names: HashMap::new(),
            sources: HashMap::new(),
            destinations: HashMap::new(),
        }
    }

    fn name(names: &mut HashMap<String, Name>, name: &str) -> Name {
        match names.get(name) {
            Some(shared) => shared.clone(),
            None => {
                let shared: Name = name.into();
                names.insert(name.to_owned(), shared.clone());
                shared
            }
        }
    }

    /// A source agent's node (its own name when unknown) and zone.
    fn source(&mut self, source: &'a str) -> (Name, Option<Name>) {
        if let Some(place) = self.sources.get(source) {
            return place.clone();
        }
        let agent = self.agents.get(source);
        let node = agent.and_then(|a| a.node.as_deref()).unwrap_or(source);
        let place = (
            Self::name(&mut self.names, node),
            agent
                .and_then(|a| a.zone.as_deref())
                .map(|zone| Self::name(&mut self.names, zone)),
        );
        self.sources.insert(source, place.clone());
        place
    }

    /// A cell of the series `label` with no source and no probes yet.
    fn destination(&mut self, label: &'a str, recent: &Recent) -> Option<Cell> {
        if let Some(cell) = self.destinations.get(label) {
            return cell.clone();
        }
        let cell = SeriesId::parse(label).and_then(|series| {
            let target = self.plan.targets.iter().find(|t| t.name == series.target)?;
            let (endpoint_node, endpoint_zone) = endpoint_place(target, &series, self.agents);
            let names = &mut self.names;
            let mut name = |n: &str| Self::name(names, n);
            Some(Cell {
                source_node: name(""),
                source_zone: None,
                target: name(&series.target),
                protocol: target.protocol,
                path: series.via.service_path(),
                endpoint: endpoint_label(&series).map(|e| name(&e)),
                dest_zone: endpoint_zone.map(|z| name(&z)),
                dest_node: endpoint_node.map(|n| name(&n)),
                resolver: resolver_of(target, &series).map(|r| name(&r)),
                expect_deny: target.expect == Expect::Deny,
                good: 0,
                bad: 0,
                held_bad: 0,
                silent: false,
                reason: None,
                answered: 0,
                slow: 0,
                // A mesh pair's latency is its peer's, from all sources (a series' own is
                // its source's, see `failure_matrix`).
                p99_us: recent
                    .pooled
                    .get(label)
                    .and_then(|pooled| pooled.summary.latency.quantile(0.99)),
            })
        });
        self.destinations.insert(label, cell.clone());
        cell
    }

    /// The cell of (`source`, `label`) with its counts.
    fn cell(
        &mut self,
        source: &'a str,
        label: &'a str,
        recent: &Recent,
        counts: impl FnOnce(&mut Cell),
    ) -> Option<Cell> {
        let mut cell = self.destination(label, recent)?;
        (cell.source_node, cell.source_zone) = self.source(source);
        counts(&mut cell);
        Some(cell)
    }
}

/// The failure matrix: one cell per (source, series) and per mesh pair, over the evidence
/// and hold spans, and one without probes per silent mesh source (its rotating pairs leave
/// the evidence span before its silence stops counting).
fn failure_matrix(
    plan: &PlannedCheck,
    agents: &AgentsByName<'_>,
    recent: &Recent,
    now: UnixMs,
) -> Vec<Cell> {
    let spans = verdict::evidence_spans(assign::interval_ms(&plan.spec));
    let mut names = CellNames::new(plan, agents);
    let mut cells = Vec::with_capacity(recent.paths.len() + recent.mesh_pairs.len());
    for ((source, label), view) in &recent.paths {
        let recent_probes = &view.matrix;
        // A series silent within the evidence span still counts (as no probes) while it
        // reported within the hold span: an agent cut off from the operator goes silent.
        let reported_lately = view.last_slot_ms + SLOT_MS >= now - spans.hold_ms;
        if recent_probes.good + recent_probes.bad == 0 && view.held_bad == 0 && !reported_lately {
            continue;
        }
        let cell = names.cell(source, label, recent, |cell| {
            cell.p99_us = view.summary.latency.quantile(0.99);
            count(cell, recent_probes, view.held_bad, view.silent);
        });
        cells.extend(cell);
    }
    for pair in &recent.mesh_pairs {
        let cell = names.cell(&pair.source, &pair.peer, recent, |cell| {
            count(cell, &pair.matrix(), pair.held_bad.into(), pair.silent);
        });
        cells.extend(cell);
    }
    for (source, target_name) in &recent.silent_mesh_sources {
        let Some(target) = plan.targets.iter().find(|t| t.name == *target_name) else {
            continue;
        };
        let (source_node, source_zone) = names.source(source);
        cells.push(Cell {
            source_node,
            source_zone,
            target: CellNames::name(&mut names.names, target_name),
            protocol: target.protocol,
            path: None,
            endpoint: None,
            dest_zone: None,
            dest_node: None,
            resolver: None,
            expect_deny: target.expect == Expect::Deny,
            good: 0,
            bad: 0,
            held_bad: 0,
            silent: true,
            reason: None,
            answered: 0,
            slow: 0,
            p99_us: None,
        });
    }
    cells
}

fn count(cell: &mut Cell, evidence: &EvidenceStats, held_bad: u64, silent: bool) {
    cell.good = evidence.good;
    cell.bad = evidence.bad;
    cell.held_bad = held_bad;
    cell.silent = silent;
    cell.reason = evidence.reason;
    cell.answered = evidence.answered;
    cell.slow = evidence.slow;
}

/// Where a series' endpoint is, as (node, zone): a resolved endpoint's, or a mesh peer's.
fn endpoint_place(
    target: &ResolvedTarget,
    series: &SeriesId,
    agents: &AgentsByName<'_>,
) -> (Option<String>, Option<String>) {
    let resolved = target.endpoints.iter().find(|e| e.series == *series);
    let peer = || agents.get(&series.endpoint);
    (
        resolved
            .and_then(|e| e.node.clone())
            .or_else(|| peer().and_then(|a| a.node.clone())),
        resolved
            .and_then(|e| e.zone.clone())
            .or_else(|| peer().and_then(|a| a.zone.clone())),
    )
}

/// The DNS server a series' probes ask, where they resolve: a DNS target's own server or the
/// cluster resolver (the agents' resolv.conf), which also resolves Service names.
fn resolver_of(target: &ResolvedTarget, series: &SeriesId) -> Option<String> {
    match (&target.probe, series.via) {
        (ProbeSpec::Dns(dns), _) => Some(match &dns.server {
            Some(server) => format!("the resolver {server}"),
            None => "the cluster resolver".to_owned(),
        }),
        (_, Via::DNSName) => Some("the cluster resolver".to_owned()),
        _ => None,
    }
}

fn endpoint_label(series: &SeriesId) -> Option<String> {
    match series.via {
        Via::ClusterIP | Via::DNSName | Via::Dns | Via::ApiServer => None,
        _ => Some(series.endpoint.clone()),
    }
}

/// Per-target statistics of the last hour, one per (target, path, endpoint), all sources
/// together, except that sources on the endpoint's own node and on other nodes are counted
/// apart where the endpoint's node is known. A mesh peer's figures come pooled over its
/// sources: mesh agents run one per node (a DaemonSet), so they are all on other nodes than
/// the peer's, unless the peer's node runs a second agent (a rolling update): then the two
/// are not told apart.
fn target_stats(
    plan: &PlannedCheck,
    agents: &AgentsByName<'_>,
    recent: &Recent,
) -> Vec<TargetStats> {
    let mut mesh_agents_per_node: HashMap<&str, usize> = HashMap::new();
    for node in agents
        .0
        .values()
        .filter(|a| a.kind == AgentKind::Mesh)
        .filter_map(|a| a.node.as_deref())
    {
        *mesh_agents_per_node.entry(node).or_default() += 1;
    }
    // A mesh pair's figures are its peer's, pooled.
    let per_source = recent
        .paths
        .iter()
        .filter(|((_, label), _)| !recent.pooled.contains_key(label))
        .map(|((source, label), view)| {
            let node = agents.get(source).and_then(|a| a.node.as_deref());
            (label, &view.summary, Counted::BySource { source, node })
        });
    let pooled = recent.pooled.iter().map(|(label, pooled)| {
        let last_failure = pooled.last_failure_source.as_deref();
        (label, &pooled.summary, Counted::Pooled { last_failure })
    });
    let mut by_series: BTreeMap<(SeriesId, Option<Locality>), TargetStats> = BTreeMap::new();
    for (label, stats, counted) in per_source.chain(pooled) {
        let Some(series) = SeriesId::parse(label) else {
            continue;
        };
        let Some(target) = plan.targets.iter().find(|t| t.name == series.target) else {
            continue;
        };
        let endpoint_node = endpoint_place(target, &series, agents).0;
        let locality = match (counted, endpoint_node.as_deref()) {
            (
                Counted::BySource {
                    node: Some(from), ..
                },
                Some(to),
            ) if from == to => Some(Locality::SameNode),
            (Counted::BySource { node: Some(_), .. }, Some(_)) => Some(Locality::CrossNode),
            (Counted::Pooled { .. }, Some(to))
                if mesh_agents_per_node.get(to).is_some_and(|n| *n == 1) =>
            {
                Some(Locality::CrossNode)
            }
            _ => None,
        };
        let entry = by_series
            .entry((series.clone(), locality))
            .or_insert_with(|| TargetStats {
                name: series.target.clone(),
                via: series.via.service_path(),
                endpoint: endpoint_label(&series),
                locality,
                protocol: target.protocol,
                good: 0,
                valid: 0,
                latency: Default::default(),
                last_failure: None,
            });
        entry.good += stats.good;
        entry.valid += stats.good + stats.bad;
        entry.latency.merge(&stats.latency);
        if let Some((reason, at)) = stats.last_failure
            && entry.last_failure.as_ref().is_none_or(|f| f.at_ms <= at)
        {
            let source = match counted {
                Counted::BySource { source, .. } => source,
                Counted::Pooled { last_failure } => last_failure.unwrap_or_default(),
            };
            entry.last_failure = Some(LastFailure {
                reason,
                protocol: target.protocol,
                source: source.to_owned(),
                at_ms: at,
            });
        }
    }
    by_series.into_values().collect()
}

/// Whose probes a summary counts.
#[derive(Debug, Clone, Copy)]
enum Counted<'a> {
    /// One source agent's, on its node where known.
    BySource {
        source: &'a str,
        node: Option<&'a str>,
    },
    /// A mesh peer's, from all its sources, and the source of the latest failure.
    Pooled { last_failure: Option<&'a str> },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MinuteMask, PooledView, SeriesStats, SeriesView, SourceView};
    use crate::workloads::AgentSettings;
    use netslo_protocol::verdict::FailureReason;
    use serde_json::json;

    const NOW: UnixMs = 1_800_000_000_000;

    fn mesh_agent(name: &str, node: &str) -> AgentInfo {
        AgentInfo {
            name: name.into(),
            kind: AgentKind::Mesh,
            node: Some(node.into()),
            zone: None,
            ip: None,
            pod: None,
        }
    }

    fn settings() -> Settings {
        Settings {
            namespace: "netslo-system".into(),
            watch_namespace: None,
            cluster_domain: "cluster.local".into(),
            agent: AgentSettings {
                namespace: "netslo-system".into(),
                image: "netslo-agent:test".into(),
                mesh_service_account: "netslo-agent".into(),
                operator_url: "https://netslo-operator.netslo-system.svc:8443".into(),
                env: Vec::new(),
                mesh_tolerations: None,
                mesh_priority_class: None,
            },
            instance: "netslo-operator-0".into(),
            manage_mesh_agents: true,
            cluster_ca_pem: None,
            channel_ca_pem: String::new(),
        }
    }

    fn check(spec: serde_json::Value) -> (ConnectivityCheck, CheckKey) {
        let check: ConnectivityCheck = serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1",
            "kind": "ConnectivityCheck",
            "metadata": {"namespace": "shop", "name": "web", "uid": "uid-1", "generation": 3},
            "spec": spec,
        }))
        .unwrap();
        (check, CheckKey::new("shop", "web"))
    }

    fn service_target() -> serde_json::Value {
        json!({"name": "api", "service": {"name": "api", "port": 80}})
    }

    fn workload_source(namespace: Option<&str>) -> serde_json::Value {
        let mut source = json!({"serviceAccountName": "web", "podLabels": {"app": "web"}});
        if let Some(ns) = namespace {
            source["namespace"] = json!(ns);
        }
        json!({"workload": source})
    }

    fn desired_of(spec: serde_json::Value, gathered: &Gathered) -> Desired {
        let (check, key) = check(spec);
        desired(&check, &key, gathered, &settings())
    }

    fn status_of(
        spec: serde_json::Value,
        desired: &Desired,
        applied: &Applied,
        gathered: &Gathered,
    ) -> StatusPlan {
        let (check, key) = check(spec);
        status(&check, &key, desired, applied, gathered, NOW)
    }

    fn ready_reason(plan: &StatusPlan) -> (String, String) {
        let ready = plan
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("a Ready condition");
        (ready.reason.clone(), ready.message.clone())
    }

    #[test]
    fn a_missing_object_stalls_the_check() {
        let desired = desired_of(
            json!({"source": {"mesh": {}}, "targets": [service_target()]}),
            &Gathered::default(),
        );
        let stall = desired.stall.expect("stalled");
        assert_eq!(stall.reason, StallReason::TargetNotFound);
        assert!(stall.message.contains("api"), "{}", stall.message);
        assert!(desired.slo.is_some());
        assert_eq!(desired.planned.uid, "uid-1");
        assert!(desired.planned.counting.is_some(), "the store counts it");
    }

    #[test]
    fn unreadable_objectives_outrank_every_other_stall_and_configure_no_counting() {
        let desired = desired_of(
            json!({"source": workload_source(Some("elsewhere")),
                   "targets": [service_target()],
                   "objectives": {"alerting": {"profile": "Custom"}}}),
            &Gathered::default(),
        );
        let stall = desired.stall.expect("stalled");
        assert_eq!(stall.reason, StallReason::InvalidSpec);
        assert!(desired.slo.is_none());
        assert!(desired.planned.counting.is_none());
    }

    #[test]
    fn a_missing_grant_outranks_a_missing_object_and_runs_no_probe_pods() {
        let desired = desired_of(
            json!({"source": workload_source(Some("elsewhere")), "targets": [service_target()]}),
            &Gathered::default(),
        );
        let stall = desired.stall.expect("stalled");
        assert_eq!(stall.reason, StallReason::TargetNotPermitted);
        assert!(
            stall
                .message
                .starts_with("probing from namespace elsewhere is not granted"),
            "{}",
            stall.message
        );
        assert_eq!(desired.children.workload, None);
        assert!(
            desired.planned.targets.is_empty(),
            "a denied check probes nothing"
        );
    }

    #[test]
    fn a_workload_source_wants_its_deployment_and_the_channel_ca_beside_it() {
        let desired = desired_of(
            json!({"source": workload_source(None), "targets": [service_target()]}),
            &Gathered::default(),
        );
        let children = &desired.children;
        assert!(!children.mesh_agents);
        assert_eq!(children.channel_ca_namespaces, ["shop"]);
        let deployment = children.workload.as_ref().expect("a probe Deployment");
        assert_eq!(deployment.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(deployment.metadata.name.as_deref(), Some("netslo-web"));
    }

    #[test]
    fn a_localhost_only_check_starts_no_agents_of_its_own() {
        let desired = desired_of(
            json!({"source": workload_source(None),
                   "targets": [{"name": "app", "localhost": {"podSelector": {"matchLabels": {"app": "checkout"}}, "port": 9091}}]}),
            &Gathered::default(),
        );
        assert_eq!(
            desired.children,
            Children {
                mesh_agents: false,
                channel_ca_namespaces: vec!["shop".into()],
                workload: None,
            }
        );
        let mesh = desired_of(
            json!({"source": {"mesh": {}}, "targets": [service_target()]}),
            &Gathered::default(),
        );
        assert!(mesh.children.mesh_agents);
    }

    #[test]
    fn a_refused_probe_deployment_stalls_only_an_unstalled_check() {
        let spec = json!({"source": workload_source(None), "targets": [service_target()]});
        let gathered = Gathered::default();
        let forbidden = Applied {
            rolling_out: false,
            workload_forbidden_in: Some("shop".into()),
        };
        let mut desired = desired_of(spec.clone(), &gathered);
        assert_eq!(
            ready_reason(&status_of(spec.clone(), &desired, &forbidden, &gathered)).0,
            "TargetNotFound",
            "the earlier stall stands"
        );
        desired.stall = None;
        let (reason, message) = ready_reason(&status_of(spec, &desired, &forbidden, &gathered));
        assert_eq!(reason, "TargetNotPermitted");
        assert!(
            message.starts_with("the operator may not run probe pods in namespace shop"),
            "{message}"
        );
    }

    #[test]
    fn destinations_the_agents_refused_stall_the_check() {
        let spec = json!({"source": {"mesh": {}}, "targets": [service_target()]});
        let refused = |target: &str| {
            (
                (
                    "node-a".to_string(),
                    format!("{target}/ClusterIP/10.96.0.9:80"),
                ),
                SeriesView {
                    summary: SeriesStats {
                        invalid: 3,
                        refused: 3,
                        ..SeriesStats::default()
                    },
                    last_slot_ms: NOW - 60_000,
                    ..SeriesView::default()
                },
            )
        };
        let gathered = Gathered {
            results: Some(StoredResults {
                history: History::new(crate::slo::config::SliceRule::DEFAULT, NOW - 600_000),
                recent: Recent {
                    paths: [refused("api"), refused("db")].into(),
                    ..Recent::default()
                },
            }),
            ..Gathered::default()
        };
        let mut desired = desired_of(spec.clone(), &gathered);
        desired.stall = None;
        let (reason, message) =
            ready_reason(&status_of(spec, &desired, &Applied::default(), &gathered));
        assert_eq!(reason, "TargetNotPermitted");
        assert!(
            message.starts_with("target api: the agents refused its destination"),
            "{message}"
        );
    }

    #[test]
    fn a_check_the_store_does_not_count_yet_is_evaluated_over_an_empty_window() {
        let spec = json!({"source": {"mesh": {}}, "targets": [service_target()]});
        let gathered = Gathered::default();
        let desired = desired_of(spec.clone(), &gathered);
        let plan = status_of(spec, &desired, &Applied::default(), &gathered);
        assert!(!plan.objectives.is_empty(), "figures of an empty window");
        assert_eq!(
            plan.status.agents.map(|a| (a.desired, a.reporting)),
            Some((0, 0))
        );

        let unreadable = json!({"source": {"mesh": {}}, "targets": [service_target()],
                                "objectives": {"alerting": {"profile": "Custom"}}});
        let desired = desired_of(unreadable.clone(), &gathered);
        let plan = status_of(unreadable, &desired, &Applied::default(), &gathered);
        assert!(plan.objectives.is_empty(), "nothing to evaluate");
    }

    #[test]
    fn a_status_a_reader_would_not_see_change_is_not_written_again() {
        let spec = json!({"source": {"mesh": {}}, "targets": [service_target()]});
        let mut gathered = Gathered::default();
        let desired = desired_of(spec.clone(), &gathered);
        let first = status_of(spec.clone(), &desired, &Applied::default(), &gathered);
        assert_eq!(first.write, Some(StatusWrite::Urgent), "a first status");
        gathered.previous = Some(first.status);
        let again = status_of(spec, &desired, &Applied::default(), &gathered);
        assert_eq!(again.write, None);
    }

    #[test]
    fn paths_within_a_node_and_across_nodes_are_summarised_apart() {
        let spec = json!({"source": {"mesh": {}}, "targets": [{"name": "peers", "mesh": {}}]});
        // Two agents on node-a, one on node-b; every peer of a1 answers, b1 does not answer
        // a2. An agent the operator does not know has no node: its path is not placed.
        let agents = vec![
            mesh_agent("a1", "node-a"),
            mesh_agent("a2", "node-a"),
            mesh_agent("b1", "node-b"),
        ];
        let view = |good: u64, bad: u64| SeriesView {
            summary: SeriesStats {
                good,
                bad,
                ..SeriesStats::default()
            },
            last_slot_ms: NOW - 60_000,
            ..SeriesView::default()
        };
        let series = |source: &str, peer: &str| (source.to_string(), format!("peers/Pod/{peer}"));
        let gathered = Gathered {
            agents: agents.clone().into(),
            results: Some(StoredResults {
                history: History::new(crate::slo::config::SliceRule::DEFAULT, NOW - 600_000),
                recent: Recent {
                    paths: vec![
                        (series("a1", "a2"), view(10, 0)),
                        (series("a1", "b1"), view(10, 0)),
                        (series("b1", "a2"), view(0, 10)),
                        (series("gone", "a2"), view(5, 0)),
                    ],
                    ..Recent::default()
                },
            }),
            ..Gathered::default()
        };
        let desired = desired_of(spec.clone(), &gathered);
        let status = status_of(spec, &desired, &Applied::default(), &gathered).status;
        let mut summaries: Vec<(Option<&str>, Option<Locality>, Option<&str>)> = status
            .targets
            .iter()
            .map(|t| {
                (
                    t.endpoint.as_deref(),
                    t.locality,
                    t.success_ratio.as_deref(),
                )
            })
            .collect();
        summaries.sort();
        assert_eq!(
            summaries,
            [
                (Some("a2"), None, Some("1")),
                (Some("a2"), Some(Locality::SameNode), Some("1")),
                (Some("a2"), Some(Locality::CrossNode), Some("0")),
                (Some("b1"), Some(Locality::CrossNode), Some("1")),
            ]
        );
    }

    #[test]
    fn a_mesh_peer_is_summarised_over_its_sources_and_coverage_read_from_their_minutes() {
        let spec = json!({"source": {"mesh": {}}, "targets": [{"name": "peers", "mesh": {}}]});
        // node-c runs two mesh agents (a DaemonSet rolling over): probes of c1 from c2 and
        // from the other nodes are pooled, so c1's figures are not placed.
        let agents = vec![
            mesh_agent("a1", "node-a"),
            mesh_agent("b1", "node-b"),
            mesh_agent("c1", "node-c"),
            mesh_agent("c2", "node-c"),
        ];
        let pooled = |good: u64, bad: u64, failure_source: Option<&str>| PooledView {
            summary: SeriesStats {
                good,
                bad,
                last_failure: failure_source.map(|_| (FailureReason::TcpTimeout, NOW - 90_000)),
                ..SeriesStats::default()
            },
            last_failure_source: failure_source.map(str::to_owned),
        };
        // Rounds of 10 s over 4 agents and 3 peers each: every pair within one round, read
        // at the store's one-minute resolution. a1 and b1 reported within the last minute,
        // c1 ten minutes ago, c2 never: 2 × 3 of 12 ordered pairs.
        let minutes = |ago_ms: i64| {
            let mut mask = MinuteMask::default();
            mask.mark(NOW - ago_ms);
            BTreeMap::from([("peers".to_owned(), mask)])
        };
        let source = |ago_ms: i64| SourceView {
            last_slot_ms: NOW - ago_ms,
            mesh_minutes: minutes(ago_ms),
        };
        let gathered = Gathered {
            agents: agents.clone().into(),
            results: Some(StoredResults {
                history: History::new(crate::slo::config::SliceRule::DEFAULT, NOW - 600_000),
                recent: Recent {
                    pooled: [
                        ("peers/Pod/b1".to_owned(), pooled(30, 0, None)),
                        ("peers/Pod/c1".to_owned(), pooled(15, 15, Some("a1"))),
                    ]
                    .into(),
                    sources: [
                        ("a1".to_owned(), source(30_000)),
                        ("b1".to_owned(), source(30_000)),
                        ("c1".to_owned(), source(600_000)),
                    ]
                    .into(),
                    ..Recent::default()
                },
            }),
            ..Gathered::default()
        };
        let desired = desired_of(spec.clone(), &gathered);
        let status = status_of(spec, &desired, &Applied::default(), &gathered).status;
        // (endpoint, locality, success ratio, source of the last failure)
        type Summary<'a> = (
            Option<&'a str>,
            Option<Locality>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let summaries: Vec<Summary<'_>> = status
            .targets
            .iter()
            .map(|t| {
                (
                    t.endpoint.as_deref(),
                    t.locality,
                    t.success_ratio.as_deref(),
                    t.last_failure.as_ref().map(|f| f.source.as_str()),
                )
            })
            .collect();
        assert_eq!(
            summaries,
            [
                (Some("c1"), None, Some("0.5"), Some("a1")),
                (Some("b1"), Some(Locality::CrossNode), Some("1"), None),
            ]
        );
        let mesh = status.mesh.expect("mesh coverage");
        assert_eq!(mesh.pairs_covered.as_deref(), Some("0.5"), "{mesh:?}");
        assert_eq!(
            status.agents.map(|a| a.reporting),
            Some(2),
            "c1 reported ten minutes ago"
        );
    }

    #[test]
    fn a_fault_in_progress_is_evaluated_once_per_probe_interval() {
        let cell = |held_bad: u64, silent: bool| Cell {
            source_node: "node-a".into(),
            source_zone: None,
            target: "api".into(),
            protocol: netslo_crds::v1alpha1::Protocol::TCP,
            path: None,
            endpoint: None,
            dest_zone: None,
            dest_node: None,
            resolver: None,
            expect_deny: false,
            good: 10,
            bad: 0,
            held_bad,
            silent,
            reason: None,
            answered: 10,
            slow: 0,
            p99_us: None,
        };
        assert_eq!(revisit(&[cell(0, false)], 10_000), REVISIT);
        assert_eq!(revisit(&[], 1_000), REVISIT);
        assert_eq!(
            revisit(&[cell(0, false), cell(3, false)], 10_000),
            Duration::from_secs(10)
        );
        assert_eq!(revisit(&[cell(0, true)], 1_000), Duration::from_secs(1));
        // Never more often than each second, never less often than the routine pace.
        assert_eq!(revisit(&[cell(1, false)], 500), Duration::from_secs(1));
        assert_eq!(revisit(&[cell(1, false)], 60_000), REVISIT);
    }

    #[test]
    fn pods_without_a_probe_sidecar_are_named() {
        let agent = |name: &str, kind: AgentKind| AgentInfo {
            name: name.into(),
            kind,
            node: None,
            zone: None,
            ip: None,
            pod: None,
        };
        let agents = [
            agent("shop/checkout-1", AgentKind::Sidecar),
            // A mesh agent of the same name is no sidecar.
            agent("shop/checkout-2", AgentKind::Mesh),
        ];
        let pods = ["shop/checkout-1", "shop/checkout-2", "shop/checkout-3"];
        let message = missing_sidecars(pods.into_iter(), &agents).expect("two lack one");
        assert!(
            message.starts_with("pod shop/checkout-2 (and 1 more) runs no netslo probe sidecar"),
            "{message}"
        );
        assert!(
            message.contains("netslo.io/probe-sidecar=true"),
            "{message}"
        );
        assert_eq!(missing_sidecars(pods[..1].iter().copied(), &agents), None);
        assert_eq!(missing_sidecars(std::iter::empty(), &agents), None);
    }
}
