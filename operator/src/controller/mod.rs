//! The check controller's wiring: the [`Context`] that reconciles and the planner share,
//! [`run_controller`] (the controller, fed by check, Deployment and result changes), the
//! planner ([`run_planner`]), which turns every check's plan into one assignment per agent for
//! the channel because assignments change with time (mesh rounds) and with the cluster, not
//! only with checks, and the sweeps that forget deleted checks.
//!
//! Per check, [`reconcile`] is the I/O shell (gather → plan → apply → status) around the pure
//! [`plan`].

mod matrices;
mod plan;
mod probes;

pub use matrices::run_matrices;
pub use probes::run_probes;
mod reconcile;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Client, ResourceExt};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityCheckSpec, ConnectivityCheckStatus};
use tokio::sync::Notify;

use crate::assign::{self, AgentInfo, AgentKind, AgentPod, CheckPlan, assignments};
use crate::cache::{ClusterCache, OwnedSnapshot};
use crate::channel::{AgentBinding, AssignmentSource, LivePods, MemoryAssignments, OneShotInbox};
use crate::check_key::CheckKey;
use crate::mesh::{self, MeshPlan};
use crate::metrics::OperatorMetrics;
use crate::resolve;
use crate::slo::{UnixMs, now_ms};
use crate::status::events::EventLimiter;
use crate::status::pacing::{PacingLimits, WritePacer};
use crate::store::ResultStore;
use crate::workloads::{self, AgentSettings, LABEL_CHECK, LABEL_COMPONENT};
use plan::{PlannedCheck, mesh_plan_for};

/// How often the planner recomputes assignments when nothing triggers it (mesh rounds).
const PLAN_TICK: Duration = Duration::from_secs(5);
/// Least time between two planner passes: changes arriving meanwhile (a rollout moving
/// thousands of pods, checks applied by the hundred) are planned together in the next pass.
const PLAN_SPACING: Duration = Duration::from_secs(1);
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
    /// The only namespace whose checks this operator acts on (`--watch-namespace`); `None`
    /// for every namespace.
    pub watch_namespace: Option<String>,
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

#[derive(Debug)]
struct State {
    /// Every check's latest plan, as its reconcile handed it to the planner (shared with the
    /// planner's passes, which take every plan each time).
    plans: BTreeMap<CheckKey, Arc<PlannedCheck>>,
    pacer: WritePacer,
    events: EventLimiter,
    /// The last status written (or read) per check, to compare against.
    written: HashMap<CheckKey, ConnectivityCheckStatus>,
    /// Namespaces this process has published the channel CA in.
    ca_published: BTreeSet<String>,
}

/// What the operator shares with the agents' channel.
#[derive(Debug)]
pub struct ChannelShared {
    /// Each agent's assignment, as the planner last made it.
    pub assignments: Arc<MemoryAssignments>,
    /// The agent pods the planner last saw, for the channel's token cache.
    pub live_pods: Arc<LivePods>,
    /// One-shot reports, as the channel receives them.
    pub one_shots: Arc<OneShotInbox>,
}

/// Shared by reconciles and the planner.
pub struct Context {
    client: Client,
    settings: Settings,
    cache: ClusterCache,
    assignments: Arc<MemoryAssignments>,
    /// The agent pods the planner last saw, for the channel's token cache.
    live_pods: Arc<LivePods>,
    /// Every node's addresses as the last planning pass gave them to every agent: kept, so
    /// that assignments of passes over the same nodes share them and compare in O(1).
    node_addresses: Mutex<Arc<[IpAddr]>>,
    /// The agents as last built, and from what: reused while neither the cluster nor the
    /// external agents named by checks changed.
    agents: Mutex<Option<KnownAgents>>,
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
    /// ConnectivityProbes being run, by UID: the planner adds each to its agent's assignment.
    one_shot_plans: Mutex<BTreeMap<String, probes::OneShotPlan>>,
    /// Their agents' reports, as the channel received them.
    one_shots: Arc<OneShotInbox>,
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
        channel: ChannelShared,
        results: Arc<ResultStore>,
        metrics: OperatorMetrics,
    ) -> Self {
        let ChannelShared {
            assignments,
            live_pods,
            one_shots,
        } = channel;
        Self {
            recorder: Recorder::new(client.clone(), reporter(&settings)),
            client,
            settings,
            cache,
            assignments,
            live_pods,
            node_addresses: Mutex::default(),
            agents: Mutex::default(),
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
            one_shot_plans: Mutex::default(),
            one_shots,
        }
    }

    fn one_shot_plans(&self) -> MutexGuard<'_, BTreeMap<String, probes::OneShotPlan>> {
        self.one_shot_plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A recorder of its own, for an Event that must not be folded into an earlier one of
    /// the same reason (the shared recorder counts those as a series of the first).
    fn unaggregated_recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), reporter(&self.settings))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who publishes the operator's Events.
fn reporter(settings: &Settings) -> Reporter {
    Reporter {
        controller: "netslo-operator".into(),
        instance: Some(settings.instance.clone()),
    }
}

/// Runs the check controller until `shutdown` resolves.
pub async fn run_controller(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Owned probe Deployments live in their check's namespace (owner references cannot cross
    // namespaces), so a watched namespace scopes both.
    let (checks, deployments): (Api<ConnectivityCheck>, Api<Deployment>) =
        match &ctx.settings.watch_namespace {
            Some(namespace) => (
                Api::namespaced(ctx.client.clone(), namespace),
                Api::namespaced(ctx.client.clone(), namespace),
            ),
            None => (Api::all(ctx.client.clone()), Api::all(ctx.client.clone())),
        };
    let controller = Controller::new(checks, watcher::Config::default().any_semantic());
    let sweeper = tokio::spawn(sweep_deleted(ctx.clone(), controller.store()));
    // A series that starts or stops failing reconciles its check at once: the verdict and
    // the conditions follow within an agent window, not a requeue period.
    let (changed_tx, changed_rx) = tokio::sync::mpsc::channel::<CheckKey>(1024);
    ctx.results.notify_changes(changed_tx);
    let pacer = Arc::new(Mutex::new(ChangePacer::default()));
    let changed = futures::stream::unfold(changed_rx, |mut rx| async move {
        let key = rx.recv().await?;
        Some((key, rx))
    })
    .map(move |key| {
        let pacer = pacer.clone();
        let at = pacer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .schedule(&key, Instant::now());
        async move {
            tokio::time::sleep_until(at?.into()).await;
            pacer.lock().unwrap_or_else(|p| p.into_inner()).fired(&key);
            Some(key)
        }
    })
    .buffer_unordered(1024)
    .filter_map(futures::future::ready)
    .map(|key| key.object_ref());
    controller
        .owns(deployments, watcher::Config::default().labels(LABEL_CHECK))
        .reconcile_on(changed)
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!("reconcile: {err}");
            }
        })
        .await;
    sweeper.abort();
}

/// When a check whose results changed is reconciled: [`CHANGE_SETTLE`] after the change
/// (agents close their windows together, and the reconcile should see every source's newest
/// bucket, not the first one to arrive). Changes while one is pending join it: it reads the
/// newest results, so a check whose series change in every batch (a large mesh) is reconciled
/// once per settle, not once per change.
#[derive(Debug, Default)]
struct ChangePacer {
    pending: BTreeSet<CheckKey>,
}

impl ChangePacer {
    /// When to reconcile `key` for a change at `now`; `None` when one is pending already.
    fn schedule(&mut self, key: &CheckKey, now: Instant) -> Option<Instant> {
        self.pending
            .insert(key.clone())
            .then_some(now + CHANGE_SETTLE)
    }

    fn fired(&mut self, key: &CheckKey) {
        self.pending.remove(key);
    }
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
        let existing: BTreeSet<CheckKey> = store
            .state()
            .iter()
            .filter_map(|c| CheckKey::of(c))
            .collect();
        let mut gone: BTreeSet<CheckKey> = ctx.state().plans.keys().cloned().collect();
        gone.extend(ctx.results.checks());
        gone.retain(|key| !existing.contains(key));
        for key in &gone {
            tracing::info!(check = %key, "check deleted: forgetting it");
            forget(&ctx, key);
        }
        if !gone.is_empty() {
            ctx.replan.notify_one();
        }
        let uids: BTreeSet<String> = store.state().iter().filter_map(|c| c.uid()).collect();
        sweep_orphaned_workloads(&ctx.client, ctx.settings.watch_namespace.as_deref(), &uids).await;
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

/// Deletes probe Deployments in other namespaces than their check (which owner references
/// cannot reach, so garbage collection does not) whose check is gone: they carry its UID.
/// An operator watching one namespace sweeps only the workloads of that namespace's checks:
/// the others belong to checks it does not see.
async fn sweep_orphaned_workloads(
    client: &Client,
    watched: Option<&str>,
    existing_uids: &BTreeSet<String>,
) {
    let all: Api<Deployment> = Api::all(client.clone());
    let params = kube::api::ListParams::default().labels(&orphan_candidates(watched));
    let list = match all.list_metadata(&params).await {
        Ok(list) => list,
        Err(err) => {
            tracing::debug!("cannot list probe Deployments to sweep: {err}");
            return;
        }
    };
    let metadata = list.items.iter().map(|d| &d.metadata);
    for (namespace, name) in orphaned(metadata, watched, existing_uids) {
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

/// The label selector of the workloads that may be orphans: those of a check in another
/// namespace, of the watched namespace's checks only if one is watched.
fn orphan_candidates(watched: Option<&str>) -> String {
    match watched {
        Some(namespace) => format!(
            "{},{}={namespace}",
            workloads::LABEL_OWNER_UID,
            workloads::LABEL_OWNER_NAMESPACE
        ),
        None => workloads::LABEL_OWNER_UID.to_string(),
    }
}

/// `(namespace, name)` of objects whose owner-UID label names no existing check (of the
/// watched namespace, if one is watched).
fn orphaned<'a>(
    objects: impl Iterator<Item = &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    watched: Option<&str>,
    existing_uids: &BTreeSet<String>,
) -> Vec<(String, String)> {
    objects
        .filter(|m| m.deletion_timestamp.is_none())
        .filter(|m| {
            let labels = m.labels.as_ref();
            let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
            let in_scope =
                watched.is_none_or(|ns| label(workloads::LABEL_OWNER_NAMESPACE) == Some(ns));
            in_scope
                && label(workloads::LABEL_OWNER_UID).is_some_and(|uid| !existing_uids.contains(uid))
        })
        .filter_map(|m| Some((m.namespace.clone()?, m.name.clone()?)))
        .collect()
}

/// Whether every existing check has a plan (or the deadline for that passed): until then an
/// agent that reports after an operator restart would be refused for checks not planned yet.
fn first_plan_complete(ctx: &Context, plans: &BTreeMap<CheckKey, Arc<PlannedCheck>>) -> bool {
    if ctx.started.elapsed() >= FIRST_PLAN_DEADLINE {
        return true;
    }
    let Some(store) = ctx.checks.get() else {
        return false;
    };
    store
        .state()
        .iter()
        .all(|c| CheckKey::of(c).is_some_and(|key| plans.contains_key(&key)))
}

fn error_policy(_check: Arc<ConnectivityCheck>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(reason = err.reason(), "reconcile failed: {err}");
    Action::requeue(Duration::from_secs(10))
}

/// Forgets a check: its plan, what was written for it, its result window and its metrics.
fn forget(ctx: &Context, key: &CheckKey) {
    let mut state = ctx.state();
    state.plans.remove(key);
    state.written.remove(key);
    state.pacer.forget(&key.to_string());
    drop(state);
    ctx.results.remove(key);
    ctx.metrics.forget(key);
    ctx.replan.notify_one();
}

/// Agents built from one snapshot of the cluster and one set of external agents.
struct KnownAgents {
    snapshot: Arc<OwnedSnapshot>,
    external: Vec<String>,
    agents: Arc<[AgentInfo]>,
}

/// The agents the operator knows (see [`agent_infos`]), shared while the cluster snapshot
/// and the external agents stay: the planner and every reconcile read them, and building
/// them walks every pod of the cluster.
fn known_agents(
    ctx: &Context,
    snapshot: &Arc<OwnedSnapshot>,
    plans: &BTreeMap<CheckKey, Arc<PlannedCheck>>,
) -> Arc<[AgentInfo]> {
    let external = external_agents(plans);
    let mut known = ctx.agents.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = &*known
        && Arc::ptr_eq(&k.snapshot, snapshot)
        && k.external.iter().eq(external.iter().copied())
    {
        return k.agents.clone();
    }
    let agents: Arc<[AgentInfo]> = agent_infos(&ctx.settings.namespace, &external, snapshot).into();
    *known = Some(KnownAgents {
        snapshot: snapshot.clone(),
        external: external.into_iter().cloned().collect(),
        agents: agents.clone(),
    });
    agents
}

/// The external agents checks name, sorted and once each.
fn external_agents(plans: &BTreeMap<CheckKey, Arc<PlannedCheck>>) -> BTreeSet<&String> {
    plans
        .values()
        .filter_map(|p| p.spec.source.external.as_ref())
        .flat_map(|e| e.agents.iter())
        .collect()
}

/// The agents the operator knows: mesh agents (their pods), workload agents (the probe
/// Deployments' pods) and the external agents checks name.
fn agent_infos(
    operator_namespace: &str,
    external: &BTreeSet<&String>,
    snapshot: &OwnedSnapshot,
) -> Vec<AgentInfo> {
    let mut agents = Vec::new();
    let nodes = resolve::NodeIndex::new(&snapshot.nodes);
    for pod in &snapshot.pods {
        let labels = pod.metadata.labels.as_ref();
        let component = labels
            .and_then(|l| l.get(LABEL_COMPONENT))
            .map(String::as_str);
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let zone = node.as_deref().and_then(|n| nodes.zone_of(n));
        let agent_pod = || AgentPod {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            service_account: pod
                .spec
                .as_ref()
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            uid: pod.metadata.uid.clone(),
        };
        match component {
            Some("mesh-agent")
                if pod.metadata.namespace.as_deref() == Some(operator_namespace)
                    && ip.is_some() =>
            {
                if let Some(node) = node {
                    agents.push(AgentInfo {
                        name: node.clone(),
                        kind: AgentKind::Mesh,
                        node: Some(node),
                        zone,
                        ip,
                        pod: Some(agent_pod()),
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
                // A pod without a readable check label probes for no check.
                let Some(check) = labels
                    .and_then(|l| l.get(LABEL_CHECK))
                    .and_then(|value| workloads::check_of_label(value))
                else {
                    continue;
                };
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
    for name in external {
        agents.push(AgentInfo {
            name: (*name).clone(),
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
        let planned_at = tokio::time::Instant::now();
        // A pass plans every agent of every check (seconds of CPU at thousands of nodes):
        // off the runtime's threads, which meanwhile serve the agents and the reconciles.
        let planning = ctx.clone();
        if let Err(err) = tokio::task::spawn_blocking(move || plan_once(&planning)).await {
            tracing::error!("planning pass failed: {err}");
        }
        tokio::select! {
            _ = tokio::time::sleep_until(planned_at + PLAN_SPACING) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        tokio::select! {
            _ = ctx.replan.notified() => {}
            _ = ctx.cache.changed.notified() => {}
            _ = tokio::time::sleep_until(planned_at + PLAN_TICK) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

fn plan_once(ctx: &Context) {
    let started = Instant::now();
    let now = now_ms();
    let snapshot = ctx.cache.snapshot();
    let plans = {
        let state = ctx.state();
        // The store learns how to count each check's results here, before the assignments
        // below reach any agent: a check's first results are counted as its spec says. The
        // reconciles only hand over plans; configuring under the state lock keeps a check
        // forgotten meanwhile from coming back into the store.
        for plan in state.plans.values() {
            if let Some(counting) = &plan.counting {
                ctx.results
                    .configure(&plan.key, &plan.uid, counting.clone(), now);
            }
        }
        state.plans.clone()
    };
    let agents = known_agents(ctx, &snapshot, &plans);
    let views: Vec<CheckPlan<'_>> = plans.values().map(|p| p.as_check_plan()).collect();
    // One mesh plan per (check, target) and pass: its agents are the check's sources, the
    // same for every agent, and sorting them per agent would cost O(N² log N) at N nodes;
    // so would finding each agent and peer by a scan.
    let mut mesh_plans: HashMap<(CheckKey, String), MeshPeers<'_>> = HashMap::new();
    let cluster_cidrs = crate::cluster_space::cluster_space(
        &snapshot.service_cidrs,
        &snapshot.nodes,
        &snapshot.pods,
        &snapshot.services,
    );
    let node_addresses = shared_node_addresses(ctx, &snapshot.nodes);
    let per_agent = assignments(
        &views,
        &agents,
        &snapshot.nodes,
        &node_addresses,
        &cluster_cidrs,
        |plan, target, agent, peers| {
            mesh_plans
                .entry((plan.key.clone(), target.name.clone()))
                .or_insert_with(|| MeshPeers::new(plan.spec, &target.name, peers))
                .of(plan.spec, agent, now)
        },
    );
    let mut per_agent = per_agent;
    add_one_shots(
        ctx,
        &mut per_agent,
        &agents,
        &snapshot.nodes,
        &node_addresses,
        &cluster_cidrs,
    );
    for agent in agents.iter() {
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
    ctx.live_pods.set(
        agents
            .iter()
            .filter_map(|a| a.pod.as_ref()?.uid.clone())
            .collect(),
    );
    if !ctx.assignments.ready() && first_plan_complete(ctx, &plans) {
        tracing::info!(
            checks = plans.len(),
            "every check planned: serving assignments"
        );
        ctx.assignments.mark_ready();
    }
    tracing::debug!(
        checks = plans.len(),
        agents = agents.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "planning pass"
    );
}

/// Adds each running ConnectivityProbe to its agent's assignment, as a one-shot planned like a
/// check of its one target (so under the same address policy as any check of its namespace).
fn add_one_shots(
    ctx: &Context,
    per_agent: &mut BTreeMap<String, netslo_protocol::spec::Assignment>,
    agents: &[AgentInfo],
    nodes: &[Arc<Node>],
    node_addresses: &Arc<[IpAddr]>,
    cluster_cidrs: &[String],
) {
    for (id, plan) in ctx.one_shot_plans().iter_mut() {
        // From a workload: one of its probe pods (in the probe's own namespace: the check
        // label alone anyone may put on a pod), kept while it is there.
        if let Some((key, _)) = &plan.workload
            && !plan
                .agent
                .as_ref()
                .is_some_and(|chosen| agents.iter().any(|a| &a.name == chosen))
        {
            plan.agent = agents
                .iter()
                .find(|a| {
                    matches!(&a.kind, AgentKind::Workload { check } if check == key)
                        && a.pod.as_ref().is_some_and(|p| p.namespace == key.namespace)
                        && binding(ctx, a).is_some()
                })
                .map(|a| a.name.clone());
        }
        let Some(agent) = agents.iter().find(|a| Some(&a.name) == plan.agent.as_ref()) else {
            continue;
        };
        let alone = assignments(
            &[plan.planned.as_check_plan()],
            std::slice::from_ref(agent),
            nodes,
            node_addresses,
            cluster_cidrs,
            // A probe has no mesh target: no peers to pick.
            |_, _, _, _| Vec::new(),
        );
        let (Some(check), Some(assignment)) = (
            alone
                .into_values()
                .next()
                .and_then(|a| a.checks.into_iter().next()),
            per_agent.get_mut(&agent.name),
        ) else {
            continue;
        };
        let one_shot = netslo_protocol::spec::OneShot {
            id: id.clone(),
            count: plan.count,
            trace: true,
            check,
        };
        // Checked alone: an agent refuses a whole assignment it cannot read.
        match one_shot.validate(&|field| format!("oneShot.{field}")) {
            Ok(()) if assignment.one_shots.len() < netslo_protocol::spec::MAX_ONE_SHOTS => {
                assignment.one_shots.push(one_shot);
            }
            Ok(()) => {}
            Err(err) => tracing::warn!(probe = id, "one-shot not assigned: {err}"),
        }
    }
}

/// Every node's addresses, as the previous pass's shared copy while they have not changed.
fn shared_node_addresses(ctx: &Context, nodes: &[Arc<Node>]) -> Arc<[IpAddr]> {
    let addresses = assign::node_addresses(nodes);
    let mut kept = ctx
        .node_addresses
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if **kept != *addresses {
        *kept = addresses.into();
    }
    kept.clone()
}

/// One mesh target's rotation over its agents, with each agent's place in it.
struct MeshPeers<'a> {
    plan: MeshPlan,
    /// Agent name → (index in the plan's sorted agents).
    index: HashMap<&'a str, usize>,
    /// The plan's agents, in its order.
    agents: Vec<&'a AgentInfo>,
}

impl<'a> MeshPeers<'a> {
    fn new(spec: &ConnectivityCheckSpec, target: &str, peers: &[&'a AgentInfo]) -> Self {
        let plan = mesh_plan_for(spec, target, peers.iter().copied());
        let by_name: HashMap<&str, &'a AgentInfo> =
            peers.iter().map(|a| (a.name.as_str(), *a)).collect();
        let agents: Vec<&'a AgentInfo> = plan
            .agents()
            .iter()
            .filter_map(|a| by_name.get(a.name.as_str()).copied())
            .collect();
        let index = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.as_str(), i))
            .collect();
        MeshPeers {
            plan,
            index,
            agents,
        }
    }

    /// The peers `agent` probes this round.
    fn of(
        &self,
        spec: &ConnectivityCheckSpec,
        agent: &AgentInfo,
        now: UnixMs,
    ) -> Vec<&'a AgentInfo> {
        let interval_ms = i64::try_from(assign::interval_ms(spec)).unwrap_or(i64::MAX);
        let round = mesh::round_at(now, interval_ms);
        let Some(&i) = self.index.get(agent.name.as_str()) else {
            return Vec::new();
        };
        self.plan
            .peer_indexes(i, round)
            .filter_map(|p| self.agents.get(p).copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn owned_by(owner_namespace: &str, uid: Option<&str>) -> Option<BTreeMap<String, String>> {
        uid.map(|u| {
            BTreeMap::from([
                (workloads::LABEL_OWNER_UID.to_string(), u.to_string()),
                (
                    workloads::LABEL_OWNER_NAMESPACE.to_string(),
                    owner_namespace.to_string(),
                ),
            ])
        })
    }

    #[test]
    fn a_changed_check_waits_for_the_settle_and_its_changes_join() {
        let web = CheckKey::new("shop", "web");
        let t0 = Instant::now();
        let mut pacer = ChangePacer::default();
        assert_eq!(pacer.schedule(&web, t0), Some(t0 + CHANGE_SETTLE));
        assert_eq!(
            pacer.schedule(&web, t0 + Duration::from_millis(100)),
            None,
            "joins the pending one"
        );
        let other = CheckKey::new("shop", "db");
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(
            pacer.schedule(&other, soon),
            Some(soon + CHANGE_SETTLE),
            "another check is not held by it"
        );
        pacer.fired(&web);
        let later = t0 + CHANGE_SETTLE;
        assert_eq!(pacer.schedule(&web, later), Some(later + CHANGE_SETTLE));
    }

    #[test]
    fn only_workloads_of_missing_checks_are_orphans() {
        let meta = |name: &str, uid: Option<&str>, deleting: bool| ObjectMeta {
            name: Some(name.into()),
            namespace: Some("payments".into()),
            labels: owned_by("shop", uid),
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
        let orphan = vec![("payments".to_string(), "orphan".to_string())];
        assert_eq!(orphaned(objects.iter(), None, &existing), orphan);
        assert_eq!(orphaned(objects.iter(), Some("shop"), &existing), orphan);
    }

    #[test]
    fn an_operator_watching_one_namespace_leaves_other_namespaces_workloads_alone() {
        // Another installation's check (in "billing") owns this workload; this operator,
        // watching "shop", does not see that check and must not take its workload for an orphan.
        let theirs = ObjectMeta {
            name: Some("theirs".into()),
            namespace: Some("payments".into()),
            labels: owned_by("billing", Some("uid-of-a-billing-check")),
            ..ObjectMeta::default()
        };
        let no_checks = BTreeSet::new();
        assert!(orphaned([&theirs].into_iter(), Some("shop"), &no_checks).is_empty());
        assert_eq!(orphaned([&theirs].into_iter(), None, &no_checks).len(), 1);
        assert_eq!(
            orphan_candidates(Some("shop")),
            "netslo.io/owner-uid,netslo.io/owner-namespace=shop"
        );
        assert_eq!(orphan_candidates(None), "netslo.io/owner-uid");
    }
}
