//! The operator's OpenTelemetry instruments: every check's SLO as counters and gauges an
//! alerting system can use as they are, and the operator's own health.
//!
//! SLO series are named by the check and the objective only, so a check costs a fixed number
//! of series whatever its targets and sources:
//!
//! | instrument | unit | attributes | series per check |
//! |---|---|---|---|
//! | `netslo.slo.events` (counter) | `{event}` | check, `netslo.objective`, `netslo.outcome` (good, bad) | 2 per objective |
//! | `netslo.slo.objective` (gauge) | `1` | check, objective | 1 per objective |
//! | `netslo.slo.sli` (gauge) | `1` | check, objective | 1 per objective |
//! | `netslo.slo.error_budget.remaining` (gauge) | `1` | check, objective | 1 per objective |
//! | `netslo.slo.burn_rate` (gauge) | `1` | check, objective, `netslo.slo.window` | 1 per objective and alert window |
//! | `netslo.check.state` (gauge, always 1) | `{check}` | check, `netslo.state` (`Ready`'s reason) | 1 |
//! | `netslo.check.verdict` (gauge, always 1) | `{verdict}` | check, `netslo.failure.scope`, `.layer`, `.reason`, `.sources`, `.destinations` | 1 while a verdict holds, else 0 |
//!
//! The counters are cumulative since the operator started (a restart is a counter reset);
//! with the objective's target they are all Sloth, Pyrra or hand-written burn-rate rules
//! need (`config/alerting/`). All are observed at each export: the events from the result
//! store, the figures from what the reconciles last evaluated
//! ([`OperatorMetrics::check_evaluated`]); a deleted check's series end with it. The state
//! and verdict gauges let a dashboard count checks by state and list the failing places
//! (zone pairs, nodes, endpoints) without reading every check's status.
//!
//! Operator health: `netslo.operator.reconciles` (`netslo.result` ok/error),
//! `netslo.operator.reconcile.errors` (`netslo.reason`), `netslo.operator.status.writes`,
//! `netslo.operator.results.ingested`, `netslo.operator.results.duplicate` and
//! `netslo.operator.results.refused` (`netslo.reason`: Unauthenticated, Forbidden,
//! Unassigned, Malformed), all in `{...}` count units.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use netslo_crds::v1alpha1::ConnectivityCheckStatus;
use netslo_crds::v1alpha1::conditions::types;
use netslo_telemetry::attribute::{CHECK_NAME, CHECK_NAMESPACE, FAILURE_REASON, OUTCOME};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter, ObservableCounter, ObservableGauge};

use crate::channel::{ChannelCounters, ChannelStats};
use crate::check_key::CheckKey;
use crate::store::{ResultStore, SloEvents};

pub const OBJECTIVE: &str = "netslo.objective";
pub const SLO_WINDOW: &str = "netslo.slo.window";
pub const RESULT: &str = "netslo.result";
pub const REASON: &str = "netslo.reason";
pub const STATE: &str = "netslo.state";
pub const FAILURE_SCOPE: &str = "netslo.failure.scope";
pub const FAILURE_LAYER: &str = "netslo.failure.layer";
pub const FAILURE_SOURCES: &str = "netslo.failure.sources";
pub const FAILURE_DESTINATIONS: &str = "netslo.failure.destinations";

/// Values of one gauge from an objective's figures: (alert window, value) pairs.
type ReadObjective = fn(&ObjectiveFigures) -> Vec<(Option<String>, f64)>;
/// Values of one counter from the channel's counters: (value, reason) pairs.
type ReadChannel = fn(&ChannelCounters) -> Vec<(u64, Option<&'static str>)>;

/// Each check's figures as its reconcile last evaluated them. Kept with the instruments
/// rather than in the result store: the store holds what agents reported, these figures are
/// the reconcile's conclusions, which it records here as it counts itself, without writing
/// into the store.
#[derive(Debug, Default)]
struct EvaluatedChecks(Mutex<HashMap<CheckKey, CheckFigures>>);

impl EvaluatedChecks {
    fn lock(&self) -> MutexGuard<'_, HashMap<CheckKey, CheckFigures>> {
        // Figures are replaced whole: a panic elsewhere leaves nothing half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn snapshot(&self) -> Vec<(CheckKey, CheckFigures)> {
        self.lock()
            .iter()
            .map(|(check, figures)| (check.clone(), figures.clone()))
            .collect()
    }
}

/// The operator's instruments.
pub struct OperatorMetrics {
    checks: Arc<EvaluatedChecks>,
    reconciles: Counter<u64>,
    reconcile_errors: Counter<u64>,
    status_writes: Counter<u64>,
    _observed_counters: Vec<ObservableCounter<u64>>,
    _observed_gauges: Vec<ObservableGauge<f64>>,
}

impl std::fmt::Debug for OperatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorMetrics").finish_non_exhaustive()
    }
}

impl OperatorMetrics {
    /// Instruments from `meter`, observing `store` and `channel` at each collection.
    pub fn new(meter: &Meter, store: Arc<ResultStore>, channel: Arc<ChannelStats>) -> Self {
        let checks = Arc::new(EvaluatedChecks::default());
        let observed_counters = vec![
            {
                let checks = checks.clone();
                meter
                    .u64_observable_counter("netslo.slo.events")
                    .with_unit("{event}")
                    .with_description("SLO events (valid probes, judged against each objective) by outcome, since the operator started")
                    .with_callback(move |observer| {
                        let events_by_check = store.slo_events();
                        for (check, figures) in checks.snapshot() {
                            let Some(counted) = events_by_check.get(&check) else {
                                continue;
                            };
                            for (objective, good, bad) in events(counted, &figures.objectives) {
                                let attrs = objective_attributes(&check, objective);
                                observer.observe(good, &with(&attrs, KeyValue::new(OUTCOME, "good")));
                                observer.observe(bad, &with(&attrs, KeyValue::new(OUTCOME, "bad")));
                            }
                        }
                    })
                    .build()
            },
            channel_counter(
                meter,
                "netslo.operator.results.ingested",
                "{bucket}",
                "Result buckets accepted from agents and stored",
                channel.clone(),
                |c| vec![(c.accepted, None)],
            ),
            channel_counter(
                meter,
                "netslo.operator.results.duplicate",
                "{bucket}",
                "Result buckets agents sent again, counted once",
                channel.clone(),
                |c| vec![(c.duplicates, None)],
            ),
            channel_counter(
                meter,
                "netslo.operator.results.refused",
                "{request}",
                "Agent requests and result buckets refused, by reason",
                channel.clone(),
                |c| {
                    vec![
                        (c.refused_unauthenticated, Some("Unauthenticated")),
                        (c.refused_forbidden, Some("Forbidden")),
                        (c.refused_unassigned, Some("Unassigned")),
                        (c.refused_malformed, Some("Malformed")),
                    ]
                },
            ),
        ];
        let gauge = |name: &'static str, description: &'static str, read: ReadObjective| {
            let checks = checks.clone();
            meter
                .f64_observable_gauge(name)
                .with_unit("1")
                .with_description(description)
                .with_callback(move |observer| {
                    for (check, figures) in checks.snapshot() {
                        for o in &figures.objectives {
                            let attrs = objective_attributes(&check, o.objective);
                            for (window, value) in read(o) {
                                match window {
                                    Some(w) => observer.observe(
                                        value,
                                        &with(&attrs, KeyValue::new(SLO_WINDOW, w)),
                                    ),
                                    None => observer.observe(value, &attrs),
                                }
                            }
                        }
                    }
                })
                .build()
        };
        let observed_gauges = vec![
            {
                let channel = channel.clone();
                meter
                    .f64_observable_gauge("netslo.operator.agents.connected")
                    .with_unit("{agent}")
                    .with_description("Agents holding a channel to the operator now")
                    .with_callback(move |observer| {
                        let c = channel.snapshot();
                        observer.observe(
                            c.channels_opened.saturating_sub(c.channels_closed) as f64,
                            &[],
                        );
                    })
                    .build()
            },
            gauge(
                "netslo.slo.objective",
                "The objective's target, e.g. 0.999",
                |o| vec![(None, o.target)],
            ),
            gauge(
                "netslo.slo.sli",
                "Good over valid events in the SLO window",
                |o| o.sli.map(|v| (None, v)).into_iter().collect(),
            ),
            gauge(
                "netslo.slo.error_budget.remaining",
                "Share of the SLO window's error budget left (negative: overspent, down to -1)",
                |o| o.budget_remaining.map(|v| (None, v)).into_iter().collect(),
            ),
            gauge(
                "netslo.slo.burn_rate",
                "Error rate over the window divided by the error budget rate (1: spent exactly at the end of the SLO window)",
                |o| {
                    o.burn_rates
                        .iter()
                        .map(|(w, v)| (Some(w.clone()), *v))
                        .collect()
                },
            ),
            {
                let checks = checks.clone();
                meter
                    .f64_observable_gauge("netslo.check.state")
                    .with_unit("{check}")
                    .with_description("1 for each check, labelled with its Ready condition's reason (ObjectivesMet when Ready)")
                    .with_callback(move |observer| {
                        for (check, figures) in checks.snapshot() {
                            if let Some(state) = &figures.state {
                                let attrs = with(&check_attributes(&check), KeyValue::new(STATE, state.clone()));
                                observer.observe(1.0, &attrs);
                            }
                        }
                    })
                    .build()
            },
            {
                let checks = checks.clone();
                meter
                    .f64_observable_gauge("netslo.check.verdict")
                    .with_unit("{verdict}")
                    .with_description("1 for each check's localised verdict while it holds, labelled with the layer, scope, reason and the failing sources and destinations")
                    .with_callback(move |observer| {
                        for (check, figures) in checks.snapshot() {
                            if let Some(verdict) = &figures.verdict {
                                let mut attrs = check_attributes(&check);
                                attrs.extend(verdict.attributes());
                                observer.observe(1.0, &attrs);
                            }
                        }
                    })
                    .build()
            },
        ];
        OperatorMetrics {
            checks,
            reconciles: meter
                .u64_counter("netslo.operator.reconciles")
                .with_unit("{reconcile}")
                .with_description("Reconciles of ConnectivityChecks, by result")
                .build(),
            reconcile_errors: meter
                .u64_counter("netslo.operator.reconcile.errors")
                .with_unit("{error}")
                .with_description("Failed reconciles, by reason")
                .build(),
            status_writes: meter
                .u64_counter("netslo.operator.status.writes")
                .with_unit("{write}")
                .with_description("Status writes to ConnectivityChecks")
                .build(),
            _observed_counters: observed_counters,
            _observed_gauges: observed_gauges,
        }
    }

    /// Instruments from the global meter provider (no-ops while export is off).
    pub fn global(store: Arc<ResultStore>, channel: Arc<ChannelStats>) -> Self {
        Self::new(
            &opentelemetry::global::meter("netslo-operator"),
            store,
            channel,
        )
    }

    /// Counts a reconcile; `error` is the failure's reason.
    pub fn reconciled(&self, error: Option<&'static str>) {
        match error {
            None => self.reconciles.add(1, &[KeyValue::new(RESULT, "ok")]),
            Some(reason) => {
                self.reconciles.add(1, &[KeyValue::new(RESULT, "error")]);
                self.reconcile_errors
                    .add(1, &[KeyValue::new(REASON, reason)]);
            }
        }
    }

    pub fn status_written(&self) {
        self.status_writes.add(1, &[]);
    }

    /// Records a check's figures as its reconcile just evaluated them.
    pub fn check_evaluated(&self, check: &CheckKey, figures: CheckFigures) {
        self.checks.lock().insert(check.clone(), figures);
    }

    /// Ends a deleted check's series.
    pub fn forget(&self, check: &CheckKey) {
        self.checks.lock().remove(check);
    }
}

/// (objective, good, bad) for each objective the check has.
fn events(counted: &SloEvents, objectives: &[ObjectiveFigures]) -> Vec<(&'static str, u64, u64)> {
    objectives
        .iter()
        .map(|o| match o.objective {
            "latency" => (o.objective, counted.latency_good, counted.latency_bad),
            _ => (
                o.objective,
                counted.availability_good,
                counted.availability_bad,
            ),
        })
        .collect()
}

fn check_attributes(check: &CheckKey) -> Vec<KeyValue> {
    vec![
        KeyValue::new(CHECK_NAMESPACE, check.namespace.clone()),
        KeyValue::new(CHECK_NAME, check.name.clone()),
    ]
}

fn objective_attributes(check: &CheckKey, objective: &'static str) -> Vec<KeyValue> {
    with(
        &check_attributes(check),
        KeyValue::new(OBJECTIVE, objective),
    )
}

fn with(attrs: &[KeyValue], extra: KeyValue) -> Vec<KeyValue> {
    let mut all = attrs.to_vec();
    all.push(extra);
    all
}

/// A check's figures as its reconcile last evaluated them.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckFigures {
    pub objectives: Vec<ObjectiveFigures>,
    /// `Ready`'s reason (ObjectivesMet, ObjectiveNotMet, AgentsPending, ...).
    pub state: Option<String>,
    pub verdict: Option<VerdictFigures>,
}

impl CheckFigures {
    /// The figures of a status about to be written, and its objectives' (pure).
    pub fn of(status: &ConnectivityCheckStatus, objectives: Vec<ObjectiveFigures>) -> Self {
        let state = status
            .conditions
            .iter()
            .find(|c| c.type_ == types::READY)
            .map(|c| c.reason.clone());
        let verdict = status.verdict.as_ref().map(|v| VerdictFigures {
            scope: variant_name(&v.scope),
            layer: variant_name(&v.layer),
            reason: v.reason.clone(),
            sources: v.sources.join(","),
            destinations: v.destinations.join(","),
        });
        CheckFigures {
            objectives,
            state,
            verdict,
        }
    }
}

/// A localised verdict as attribute values: the status' fields, the lists comma-joined
/// (at most 8 each, so a verdict is one series).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictFigures {
    pub scope: String,
    pub layer: String,
    pub reason: String,
    pub sources: String,
    pub destinations: String,
}

impl VerdictFigures {
    fn attributes(&self) -> [KeyValue; 5] {
        [
            KeyValue::new(FAILURE_SCOPE, self.scope.clone()),
            KeyValue::new(FAILURE_LAYER, self.layer.clone()),
            KeyValue::new(FAILURE_REASON, self.reason.clone()),
            KeyValue::new(FAILURE_SOURCES, self.sources.clone()),
            KeyValue::new(FAILURE_DESTINATIONS, self.destinations.clone()),
        ]
    }
}

/// The name an API enum is written with in status ("ZonePair", "TCP").
fn variant_name(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// One objective's figures as last evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveFigures {
    /// `availability` or `latency`.
    pub objective: &'static str,
    /// The target, e.g. 0.999.
    pub target: f64,
    /// Over the SLO window; `None` without valid events.
    pub sli: Option<f64>,
    pub budget_remaining: Option<f64>,
    /// Per alert window ("5m", "1h", ...): the burn rate, where there were events.
    pub burn_rates: Vec<(String, f64)>,
}

impl ObjectiveFigures {
    /// The figures of each objective of an evaluation (pure).
    pub fn of(evaluation: &crate::slo::evaluate::Evaluation) -> Vec<ObjectiveFigures> {
        evaluation
            .objectives
            .iter()
            .map(|o| ObjectiveFigures {
                objective: crate::status::conditions::objective_name(o.name),
                target: o.target.as_f64(),
                sli: o.sli().map(|f| f.num as f64 / f.den as f64),
                budget_remaining: o.budget_remaining(),
                burn_rates: o
                    .burn_rates
                    .iter()
                    .filter_map(|w| {
                        Some((crate::slo::format_window(w.window_ms), w.rate(o.target)?))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// A counter observed from the channel's counters: `read` picks (value, reason) pairs.
fn channel_counter(
    meter: &Meter,
    name: &'static str,
    unit: &'static str,
    description: &'static str,
    channel: Arc<ChannelStats>,
    read: ReadChannel,
) -> ObservableCounter<u64> {
    meter
        .u64_observable_counter(name)
        .with_unit(unit)
        .with_description(description)
        .with_callback(move |observer| {
            for (value, reason) in read(&channel.snapshot()) {
                match reason {
                    Some(r) => observer.observe(value, &[KeyValue::new(REASON, r)]),
                    None => observer.observe(value, &[]),
                }
            }
        })
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_reads_as_its_ready_reason_and_its_verdict_as_places() {
        let status: ConnectivityCheckStatus = serde_json::from_value(serde_json::json!({
            "observedGeneration": 2,
            "conditions": [
                {"type": "SLOMet", "status": "False", "reason": "BudgetExhausted", "message": "",
                 "lastTransitionTime": "2026-12-07T10:00:00Z"},
                {"type": "Ready", "status": "False", "reason": "ObjectiveNotMet", "message": "",
                 "lastTransitionTime": "2026-12-07T10:00:00Z"},
            ],
            "verdict": {"layer": "TCP", "scope": "ZonePair", "reason": "TCPTimeout",
                        "summary": "zone zone-b to zone zone-a fails (TCPTimeout)",
                        "sources": ["zone-b"], "destinations": ["zone-a", "zone-c"]},
        }))
        .unwrap();
        let figures = CheckFigures::of(&status, Vec::new());
        assert_eq!(figures.state.as_deref(), Some("ObjectiveNotMet"));
        let verdict = figures.verdict.unwrap();
        let attributes: Vec<(String, String)> = verdict
            .attributes()
            .iter()
            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
            .collect();
        let expected = [
            ("netslo.failure.scope", "ZonePair"),
            ("netslo.failure.layer", "TCP"),
            ("netslo.failure.reason", "TCPTimeout"),
            ("netslo.failure.sources", "zone-b"),
            ("netslo.failure.destinations", "zone-a,zone-c"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(attributes, expected);

        // A status without conditions (not judged yet) has no state; none without a verdict.
        let unjudged = CheckFigures::of(&ConnectivityCheckStatus::default(), Vec::new());
        assert_eq!((unjudged.state, unjudged.verdict), (None, None));
    }
}
