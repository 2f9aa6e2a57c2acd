//! ConnectivityProbes: one probe, asked for through the API, run once from the node or as the
//! workload it names.
//!
//! A probe stands for a check of one target in its namespace, probed from one node's mesh
//! agent or, from a Deployment or pod of its namespace, from a short-lived probe pod with that
//! workload's labels and service account. Its destination is resolved and granted by the same
//! code as a ConnectivityCheck's target ([`super::plan::desired`]); whoever may create
//! ConnectivityProbes in the namespace (RBAC) may ask, at most [`MAX_RUNNING_PER_NAMESPACE`]
//! at once. The planner puts it into its agent's assignment as a one-shot ([`OneShotPlan`]);
//! the agent's report comes back through the channel's
//! [`OneShotInbox`](crate::channel::OneShotInbox) and becomes the probe's status. A probe
//! nobody answers fails at its deadline; its probe pods are deleted when it is over; a
//! finished probe is deleted an hour after it finished (the plugin deletes its own at once).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use netslo_crds::duration::GoDuration;
use netslo_crds::v1alpha1::{
    ConnectivityCheck, ConnectivityCheckSpec, ConnectivityProbe, ConnectivityProbeStatus,
    MAX_PROBE_ATTEMPTS, MeshSource, PathTraceStatus, PodsTarget, ProbeAttempt, ProbePhase,
    ProbeSource, Schedule, Target, TraceHop, WorkloadSource,
};
use netslo_protocol::channel::OneShotAttempt;
use netslo_protocol::channel::OneShotReport;
use netslo_protocol::spec::{MAX_ONE_SHOT_ATTEMPTS, MAX_ONE_SHOT_TARGETS, MAX_ONE_SHOTS};
use netslo_protocol::trace::PathTrace;
use netslo_protocol::verdict::Outcome;

use super::Context;
use super::plan::{self, Gathered, PlannedCheck};
use crate::assign::{AgentInfo, AgentKind};
use crate::cache::OwnedSnapshot;
use crate::check_key::CheckKey;
use crate::resolve::{Destination, SeriesId};
use crate::slo::{UnixMs, now_ms};
use crate::workloads;

/// Attempts when the probe does not say.
const DEFAULT_COUNT: u8 = 3;
/// An attempt's timeout when the probe does not say, and the longest it may say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent has beyond the attempts themselves: the planner's next pass, the
/// long-poll's answer, a path trace, the report.
const ANSWER_SLACK: Duration = Duration::from_secs(45);
/// How long a finished probe stays for `kubectl get` before the operator deletes it.
const KEEP_FINISHED: Duration = Duration::from_secs(3_600);
/// Most probes running at once in one namespace: each may start a probe pod.
const MAX_RUNNING_PER_NAMESPACE: usize = 8;
/// How often running probes are looked at without a report arriving.
const TICK: Duration = Duration::from_secs(1);

/// A probe the planner hands to its agent as a one-shot.
#[derive(Debug, Clone)]
pub(super) struct OneShotPlan {
    /// The agent it went to: the node's, or (from a workload) the first of its probe pods
    /// to connect, once one has.
    pub agent: Option<String>,
    /// From a workload: the check key its probe pods carry, and their Deployment (deleted
    /// once the probe is over; garbage collection takes it with the probe too).
    pub workload: Option<(CheckKey, String)>,
    pub count: u8,
    pub planned: PlannedCheck,
    /// When the probe fails unanswered.
    pub deadline: Instant,
}

/// Attempts and timeout of a probe, bounded.
fn attempts_of(probe: &ConnectivityProbe) -> (u8, Duration) {
    let count = probe
        .spec
        .count
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(DEFAULT_COUNT)
        .clamp(1, MAX_ONE_SHOT_ATTEMPTS);
    let timeout = probe
        .spec
        .timeout
        .as_ref()
        .map_or(DEFAULT_TIMEOUT, GoDuration::get)
        .clamp(Duration::from_millis(1), MAX_TIMEOUT);
    (count, timeout)
}

/// The check a probe stands for (pure): its one target, probed from every mesh agent (the
/// planner gives it to the one on the probe's node only), with the pod address a pod
/// destination is narrowed to.
fn check_for(
    probe: &ConnectivityProbe,
    namespace: &str,
    pods: &[Arc<Pod>],
    workload: Option<WorkloadSource>,
) -> (ConnectivityCheck, Option<IpAddr>) {
    let to = &probe.spec.to;
    let mut target = Target {
        name: "to".into(),
        protocol: probe.spec.protocol,
        service: to.service.clone(),
        external: to.external.clone(),
        ..Target::default()
    };
    let mut narrowed_to = None;
    if let Some(destination) = &to.pod {
        let pod_namespace = destination.namespace.as_deref().unwrap_or(namespace);
        let found = pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(pod_namespace)
                && p.metadata.name.as_deref() == Some(destination.name.as_str())
        });
        narrowed_to = found.and_then(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse().ok());
        // The pod's own labels select it (and maybe its siblings: the endpoints are narrowed
        // to its address after resolution); a pod not found selects nothing, so that a
        // namespace not granted is refused as such rather than told what exists there.
        let match_labels = match (found, narrowed_to) {
            (Some(pod), Some(_)) => pod.metadata.labels.clone().unwrap_or_default(),
            _ => BTreeMap::from([("netslo.io/no-such-pod".into(), "true".into())]),
        };
        target.pods = Some(PodsTarget {
            namespace: destination.namespace.clone(),
            selector: LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: None,
            },
            port: destination.port,
        });
    }
    let (_, timeout) = attempts_of(probe);
    let spec = ConnectivityCheckSpec {
        description: None,
        suspend: None,
        source: match workload {
            Some(workload) => ProbeSource {
                workload: Some(workload),
                ..ProbeSource::default()
            },
            None => ProbeSource {
                mesh: Some(MeshSource::default()),
                ..ProbeSource::default()
            },
        },
        targets: vec![target],
        schedule: Some(Schedule {
            timeout: Some(GoDuration::new(timeout)),
            interval: Some(GoDuration::new(timeout + Duration::from_secs(1))),
            jitter_percent: Some(0),
        }),
        objectives: None,
    };
    let check = ConnectivityCheck {
        metadata: ObjectMeta {
            // From the probe's UID, not its name: a check of the same namespace may be named
            // anything, and must never share a key (or probe pods) with a probe.
            name: Some(synthetic_name(&probe.uid().unwrap_or_default())),
            namespace: Some(namespace.to_owned()),
            uid: probe.uid(),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    (check, narrowed_to)
}

/// The name of the check a probe stands for: `probe.` and the first 12 hex digits of its UID.
fn synthetic_name(uid: &str) -> String {
    let hex: String = uid
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(12)
        .collect();
    format!("probe.{hex}")
}

/// What planning a probe came to.
#[derive(Debug)]
enum Planned {
    /// With the probe Deployment to apply, for a probe from a workload.
    Run(Box<OneShotPlan>, Option<Box<Deployment>>),
    Refused(String),
}

/// How long a probe pod may take to start and connect, on top of the attempts.
const POD_START_SLACK: Duration = Duration::from_secs(120);

/// Labels Kubernetes' controllers put on the pods they make.
const CONTROLLER_LABELS: [&str; 4] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];

/// The workload identity a probe runs as, from the Deployment's pod template or the pod it
/// names (in its own namespace); `None` for a probe from a node.
fn workload_of(
    origin: &netslo_crds::v1alpha1::ProbeOrigin,
    namespace: &str,
    deployment: Option<&Deployment>,
    pods: &[Arc<Pod>],
) -> Result<Option<WorkloadSource>, String> {
    let identity = |labels: Option<&BTreeMap<String, String>>, account: Option<&String>| {
        // The workload's own labels, not those its controllers stamp on each pod (a probe
        // pod must not pass for a replica of a ReplicaSet or StatefulSet).
        let mut pod_labels = labels.cloned().unwrap_or_default();
        pod_labels.retain(|key, _| !CONTROLLER_LABELS.contains(&key.as_str()));
        Some(WorkloadSource {
            pod_labels,
            service_account_name: account.cloned().unwrap_or_else(|| "default".into()),
            replicas: Some(1),
            ..WorkloadSource::default()
        })
    };
    if let Some(name) = &origin.deployment {
        let Some(template) = deployment
            .and_then(|d| d.spec.as_ref())
            .map(|s| &s.template)
        else {
            return Err(format!(
                "deployment {name} not found in namespace {namespace}"
            ));
        };
        let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
        let account = template
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_ref());
        return Ok(identity(labels, account));
    }
    if let Some(name) = &origin.pod {
        let Some(pod) = pods.iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name.as_str())
        }) else {
            return Err(format!("pod {name} not found in namespace {namespace}"));
        };
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_ref());
        return Ok(identity(pod.metadata.labels.as_ref(), account));
    }
    Ok(None)
}

/// Plans a probe (pure but for the clock it is given): refused as a check of the same target
/// would stall, or when no agent stands on its node.
fn plan_probe(
    probe: &ConnectivityProbe,
    cluster: &Arc<OwnedSnapshot>,
    agents: &Arc<[AgentInfo]>,
    settings: &super::Settings,
    workload: Option<WorkloadSource>,
    now: Instant,
) -> Planned {
    let Some(namespace) = probe.namespace() else {
        return Planned::Refused("a ConnectivityProbe must have a namespace".into());
    };
    let from_workload = workload.is_some();
    let (check, narrowed_to) = check_for(probe, &namespace, &cluster.pods, workload);
    let key = CheckKey::new(&namespace, check.name_any());
    let gathered = Gathered {
        cluster: cluster.clone(),
        agents: agents.clone(),
        ..Gathered::default()
    };
    let mut desired = plan::desired(&check, &key, &gathered, settings);
    if let Some(stall) = desired.stall {
        return Planned::Refused(stall.message);
    }
    if let Some(ip) = narrowed_to {
        for target in &mut desired.planned.targets {
            target.endpoints.retain(|e| {
                e.destinations
                    .iter()
                    .any(|d| matches!(d, Destination::Address { ip: a, .. } if *a == ip))
            });
        }
    }
    // A one-shot runs a bounded number of paths (a Service's ClusterIP, name and endpoints).
    let mut paths = 0;
    for target in &mut desired.planned.targets {
        target
            .endpoints
            .truncate(MAX_ONE_SHOT_TARGETS.saturating_sub(paths));
        paths += target.endpoints.len();
    }
    if desired
        .planned
        .targets
        .iter()
        .all(|t| t.endpoints.is_empty())
    {
        return Planned::Refused(match &probe.spec.to.pod {
            Some(pod) => format!(
                "pod {} has no ready address to probe (it does not exist, is not ready or has no IP)",
                pod.name
            ),
            None => "nothing to probe: the destination has no ready address".into(),
        });
    }
    let (count, timeout) = attempts_of(probe);
    // The agent runs a round's paths one after another, rounds an interval apart.
    let paths = u32::try_from(paths.max(1)).unwrap_or(1);
    let attempts = u32::from(count);
    let deadline = now
        + timeout * paths * attempts
        + (timeout + Duration::from_secs(1)) * attempts
        + ANSWER_SLACK;
    if from_workload {
        let Some(mut deployment) = desired.children.workload else {
            return Planned::Refused("no probe pod can run as this workload".into());
        };
        // The probe owns its probe pods: they go when it does, whoever deletes it.
        deployment.metadata.owner_references = Some(vec![OwnerReference {
            api_version: ConnectivityProbe::api_version(&()).into_owned(),
            kind: ConnectivityProbe::kind(&()).into_owned(),
            name: probe.name_any(),
            uid: probe.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: None,
        }]);
        let name = deployment.metadata.name.clone().unwrap_or_default();
        return Planned::Run(
            Box::new(OneShotPlan {
                agent: None,
                workload: Some((key, name)),
                count,
                planned: desired.planned,
                deadline: deadline + POD_START_SLACK,
            }),
            Some(Box::new(deployment)),
        );
    }
    let node = probe.spec.from.node.as_deref().unwrap_or_default();
    let Some(agent) = agents
        .iter()
        .find(|a| a.kind == AgentKind::Mesh && a.node.as_deref() == Some(node))
    else {
        return Planned::Refused(format!("no netslo agent runs on node {node}"));
    };
    Planned::Run(
        Box::new(OneShotPlan {
            agent: Some(agent.name.clone()),
            workload: None,
            count,
            planned: desired.planned,
            deadline,
        }),
        None,
    )
}

/// A probe's status from its agent's report (pure).
fn answered(report: &OneShotReport, now: UnixMs) -> ConnectivityProbeStatus {
    // Judged on every attempt; only the list in status is bounded.
    let total = report.attempts.len();
    let failed_total = report
        .attempts
        .iter()
        .filter(|a| a.result.outcome != Outcome::Good)
        .count();
    let first_failed = report
        .attempts
        .iter()
        .position(|a| a.result.outcome != Outcome::Good);
    let attempt = |a: &OneShotAttempt| {
        let r = &a.result;
        let micros = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok());
        ProbeAttempt {
            path: path_of(&a.target),
            outcome: format!("{:?}", r.outcome),
            reason: r.reason.map(|x| x.as_str().to_owned()),
            layer: r.layer.map(|l| l.as_str().to_owned()),
            dns_micros: micros(r.phases.dns_us),
            connect_micros: micros(r.phases.connect_us),
            tls_micros: micros(r.phases.tls_us),
            first_byte_micros: micros(r.phases.ttfb_us),
            total_micros: micros(r.phases.total_us),
        }
    };
    let attempts: Vec<ProbeAttempt> = report
        .attempts
        .iter()
        .take(MAX_PROBE_ATTEMPTS)
        .map(attempt)
        .collect();
    let phase = if failed_total == 0 && total > 0 {
        ProbePhase::Succeeded
    } else {
        ProbePhase::Failed
    };
    let mut message = match first_failed.map(|i| attempt(&report.attempts[i])) {
        None if total == 0 => "the agent ran no attempt".to_owned(),
        None => format!("{total} of {total} attempts succeeded"),
        Some(first) => format!(
            "{failed_total} of {total} attempts failed; first: {} at {} on {}",
            first.reason.as_deref().unwrap_or("unknown"),
            first.layer.as_deref().unwrap_or("an unknown layer"),
            first.path
        ),
    };
    let trace = report.trace.as_ref().map(trace_status);
    if let Some(t) = &trace {
        message = format!("{message}; path: {}", t.summary);
    } else if let Some(e) = &report.trace_error {
        message = format!("{message}; no path trace: {e}");
    }
    ConnectivityProbeStatus {
        phase: Some(phase),
        message: Some(bounded_message(message)),
        agent: Some(report.agent_name.clone()),
        attempts,
        trace,
        completion_time: Some(time_at(now)),
    }
}

/// "ClusterIP 10.96.0.10:80" for a series label; the label itself when it is none.
fn path_of(label: &str) -> String {
    match SeriesId::parse(label) {
        Some(s) => format!("{} {}", s.via.as_str(), s.endpoint),
        None => label.to_owned(),
    }
}

fn trace_status(trace: &PathTrace) -> PathTraceStatus {
    PathTraceStatus {
        destination: trace.destination.to_string(),
        end: format!("{:?}", trace.end),
        summary: trace.summary(),
        hops: trace
            .hops
            .iter()
            .take(netslo_protocol::channel::MAX_TRACE_HOPS)
            .map(|h| TraceHop {
                ttl: i32::from(h.ttl),
                address: h.address.map(|a| a.to_string()),
                answer: h.answer.map(|a| format!("{a:?}")),
                rtt_micros: h.rtt_us.and_then(|v| i64::try_from(v).ok()),
            })
            .collect(),
    }
}

pub(super) fn time_at(now: UnixMs) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(now.div_euclid(1_000)).unwrap_or_default())
}

/// Most characters of a status message (the CRD's bound).
const MAX_MESSAGE_CHARS: usize = 1024;

/// A message within the CRD's bound, cut at a character with an ellipsis.
fn bounded_message(message: String) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        return message;
    }
    let mut cut: String = message.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

fn status(
    phase: ProbePhase,
    message: String,
    agent: Option<String>,
    now: UnixMs,
) -> ConnectivityProbeStatus {
    ConnectivityProbeStatus {
        phase: Some(phase),
        message: Some(bounded_message(message)),
        agent,
        completion_time: phase.is_final().then(|| time_at(now)),
        ..ConnectivityProbeStatus::default()
    }
}

/// Runs the probe controller until `shutdown` turns true.
pub async fn run_probes(ctx: Arc<Context>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let api: Api<ConnectivityProbe> = match &ctx.settings.watch_namespace {
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
    let mut answers = HashMap::new();
    loop {
        step(&ctx, &store, &mut answers).await;
        tokio::select! {
            () = ctx.one_shots.arrived() => {}
            () = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
    }
    watching.abort();
}

/// One look at every probe: plan the new ones, finish the answered and the overdue, delete
/// the long finished, forget the deleted.
/// `answers` keeps each final status this process decided until the watch shows it written:
/// a write that failed, or one the watch has not caught up with, is written again, never
/// taken for a probe left running by an earlier process.
async fn step(
    ctx: &Context,
    store: &Store<ConnectivityProbe>,
    answers: &mut HashMap<String, ConnectivityProbeStatus>,
) {
    let probes = store.state();
    let now = Instant::now();
    let now_unix = now_ms();
    let mut replan = false;
    let live: std::collections::BTreeSet<String> = probes.iter().filter_map(|p| p.uid()).collect();
    answers.retain(|uid, _| {
        probes.iter().any(|p| {
            p.uid().as_ref() == Some(uid)
                && !p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(ProbePhase::is_final)
        })
    });
    {
        let mut plans = ctx.one_shot_plans();
        let before = plans.len();
        plans.retain(|uid, _| live.contains(uid));
        replan |= plans.len() != before;
    }
    ctx.one_shots.retain(|uid| live.contains(uid));
    for probe in probes.iter() {
        let Some(uid) = probe.uid() else { continue };
        let phase = probe.status.as_ref().and_then(|s| s.phase);
        if phase.is_some_and(ProbePhase::is_final) {
            let finished = probe
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0.as_millisecond());
            if finished.is_some_and(|at| now_unix - at > KEEP_FINISHED.as_millis() as i64) {
                delete(ctx, probe).await;
            }
            continue;
        }
        if let Some(answer) = answers.get(&uid) {
            write_status(ctx, probe, answer.clone()).await;
            continue;
        }
        let running = ctx.one_shot_plans().get(&uid).cloned();
        let next = match running {
            Some(plan) => match ctx.one_shots.take(&uid) {
                Some(report) if Some(&report.agent_name) == plan.agent.as_ref() => {
                    Some(answered(&report, now_unix))
                }
                Some(_) => None,
                None if now >= plan.deadline => Some(status(
                    ProbePhase::Failed,
                    match &plan.agent {
                        Some(agent) => format!("agent {agent} did not answer in time"),
                        None => "no probe pod started and connected in time (kubectl get pods -l app.kubernetes.io/component=workload-agent)".into(),
                    },
                    plan.agent.clone(),
                    now_unix,
                )),
                None => None,
            },
            None if phase == Some(ProbePhase::Running) => {
                // Running, but not planned by this process (the operator restarted): the
                // agent's answer went to the previous one. Its probe pods, if it had any, go.
                if let Some(namespace) = probe.namespace() {
                    let pods = workloads::workload_deployment_name(&workloads::CheckRef {
                        namespace: namespace.clone(),
                        name: synthetic_name(&uid),
                        uid: uid.clone(),
                    });
                    delete_probe_pods(ctx, &namespace, &pods).await;
                }
                Some(status(
                    ProbePhase::Failed,
                    "the operator restarted while the probe ran; ask again".into(),
                    None,
                    now_unix,
                ))
            }
            None => Some(start(ctx, probe, &uid, now, now_unix, &mut replan).await),
        };
        let Some(next) = next else { continue };
        if next.phase.is_some_and(ProbePhase::is_final) {
            answers.insert(uid.clone(), next.clone());
            let finished = ctx.one_shot_plans().remove(&uid);
            if let Some(plan) = finished {
                replan = true;
                if let (Some((_, deployment)), Some(namespace)) =
                    (&plan.workload, probe.namespace())
                {
                    delete_probe_pods(ctx, &namespace, deployment).await;
                }
            }
        }
        write_status(ctx, probe, next).await;
    }
    if replan {
        ctx.replan.notify_one();
    }
}

/// Plans a new probe: its first status, Running or Refused. A probe from a workload starts
/// its probe pod here.
async fn start(
    ctx: &Context,
    probe: &ConnectivityProbe,
    uid: &str,
    now: Instant,
    now_unix: UnixMs,
    replan: &mut bool,
) -> ConnectivityProbeStatus {
    let refused = |message: String| status(ProbePhase::Refused, message, None, now_unix);
    let namespace = probe.namespace().unwrap_or_default();
    let cluster = ctx.cache.snapshot();
    let deployment = match &probe.spec.from.deployment {
        Some(name) => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
            match api.get_opt(name).await {
                Ok(found) => found,
                Err(err) => return refused(format!("cannot read deployment {name}: {err}")),
            }
        }
        None => None,
    };
    let workload = match workload_of(
        &probe.spec.from,
        &namespace,
        deployment.as_ref(),
        &cluster.pods,
    ) {
        Ok(workload) => workload,
        Err(message) => return refused(message),
    };
    let agents = super::known_agents(ctx, &cluster, &ctx.state().plans);
    let (plan, probe_pods) =
        match plan_probe(probe, &cluster, &agents, &ctx.settings, workload, now) {
            Planned::Refused(message) => return refused(message),
            Planned::Run(plan, probe_pods) => (plan, probe_pods),
        };
    let in_namespace = ctx
        .one_shot_plans()
        .values()
        .filter(|p| p.planned.key.namespace == namespace)
        .count();
    if in_namespace >= MAX_RUNNING_PER_NAMESPACE {
        return refused(format!(
            "namespace {namespace} runs {MAX_RUNNING_PER_NAMESPACE} probes already; ask again once one is over"
        ));
    }
    if let Some(agent) = &plan.agent {
        let on_agent = ctx
            .one_shot_plans()
            .values()
            .filter(|p| p.agent.as_ref() == Some(agent))
            .count();
        if on_agent >= MAX_ONE_SHOTS {
            return refused(format!(
                "agent {agent} runs {MAX_ONE_SHOTS} probes already; ask again shortly"
            ));
        }
    }
    let message = match &probe_pods {
        Some(deployment) => {
            if let Err(err) = super::reconcile::ensure_channel_ca(ctx, &namespace).await {
                return refused(format!(
                    "cannot publish the channel CA for the probe pod: {err}"
                ));
            }
            match super::reconcile::apply_deployment(&ctx.client, deployment).await {
                Ok(_) => {}
                // Running probe pods as a workload's identity is granted per namespace.
                Err(super::Error::ApplyWorkload {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 403 => {
                    return refused(format!(
                        "the operator may not run probe pods in namespace {namespace}: bind the ClusterRole netslo-workload-agents to it there"
                    ));
                }
                Err(err) => return refused(format!("cannot start the probe pod: {err}")),
            }
            format!("starting a probe pod as {}", probe.spec.from.describe())
        }
        None => format!(
            "running on agent {}",
            plan.agent.as_deref().unwrap_or_default()
        ),
    };
    let agent = plan.agent.clone();
    ctx.one_shot_plans().insert(uid.to_owned(), *plan);
    *replan = true;
    tracing::info!(probe = %probe.name_any(), %namespace, from = %probe.spec.from.describe(), "probe planned");
    status(ProbePhase::Running, message, agent, now_unix)
}

/// Deletes a finished probe's probe pods (their Deployment).
async fn delete_probe_pods(ctx: &Context, namespace: &str, deployment: &str) {
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    if let Err(err) = api.delete(deployment, &DeleteParams::background()).await {
        tracing::debug!(%namespace, deployment, "cannot delete a probe's pods: {err}");
    }
}

async fn write_status(ctx: &Context, probe: &ConnectivityProbe, status: ConnectivityProbeStatus) {
    let (Some(namespace), name) = (probe.namespace(), probe.name_any()) else {
        return;
    };
    if probe.status.as_ref() == Some(&status) {
        return;
    }
    let api: Api<ConnectivityProbe> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": ConnectivityProbe::api_version(&()),
        "kind": ConnectivityProbe::kind(&()),
        "status": status,
    });
    let params = PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force();
    if let Err(err) = api.patch_status(&name, &params, &Patch::Apply(patch)).await {
        tracing::warn!(probe = %name, %namespace, "cannot write the probe's status: {err}");
    }
}

async fn delete(ctx: &Context, probe: &ConnectivityProbe) {
    let (Some(namespace), name) = (probe.namespace(), probe.name_any()) else {
        return;
    };
    let api: Api<ConnectivityProbe> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Err(err) = api.delete(&name, &DeleteParams::default()).await {
        tracing::debug!(probe = %name, %namespace, "cannot delete a finished probe: {err}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netslo_crds::v1alpha1::{
        ConnectivityProbeSpec, PodDestination, ProbeDestination, ProbeOrigin,
    };
    use netslo_protocol::channel::OneShotAttempt;
    use netslo_protocol::trace::{Hop, HopAnswer, TraceEnd};
    use netslo_protocol::verdict::{FailureReason, Layer, Outcome, Phases, ProbeResult};

    fn probe(to: ProbeDestination) -> ConnectivityProbe {
        let mut p = ConnectivityProbe::new(
            "probe-x",
            ConnectivityProbeSpec {
                from: ProbeOrigin {
                    node: Some("node-a".into()),
                    ..ProbeOrigin::default()
                },
                to,
                protocol: None,
                count: Some(40),
                timeout: Some(GoDuration::from_secs(300)),
            },
        );
        p.metadata.namespace = Some("shop".into());
        p.metadata.uid = Some("uid-1".into());
        p
    }

    fn pod(namespace: &str, name: &str, ip: &str, labels: &[(&str, &str)]) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.namespace = Some(namespace.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            pod_ip: Some(ip.into()),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn a_probe_is_a_check_of_one_target_with_bounded_attempts() {
        let to_pod = |namespace: Option<&str>| ProbeDestination {
            pod: Some(PodDestination {
                name: "api-1".into(),
                namespace: namespace.map(str::to_owned),
                port: Some(8080),
            }),
            ..ProbeDestination::default()
        };
        let p = probe(to_pod(None));
        assert_eq!(attempts_of(&p), (MAX_ONE_SHOT_ATTEMPTS, MAX_TIMEOUT));
        let pods = [
            pod("shop", "api-1", "10.0.0.7", &[("app", "api")]),
            pod("other", "api-1", "10.9.0.7", &[("app", "secret")]),
        ];
        let (check, narrowed) = check_for(&p, "shop", &pods, None);
        assert_eq!(narrowed, Some("10.0.0.7".parse().unwrap()));
        // Named from the probe's UID ("uid-1": its hex digits), never from its name.
        assert_eq!(check.metadata.name.as_deref(), Some("probe.d1"));
        assert_eq!(
            synthetic_name("8a0587b0-e31d-441e-a268-6d5a2dd611cf"),
            "probe.8a0587b0e31d"
        );
        assert!(check.spec.source.mesh.is_some());
        let target = &check.spec.targets[0];
        let selected = &target.pods.as_ref().unwrap().selector;
        assert_eq!(
            selected.match_labels,
            Some(BTreeMap::from([("app".into(), "api".into())]))
        );
        let schedule = check.spec.schedule.unwrap();
        assert!(schedule.timeout.unwrap().get() < schedule.interval.unwrap().get());
        // A pod not found (or in a namespace the caller names but may not see) selects
        // nothing: the grants decide what is said about it, not its existence.
        let (check, narrowed) = check_for(&probe(to_pod(Some("elsewhere"))), "shop", &pods, None);
        assert_eq!(narrowed, None);
        let labels = check.spec.targets[0]
            .pods
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .clone();
        assert_eq!(
            labels,
            Some(BTreeMap::from([(
                "netslo.io/no-such-pod".into(),
                "true".into()
            )]))
        );
    }

    fn attempt(outcome: Outcome, reason: Option<FailureReason>) -> OneShotAttempt {
        OneShotAttempt {
            target: "to/Pod/10.0.0.7:8080".into(),
            result: ProbeResult {
                outcome,
                latency_us: 400,
                lag_us: 0,
                phases: Phases {
                    connect_us: Some(400),
                    ..Phases::default()
                },
                reason,
                layer: reason.map(|r| r.layer()),
                blocked_by: None,
            },
        }
    }

    #[test]
    fn a_report_becomes_the_status_a_terminal_reads() {
        let good = OneShotReport {
            agent_name: "agent-a".into(),
            id: "uid-1".into(),
            attempts: vec![attempt(Outcome::Good, None); 2],
            trace: None,
            trace_error: None,
        };
        let status = answered(&good, 1_700_000_000_000);
        assert_eq!(status.phase, Some(ProbePhase::Succeeded));
        assert_eq!(status.message.as_deref(), Some("2 of 2 attempts succeeded"));
        assert_eq!(status.attempts[0].path, "Pod 10.0.0.7:8080");
        assert_eq!(status.attempts[0].connect_micros, Some(400));
        assert!(status.completion_time.is_some());

        let failed = OneShotReport {
            attempts: vec![
                attempt(Outcome::Good, None),
                attempt(Outcome::Bad, Some(FailureReason::TcpTimeout)),
            ],
            trace: Some(PathTrace {
                destination: "10.0.0.7".parse().unwrap(),
                hops: vec![Hop {
                    ttl: 1,
                    address: Some("10.1.0.1".parse().unwrap()),
                    answer: Some(HopAnswer::TimeExceeded),
                    rtt_us: Some(90),
                }],
                end: TraceEnd::Silent,
            }),
            ..good.clone()
        };
        let status = answered(&failed, 1_700_000_000_000);
        assert_eq!(status.phase, Some(ProbePhase::Failed));
        assert_eq!(
            status.message.as_deref(),
            Some(
                "1 of 2 attempts failed; first: TCPTimeout at TCP on Pod 10.0.0.7:8080; \
                 path: silent after hop 1 (10.1.0.1): a hop past it drops the traffic to 10.0.0.7"
            )
        );
        let trace = status.trace.unwrap();
        assert_eq!(
            (trace.end.as_str(), trace.hops[0].answer.as_deref()),
            ("Silent", Some("TimeExceeded"))
        );
        assert_eq!(
            Layer::Tcp.as_str(),
            status.attempts[1].layer.as_deref().unwrap()
        );

        let nothing = OneShotReport {
            attempts: Vec::new(),
            trace_error: Some("cannot open a trace socket".into()),
            ..good
        };
        let status = answered(&nothing, 0);
        assert_eq!(status.phase, Some(ProbePhase::Failed));
        assert!(
            status
                .message
                .unwrap()
                .contains("no path trace: cannot open a trace socket")
        );
    }
}
