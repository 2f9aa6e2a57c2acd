//! Events (`events.k8s.io/v1`) on transitions only, derived from the previous and the new
//! status: an Event says something changed, never that something still holds.
//!
//! Transitions already de-duplicate (a reason is not re-emitted while its condition holds);
//! [`EventLimiter`] additionally bounds a flapping condition to a burst of 5 and then one Event
//! per 5 minutes per (object, reason), like client-go's correlator.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use netslo_crds::v1alpha1::conditions::{reasons, types};
use netslo_crds::v1alpha1::{ConnectivityCheckStatus, FailureScope, Verdict};

use super::conditions::truncate;
use super::verdict::same_place;
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
    /// A failure is localised: a verdict appeared.
    VerdictNamed,
    /// The verdict names another place (or layer) now.
    VerdictChanged,
    /// No failure is localised any more.
    VerdictCleared,
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
            EventReason::VerdictNamed => "VerdictNamed",
            EventReason::VerdictChanged => "VerdictChanged",
            EventReason::VerdictCleared => "VerdictCleared",
        }
    }

    /// Whether Events of this reason say where (a verdict's place), so that two of them are
    /// two different Events, never one counted twice.
    pub fn names_a_place(self) -> bool {
        matches!(
            self,
            EventReason::VerdictNamed | EventReason::VerdictChanged | EventReason::VerdictCleared
        )
    }

    pub fn event_type(self) -> EventType {
        match self {
            EventReason::ObjectiveRecovered
            | EventReason::BudgetBurnStopped
            | EventReason::ResultsResumed
            | EventReason::VerdictCleared => EventType::Normal,
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

    // The verdict: when it appears, names another place or layer, or clears. A policy
    // violation has its own reason: it is a security finding, not a connectivity fault.
    let (was, now) = (old.and_then(|s| s.verdict.as_ref()), new.verdict.as_ref());
    let violation = |v: &Verdict| v.scope == FailureScope::PolicyViolation;
    match (was, now) {
        (_, Some(v)) if violation(v) && !was.is_some_and(violation) => {
            emit(EventReason::ExpectedDenyViolated, v.summary.clone());
        }
        (None, Some(v)) => emit(EventReason::VerdictNamed, verdict_note(v)),
        (Some(w), Some(v)) if !same_verdict(w, v) => {
            emit(EventReason::VerdictChanged, verdict_note(v));
        }
        (Some(w), None) => emit(
            EventReason::VerdictCleared,
            format!("no failure localised any more (was {})", place(w)),
        ),
        _ => {}
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

/// The same verdict as far as Events go: the place, layer and reason (the summary's figures
/// move while a fault holds; its sources are the place only for nodes and zones).
fn same_verdict(a: &Verdict, b: &Verdict) -> bool {
    same_place(a, b) && a.layer == b.layer && a.reason == b.reason
}

/// "Endpoint 10.0.1.7:8080, TCP TCPTimeout": scope, destinations (and the sources, where they
/// are the place), layer and reason.
fn place(v: &Verdict) -> String {
    let mut place = format!("{:?} {}", v.scope, v.destinations.join(","));
    if matches!(v.scope, FailureScope::SourceNode | FailureScope::ZonePair) {
        place = format!(
            "{:?} from {} to {}",
            v.scope,
            v.sources.join(","),
            v.destinations.join(",")
        );
    }
    format!("{place}, {:?} {}", v.layer, v.reason)
}

fn verdict_note(v: &Verdict) -> String {
    format!("{}: {}", place(v), v.summary)
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

    fn with_verdict(
        scope: FailureScope,
        destination: &str,
        reason: &str,
        summary: &str,
    ) -> ConnectivityCheckStatus {
        ConnectivityCheckStatus {
            verdict: Some(Verdict {
                layer: netslo_crds::v1alpha1::Layer::TCP,
                scope,
                reason: reason.into(),
                summary: summary.into(),
                sources: vec!["node-a".into(), "node-b".into()],
                destinations: vec![destination.into()],
                since: Some(condition_time(T0)),
            }),
            ..ConnectivityCheckStatus::default()
        }
    }

    #[test]
    fn verdict_events_name_the_place_when_it_appears_moves_or_clears() {
        let none = ConnectivityCheckStatus::default();
        let endpoint = |summary| {
            with_verdict(
                FailureScope::Endpoint,
                "10.0.1.7:8080",
                "TCPTimeout",
                summary,
            )
        };
        let first = endpoint(
            "endpoint 10.0.1.7:8080 of web fails 20% of probes from 2/2 sources (TCPTimeout)",
        );
        let later = endpoint(
            "endpoint 10.0.1.7:8080 of web fails 31% of probes from 2/2 sources (TCPTimeout)",
        );
        let other = with_verdict(
            FailureScope::Endpoint,
            "10.0.2.9:8080",
            "TCPTimeout",
            "endpoint 10.0.2.9:8080 ...",
        );
        let refused = with_verdict(
            FailureScope::Endpoint,
            "10.0.2.9:8080",
            "TCPRefused",
            "endpoint 10.0.2.9:8080 ...",
        );
        let violation = with_verdict(
            FailureScope::PolicyViolation,
            "db",
            "UnexpectedlyReachable",
            "Deny target db ...",
        );
        let events = |old: &ConnectivityCheckStatus, new: &ConnectivityCheckStatus| {
            transition_events(Some(old), new)
                .into_iter()
                .map(|e| (e.reason, e.type_, e.note))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            events(&none, &first),
            [(
                EventReason::VerdictNamed,
                EventType::Warning,
                "Endpoint 10.0.1.7:8080, TCP TCPTimeout: endpoint 10.0.1.7:8080 of web fails 20% of probes from 2/2 sources (TCPTimeout)".to_string()
            )]
        );
        assert_eq!(
            events(&first, &later),
            [],
            "the same place with new figures"
        );
        assert_eq!(events(&first, &other)[0].0, EventReason::VerdictChanged);
        assert_eq!(
            events(&other, &refused)[0].0,
            EventReason::VerdictChanged,
            "another reason"
        );
        assert_eq!(
            events(&later, &none),
            [(
                EventReason::VerdictCleared,
                EventType::Normal,
                "no failure localised any more (was Endpoint 10.0.1.7:8080, TCP TCPTimeout)"
                    .to_string()
            )]
        );
        assert_eq!(
            events(&first, &violation)[0].0,
            EventReason::ExpectedDenyViolated
        );
        assert_eq!(events(&violation, &violation), []);
        assert_eq!(events(&violation, &none)[0].0, EventReason::VerdictCleared);
        let node = with_verdict(
            FailureScope::SourceNode,
            "api",
            "HostUnreachable",
            "every target ...",
        );
        assert!(
            events(&none, &node)[0]
                .2
                .starts_with("SourceNode from node-a,node-b to api, TCP HostUnreachable: ")
        );
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
