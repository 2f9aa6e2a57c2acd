//! The reconcile of one check, the I/O shell around [`plan`]: gather (the cluster cache's
//! snapshot, the agents, the stored results) → plan (pure) → apply the children (server-side
//! apply) → hand the plan to the planner → write the status (server-side apply of the status
//! subresource, only when a reader would see a difference, paced) and its Events. It never
//! writes into the result store: the planner configures it from the plan.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Client, Resource, ResourceExt};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityCheckStatus};
use serde_json::json;

use super::plan::{self, Applied, Children, Desired, Gathered, StatusPlan, StatusWrite};
use super::{Context, Error};
use crate::assign;
use crate::check_key::CheckKey;
use crate::metrics::CheckFigures;
use crate::slo::{UnixMs, now_ms};
use crate::status::pacing::WriteDecision;
use crate::status::{events, verdict};
use crate::workloads;

/// Target summaries cover the last hour (the failure matrix reads
/// [`verdict::evidence_spans`]).
pub(super) const SUMMARY_SPAN_MS: i64 = 60 * 60_000;

/// One reconcile, counted in the metrics and, when traces are exported, a span.
pub(super) async fn reconcile(
    check: Arc<ConnectivityCheck>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
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
    let started = std::time::Instant::now();
    let result = reconcile_check(&check, &ctx).await;
    tracing::debug!(
        check = check.name_any(),
        elapsed_ms = started.elapsed().as_millis(),
        outcome = ?result,
        "reconciled"
    );
    let error = result.as_ref().err().map(Error::reason);
    ctx.metrics.reconciled(error);
    if let Some(reason) = error {
        span.set_status(Status::error(reason));
    }
    span.end();
    result
}

async fn reconcile_check(check: &ConnectivityCheck, ctx: &Context) -> Result<Action, Error> {
    let key = CheckKey::of(check).ok_or(Error::NoNamespace)?;
    if check.meta().deletion_timestamp.is_some() {
        super::forget(ctx, &key);
        return Ok(Action::await_change());
    }
    let now = now_ms();
    let mut gathered = gather(ctx, check, &key);
    let desired = plan::desired(check, &key, &gathered, &ctx.settings);
    let applied = apply(ctx, &desired.children).await?;
    publish_plan(ctx, &desired);
    // Read after the plan went to the planner: a large mesh's results take a while to read,
    // and a spec change must not wait for them to reach the agents.
    let planned_status = off_the_workers(|| {
        gathered.results = stored_results(ctx, check, &key, now);
        plan::status(check, &key, &desired, &applied, &gathered, now)
    });
    ctx.metrics.check_evaluated(
        &key,
        CheckFigures::of(&planned_status.status, planned_status.objectives.clone()),
    );
    write_status(
        ctx,
        check,
        &key,
        gathered.previous.as_ref(),
        planned_status,
        now,
    )
    .await
}

/// What planning the check reads: the cluster cache's snapshot, the checks of its namespace,
/// the agents the planner knows and the last status written (its stored results are read
/// apart, by [`stored_results`]).
fn gather(ctx: &Context, check: &ConnectivityCheck, key: &CheckKey) -> Gathered {
    let cluster = ctx.cache.snapshot();
    let checks_in_namespace = ctx.checks.get().map(|store| {
        store
            .state()
            .iter()
            .filter(|c| c.namespace().as_deref() == Some(key.namespace.as_str()))
            .map(|c| {
                let created = c
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond());
                (created, c.name_any())
            })
            .collect()
    });
    let agents = super::known_agents(ctx, &cluster, &ctx.state().plans);
    let previous = ctx
        .state()
        .written
        .get(key)
        .cloned()
        .or_else(|| check.status.clone());
    Gathered {
        cluster,
        checks_in_namespace,
        agents,
        results: None,
        previous,
    }
}

/// Runs a reconcile's CPU-bound part (a mesh of thousands of nodes: hundreds of thousands of
/// cells read and localised, a second of CPU) off the async runtime's worker threads where the
/// runtime has others, so that the agents' channel (TLS handshakes, long-polls, result
/// batches) is served meanwhile.
fn off_the_workers<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|handle| handle.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The check's window and recent series; `None` when the store holds no window of this
/// check object.
fn stored_results(
    ctx: &Context,
    check: &ConnectivityCheck,
    key: &CheckKey,
    now: UnixMs,
) -> Option<plan::StoredResults> {
    // A window of an earlier object under the same name is not this check's.
    let uid = check.uid().unwrap_or_default();
    if ctx.results.window_uid(key) != Some(uid) {
        return None;
    }
    ctx.results.read(
        key,
        now,
        SUMMARY_SPAN_MS,
        verdict::evidence_spans(assign::interval_ms(&check.spec)),
        |history, recent| plan::StoredResults {
            history: history.clone(),
            recent,
        },
    )
}

/// Applies the children in order; a refused probe Deployment is an outcome (the status says
/// so), every other failure an error retried with backoff.
async fn apply(ctx: &Context, children: &Children) -> Result<Applied, Error> {
    if children.mesh_agents && ctx.settings.manage_mesh_agents {
        ensure_mesh_agents(ctx).await?;
    }
    for namespace in &children.channel_ca_namespaces {
        ensure_channel_ca(ctx, namespace).await?;
    }
    let mut applied = Applied::default();
    if let Some(deployment) = &children.workload {
        match apply_deployment(&ctx.client, deployment).await {
            Ok(rolling_out) => applied.rolling_out = rolling_out,
            // Running probe pods as a workload's identity is granted per namespace.
            Err(Error::ApplyWorkload {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 403 => {
                applied.workload_forbidden_in = deployment.metadata.namespace.clone();
            }
            Err(err) => return Err(err),
        }
    }
    Ok(applied)
}

/// Hands the check's plan to the planner, which configures the result store and assigns
/// agents. The planner is woken only by a plan that changed: checks are reconciled far more
/// often than they change, and a pass plans every agent of every check.
fn publish_plan(ctx: &Context, desired: &Desired) {
    let previous = ctx.state().plans.insert(
        desired.planned.key.clone(),
        Arc::new(desired.planned.clone()),
    );
    if previous.as_deref() != Some(&desired.planned) {
        ctx.replan.notify_one();
    }
}

/// Writes the planned status if a reader would see a change and the pacing allows it, then
/// publishes the Events of its transitions.
async fn write_status(
    ctx: &Context,
    check: &ConnectivityCheck,
    key: &CheckKey,
    previous: Option<&ConnectivityCheckStatus>,
    planned: StatusPlan,
    now: UnixMs,
) -> Result<Action, Error> {
    let Some(write) = planned.write else {
        return Ok(Action::requeue(planned.revisit));
    };
    // The pacer and the Event limiter are generic over object names: the key's string form.
    let object = key.to_string();
    let decision = match write {
        StatusWrite::Urgent => ctx.state().pacer.request_transition(&object, now),
        StatusWrite::Routine => ctx.state().pacer.request(&object, now),
    };
    if let WriteDecision::NotBefore(at) = decision {
        // A figure update waiting out its floor must not hold back the evaluations that
        // would turn it into an urgent one (a verdict found once an agent's silence grows).
        let wait = u64::try_from((at - now).max(1_000)).unwrap_or(1_000);
        return Ok(Action::requeue(
            Duration::from_millis(wait).min(planned.revisit),
        ));
    }
    let api: Api<ConnectivityCheck> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = json!({"apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck", "status": planned.status});
    api.patch_status(
        &key.name,
        &PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::WriteStatus)?;
    ctx.metrics.status_written();
    tracing::debug!(
        check = object,
        urgent = write == StatusWrite::Urgent,
        "status written"
    );
    publish_events(ctx, check, &object, previous, &planned.status, now).await;
    ctx.state().written.insert(key.clone(), planned.status);
    Ok(Action::requeue(planned.revisit))
}

/// Publishes the channel CA in `namespace` once per operator process (its content is this
/// process's CA); a failure is retried by the reconcile's backoff.
pub(super) async fn ensure_channel_ca(ctx: &Context, namespace: &str) -> Result<(), Error> {
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
pub(super) async fn apply_deployment(
    client: &Client,
    deployment: &Deployment,
) -> Result<bool, Error> {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let mut body = serde_json::to_value(deployment).unwrap_or_default();
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
    object: &str,
    previous: Option<&ConnectivityCheckStatus>,
    status: &ConnectivityCheckStatus,
    now: UnixMs,
) {
    let reference = check.object_ref(&());
    for transition in events::transition_events(previous, status) {
        if !ctx.state().events.admit(object, transition.reason, now) {
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
        // A verdict's Events differ in their notes (the place): the shared recorder would fold
        // a second one within 6 minutes into the first (same reason), keeping the first note.
        let published = if transition.reason.names_a_place() {
            ctx.unaggregated_recorder()
                .publish(&event, &reference)
                .await
        } else {
            ctx.recorder.publish(&event, &reference).await
        };
        if let Err(err) = published {
            tracing::warn!(
                check = object,
                "cannot publish Event {}: {err}",
                transition.reason.as_str()
            );
        }
    }
}
