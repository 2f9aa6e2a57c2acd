//! The reconciler: the I/O shell around the pure planning and status logic.
//!
//! Per ConnectivityCheck: Gather (the cluster cache's snapshot, the result store) → Plan (pure:
//! resolve targets, evaluate objectives, build the status) → Apply (agent workloads by
//! server-side apply) → Status (server-side apply of the status subresource, only when a reader
//! would see a difference, paced). A separate planner task turns every check's plan into one
//! assignment per agent for the channel, because assignments change with time (mesh rounds) and
//! with the cluster, not only with checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Client, Resource, ResourceExt};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityCheckSpec, Expectation, ServicePath};
use serde_json::json;
use tokio::sync::Notify;

use crate::assign::{self, AgentInfo, AgentKind, AgentPod, CheckPlan, assignments, sources};
use crate::cache::ClusterCache;
use crate::channel::{AgentBinding, AssignmentSource, MemoryAssignments};
use crate::mesh::{self, MeshPlan};
use crate::metrics::OperatorMetrics;
use crate::resolve::{self, ProblemKind, ResolvedTarget, SeriesId, Via};
use crate::slo::config::SloConfig;
use crate::slo::evaluate::evaluate;
use crate::slo::{UnixMs, now_ms};
use crate::status::conditions::{Setup, Stall, StallReason};
use crate::status::events::{self, EventLimiter};
use crate::status::pacing::{PacingLimits, WriteDecision, WritePacer};
use crate::status::verdict::{Cell, LastFailure, TargetStats};
use crate::status::{StatusInput, desired_status, material_change, urgent_change};
use crate::store::{CheckConfig, ResultStore, SeriesView};
use crate::workloads::{self, AgentSettings, CheckRef, LABEL_CHECK, LABEL_COMPONENT};

/// The failure matrix reads each series' newest bucket if it is at most this old (agents
/// report one bucket per window, 10 s by default); summaries cover the last hour.
const MATRIX_SPAN_MS: i64 = 60_000;
const SUMMARY_SPAN_MS: i64 = 60 * 60_000;
/// Re-evaluate at least this often: windows move while nothing else does.
const REQUEUE: Duration = Duration::from_secs(15);
/// How often the planner recomputes assignments when nothing triggers it (mesh rounds).
const PLAN_TICK: Duration = Duration::from_secs(5);
/// How long a check whose results changed waits before it is reconciled: the other agents'
/// buckets of the same window arrive within their flush interval (1 s).
const CHANGE_SETTLE: Duration = Duration::from_millis(1_500);
/// How often state kept for checks that no longer exist is swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The channel serves assignments once every existing check has been planned, or after this
/// long if some check cannot be (its reconcile keeps failing): agents must not wait forever.
const FIRST_PLAN_DEADLINE: Duration = Duration::from_secs(60);

/// What the reconciler needs to know about its deployment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The operator's namespace (mesh agents, external agents' service accounts).
    pub namespace: String,
    pub cluster_domain: String,
    pub agent: AgentSettings,
    /// Name under which the operator publishes Events (its pod name).
    pub instance: String,
    /// Whether the operator runs the mesh agent DaemonSet itself.
    pub manage_mesh_agents: bool,
    /// The cluster CA (PEM), which API server probes verify the server against.
    pub cluster_ca_pem: Option<String>,
    /// The agent channel's CA (PEM): published in every namespace where agents the operator
    /// does not run itself (workload probe pods, probe sidecars) must verify the channel.
    pub channel_ca_pem: String,
}

/// Why a reconcile failed; retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("check has no namespace")]
    NoNamespace,
    #[error("cannot apply the probe Deployment {name}: {source}")]
    ApplyWorkload { name: String, source: kube::Error },
    #[error("cannot apply the mesh agent DaemonSet: {0}")]
    ApplyMeshAgents(#[source] kube::Error),
    #[error("cannot write status: {0}")]
    WriteStatus(#[source] kube::Error),
    #[error("cannot publish the channel CA in namespace {namespace}: {source}")]
    PublishCa {
        namespace: String,
        source: crate::channel::ChannelError,
    },
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoNamespace => "NoNamespace",
            Self::ApplyWorkload { .. } => "ApplyWorkloadFailed",
            Self::ApplyMeshAgents(_) => "ApplyMeshAgentsFailed",
            Self::WriteStatus(_) => "StatusWriteFailed",
            Self::PublishCa { .. } => "PublishCaFailed",
        }
    }
}

/// A check as the planner needs it.
#[derive(Debug, Clone)]
struct PlannedCheck {
    namespace: String,
    name: String,
    spec: ConnectivityCheckSpec,
    targets: Vec<ResolvedTarget>,
    address_policy: netslo_protocol::spec::AddressPolicySpec,
}

#[derive(Debug)]
struct State {
    plans: BTreeMap<String, PlannedCheck>,
    pacer: WritePacer,
    events: EventLimiter,
    /// The last status written (or read) per check, to compare against.
    written: HashMap<String, netslo_crds::v1alpha1::ConnectivityCheckStatus>,
    /// Namespaces this process has published the channel CA in.
    ca_published: BTreeSet<String>,
}

/// Shared by reconciles and the planner.
pub struct Context {
    client: Client,
    settings: Settings,
    cache: ClusterCache,
    assignments: Arc<MemoryAssignments>,
    results: Arc<ResultStore>,
    recorder: Recorder,
    state: Mutex<State>,
    replan: Notify,
    /// The controller's cache of checks, once it has listed them all.
    checks: OnceLock<Store<ConnectivityCheck>>,
    started: Instant,
    /// The mesh DaemonSet was applied by this process (once per process: its content
    /// depends only on the operator's settings).
    mesh_applied: std::sync::atomic::AtomicBool,
    metrics: OperatorMetrics,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        cache: ClusterCache,
        assignments: Arc<MemoryAssignments>,
        results: Arc<ResultStore>,
        metrics: OperatorMetrics,
    ) -> Self {
        let reporter = Reporter {
            controller: "netslo-operator".into(),
            instance: Some(settings.instance.clone()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            cache,
            assignments,
            results,
            state: Mutex::new(State {
                plans: BTreeMap::new(),
                pacer: WritePacer::new(PacingLimits::default()),
                events: EventLimiter::default(),
                written: HashMap::new(),
                ca_published: BTreeSet::new(),
            }),
            replan: Notify::new(),
            checks: OnceLock::new(),
            started: Instant::now(),
            mesh_applied: std::sync::atomic::AtomicBool::new(false),
            metrics,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Runs the check controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let checks: Api<ConnectivityCheck> = Api::all(ctx.client.clone());
    let deployments: Api<Deployment> = Api::all(ctx.client.clone());
    let controller = Controller::new(checks, watcher::Config::default().any_semantic());
    let sweeper = tokio::spawn(sweep_deleted(ctx.clone(), controller.store()));
    // A series that starts or stops failing reconciles its check at once: the verdict and
    // the conditions follow within an agent window, not a requeue period.
    let (changed_tx, changed_rx) = tokio::sync::mpsc::channel::<String>(1024);
    ctx.results.notify_changes(changed_tx);
    let changed = futures::stream::unfold(changed_rx, |mut rx| async move {
        let key = rx.recv().await?;
        Some((key, rx))
    })
    // Held one agent flush long first: agents close their windows together, and the
    // reconcile should see every source's newest bucket, not the first one to arrive.
    .map(|key| async move {
        tokio::time::sleep(CHANGE_SETTLE).await;
        key
    })
    .buffer_unordered(1024)
    .filter_map(|key| async move {
        let (namespace, name) = key.split_once('/')?;
        Some(kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    });
    controller
        .owns(deployments, watcher::Config::default().labels(LABEL_CHECK))
        .reconcile_on(changed)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!("reconcile: {err}");
            }
        })
        .await;
    sweeper.abort();
}

/// Forgets checks that no longer exist: the controller only reconciles objects it still
/// sees, and a check deleted without a finalizer (or while the operator was away) is simply
/// gone. Its plan, pacing state and result window go, and its stored window is deleted.
async fn sweep_deleted(ctx: Arc<Context>, store: Store<ConnectivityCheck>) {
    // The store's readiness wakes only one waiter (a oneshot underneath), and the
    // controller's own runner waits on it too: poll it again and again instead.
    loop {
        match tokio::time::timeout(Duration::from_secs(1), store.wait_until_ready()).await {
            Ok(Ok(())) => break,
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
    let _ = ctx.checks.set(store.clone());
    tracing::debug!(checks = store.len(), "checks listed");
    ctx.replan.notify_one();
    loop {
        let existing: BTreeSet<String> = store
            .state()
            .iter()
            .filter_map(|c| Some(format!("{}/{}", c.namespace()?, c.name_any())))
            .collect();
        let mut gone: BTreeSet<String> = ctx.state().plans.keys().cloned().collect();
        gone.extend(ctx.results.checks());
        gone.retain(|key| !existing.contains(key));
        for key in &gone {
            tracing::info!(check = key, "check deleted: forgetting it");
            forget(&ctx, key);
        }
        if !gone.is_empty() {
            ctx.replan.notify_one();
        }
        let uids: BTreeSet<String> = store.state().iter().filter_map(|c| c.uid()).collect();
        sweep_orphaned_workloads(&ctx.client, &uids).await;
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// Deletes probe Deployments in other namespaces than their check (which owner references
/// cannot reach, so garbage collection does not) whose check is gone: they carry its UID.
async fn sweep_orphaned_workloads(client: &Client, existing_uids: &BTreeSet<String>) {
    let all: Api<Deployment> = Api::all(client.clone());
    let params = kube::api::ListParams::default().labels(workloads::LABEL_OWNER_UID);
    let list = match all.list_metadata(&params).await {
        Ok(list) => list,
        Err(err) => {
            tracing::debug!("cannot list probe Deployments to sweep: {err}");
            return;
        }
    };
    for (namespace, name) in orphaned(list.items.iter().map(|d| &d.metadata), existing_uids) {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        match api.delete(&name, &Default::default()).await {
            Ok(_) => tracing::info!(
                namespace,
                name,
                "deleted the probe Deployment of a deleted check"
            ),
            Err(err) => tracing::warn!(
                namespace,
                name,
                "cannot delete an orphaned probe Deployment: {err}"
            ),
        }
    }
}

/// `(namespace, name)` of objects whose owner-UID label names no existing check.
fn orphaned<'a>(
    objects: impl Iterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    existing_uids: &BTreeSet<String>,
) -> Vec<(String, String)> {
    objects
        .filter(|m| m.deletion_timestamp.is_none())
        .filter(|m| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(workloads::LABEL_OWNER_UID))
                .is_some_and(|uid| !existing_uids.contains(uid))
        })
        .filter_map(|m| Some((m.namespace.clone()?, m.name.clone()?)))
        .collect()
}

/// Whether every existing check has a plan (or the deadline for that passed): until then an
/// agent that reports after an operator restart would be refused for checks not planned yet.
fn first_plan_complete(ctx: &Context, plans: &BTreeMap<String, PlannedCheck>) -> bool {
    if ctx.started.elapsed() >= FIRST_PLAN_DEADLINE {
        return true;
    }
    let Some(store) = ctx.checks.get() else {
        return false;
    };
    store.state().iter().all(|c| {
        c.namespace()
            .is_some_and(|ns| plans.contains_key(&format!("{ns}/{}", c.name_any())))
    })
}

fn error_policy(_check: Arc<ConnectivityCheck>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(reason = err.reason(), "reconcile failed: {err}");
    Action::requeue(Duration::from_secs(10))
}

/// One reconcile, counted in the metrics and, when traces are exported, a span.
async fn reconcile(check: Arc<ConnectivityCheck>, ctx: Arc<Context>) -> Result<Action, Error> {
    use opentelemetry::trace::{Span as _, Status, Tracer as _};
    let tracer = opentelemetry::global::tracer("netslo-operator");
    let mut span = tracer
        .span_builder("reconcile")
        .with_attributes([
            opentelemetry::KeyValue::new(
                netslo_telemetry::attribute::CHECK_NAMESPACE,
                check.namespace().unwrap_or_default(),
            ),
            opentelemetry::KeyValue::new(netslo_telemetry::attribute::CHECK_NAME, check.name_any()),
        ])
        .start(&tracer);
    let result = reconcile_check(check, ctx.clone()).await;
    let error = result.as_ref().err().map(Error::reason);
    ctx.metrics.reconciled(error);
    if let Some(reason) = error {
        span.set_status(Status::error(reason));
    }
    span.end();
    result
}

async fn reconcile_check(
    check: Arc<ConnectivityCheck>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let namespace = check.namespace().ok_or(Error::NoNamespace)?;
    let name = check.name_any();
    let key = format!("{namespace}/{name}");
    let now = now_ms();

    if check.meta().deletion_timestamp.is_some() {
        forget(&ctx, &key);
        return Ok(Action::await_change());
    }

    // Plan (pure): objectives, targets, and what stalls the check.
    let mut stalled: Option<Stall> = None;
    let slo = match SloConfig::from_spec(check.spec.objectives.as_ref()) {
        Ok(slo) => Some(slo),
        Err(err) => {
            stalled = Some(Stall {
                reason: StallReason::InvalidSpec,
                message: err.to_string(),
            });
            None
        }
    };
    let snapshot = ctx.cache.snapshot();
    let cluster = snapshot.view(
        &ctx.settings.cluster_domain,
        ctx.settings.cluster_ca_pem.as_deref(),
    );
    let resolution = resolve::resolve(&namespace, &check.spec.targets, &cluster);
    if stalled.is_none()
        && let Some(problem) = resolution.problems.iter().find(|p| p.kind.stalls())
    {
        let reason = match problem.kind {
            ProblemKind::NotFound => StallReason::TargetNotFound,
            // Cluster objects a tenant could have pointed anywhere: a tenancy refusal.
            ProblemKind::Untrusted => StallReason::TargetNotPermitted,
            _ => StallReason::InvalidSpec,
        };
        stalled = Some(Stall {
            reason,
            message: problem.to_string(),
        });
    }

    // Targets the probe engine would refuse are never assigned: an agent refuses a whole
    // assignment it cannot compile, which would stop every other check on it.
    let mut resolution = resolution;
    let mut unprobeable = Vec::new();
    resolution
        .targets
        .retain(|t| match assign::unprobeable(&namespace, &name, t) {
            Some(why) => {
                let index = check.spec.targets.iter().position(|s| s.name == t.name);
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
        && stalled
            .as_ref()
            .is_none_or(|s| s.reason != StallReason::InvalidSpec)
    {
        stalled = Some(Stall {
            reason: StallReason::InvalidSpec,
            message: first.clone(),
        });
    }

    // Tenancy: targets the admins' policies do not grant are never probed.
    let grants =
        crate::policy::Grants::for_namespace(&namespace, &snapshot.policies, &snapshot.namespaces);
    let mut denials = grants.denials(&check.spec);
    denials.extend(grants.resolved_denials(&resolution.targets));
    if let Some(store) = ctx.checks.get() {
        let in_namespace: Vec<(Option<i64>, String)> = store
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(namespace.as_str()))
            .map(|c| {
                let created = c
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond());
                (created, c.name_any())
            })
            .collect();
        denials.extend(grants.check_count_denial(&name, &in_namespace));
    }
    if !denials.is_empty() {
        let check_denied = denials.iter().any(|d| d.target.is_none());
        resolution.targets.retain(|t| {
            !check_denied
                && !denials
                    .iter()
                    .any(|d| d.target.as_deref() == Some(t.name.as_str()))
        });
        let more = match denials.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        // A spec that cannot be read at all says so first; a missing grant outranks a
        // missing object.
        if stalled
            .as_ref()
            .is_none_or(|s| s.reason != StallReason::InvalidSpec)
        {
            stalled = Some(Stall {
                reason: StallReason::TargetNotPermitted,
                message: format!("{}{more}", denials[0]),
            });
        }
    }

    // Results for this check are counted as its spec says.
    if let Some(slo) = &slo {
        let config = CheckConfig {
            latency_threshold_us: slo.latency.as_ref().map(|l| l.threshold_us),
            deny_targets: check
                .spec
                .targets
                .iter()
                .filter(|t| t.expect == Some(Expectation::Deny))
                .map(|t| t.name.clone())
                .collect(),
            slice: slo.slice,
        };
        ctx.results
            .configure(&key, &check.uid().unwrap_or_default(), config, now);
    }

    // Apply: the mesh agents, shared by every check that probes from or to them.
    // A check of localhost targets only is probed by the sidecars in its target pods: its
    // source starts no agents.
    let localhost_only = assign::localhost_only(&check.spec);
    let needs_mesh = !localhost_only
        && (check.spec.source.mesh.is_some()
            || check.spec.targets.iter().any(|t| t.mesh.is_some()));
    if needs_mesh && ctx.settings.manage_mesh_agents {
        ensure_mesh_agents(&ctx).await?;
    }
    // Probe sidecars verify the channel with the CA in their own namespace.
    if check.spec.targets.iter().any(|t| t.localhost.is_some()) {
        ensure_channel_ca(&ctx, &namespace).await?;
    }

    // Apply: the workload-identity probe Deployment, if the check has such a source.
    let mut rolling_out = false;
    if let Some(workload) = check
        .spec
        .source
        .workload
        .as_ref()
        .filter(|_| !localhost_only)
    {
        let source_ns = workload
            .namespace
            .clone()
            .unwrap_or_else(|| namespace.clone());
        // A check the policies refuse as a whole (its source namespace, its limits) runs no
        // probe pods; the stall above says why.
        let refused = denials.iter().any(|d| d.target.is_none());
        if !refused {
            ensure_channel_ca(&ctx, &source_ns).await?;
            let check_ref = CheckRef {
                namespace: namespace.clone(),
                name: name.clone(),
                uid: check.uid().unwrap_or_default(),
            };
            let deployment = workloads::workload_deployment(
                &ctx.settings.agent,
                &check_ref,
                &source_ns,
                &workload.pod_labels,
                &workload.service_account_name,
                workload.replicas.unwrap_or(2),
                workload.node_selector.as_ref(),
            );
            match apply_deployment(&ctx.client, deployment).await {
                Ok(pending) => rolling_out = pending,
                // Running probe pods as a workload's identity is granted per namespace.
                Err(Error::ApplyWorkload {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 403 => {
                    stalled.get_or_insert(Stall {
                        reason: StallReason::TargetNotPermitted,
                        message: format!(
                            "the operator may not run probe pods in namespace {source_ns}: bind the ClusterRole netslo-workload-agents to it there"
                        ),
                    });
                }
                Err(err) => return Err(err),
            }
        }
    }

    // Hand the plan to the planner, which assigns agents.
    let plan = PlannedCheck {
        namespace: namespace.clone(),
        name: name.clone(),
        spec: check.spec.clone(),
        targets: resolution.targets,
        address_policy: grants.address_policy(),
    };
    let agents = agent_infos(&ctx, &ctx.state().plans, &snapshot);
    let plan_view = CheckPlan {
        namespace: &plan.namespace,
        name: &plan.name,
        spec: &plan.spec,
        targets: &plan.targets,
        address_policy: &plan.address_policy,
    };
    // The agents this check probes from: what `agents.desired` counts and what its mesh
    // coverage is measured over, the same set the planner assigns.
    let source_agents = sources(&plan_view, &agents, &snapshot.nodes);
    let desired = source_agents.len();
    let mesh_agents: Vec<&AgentInfo> = source_agents
        .iter()
        .copied()
        .filter(|a| a.kind != AgentKind::Sidecar)
        .collect();
    if stalled.is_none()
        && let Some(message) = missing_sidecars(
            plan.targets
                .iter()
                .flat_map(|t| &t.endpoints)
                .filter_map(|e| e.inside_pod.as_deref()),
            &agents,
        )
    {
        stalled = Some(Stall {
            reason: StallReason::SidecarMissing,
            message,
        });
    }
    ctx.state().plans.insert(key.clone(), plan.clone());
    ctx.replan.notify_one();

    // Status: evaluate what arrived, localise failures, write if a reader would see a change.
    let no_data_after = slo.as_ref().map_or(300_000, |s| s.no_data_after_ms);
    let (evaluation, cells, target_stats, reporting, mesh, refused, agents_due) = ctx
        .results
        .read(
            &key,
            now,
            SUMMARY_SPAN_MS,
            MATRIX_SPAN_MS,
            |history, series| {
                let evaluation = slo.as_ref().map(|s| evaluate(s, history, now));
                let reporting: BTreeSet<String> = series
                    .iter()
                    .filter(|(_, s)| s.last_slot_ms + crate::store::SLOT_MS >= now - no_data_after)
                    .map(|((source, _), _)| source.clone())
                    .collect();
                let cells = failure_matrix(&plan, &agents, series);
                let stats = target_stats(&plan, series);
                let mesh = mesh_coverage(&plan, &mesh_agents, series, now);
                let agents_due = history
                    .first_result_ms()
                    .is_some_and(|first| now - first >= no_data_after);
                (
                    evaluation,
                    cells,
                    stats,
                    reporting,
                    mesh,
                    refused_targets(series),
                    agents_due,
                )
            },
        )
        .unwrap_or_else(|| {
            let mesh = mesh_coverage(&plan, &mesh_agents, &BTreeMap::new(), now);
            (
                None,
                Vec::new(),
                Vec::new(),
                BTreeSet::new(),
                mesh,
                Vec::new(),
                false,
            )
        });
    ctx.results.set_objective_figures(
        &key,
        evaluation
            .as_ref()
            .map(crate::store::ObjectiveFigures::of)
            .unwrap_or_default(),
    );
    // Agents refused to send probes the plan allowed: a granted name resolved to an address
    // the namespace is not granted (loopback, link-local or metadata, the node itself, a pod
    // or ClusterIP the operator did not resolve for the check), or a redirect led there. The check cannot run as written: say so like any missing grant.
    if stalled.is_none()
        && let Some(first) = refused.first()
    {
        stalled = Some(Stall {
            reason: StallReason::TargetNotPermitted,
            message: format!(
                "target {first}: the agents refused its destination, which resolves or redirects to an address no ConnectivityPolicy grants to namespace {namespace} (loopback, link-local/metadata, a node's own, another pod or Service of the cluster, or outside every external grant){}",
                match refused.len() {
                    1 => String::new(),
                    n => format!(" (and {} more targets)", n - 1),
                }
            ),
        });
    }
    let setup = Setup {
        generation: check.metadata.generation,
        suspended: check.spec.suspend == Some(true),
        stalled,
        agents: netslo_crds::v1alpha1::AgentCounts {
            desired: i32::try_from(desired).unwrap_or(i32::MAX),
            reporting: i32::try_from(reporting.len()).unwrap_or(i32::MAX),
        },
        agents_rolling_out: rolling_out,
        agents_due,
    };
    let input = StatusInput {
        setup: &setup,
        evaluation: evaluation.as_ref(),
        cells: &cells,
        targets: &target_stats,
        mesh,
    };
    let previous = ctx
        .state()
        .written
        .get(&key)
        .cloned()
        .or_else(|| check.status.clone());
    let status = desired_status(&input, previous.as_ref(), now);
    if !material_change(previous.as_ref(), &status) {
        return Ok(Action::requeue(REQUEUE));
    }
    let urgent = urgent_change(previous.as_ref(), &status);
    let decision = if urgent {
        ctx.state().pacer.request_transition(&key, now)
    } else {
        ctx.state().pacer.request(&key, now)
    };
    if let WriteDecision::NotBefore(at) = decision {
        let wait = u64::try_from((at - now).max(1_000)).unwrap_or(1_000);
        return Ok(Action::requeue(Duration::from_millis(wait)));
    }
    let api: Api<ConnectivityCheck> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch =
        json!({"apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck", "status": status});
    api.patch_status(
        &name,
        &PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    ctx.metrics.status_written();
    tracing::debug!(check = key, urgent, "status written");
    publish_events(&ctx, &check, &key, previous.as_ref(), &status, now).await;
    ctx.state().written.insert(key, status);
    Ok(Action::requeue(REQUEUE))
}

fn forget(ctx: &Context, key: &str) {
    let mut state = ctx.state();
    state.plans.remove(key);
    state.written.remove(key);
    state.pacer.forget(key);
    drop(state);
    ctx.results.remove(key);
    ctx.replan.notify_one();
}

/// Publishes the channel CA in `namespace` once per operator process (its content is this
/// process's CA); a failure is retried by the reconcile's backoff.
async fn ensure_channel_ca(ctx: &Context, namespace: &str) -> Result<(), Error> {
    if ctx.state().ca_published.contains(namespace) {
        return Ok(());
    }
    crate::channel::publish_ca(
        ctx.client.clone(),
        namespace,
        workloads::OPERATOR_CA_CONFIGMAP,
        &ctx.settings.channel_ca_pem,
    )
    .await
    .map_err(|source| Error::PublishCa {
        namespace: namespace.to_owned(),
        source,
    })?;
    tracing::info!(namespace, "channel CA published");
    ctx.state().ca_published.insert(namespace.to_owned());
    Ok(())
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
    let more = match missing.len() {
        1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    Some(format!(
        "pod {first}{more} runs no netslo probe sidecar: localhost targets are probed from inside the pod, by a sidecar in pods labelled {}=true",
        workloads::LABEL_PROBE_SIDECAR
    ))
}

/// Applies the mesh agent DaemonSet once per operator process.
async fn ensure_mesh_agents(ctx: &Context) -> Result<(), Error> {
    use std::sync::atomic::Ordering;
    if ctx.mesh_applied.load(Ordering::Acquire) {
        return Ok(());
    }
    let daemonset = workloads::mesh_daemonset(&ctx.settings.agent);
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ctx.settings.namespace);
    let mut body = serde_json::to_value(&daemonset).unwrap_or_default();
    body["apiVersion"] = json!("apps/v1");
    body["kind"] = json!("DaemonSet");
    api.patch(
        workloads::MESH_DAEMONSET,
        &PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await
    .map_err(Error::ApplyMeshAgents)?;
    tracing::info!(
        namespace = ctx.settings.namespace,
        "mesh agent DaemonSet applied"
    );
    ctx.mesh_applied.store(true, Ordering::Release);
    Ok(())
}

/// Applies a probe Deployment; returns whether it is still rolling out.
async fn apply_deployment(client: &Client, deployment: Deployment) -> Result<bool, Error> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let mut body = serde_json::to_value(&deployment).unwrap_or_default();
    body["apiVersion"] = json!("apps/v1");
    body["kind"] = json!("Deployment");
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .await
        .map_err(|source| Error::ApplyWorkload {
            name: format!("{namespace}/{name}"),
            source,
        })?;
    let wanted = applied.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = applied
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    Ok(ready < wanted)
}

async fn publish_events(
    ctx: &Context,
    check: &ConnectivityCheck,
    key: &str,
    previous: Option<&netslo_crds::v1alpha1::ConnectivityCheckStatus>,
    status: &netslo_crds::v1alpha1::ConnectivityCheckStatus,
    now: UnixMs,
) {
    let reference = check.object_ref(&());
    for transition in events::transition_events(previous, status) {
        if !ctx.state().events.admit(key, transition.reason, now) {
            continue;
        }
        let event = Event {
            type_: match transition.type_ {
                events::EventType::Normal => EventType::Normal,
                events::EventType::Warning => EventType::Warning,
            },
            reason: transition.reason.as_str().into(),
            note: Some(transition.note),
            action: "Evaluate".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(
                check = key,
                "cannot publish Event {}: {err}",
                transition.reason.as_str()
            );
        }
    }
}

/// The agents the operator knows: mesh agents (their pods), workload agents (the probe
/// Deployments' pods) and external agents named by checks.
fn agent_infos(
    ctx: &Context,
    plans: &BTreeMap<String, PlannedCheck>,
    snapshot: &crate::cache::OwnedSnapshot,
) -> Vec<AgentInfo> {
    let mut agents = Vec::new();
    for pod in &snapshot.pods {
        let labels = pod.metadata.labels.as_ref();
        let component = labels
            .and_then(|l| l.get(LABEL_COMPONENT))
            .map(String::as_str);
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let zone = node
            .as_deref()
            .and_then(|n| resolve::zone_of(&snapshot.nodes, n));
        let agent_pod = || AgentPod {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        };
        match component {
            Some("mesh-agent")
                if pod.metadata.namespace.as_deref() == Some(ctx.settings.namespace.as_str())
                    && ip.is_some() =>
            {
                if let Some(node) = node {
                    agents.push(AgentInfo {
                        name: node.clone(),
                        kind: AgentKind::Mesh,
                        node: Some(node),
                        zone,
                        ip,
                        pod: None,
                    });
                }
            }
            _ if labels
                .and_then(|l| l.get(workloads::LABEL_PROBE_SIDECAR))
                .is_some_and(|v| v == "true")
                && ip.is_some() =>
            {
                let pod = agent_pod();
                agents.push(AgentInfo {
                    name: format!("{}/{}", pod.namespace, pod.name),
                    kind: AgentKind::Sidecar,
                    node,
                    zone,
                    ip,
                    pod: Some(pod),
                });
            }
            Some("workload-agent") => {
                let check = labels
                    .and_then(|l| l.get(LABEL_CHECK))
                    .cloned()
                    .unwrap_or_default()
                    .replacen('.', "/", 1);
                agents.push(AgentInfo {
                    name: pod.name_any(),
                    kind: AgentKind::Workload { check },
                    node,
                    zone,
                    ip,
                    pod: Some(agent_pod()),
                });
            }
            _ => {}
        }
    }
    let external: BTreeSet<&String> = plans
        .values()
        .filter_map(|p| p.spec.source.external.as_ref())
        .flat_map(|e| e.agents.iter())
        .collect();
    for name in external {
        agents.push(AgentInfo {
            name: name.clone(),
            kind: AgentKind::External,
            node: None,
            zone: None,
            ip: None,
            pod: None,
        });
    }
    agents
}

/// Whose tokens may act as `agent`; `None` for an in-cluster agent whose pod is unknown,
/// which then gets no assignment.
fn binding(ctx: &Context, agent: &AgentInfo) -> Option<AgentBinding> {
    let pod_account = || {
        let pod = agent.pod.as_ref()?;
        Some((
            pod,
            AgentBinding::service_account(&pod.namespace, &pod.service_account),
        ))
    };
    Some(match &agent.kind {
        // One mesh agent per node, bound to it: one node's agent cannot report as another.
        AgentKind::Mesh => AgentBinding::service_account(
            &ctx.settings.namespace,
            &ctx.settings.agent.mesh_service_account,
        )
        .on_node(agent.node.as_deref().unwrap_or_default()),
        AgentKind::Workload { .. } => pod_account()?.1,
        // An external agent authenticates as the service account of its name in the
        // operator's namespace: only those who may mint its tokens can run it.
        AgentKind::External => AgentBinding::service_account(&ctx.settings.namespace, &agent.name),
        // A sidecar speaks for its own pod only: the pod's service account, with a token the
        // API server bound to that very pod.
        AgentKind::Sidecar => {
            let (pod, binding) = pod_account()?;
            binding.in_pod(&pod.name)
        }
    })
}

/// Runs the planner: recomputes every agent's assignment on change and every tick.
pub async fn run_planner(ctx: Arc<Context>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        plan_once(&ctx);
        tokio::select! {
            _ = ctx.replan.notified() => {}
            _ = ctx.cache.changed.notified() => {}
            _ = tokio::time::sleep(PLAN_TICK) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn plan_once(ctx: &Context) {
    let now = now_ms();
    let snapshot = ctx.cache.snapshot();
    let plans = ctx.state().plans.clone();
    let agents = agent_infos(ctx, &plans, &snapshot);
    let views: Vec<CheckPlan<'_>> = plans
        .values()
        .map(|p| CheckPlan {
            namespace: &p.namespace,
            name: &p.name,
            spec: &p.spec,
            targets: &p.targets,
            address_policy: &p.address_policy,
        })
        .collect();
    // One mesh plan per (check, target) and pass: its agents are the check's sources, the
    // same for every agent, and sorting them per agent would cost O(N² log N) at N nodes.
    let mut mesh_plans: HashMap<(String, String), MeshPlan> = HashMap::new();
    let cluster_cidrs = crate::cluster_space::cluster_space(
        &snapshot.service_cidrs,
        &snapshot.nodes,
        &snapshot.pods,
        &snapshot.services,
    );
    let per_agent = assignments(
        &views,
        &agents,
        &snapshot.nodes,
        &cluster_cidrs,
        |plan, target, agent, peers| {
            let mesh_plan = mesh_plans
                .entry((plan.key(), target.name.clone()))
                .or_insert_with(|| mesh_plan_for(plan.spec, &target.name, peers.iter().copied()));
            mesh_peers(mesh_plan, plan.spec, agent, peers, now)
        },
    );
    for agent in &agents {
        let (Some(assignment), Some(binding)) = (per_agent.get(&agent.name), binding(ctx, agent))
        else {
            continue;
        };
        if let Err(err) = ctx
            .assignments
            .set(&agent.name, binding, assignment.clone())
        {
            tracing::warn!(agent = agent.name, "assignment rejected: {err}");
        }
    }
    let names: BTreeSet<String> = agents.iter().map(|a| a.name.clone()).collect();
    ctx.assignments.retain(|name| names.contains(name));
    if !ctx.assignments.ready() && first_plan_complete(ctx, &plans) {
        tracing::info!(
            checks = plans.len(),
            "every check planned: serving assignments"
        );
        ctx.assignments.mark_ready();
    }
}

/// The rotating peer plan of a mesh target over `agents`.
fn mesh_plan_for<'a>(
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

/// The peers `agent` probes this round.
fn mesh_peers<'a>(
    mesh_plan: &MeshPlan,
    spec: &ConnectivityCheckSpec,
    agent: &AgentInfo,
    peers: &[&'a AgentInfo],
    now: UnixMs,
) -> Vec<&'a AgentInfo> {
    let interval_ms = i64::try_from(assign::interval_ms(spec)).unwrap_or(i64::MAX);
    let round = mesh::round_at(now, interval_ms);
    let Some(i) = mesh_plan.agents().iter().position(|a| a.name == agent.name) else {
        return Vec::new();
    };
    mesh_plan
        .peers(i, round)
        .filter_map(|peer| peers.iter().find(|a| a.name == peer.agent.name).copied())
        .collect()
}

/// Targets (by name) whose probes the agents refused within the summary span.
fn refused_targets(views: &BTreeMap<(String, String), SeriesView>) -> Vec<String> {
    let names: BTreeSet<String> = views
        .iter()
        .filter(|(_, v)| v.summary.refused > 0)
        .filter_map(|((_, label), _)| SeriesId::parse(label).map(|s| s.target))
        .collect();
    names.into_iter().collect()
}

/// Mesh coverage over the check's own source agents: the rotation, and the fraction of
/// ordered pairs with results within the last rotation period (at the store's one-minute
/// resolution).
fn mesh_coverage(
    plan: &PlannedCheck,
    source_agents: &[&AgentInfo],
    views: &BTreeMap<(String, String), SeriesView>,
    now: UnixMs,
) -> Option<netslo_crds::v1alpha1::MeshCoverage> {
    let target = plan.spec.targets.iter().find(|t| t.mesh.is_some())?;
    let mesh_plan = mesh_plan_for(&plan.spec, &target.name, source_agents.iter().copied());
    let interval = Duration::from_millis(assign::interval_ms(&plan.spec));
    let period_ms =
        i64::try_from(mesh_plan.rotation_period(interval).as_millis()).unwrap_or(i64::MAX);
    let since = now.saturating_sub(period_ms);
    let members: BTreeSet<&str> = mesh_plan.agents().iter().map(|a| a.name.as_str()).collect();
    let probed = views
        .iter()
        .filter(|((source, label), view)| {
            view.last_slot_ms.saturating_add(crate::store::SLOT_MS) > since
                && members.contains(source.as_str())
                && SeriesId::parse(label).is_some_and(|s| {
                    s.target == target.name && members.contains(s.endpoint.as_str())
                })
        })
        .count() as u64;
    Some(mesh_plan.coverage(interval, Some(probed)))
}

/// The current failure matrix: one cell per (source, series), from its newest bucket.
fn failure_matrix(
    plan: &PlannedCheck,
    agents: &[AgentInfo],
    views: &BTreeMap<(String, String), SeriesView>,
) -> Vec<Cell> {
    views
        .iter()
        .filter_map(|((source, label), view)| {
            let series = SeriesId::parse(label)?;
            let target = plan.targets.iter().find(|t| t.name == series.target)?;
            let recent = &view.matrix;
            if recent.good + recent.bad == 0 {
                return None;
            }
            let source_agent = agents.iter().find(|a| &a.name == source);
            let endpoint_zone = target
                .endpoints
                .iter()
                .find(|e| e.series == series)
                .and_then(|e| e.zone.clone())
                .or_else(|| {
                    agents
                        .iter()
                        .find(|a| a.name == series.endpoint)
                        .and_then(|a| a.zone.clone())
                });
            Some(Cell {
                source_node: source_agent
                    .and_then(|a| a.node.clone())
                    .unwrap_or_else(|| source.clone()),
                source_zone: source_agent.and_then(|a| a.zone.clone()),
                target: series.target.clone(),
                protocol: target.protocol,
                path: series.via.service_path(),
                endpoint: endpoint_label(&series),
                dest_zone: endpoint_zone,
                expect_deny: target.expect == netslo_protocol::spec::Expect::Deny,
                good: recent.good,
                bad: recent.bad,
                reason: recent.dominant_reason(),
            })
        })
        .collect()
}

fn endpoint_label(series: &SeriesId) -> Option<String> {
    match series.via {
        Via::ClusterIP | Via::DNSName | Via::Dns | Via::ApiServer => None,
        _ => Some(series.endpoint.clone()),
    }
}

/// Per-target statistics of the last hour, one per (target, path, endpoint), all sources
/// together.
fn target_stats(
    plan: &PlannedCheck,
    views: &BTreeMap<(String, String), SeriesView>,
) -> Vec<TargetStats> {
    let mut by_series: BTreeMap<SeriesId, TargetStats> = BTreeMap::new();
    for ((source, label), view) in views {
        let stats = &view.summary;
        let Some(series) = SeriesId::parse(label) else {
            continue;
        };
        let Some(target) = plan.targets.iter().find(|t| t.name == series.target) else {
            continue;
        };
        let via: Option<ServicePath> = series.via.service_path();
        let entry = by_series
            .entry(series.clone())
            .or_insert_with(|| TargetStats {
                name: series.target.clone(),
                via,
                endpoint: endpoint_label(&series),
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
            entry.last_failure = Some(LastFailure {
                reason,
                protocol: target.protocol,
                source: source.clone(),
                at_ms: at,
            });
        }
    }
    by_series.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn only_workloads_of_missing_checks_are_orphans() {
        let meta = |name: &str, uid: Option<&str>, deleting: bool| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("payments".into()),
            labels: uid
                .map(|u| BTreeMap::from([(workloads::LABEL_OWNER_UID.to_string(), u.to_string())])),
            deletion_timestamp: deleting.then_some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            ),
            ..ObjectMeta::default()
        };
        let objects = [
            meta("live", Some("uid-live"), false),
            meta("orphan", Some("uid-gone"), false),
            meta("going", Some("uid-gone"), true),
            meta("unlabelled", None, false),
        ];
        let existing = BTreeSet::from(["uid-live".to_string()]);
        assert_eq!(
            orphaned(objects.iter(), &existing),
            vec![("payments".to_string(), "orphan".to_string())]
        );
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
