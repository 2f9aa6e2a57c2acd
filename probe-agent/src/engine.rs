//! The probe engine: runs every (check, target) on its own jittered schedule under one
//! concurrency bound, judges each observation and feeds the aggregator (and, optionally, a
//! raw result stream).
//!
//! The engine's input is a `watch` channel of compiled jobs: a static file today, the
//! operator channel later. On each change, jobs whose (check, target) and settings are
//! unchanged keep running undisturbed; others are stopped or started.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::aggregate::{Aggregator, SeriesKey};
use crate::metrics::{ProbeMetrics, SeriesAttributes};
use crate::probe::Probe;
use crate::probe::trace::{TraceError, TraceSettings};
use crate::schedule::{Schedule, stable_hash};
use crate::verdict::{Expectation, Observation, Phases, ProbeResult, judge};
use netslo_protocol::spec::{Assignment, Expect, SpecError};
use netslo_protocol::target::target_field;
use netslo_protocol::time::now_unix_ms;
use netslo_protocol::trace::PathTrace;
use netslo_protocol::verdict::Outcome;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Default source label (the node name) when the assignment names none.
    pub source: String,
    /// Most probes in flight at once.
    pub max_concurrency: usize,
    /// A probe that starts later than this after its scheduled time is `Invalid` (`ProberLate`).
    pub max_lag: Duration,
    /// Aggregation window.
    pub window: Duration,
    /// Most closed buckets held for the result channel.
    pub max_outbox: usize,
    /// OpenTelemetry instruments every judged probe is recorded in.
    pub metrics: Option<Arc<ProbeMetrics>>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            source: "unknown".into(),
            max_concurrency: 256,
            max_lag: Duration::from_millis(5),
            window: Duration::from_secs(10),
            max_outbox: 10_000,
            metrics: None,
        }
    }
}

/// One (check, target) to probe.
#[derive(Debug)]
pub struct Job {
    pub key: SeriesKey,
    pub probe: Probe,
    pub expect: Expectation,
    pub interval: Duration,
    pub timeout: Duration,
    pub jitter: f64,
    pub thresholds_us: Arc<[u64]>,
    /// Hash of everything that defines the job: equal fingerprints need no restart.
    pub fingerprint: u64,
}

/// The compiled form of an assignment.
pub type Jobs = Arc<[Arc<Job>]>;

/// Traces the path of a job whose probe failed on the way (at the IP or TCP layer, or in
/// silence): where it was last seen alive. `None` for any other result, and for a destination
/// the probe could not resolve or may not contact.
pub async fn trace_failure(
    job: &Job,
    result: &ProbeResult,
    settings: TraceSettings,
) -> Option<Result<PathTrace, TraceError>> {
    let reason = result.reason.filter(|r| r.warrants_path_trace())?;
    if result.outcome == Outcome::Good {
        return None;
    }
    tracing::debug!(check = %job.key.check, target = %job.key.target, %reason, "tracing the path");
    job.probe.path_trace(job.timeout, settings).await
}

/// Compiles an assignment into jobs; `default_source` labels series when it names no source.
pub fn compile(a: &Assignment, default_source: &str) -> Result<Jobs, SpecError> {
    a.validate()?;
    let source: Arc<str> = Arc::from(a.source.as_deref().unwrap_or(default_source));
    let base = a.base_address_policy();
    // Assignment-wide inputs of every check's policy: a change restarts the jobs with it.
    let mut sorted_nodes: Vec<_> = base.node_addresses.iter().collect();
    sorted_nodes.sort();
    let guard_inputs = format!("{sorted_nodes:?}{:?}", a.cluster_cidrs);
    let mut jobs = Vec::new();
    for (i, c) in a.checks.iter().enumerate() {
        let check: Arc<str> = Arc::from(c.name.as_str());
        let thresholds: Arc<[u64]> = Arc::from(c.latency_thresholds_us.as_slice());
        let expect = match c.expect {
            Expect::Allow => Expectation::Allow,
            Expect::Deny => Expectation::Deny(c.deny_modes()),
        };
        let mut settings = c.clone();
        settings.targets.clear();
        let settings = serde_json::to_string(&settings)?;
        let policy = Arc::new(c.guard_policy(&base));
        for (j, t) in c.targets.iter().enumerate() {
            let field = target_field(i, j);
            let probe = Probe::from_spec(&c.probe, t, &field, &policy)?;
            jobs.push(Arc::new(Job {
                key: SeriesKey {
                    check: check.clone(),
                    target: Arc::from(t.label()),
                    source: source.clone(),
                },
                probe,
                expect: expect.clone(),
                interval: Duration::from_millis(c.interval_ms),
                timeout: Duration::from_millis(c.timeout_ms),
                jitter: c.jitter,
                thresholds_us: thresholds.clone(),
                fingerprint: stable_hash(&[
                    &settings,
                    &t.address,
                    t.label(),
                    &source,
                    &guard_inputs,
                ]),
            }));
        }
    }
    Ok(jobs.into())
}

/// One judged probe, with its series.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawRecord {
    pub check: Arc<str>,
    pub target: Arc<str>,
    pub source: Arc<str>,
    #[serde(flatten)]
    pub result: ProbeResult,
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Shared {
    cfg: EngineConfig,
    permits: Semaphore,
    aggregator: Mutex<Aggregator>,
    raw: Option<mpsc::Sender<RawRecord>>,
}

impl Shared {
    fn aggregator(&self) -> MutexGuard<'_, Aggregator> {
        self.aggregator.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn probe(&self, job: &Job, scheduled: Instant) -> ProbeResult {
        let Ok(_permit) = self.permits.acquire().await else {
            let obs = Observation::failed(
                Duration::ZERO,
                Phases::default(),
                crate::verdict::FailureReason::ProberError,
            );
            return judge(&obs, &job.expect, Duration::ZERO, self.cfg.max_lag);
        };
        let lag = Instant::now().saturating_duration_since(scheduled);
        if lag > self.cfg.max_lag {
            // Too late to measure truthfully; do not add load by probing anyway.
            let obs = Observation::ok(Duration::ZERO, Phases::default());
            return judge(&obs, &job.expect, lag, self.cfg.max_lag);
        }
        let obs = job.probe.run(job.timeout).await;
        judge(&obs, &job.expect, lag, self.cfg.max_lag)
    }

    async fn record(&self, job: &Job, attributes: Option<&SeriesAttributes>, result: ProbeResult) {
        self.aggregator()
            .record(&job.key, &job.thresholds_us, &result, Instant::now());
        if let (Some(metrics), Some(attributes)) = (&self.cfg.metrics, attributes) {
            metrics.record(&job.key, attributes, &result);
        }
        if let Some(tx) = &self.raw {
            let rec = RawRecord {
                check: job.key.check.clone(),
                target: job.key.target.clone(),
                source: job.key.source.clone(),
                result,
            };
            let _ = tx.send(rec).await;
        }
    }
}

async fn run_job(shared: Arc<Shared>, job: Arc<Job>, start: Instant) {
    let hash = stable_hash(&[&job.key.check, &job.key.target, &job.key.source]);
    let sched = Schedule::new(job.interval, job.jitter, hash);
    let attributes = shared.cfg.metrics.as_ref().map(|m| m.attributes(&job.key));
    let mut last = None;
    loop {
        let (round, at) = sched.next(start, Instant::now(), last);
        last = Some(round);
        tokio::time::sleep_until(at.into()).await;
        let result = shared.probe(&job, at).await;
        shared.record(&job, attributes.as_ref(), result).await;
    }
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Self::build(cfg, None)
    }

    /// An engine that also streams every judged probe (bounded; a slow reader slows the
    /// probes that report to it, never memory).
    pub fn with_raw_results(
        cfg: EngineConfig,
        capacity: usize,
    ) -> (Self, mpsc::Receiver<RawRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Self::build(cfg, Some(tx)), rx)
    }

    fn build(cfg: EngineConfig, raw: Option<mpsc::Sender<RawRecord>>) -> Self {
        let aggregator = Aggregator::new(cfg.window, Instant::now(), now_unix_ms(), cfg.max_outbox);
        Engine {
            shared: Arc::new(Shared {
                permits: Semaphore::new(cfg.max_concurrency.clamp(1, Semaphore::MAX_PERMITS)),
                cfg,
                aggregator: Mutex::new(aggregator),
                raw,
            }),
        }
    }

    /// The aggregator, from which the result channel drains closed buckets.
    pub fn with_aggregator<T>(&self, f: impl FnOnce(&mut Aggregator) -> T) -> T {
        f(&mut self.shared.aggregator())
    }

    /// Runs one probe of a job now, outside any schedule.
    pub async fn probe_once(&self, job: &Job) -> ProbeResult {
        self.shared.probe(job, Instant::now()).await
    }

    /// Runs until `shutdown` completes, following job updates on `jobs`. Open windows are
    /// closed into the outbox on the way out.
    pub async fn run(&self, mut jobs: watch::Receiver<Jobs>, shutdown: impl Future<Output = ()>) {
        let start = Instant::now();
        let mut tasks: HashMap<SeriesKey, (u64, TaskGuard)> = HashMap::new();
        let mut updates_open = true;
        tokio::pin!(shutdown);
        loop {
            if updates_open {
                let current = jobs.borrow_and_update().clone();
                self.apply(&mut tasks, &current, start);
            }
            let next_rotation = self.shared.aggregator().next_rotation(Instant::now());
            tokio::select! {
                () = &mut shutdown => break,
                changed = jobs.changed(), if updates_open => {
                    // A closed channel keeps the last jobs running.
                    updates_open = changed.is_ok();
                }
                () = tokio::time::sleep_until(next_rotation.into()) => {
                    self.shared.aggregator().rotate(Instant::now());
                }
            }
        }
        tasks.clear();
        self.shared.aggregator().flush();
    }

    fn apply(&self, tasks: &mut HashMap<SeriesKey, (u64, TaskGuard)>, jobs: &Jobs, start: Instant) {
        let mut keep = HashMap::with_capacity(jobs.len());
        for job in jobs.iter() {
            let running = tasks
                .remove(&job.key)
                .filter(|(fp, _)| *fp == job.fingerprint);
            let entry = running.unwrap_or_else(|| {
                let handle = tokio::spawn(run_job(self.shared.clone(), job.clone(), start));
                (job.fingerprint, TaskGuard(handle))
            });
            keep.insert(job.key.clone(), entry);
        }
        // Whatever is left in `tasks` was removed from the assignment: dropping aborts it.
        *tasks = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_labels_and_fingerprints() {
        let doc = r#"{"checks":[{"name":"ns/a","probe":{"tcp":{}},
            "targets":[{"address":"127.0.0.1:1"},{"name":"two","address":"127.0.0.1:2"}]}]}"#;
        let a = Assignment::from_json(doc.as_bytes()).unwrap();
        let jobs = compile(&a, "node-1").unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(&*jobs[0].key.target, "127.0.0.1:1");
        assert_eq!(&*jobs[1].key.target, "two");
        assert_eq!(&*jobs[0].key.source, "node-1");
        assert_ne!(jobs[0].fingerprint, jobs[1].fingerprint);
        let again = compile(&a, "node-1").unwrap();
        assert_eq!(jobs[0].fingerprint, again[0].fingerprint);
        let mut changed = a.clone();
        changed.checks[0].interval_ms = 20_000;
        assert_ne!(
            compile(&changed, "node-1").unwrap()[0].fingerprint,
            jobs[0].fingerprint
        );
    }

    #[test]
    fn compile_reports_bad_targets() {
        let doc = r#"{"checks":[{"name":"ns/a","probe":{"icmp":{}},"targets":[{"address":"not-an-ip"}]}]}"#;
        let a = Assignment::from_json(doc.as_bytes()).unwrap();
        let e = compile(&a, "n").unwrap_err();
        assert!(
            e.to_string().contains("checks[0].targets[0].address"),
            "{e}"
        );
    }
}
