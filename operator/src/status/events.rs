//! Events (`events.k8s.io/v1`) on transitions only, derived from the previous and the new
//! status: an Event says something changed, never that something still holds.
//!
//! Transitions already de-duplicate (a reason is not re-emitted while its condition holds);
//! [`EventLimiter`] additionally bounds a flapping condition to a burst of 5 and then one Event
//! per 5 minutes per (object, reason), like client-go's correlator.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use netslo_crds::v1alpha1::conditions::{reasons, types};
use netslo_crds::v1alpha1::{ConnectivityCheckStatus, FailureScope};

use super::conditions::truncate;
use crate::slo::{MINUTE_MS, UnixMs};

/// Longest Event note the API accepts.
pub const MAX_NOTE: usize = 1024;

/// The bounded set of Event reasons (also metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventReason {
    ObjectiveBreached,
    ObjectiveRecovered,
    BudgetBurning,
    BudgetBurnStopped,
    ExpectedDenyViolated,
    AgentsMissing,
    NoResults,
    ResultsResumed,
    Stalled,
}

impl EventReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::ObjectiveBreached => "ObjectiveBreached",
            EventReason::ObjectiveRecovered => "ObjectiveRecovered",
            EventReason::BudgetBurning => "BudgetBurning",
            EventReason::BudgetBurnStopped => "BudgetBurnStopped",
            EventReason::ExpectedDenyViolated => "ExpectedDenyViolated",
            EventReason::AgentsMissing => "AgentsMissing",
            EventReason::NoResults => "NoResults",
            EventReason::ResultsResumed => "ResultsResumed",
            EventReason::Stalled => "Stalled",
        }
    }

    pub fn event_type(self) -> EventType {
        match self {
            EventReason::ObjectiveRecovered
            | EventReason::BudgetBurnStopped
            | EventReason::ResultsResumed => EventType::Normal,
            _ => EventType::Warning,
        }
    }
}

/// Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One Event to emit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionEvent {
    pub reason: EventReason,
    pub type_: EventType,
    pub note: String,
}

/// The Events for the step from `old` (none for a new check) to `new`.
pub fn transition_events(
    old: Option<&ConnectivityCheckStatus>,
    new: &ConnectivityCheckStatus,
) -> Vec<TransitionEvent> {
    let before = |type_: &str| old.and_then(|s| find(&s.conditions, type_));
    let after = |type_: &str| find(&new.conditions, type_);
    let is = |c: Option<&Condition>, status: &str| c.is_some_and(|c| c.status == status);
    let mut out = Vec::new();
    let mut emit = |reason: EventReason, note: String| {
        out.push(TransitionEvent {
            reason,
            type_: reason.event_type(),
            note: truncate(note, MAX_NOTE),
        });
    };

    let (was, now) = (before(types::SLO_MET), after(types::SLO_MET));
    if is(now, "False") && !is(was, "False") {
        emit(EventReason::ObjectiveBreached, message(now));
    } else if is(now, "True") && is(was, "False") {
        emit(EventReason::ObjectiveRecovered, message(now));
    }

    let (was, now) = (before(types::BUDGET_BURNING), after(types::BUDGET_BURNING));
    if is(now, "True") && (!is(was, "True") || severity(now) > severity(was)) {
        emit(
            EventReason::BudgetBurning,
            format!("{}: {}", reason(now), message(now)),
        );
    } else if is(was, "True") && is(now, "False") {
        emit(EventReason::BudgetBurnStopped, message(now));
    }

    let (was, now) = (before(types::NO_DATA), after(types::NO_DATA));
    let became =
        |r: &str| is(now, "True") && reason(now) == r && !(is(was, "True") && reason(was) == r);
    if became(reasons::AGENTS_MISSING) {
        emit(EventReason::AgentsMissing, message(now));
    } else if became(reasons::NO_RESULTS) {
        emit(EventReason::NoResults, message(now));
    } else if is(was, "True") && is(now, "False") {
        emit(EventReason::ResultsResumed, message(now));
    }

    if let Some(v) = new
        .verdict
        .as_ref()
        .filter(|v| v.scope == FailureScope::PolicyViolation)
    {
        let held = old
            .and_then(|s| s.verdict.as_ref())
            .is_some_and(|v| v.scope == FailureScope::PolicyViolation);
        if !held {
            emit(EventReason::ExpectedDenyViolated, v.summary.clone());
        }
    }

    let (was, now) = (before(types::STALLED), after(types::STALLED));
    if is(now, "True") && (!is(was, "True") || reason(was) != reason(now)) {
        emit(
            EventReason::Stalled,
            format!("{}: {}", reason(now), message(now)),
        );
    }
    out
}

fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn message(c: Option<&Condition>) -> String {
    c.map(|c| c.message.clone()).unwrap_or_default()
}

fn reason(c: Option<&Condition>) -> &str {
    c.map_or("", |c| c.reason.as_str())
}

/// Burn severity, so that an escalation (ticket to page, slow to fast) is a new Event.
fn severity(c: Option<&Condition>) -> u8 {
    match reason(c) {
        reasons::PAGE_FAST_BURN => 3,
        reasons::PAGE_SLOW_BURN => 2,
        reasons::TICKET_BURN => 1,
        _ => 0,
    }
}

/// Per (object, reason): a burst of 5 Events, then one per 5 minutes.
#[derive(Debug, Clone, Default)]
pub struct EventLimiter {
    buckets: HashMap<(String, EventReason), (f64, UnixMs)>,
}

impl EventLimiter {
    const BURST: f64 = 5.0;
    const REFILL_MS: i64 = 5 * MINUTE_MS;

    /// Whether an Event of `reason` on `object` may be emitted at `now` (and counts it if so).
    pub fn admit(&mut self, object: &str, reason: EventReason, now: UnixMs) -> bool {
        let (tokens, at) = self
            .buckets
            .entry((object.to_owned(), reason))
            .or_insert((Self::BURST, now));
        let elapsed = now.saturating_sub(*at).max(0);
        *tokens = (*tokens + elapsed as f64 / Self::REFILL_MS as f64).min(Self::BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that are full again.
    pub fn prune(&mut self, now: UnixMs) {
        self.buckets.retain(|_, (tokens, at)| {
            let refilled = *tokens + now.saturating_sub(*at).max(0) as f64 / Self::REFILL_MS as f64;
            refilled < Self::BURST
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::conditions::condition_time;

    const T0: UnixMs = 1_767_225_600_000;

    fn status(conditions: &[(&str, &str, &str)]) -> ConnectivityCheckStatus {
        ConnectivityCheckStatus {
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| Condition {
                    type_: (*type_).into(),
                    status: (*status).into(),
                    reason: (*reason).into(),
                    message: format!("{reason} message"),
                    observed_generation: Some(1),
                    last_transition_time: condition_time(T0),
                })
                .collect(),
            ..ConnectivityCheckStatus::default()
        }
    }

    #[test]
    fn transitions() {
        let burn = |reason| status(&[(types::BUDGET_BURNING, "True", reason)]);
        let not_burning = status(&[(types::BUDGET_BURNING, "False", reasons::NOT_BURNING)]);
        let no_data = |status_, reason| status(&[(types::NO_DATA, status_, reason)]);
        let stalled = |reason| status(&[(types::STALLED, "True", reason)]);
        let cases: Vec<(
            &str,
            ConnectivityCheckStatus,
            ConnectivityCheckStatus,
            Vec<EventReason>,
        )> = vec![
            (
                "burn starts",
                not_burning.clone(),
                burn(reasons::TICKET_BURN),
                vec![EventReason::BudgetBurning],
            ),
            (
                "escalates",
                burn(reasons::TICKET_BURN),
                burn(reasons::PAGE_FAST_BURN),
                vec![EventReason::BudgetBurning],
            ),
            (
                "eases",
                burn(reasons::PAGE_FAST_BURN),
                burn(reasons::TICKET_BURN),
                vec![],
            ),
            (
                "stops",
                burn(reasons::PAGE_SLOW_BURN),
                not_burning,
                vec![EventReason::BudgetBurnStopped],
            ),
            (
                "silence",
                no_data("False", reasons::RESULTS_FRESH),
                no_data("True", reasons::NO_RESULTS),
                vec![EventReason::NoResults],
            ),
            (
                "silence to missing agents",
                no_data("True", reasons::NO_RESULTS),
                no_data("True", reasons::AGENTS_MISSING),
                vec![EventReason::AgentsMissing],
            ),
            (
                "stall",
                status(&[]),
                stalled(reasons::TARGET_NOT_FOUND),
                vec![EventReason::Stalled],
            ),
            (
                "same stall",
                stalled(reasons::TARGET_NOT_FOUND),
                stalled(reasons::TARGET_NOT_FOUND),
                vec![],
            ),
            (
                "other stall",
                stalled(reasons::TARGET_NOT_FOUND),
                stalled(reasons::INVALID_SPEC),
                vec![EventReason::Stalled],
            ),
        ];
        for (name, old, new, want) in cases {
            let got: Vec<EventReason> = transition_events(Some(&old), &new)
                .into_iter()
                .map(|e| e.reason)
                .collect();
            assert_eq!(got, want, "{name}");
        }
        let e = &transition_events(None, &stalled(reasons::INVALID_SPEC))[0];
        assert_eq!(e.note, "InvalidSpec: InvalidSpec message");
        assert_eq!(e.type_, EventType::Warning);
    }

    #[test]
    fn a_flapping_reason_is_limited_per_object() {
        let mut limiter = EventLimiter::default();
        let admitted = (0..20)
            .filter(|i| limiter.admit("ns/a", EventReason::ObjectiveBreached, T0 + i * 1_000))
            .count();
        assert_eq!(admitted, 5, "burst of 5");
        assert!(
            limiter.admit("ns/a", EventReason::ObjectiveRecovered, T0 + 20_000),
            "other reason"
        );
        assert!(
            limiter.admit("ns/b", EventReason::ObjectiveBreached, T0 + 20_000),
            "other object"
        );
        assert!(!limiter.admit("ns/a", EventReason::ObjectiveBreached, T0 + 60_000));
        assert!(limiter.admit("ns/a", EventReason::ObjectiveBreached, T0 + 6 * MINUTE_MS));
        limiter.prune(T0 + 60 * MINUTE_MS);
        assert!(limiter.buckets.is_empty());
    }
}
