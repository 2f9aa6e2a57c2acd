//! One-shot probes: what someone asked the operator to try once (a `ConnectivityProbe`), run
//! by the agent that stands where they asked, and reported attempt by attempt with each
//! phase's timing and, when an attempt failed on the way, a path trace.

use std::sync::Arc;
use std::time::Duration;

use netslo_protocol::channel::{OneShotAttempt, OneShotReport};
use netslo_protocol::names::SeriesLabel;
use netslo_protocol::spec::{Assignment, OneShot, SpecError};
use netslo_protocol::verdict::{Outcome, ProbeResult};

use crate::engine::{Engine, Job, Jobs, compile, trace_failure};
use crate::probe::trace::TraceSettings;

/// Whether a series label's path goes to a virtual address the network rewrites (pure).
fn is_virtual(label: &str) -> bool {
    SeriesLabel::parse(label).is_some_and(|l| {
        matches!(
            l.path,
            "ClusterIP" | "DNSName" | "LoadBalancer" | "NodePort"
        )
    })
}

/// A one-shot of an assignment, compiled.
#[derive(Debug, Clone)]
pub struct OneShotJob {
    pub id: String,
    pub count: u8,
    pub trace: bool,
    pub jobs: Jobs,
}

/// Compiles every one-shot of an assignment, each under the assignment's own address rules.
pub fn compile_one_shots(
    assignment: &Assignment,
    default_source: &str,
) -> Result<Arc<[OneShotJob]>, SpecError> {
    assignment
        .one_shots
        .iter()
        .map(|one: &OneShot| {
            Ok(OneShotJob {
                id: one.id.clone(),
                count: one.count,
                trace: one.trace,
                jobs: compile(&assignment.for_one_shot(one), default_source)?,
            })
        })
        .collect()
}

/// Runs a one-shot: `count` rounds over its targets, one probe interval apart, then a trace
/// of the last attempt that failed on the way (if tracing was asked for).
pub async fn run(
    engine: &Engine,
    agent_name: &str,
    one: &OneShotJob,
    trace_settings: TraceSettings,
) -> OneShotReport {
    let mut attempts = Vec::new();
    let mut on_the_way: Option<(&Job, ProbeResult)> = None;
    let spacing = one
        .jobs
        .iter()
        .map(|j| j.interval)
        .min()
        .unwrap_or_default()
        .min(Duration::from_secs(5));
    for round in 0..one.count.max(1) {
        if round > 0 {
            tokio::time::sleep(spacing).await;
        }
        for job in one.jobs.iter() {
            let result = engine.probe_once(job).await;
            // A virtual address (a ClusterIP, a load balancer) is rewritten on the way: a
            // trace to it says little, so a failed path to a real endpoint is traced first.
            if result.outcome != Outcome::Good
                && result.reason.is_some_and(|r| r.warrants_path_trace())
                && !(on_the_way.is_some() && is_virtual(&job.key.target))
            {
                on_the_way = Some((job, result.clone()));
            }
            attempts.push(OneShotAttempt {
                target: job.key.target.to_string(),
                result,
            });
        }
    }
    let (mut trace, mut trace_error) = (None, None);
    if let (true, Some((job, result))) = (one.trace, on_the_way) {
        match trace_failure(job, &result, trace_settings).await {
            Some(Ok(t)) => trace = Some(t),
            Some(Err(e)) => trace_error = Some(e.to_string()),
            None => {}
        }
    }
    OneShotReport {
        agent_name: agent_name.to_owned(),
        id: one.id.clone(),
        attempts,
        trace,
        trace_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_addresses_are_traced_last() {
        assert!(is_virtual("api/ClusterIP/10.96.0.10:80"));
        assert!(is_virtual("api/DNSName/api.shop.svc.cluster.local.:80"));
        assert!(!is_virtual("api/Endpoint/10.244.1.7:8080"));
        assert!(!is_virtual("api/Pod/10.244.1.7:8080"));
        assert!(!is_virtual("not a label"));
    }
}
