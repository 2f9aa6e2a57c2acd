//! Conditions from an evaluation and the setup facts the reconciler gathered.
//!
//! * `Ready=True` exactly when the check is set up, agents report, and every objective is met;
//!   otherwise `False` with the first reason that applies, in this order: Suspended, the stall
//!   reason, AgentsPending, AwaitingData, ExpectedDenyViolated, ObjectiveNotMet.
//! * `SLOMet`, `BudgetBurning`, `NoData` describe the figures.
//! * `Reconciling` and `Stalled` (kstatus' abnormal-true conditions) are present only while true.
//!
//! Messages are built from quantised figures only, so they change when a status figure
//! changes, never on their own. `lastTransitionTime` is kept from the previous condition of the
//! same type unless its status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use netslo_crds::v1alpha1::conditions::{reasons, types};
use netslo_crds::v1alpha1::{AgentCounts, AlertSeverity, FailureScope, ObjectiveName, Verdict};

use super::quantise;
use crate::slo::evaluate::{Evaluation, ObjectiveEvaluation};
use crate::slo::{UnixMs, format_window};

/// Why the spec cannot be acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StallReason {
    InvalidSpec,
    TargetNotFound,
    TargetNotPermitted,
    SidecarMissing,
}

impl StallReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StallReason::InvalidSpec => reasons::INVALID_SPEC,
            StallReason::TargetNotFound => reasons::TARGET_NOT_FOUND,
            StallReason::TargetNotPermitted => reasons::TARGET_NOT_PERMITTED,
            StallReason::SidecarMissing => reasons::SIDECAR_MISSING,
        }
    }
}

/// A stall with a message naming what is missing or wrong ("Service shop/cart not found").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub reason: StallReason,
    pub message: String,
}

/// What the reconciler knows about the check's setup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    pub generation: Option<i64>,
    pub suspended: bool,
    pub stalled: Option<Stall>,
    pub agents: AgentCounts,
    /// The agent workload is still rolling out (new pods not yet ready).
    pub agents_rolling_out: bool,
    /// Whether silent agents count as missing: only once the check has had results for
    /// noDataAfter. Before that its agents are starting (a new check, a fresh install) and
    /// `Ready` says they are pending; calling them missing would page on every `kubectl apply`.
    pub agents_due: bool,
}

/// Longest condition message: enough for two objective lines or a stall naming its object,
/// short enough that six conditions fit the status size budget.
pub const MAX_MESSAGE: usize = 256;

const STATUS_TRUE: &str = "True";
const STATUS_FALSE: &str = "False";
const STATUS_UNKNOWN: &str = "Unknown";

/// The desired conditions, in a fixed order. `evaluation` is `None` when there is nothing to
/// evaluate (a stalled spec).
pub fn desired_conditions(
    setup: &Setup,
    evaluation: Option<&Evaluation>,
    verdict: Option<&Verdict>,
    previous: &[Condition],
    now: UnixMs,
) -> Vec<Condition> {
    let builder = Builder {
        generation: setup.generation,
        previous,
        now: condition_time(now),
    };
    let mut out = Vec::with_capacity(6);

    let (ready_status, ready_reason, ready_message) = ready(setup, evaluation, verdict);
    out.push(builder.build(types::READY, ready_status, ready_reason, ready_message));

    if let Some(eval) = evaluation {
        let (status, reason, message) = slo_met(eval);
        out.push(builder.build(types::SLO_MET, status, reason, message));
        let (status, reason, message) = budget_burning(eval);
        out.push(builder.build(types::BUDGET_BURNING, status, reason, message));
        let (status, reason, message) = no_data(eval, setup);
        out.push(builder.build(types::NO_DATA, status, reason, message));
    }
    if setup.stalled.is_none() && !setup.suspended {
        let reconciling = if setup.agents_rolling_out {
            Some((
                reasons::ROLLING_OUT_AGENTS,
                format!(
                    "agents rolling out: {} of {} reporting",
                    setup.agents.reporting, setup.agents.desired
                ),
            ))
        } else if evaluation.is_some_and(|e| e.young) {
            Some((
                reasons::WINDOW_TOO_YOUNG,
                "waiting for the first results to cover the shortest alert window".to_owned(),
            ))
        } else {
            None
        };
        if let Some((reason, message)) = reconciling {
            out.push(builder.build(types::RECONCILING, STATUS_TRUE, reason, message));
        }
    }
    if let Some(stall) = &setup.stalled {
        out.push(builder.build(
            types::STALLED,
            STATUS_TRUE,
            stall.reason.as_str(),
            stall.message.clone(),
        ));
    }
    out
}

/// Condition timestamps have second precision on the wire; truncating here keeps a condition
/// read back from the API server equal to the one built.
pub fn condition_time(now: UnixMs) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(now.div_euclid(1_000)).unwrap_or_default())
}

struct Builder<'a> {
    generation: Option<i64>,
    previous: &'a [Condition],
    now: Time,
}

impl Builder<'_> {
    fn build(&self, type_: &str, status: &str, reason: &str, message: String) -> Condition {
        let last_transition_time = self
            .previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: truncate(message, MAX_MESSAGE),
            observed_generation: self.generation,
            last_transition_time,
        }
    }
}

fn ready(
    setup: &Setup,
    evaluation: Option<&Evaluation>,
    verdict: Option<&Verdict>,
) -> (&'static str, &'static str, String) {
    let not_ready = |reason, message: String| (STATUS_FALSE, reason, message);
    if setup.suspended {
        return not_ready(reasons::SUSPENDED, "probing is suspended".into());
    }
    if let Some(stall) = &setup.stalled {
        return not_ready(stall.reason.as_str(), stall.message.clone());
    }
    let agents = setup.agents;
    // No agent desired while results still arrive is an agent being replaced (a mesh agent's
    // pod deleted before its successor registers): not pending until its results go stale.
    if setup.agents_rolling_out || agents.reporting == 0 {
        return not_ready(
            reasons::AGENTS_PENDING,
            format!(
                "{} of {} agents reporting",
                agents.reporting, agents.desired
            ),
        );
    }
    let Some(eval) = evaluation else {
        return not_ready(reasons::AWAITING_DATA, "no evaluation yet".into());
    };
    if eval.no_data {
        return not_ready(reasons::AWAITING_DATA, "no recent results".into());
    }
    if eval.young || eval.objectives.iter().all(|o| o.met().is_none()) {
        return not_ready(
            reasons::AWAITING_DATA,
            "too few results to judge yet".into(),
        );
    }
    if let Some(v) = verdict.filter(|v| v.scope == FailureScope::PolicyViolation) {
        return not_ready(reasons::EXPECTED_DENY_VIOLATED, v.summary.clone());
    }
    if let Some(missed) = eval.objectives.iter().find(|o| o.met() == Some(false)) {
        return not_ready(reasons::OBJECTIVE_NOT_MET, objective_line(missed));
    }
    if eval.all_met() {
        let lines: Vec<String> = eval.objectives.iter().map(objective_line).collect();
        return (STATUS_TRUE, reasons::OBJECTIVES_MET, lines.join("; "));
    }
    not_ready(
        reasons::AWAITING_DATA,
        "an objective has no data yet".into(),
    )
}

fn slo_met(eval: &Evaluation) -> (&'static str, &'static str, String) {
    if let Some(missed) = eval.objectives.iter().find(|o| o.met() == Some(false)) {
        return (
            STATUS_FALSE,
            reasons::BUDGET_EXHAUSTED,
            objective_line(missed),
        );
    }
    if eval.all_met() {
        let lines: Vec<String> = eval.objectives.iter().map(objective_line).collect();
        return (STATUS_TRUE, reasons::WITHIN_OBJECTIVE, lines.join("; "));
    }
    (
        STATUS_UNKNOWN,
        reasons::AWAITING_DATA,
        "no data in the window yet".into(),
    )
}

fn budget_burning(eval: &Evaluation) -> (&'static str, &'static str, String) {
    // Pages outrank tickets; among pages the one with the shortest long window is the fast burn.
    let fastest_page_long = eval.objectives.first().and_then(|o| {
        o.alerts
            .iter()
            .filter(|a| a.window.severity == AlertSeverity::Page)
            .map(|a| a.window.long_ms)
            .min()
    });
    for severity in [AlertSeverity::Page, AlertSeverity::Ticket] {
        let firing = eval
            .objectives
            .iter()
            .filter_map(|o| o.firing(severity).map(|a| (o, a)))
            .max_by(|(_, a), (_, b)| a.factor.total_cmp(&b.factor));
        if let Some((objective, alert)) = firing {
            let reason = match severity {
                AlertSeverity::Ticket => reasons::TICKET_BURN,
                AlertSeverity::Page if Some(alert.window.long_ms) == fastest_page_long => {
                    reasons::PAGE_FAST_BURN
                }
                AlertSeverity::Page => reasons::PAGE_SLOW_BURN,
            };
            let rate = |w: &crate::slo::evaluate::WindowBurn| {
                w.rate_exact(objective.target)
                    .map_or_else(|| "0.0".into(), |(n, d)| quantise::tenths(n, d))
            };
            let message = format!(
                "{}: {}x over {} and {}x over {} (alert at {:.1}x)",
                objective_name(objective.name),
                rate(&alert.long),
                format_window(alert.window.long_ms),
                rate(&alert.short),
                format_window(alert.window.short_ms),
                alert.factor,
            );
            return (STATUS_TRUE, reason, message);
        }
    }
    if eval.objectives.iter().all(|o| o.met().is_none()) {
        return (
            STATUS_UNKNOWN,
            reasons::AWAITING_DATA,
            "no data in the window yet".into(),
        );
    }
    (
        STATUS_FALSE,
        reasons::NOT_BURNING,
        "no burn-rate alert firing".into(),
    )
}

fn no_data(eval: &Evaluation, setup: &Setup) -> (&'static str, &'static str, String) {
    let agents = setup.agents;
    if eval.no_data {
        return (
            STATUS_TRUE,
            reasons::NO_RESULTS,
            "no results within noDataAfter".into(),
        );
    }
    if setup.agents_due && agents.reporting < agents.desired {
        return (
            STATUS_TRUE,
            reasons::AGENTS_MISSING,
            format!(
                "{} of {} agents reporting",
                agents.reporting, agents.desired
            ),
        );
    }
    (
        STATUS_FALSE,
        reasons::RESULTS_FRESH,
        format!(
            "{} of {} agents reporting",
            agents.reporting, agents.desired
        ),
    )
}

/// "availability 0.99953 (target 0.999, budget 0.53)".
fn objective_line(o: &ObjectiveEvaluation) -> String {
    let sli = o.sli().map_or_else(
        || "no data".into(),
        |s| quantise::ratio(s, quantise::SLI_DIGITS),
    );
    let budget = o.budget_remaining_exact().map_or_else(
        || "-".into(),
        |(n, d)| quantise::decimals_down(n, d, quantise::BUDGET_DECIMALS),
    );
    format!(
        "{} {sli} (target {}, budget {budget})",
        objective_name(o.name),
        quantise::ppm(o.target)
    )
}

pub fn objective_name(name: ObjectiveName) -> &'static str {
    match name {
        ObjectiveName::Availability => "availability",
        ObjectiveName::Latency => "latency",
    }
}

/// Cuts a string to at most `max` bytes on a character boundary.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
