//! The desired `ConnectivityCheckStatus`, and whether it is worth writing. Pure: evaluation,
//! setup facts, failure matrix, previous status and `now` in; status, Events and pacing
//! decisions out.
//!
//! * [`quantise`]: figures as stable decimal strings;
//! * [`conditions`]: Ready, SLOMet, BudgetBurning, NoData, Reconciling, Stalled;
//! * [`verdict`]: the localised failure and per-target summaries;
//! * [`events`]: transition Events;
//! * [`pacing`]: per-object and global write limits.
//!
//! The reconciler's status step: `desired_status` → `material_change` → `WritePacer::request`
//! → server-side apply of the status → `transition_events` (through `EventLimiter`).

pub mod conditions;
pub mod events;
pub mod pacing;
pub mod quantise;
pub mod verdict;

use netslo_crds::v1alpha1::conditions::types;
use netslo_crds::v1alpha1::{ConnectivityCheckStatus, MeshCoverage, TargetSummary};

use self::conditions::{Setup, desired_conditions, truncate};
use self::verdict::{Cell, TargetStats, localise, target_summaries};
use crate::slo::UnixMs;
use crate::slo::evaluate::Evaluation;

/// Status must stay below this size (serialised JSON) whatever the cluster's size.
pub const MAX_STATUS_BYTES: usize = 4096;

/// Latency percentiles alone justify a write only when one moves by more than this fraction:
/// they are informational, and jitter of a few percent moves them on every evaluation.
pub const LATENCY_WRITE_TOLERANCE: f64 = 0.25;
/// ...and by more than this many microseconds: on a busy node a p99 of a few hundred
/// microseconds doubles and halves from one evaluation to the next, and no reader acts on it.
pub const LATENCY_WRITE_FLOOR_US: f64 = 1_000.0;
/// The same for a target's failure fraction (1 − success ratio) and for burn rates: a
/// steady 0.3% loss reads 0.9961 one minute and 0.9965 the next, and a 5-minute burn rate
/// of 0.3 becomes 0.4. Readers act on thresholds, which conditions carry; appearing or
/// vanishing failures on a target (its ratio leaving or reaching 1) always count.
pub const FIGURE_WRITE_TOLERANCE: f64 = 0.25;
/// Burn rates closer than this never justify a write alone.
pub const BURN_RATE_WRITE_FLOOR: f64 = 0.5;

/// Everything the status is built from, besides the previous status and `now`.
#[derive(Debug, Clone)]
pub struct StatusInput<'a> {
    pub setup: &'a Setup,
    /// `None` when there is nothing to evaluate (a stalled spec).
    pub evaluation: Option<&'a Evaluation>,
    /// Failure matrix of the current evaluation period.
    pub cells: &'a [Cell],
    /// Per-target results of the last hour.
    pub targets: &'a [TargetStats],
    pub mesh: Option<MeshCoverage>,
}

/// The status to apply. A suspended check keeps its last figures; only Ready (Suspended),
/// the agent counts and the generation move.
pub fn desired_status(
    input: &StatusInput<'_>,
    previous: Option<&ConnectivityCheckStatus>,
    now: UnixMs,
) -> ConnectivityCheckStatus {
    let setup = input.setup;
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    let mut status = if setup.suspended {
        let kept = previous.cloned().unwrap_or_default();
        // Ready turns False/Suspended (and Stalled follows the setup); the conditions that
        // describe the figures stay as they were, like the figures themselves.
        let mut conditions = desired_conditions(setup, None, None, previous_conditions, now);
        let figures = [types::SLO_MET, types::BUDGET_BURNING, types::NO_DATA];
        conditions.extend(
            kept.conditions
                .iter()
                .filter(|c| figures.contains(&c.type_.as_str()))
                .cloned(),
        );
        ConnectivityCheckStatus {
            observed_generation: setup.generation,
            conditions,
            agents: Some(setup.agents),
            ..kept
        }
    } else {
        // With a latency objective, a place answering later than its threshold is named as
        // it happens, as an unreachable one is: not once the window's SLI has fallen (after
        // a healthy week that takes hours), and whether or not the objective still holds.
        let slow_over_us = input
            .evaluation
            .and_then(|e| e.objectives.iter().find_map(|o| o.threshold_us));
        let verdict = localise(
            input.cells,
            previous.and_then(|p| p.verdict.as_ref()),
            slow_over_us,
            now,
        );
        ConnectivityCheckStatus {
            observed_generation: setup.generation,
            conditions: desired_conditions(
                setup,
                input.evaluation,
                verdict.as_ref(),
                previous_conditions,
                now,
            ),
            slo: input.evaluation.map(quantise::slo_status),
            verdict,
            targets: target_summaries(input.targets),
            agents: Some(setup.agents),
            mesh: input.mesh.clone(),
        }
    };
    fit_to_size(&mut status);
    status
}

/// Serialised size of a status.
pub fn status_size(status: &ConnectivityCheckStatus) -> usize {
    serde_json::to_vec(status).map_or(usize::MAX, |v| v.len())
}

/// Sheds the least important detail until the status fits [`MAX_STATUS_BYTES`]: target
/// summaries from the healthiest end, then the verdict's place lists, then long messages.
fn fit_to_size(status: &mut ConnectivityCheckStatus) {
    while status_size(status) > MAX_STATUS_BYTES && !status.targets.is_empty() {
        status.targets.pop();
    }
    if status_size(status) > MAX_STATUS_BYTES
        && let Some(v) = status.verdict.as_mut()
    {
        v.sources.truncate(2);
        v.destinations.truncate(2);
    }
    if status_size(status) > MAX_STATUS_BYTES {
        for c in &mut status.conditions {
            c.message = truncate(std::mem::take(&mut c.message), 96);
        }
    }
}

/// Whether writing `new` over `old` tells a reader anything: any difference in figures,
/// conditions, verdict, agents or mesh coverage counts, except latency percentiles that moved
/// by less than [`LATENCY_WRITE_TOLERANCE`] or [`LATENCY_WRITE_FLOOR_US`]. Condition order
/// does not matter.
pub fn material_change(
    old: Option<&ConnectivityCheckStatus>,
    new: &ConnectivityCheckStatus,
) -> bool {
    let Some(old) = old else {
        return true;
    };
    let normalise = |s: &ConnectivityCheckStatus| {
        let mut s = s.clone();
        s.conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        s
    };
    let (old, mut new) = (normalise(old), normalise(new));
    if old.targets.len() == new.targets.len() {
        for (o, n) in old.targets.iter().zip(new.targets.iter_mut()) {
            if !same_place(o, n) {
                continue;
            }
            if latency_close(o, n) {
                n.latency = o.latency.clone();
            }
            let failure =
                |ratio: &Option<String>| ratio.as_deref().and_then(parse_fraction).map(|r| 1.0 - r);
            if figure_close(failure(&o.success_ratio), failure(&n.success_ratio)) {
                n.success_ratio = o.success_ratio.clone();
            }
        }
    }
    if let (Some(o), Some(n)) = (&old.slo, &mut new.slo)
        && o.objectives.len() == n.objectives.len()
    {
        for (o, n) in o.objectives.iter().zip(n.objectives.iter_mut()) {
            if o.name != n.name || o.burn_rates.len() != n.burn_rates.len() {
                continue;
            }
            for (o, n) in o.burn_rates.iter().zip(n.burn_rates.iter_mut()) {
                if o.window == n.window
                    && rate_close(parse_fraction(&o.rate), parse_fraction(&n.rate))
                {
                    n.rate = o.rate.clone();
                }
            }
        }
    }
    old != new
}

/// Whether a condition's status flipped (or one appeared) or the verdict changed between
/// `old` and `new`: what an operator on call is waiting for, written without waiting out
/// the per-check floor. A fault's first write often carries a partial picture (the first
/// sources to report); the settled verdict must not wait 30 s behind it.
pub fn urgent_change(old: Option<&ConnectivityCheckStatus>, new: &ConnectivityCheckStatus) -> bool {
    let Some(old) = old else {
        return true;
    };
    old.verdict != new.verdict
        || new.conditions.iter().any(|n| {
            old.conditions
                .iter()
                .find(|o| o.type_ == n.type_)
                .is_none_or(|o| o.status != n.status)
        })
}

fn parse_fraction(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Burn rates within [`FIGURE_WRITE_TOLERANCE`] of each other or within
/// [`BURN_RATE_WRITE_FLOOR`]: below a rate of one the budget lasts the window, and a few
/// failures more or less in a 5-minute window swing the rate by tenths.
fn rate_close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            (a - b).abs() <= (FIGURE_WRITE_TOLERANCE * a.max(b)).max(BURN_RATE_WRITE_FLOOR)
        }
        _ => false,
    }
}

/// Two non-negative figures within [`FIGURE_WRITE_TOLERANCE`] of each other, neither zero
/// unless both are.
fn figure_close(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if a == 0.0 || b == 0.0 => a == b,
        (Some(a), Some(b)) => (a - b).abs() <= FIGURE_WRITE_TOLERANCE * a.max(b),
        _ => false,
    }
}

fn same_place(a: &TargetSummary, b: &TargetSummary) -> bool {
    a.name == b.name && a.via == b.via && a.endpoint == b.endpoint && a.locality == b.locality
}

fn latency_close(a: &TargetSummary, b: &TargetSummary) -> bool {
    let (Some(a), Some(b)) = (&a.latency, &b.latency) else {
        return false;
    };
    let close = |x: &str, y: &str| match (
        quantise::parse_duration_us(x),
        quantise::parse_duration_us(y),
    ) {
        (Some(x), Some(y)) => {
            let (x, y) = (x as f64, y as f64);
            (x - y).abs() <= (LATENCY_WRITE_TOLERANCE * x.max(y)).max(LATENCY_WRITE_FLOOR_US)
        }
        _ => x == y,
    };
    close(&a.p50, &b.p50) && close(&a.p90, &b.p90) && close(&a.p99, &b.p99)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use netslo_crds::v1alpha1::conditions::reasons;
    use netslo_crds::v1alpha1::{AgentCounts, FailureScope, LatencySummary, Locality, Protocol};
    use netslo_protocol::histogram::Histogram;
    use netslo_protocol::verdict::FailureReason;

    use super::conditions::{Stall, StallReason, condition_time};
    use super::events::{EventReason, transition_events};
    use super::*;
    use crate::slo::config::SloConfig;
    use crate::slo::evaluate::evaluate;
    use crate::slo::window::{History, Sample};
    use crate::slo::{DAY_MS, HOUR_MS, MINUTE_MS};

    const T0: UnixMs = 1_767_225_600_000;

    fn setup() -> Setup {
        Setup {
            generation: Some(3),
            suspended: false,
            stalled: None,
            agents: AgentCounts {
                desired: 3,
                reporting: 3,
            },
            agents_rolling_out: false,
            agents_due: true,
        }
    }

    /// One sample a minute of 100 probes for `age_ms` before T0, `bad` of them bad.
    fn history(age_ms: i64, bad: u64) -> History {
        let mut h = History::new(SloConfig::from_spec(None).unwrap().slice, T0 - age_ms);
        let mut t = T0 - age_ms;
        while t < T0 {
            let s = Sample {
                start_ms: t,
                total: 100,
                invalid: 0,
                good: 100 - bad,
                latency_valid: 0,
                latency_good: 0,
            };
            h.ingest(&s, t + 10_000);
            t += MINUTE_MS;
        }
        h
    }

    fn eval_at(h: &History, now: UnixMs) -> Evaluation {
        evaluate(&SloConfig::from_spec(None).unwrap(), h, now)
    }

    fn build(
        setup: &Setup,
        eval: Option<&Evaluation>,
        cells: &[Cell],
        previous: Option<&ConnectivityCheckStatus>,
        now: UnixMs,
    ) -> ConnectivityCheckStatus {
        desired_status(
            &StatusInput {
                setup,
                evaluation: eval,
                cells,
                targets: &[],
                mesh: None,
            },
            previous,
            now,
        )
    }

    fn condition<'a>(s: &'a ConnectivityCheckStatus, type_: &str) -> Option<&'a Condition> {
        s.conditions.iter().find(|c| c.type_ == type_)
    }

    fn brief(s: &ConnectivityCheckStatus, type_: &str) -> Option<(String, String)> {
        condition(s, type_).map(|c| (c.status.clone(), c.reason.clone()))
    }

    fn pair(status: &str, reason: &str) -> Option<(String, String)> {
        Some((status.to_owned(), reason.to_owned()))
    }

    fn violation() -> Vec<Cell> {
        vec![Cell {
            source_node: "node-a".into(),
            source_zone: None,
            target: "db".into(),
            protocol: Protocol::TCP,
            path: None,
            endpoint: None,
            dest_zone: None,
            dest_node: None,
            resolver: None,
            expect_deny: true,
            good: 29,
            bad: 1,
            held_bad: 1,
            silent: false,
            reason: Some(FailureReason::UnexpectedlyReachable),
            answered: 0,
            slow: 0,
            p99_us: None,
        }]
    }

    #[test]
    fn ready_semantics() {
        let healthy = eval_at(&history(DAY_MS, 0), T0);
        let young = eval_at(&history(2 * MINUTE_MS, 0), T0);
        let breached = eval_at(&history(DAY_MS, 1), T0);
        let stale = eval_at(&history(DAY_MS, 0), T0 + HOUR_MS);
        let burning = {
            let mut h = history(DAY_MS, 0);
            for m in 1..=30 {
                let s = Sample {
                    start_ms: T0 - m * MINUTE_MS,
                    total: 100,
                    invalid: 0,
                    good: 0,
                    latency_valid: 0,
                    latency_good: 0,
                };
                h.ingest(&s, T0);
            }
            eval_at(&h, T0)
        };
        let with = |f: fn(&mut Setup)| {
            let mut s = setup();
            f(&mut s);
            s
        };
        type Want<'a> = [(&'a str, Option<(String, String)>); 2];
        let cases: Vec<(&str, Setup, &Evaluation, Vec<Cell>, Want<'_>)> = vec![
            (
                "healthy",
                setup(),
                &healthy,
                vec![],
                [
                    (types::READY, pair("True", reasons::OBJECTIVES_MET)),
                    (types::RECONCILING, None),
                ],
            ),
            (
                "suspended",
                with(|s| s.suspended = true),
                &healthy,
                vec![],
                [
                    (types::READY, pair("False", reasons::SUSPENDED)),
                    (types::RECONCILING, None),
                ],
            ),
            (
                "stalled",
                with(|s| {
                    s.stalled = Some(Stall {
                        reason: StallReason::TargetNotFound,
                        message: "Service shop/cart not found".into(),
                    })
                }),
                &healthy,
                vec![],
                [
                    (types::READY, pair("False", reasons::TARGET_NOT_FOUND)),
                    (types::STALLED, pair("True", reasons::TARGET_NOT_FOUND)),
                ],
            ),
            (
                "rolling out",
                with(|s| s.agents_rolling_out = true),
                &healthy,
                vec![],
                [
                    (types::READY, pair("False", reasons::AGENTS_PENDING)),
                    (
                        types::RECONCILING,
                        pair("True", reasons::ROLLING_OUT_AGENTS),
                    ),
                ],
            ),
            (
                "no agent reports",
                with(|s| s.agents.reporting = 0),
                &healthy,
                vec![],
                [
                    (types::READY, pair("False", reasons::AGENTS_PENDING)),
                    (types::NO_DATA, pair("True", reasons::AGENTS_MISSING)),
                ],
            ),
            (
                "a new check's agents are starting, not missing",
                with(|s| {
                    s.agents.reporting = 0;
                    s.agents_due = false;
                }),
                &healthy,
                vec![],
                [
                    (types::READY, pair("False", reasons::AGENTS_PENDING)),
                    (types::NO_DATA, pair("False", reasons::RESULTS_FRESH)),
                ],
            ),
            (
                "the only agent replaced: none desired while its results are fresh",
                with(|s| {
                    s.agents.desired = 0;
                    s.agents.reporting = 1;
                }),
                &healthy,
                vec![],
                [
                    (types::READY, pair("True", reasons::OBJECTIVES_MET)),
                    (types::NO_DATA, pair("False", reasons::RESULTS_FRESH)),
                ],
            ),
            (
                "some agents missing",
                with(|s| s.agents.reporting = 2),
                &healthy,
                vec![],
                [
                    (types::READY, pair("True", reasons::OBJECTIVES_MET)),
                    (types::NO_DATA, pair("True", reasons::AGENTS_MISSING)),
                ],
            ),
            (
                "young",
                setup(),
                &young,
                vec![],
                [
                    (types::READY, pair("False", reasons::AWAITING_DATA)),
                    (types::RECONCILING, pair("True", reasons::WINDOW_TOO_YOUNG)),
                ],
            ),
            (
                "breached",
                setup(),
                &breached,
                vec![],
                [
                    (types::READY, pair("False", reasons::OBJECTIVE_NOT_MET)),
                    (types::SLO_MET, pair("False", reasons::BUDGET_EXHAUSTED)),
                ],
            ),
            (
                "stale",
                setup(),
                &stale,
                vec![],
                [
                    (types::READY, pair("False", reasons::AWAITING_DATA)),
                    (types::NO_DATA, pair("True", reasons::NO_RESULTS)),
                ],
            ),
            (
                "expected deny violated",
                setup(),
                &healthy,
                violation(),
                [
                    (types::READY, pair("False", reasons::EXPECTED_DENY_VIOLATED)),
                    (types::SLO_MET, pair("True", reasons::WITHIN_OBJECTIVE)),
                ],
            ),
            (
                "burning",
                setup(),
                &burning,
                vec![],
                [
                    (types::BUDGET_BURNING, pair("True", reasons::PAGE_FAST_BURN)),
                    (types::SLO_MET, pair("False", reasons::BUDGET_EXHAUSTED)),
                ],
            ),
        ];
        for (name, setup, eval, cells, want) in cases {
            let s = build(&setup, Some(eval), &cells, None, T0);
            for (type_, expected) in want {
                assert_eq!(brief(&s, type_), expected, "{name}: {type_}");
            }
            assert!(
                s.conditions
                    .iter()
                    .all(|c| c.observed_generation == Some(3)),
                "{name}"
            );
            assert_eq!(s.observed_generation, Some(3));
            let mut present: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
            present.sort_unstable();
            present.dedup();
            assert_eq!(
                present.len(),
                s.conditions.len(),
                "{name}: one condition per type"
            );
            assert!(status_size(&s) <= MAX_STATUS_BYTES, "{name}");
        }
    }

    #[test]
    fn healthy_figures_and_messages() {
        let s = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 0), T0)),
            &[],
            None,
            T0,
        );
        let slo = s.slo.as_ref().unwrap();
        assert_eq!(
            (slo.window.as_str(), slo.coverage.as_str()),
            ("28d", "0.035")
        );
        let a = &slo.objectives[0];
        assert_eq!(
            (
                a.target.as_str(),
                a.sli.as_deref(),
                a.error_budget_remaining.as_deref()
            ),
            ("0.999", Some("1"), Some("1"))
        );
        assert_eq!(a.burn_rates.len(), 7);
        assert!(a.burn_rates.iter().all(|b| b.rate == "0.0"));
        let ready = condition(&s, types::READY).unwrap();
        assert_eq!(ready.message, "availability 1 (target 0.999, budget 1)");
        assert_eq!(ready.last_transition_time, condition_time(T0));
    }

    #[test]
    fn a_steady_state_writes_nothing_and_transitions_keep_their_time() {
        let h = history(DAY_MS, 0);
        let first = build(&setup(), Some(&eval_at(&h, T0)), &[], None, T0);
        assert!(material_change(None, &first));
        // Re-evaluated later with the same data (and a little more): no change at all.
        let mut h2 = h.clone();
        h2.ingest(
            &Sample {
                start_ms: T0,
                total: 100,
                invalid: 0,
                good: 100,
                latency_valid: 0,
                latency_good: 0,
            },
            T0 + 20_000,
        );
        let later = build(
            &setup(),
            Some(&eval_at(&h2, T0 + 25_000)),
            &[],
            Some(&first),
            T0 + 25_000,
        );
        assert_eq!(later, first);
        assert!(!material_change(Some(&first), &later));

        // A breach flips Ready and SLOMet (new times); NoData keeps its time.
        let flip_at = T0 + HOUR_MS;
        let breached = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 1), T0)),
            &[],
            Some(&first),
            flip_at,
        );
        assert!(material_change(Some(&first), &breached));
        for (type_, moved) in [
            (types::READY, true),
            (types::SLO_MET, true),
            (types::NO_DATA, false),
        ] {
            let time = &condition(&breached, type_).unwrap().last_transition_time;
            let want = if moved {
                condition_time(flip_at)
            } else {
                condition(&first, type_)
                    .unwrap()
                    .last_transition_time
                    .clone()
            };
            assert_eq!(time, &want, "{type_}");
        }
    }

    #[test]
    fn material_change_ignores_order_and_latency_jitter_only() {
        let base = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 0), T0)),
            &[],
            None,
            T0,
        );
        let mut reordered = base.clone();
        reordered.conditions.reverse();
        assert!(!material_change(Some(&base), &reordered));
        let mut generation = base.clone();
        generation.observed_generation = Some(4);
        assert!(material_change(Some(&base), &generation));

        let summary = |p50: &str| TargetSummary {
            name: "web".into(),
            via: None,
            endpoint: None,
            locality: None,
            protocol: Protocol::TCP,
            success_ratio: Some("1".into()),
            latency: Some(LatencySummary {
                p50: p50.into(),
                p90: "1ms".into(),
                p99: "3.1ms".into(),
            }),
            last_failure: None,
        };
        let with_target = |p50: &str| ConnectivityCheckStatus {
            targets: vec![summary(p50)],
            ..base.clone()
        };
        let cases = [
            ("410us", false),
            ("450us", false),
            // Sub-millisecond moves are jitter, however large a share.
            ("600us", false),
            ("1.4ms", false),
            ("1.5ms", true),
            ("410us", false),
        ];
        for (p50, material) in cases {
            assert_eq!(
                material_change(Some(&with_target("420us")), &with_target(p50)),
                material,
                "{p50}"
            );
        }
        let mut ratio_moved = with_target("420us");
        ratio_moved.targets[0].success_ratio = Some("0.9999".into());
        assert!(material_change(Some(&with_target("420us")), &ratio_moved));

        // Failure fractions and burn rates: jitter is not a change, appearing or vanishing
        // failures and larger moves are.
        let with_ratio = |r: &str| {
            let mut s = with_target("420us");
            s.targets[0].success_ratio = Some(r.into());
            s
        };
        for (old, new, material) in [
            ("0.9965", "0.9961", false),
            ("0.9965", "0.9950", true),
            ("1", "0.9999", true),
            ("0.9999", "1", true),
            ("1", "1", false),
        ] {
            assert_eq!(
                material_change(Some(&with_ratio(old)), &with_ratio(new)),
                material,
                "{old} -> {new}"
            );
        }
        let lossy = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 1), T0)),
            &[],
            None,
            T0,
        );
        let with_rate = |rate: &str| {
            let mut s = lossy.clone();
            s.slo.as_mut().unwrap().objectives[0].burn_rates[0].rate = rate.into();
            s
        };
        for (old, new, material) in [
            ("0.3", "0.35", false),
            ("0", "0.4", false),
            ("0.3", "1.2", true),
            ("14", "15", false),
            ("14", "6", true),
        ] {
            assert_eq!(
                material_change(Some(&with_rate(old)), &with_rate(new)),
                material,
                "{old} -> {new}"
            );
        }
    }

    #[test]
    fn condition_flips_and_verdict_changes_are_urgent_figures_are_not() {
        let healthy = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 0), T0)),
            &[],
            None,
            T0,
        );
        assert!(urgent_change(None, &healthy));
        assert!(!urgent_change(Some(&healthy), &healthy.clone()));
        let mut figures_moved = healthy.clone();
        figures_moved.observed_generation = Some(9);
        assert!(!urgent_change(Some(&healthy), &figures_moved));
        let mut flipped = healthy.clone();
        flipped.conditions[0].status = if flipped.conditions[0].status == "True" {
            "False".into()
        } else {
            "True".into()
        };
        assert!(urgent_change(Some(&healthy), &flipped));
        let mut localised = healthy.clone();
        localised.verdict = Some(netslo_crds::v1alpha1::Verdict {
            layer: netslo_crds::v1alpha1::Layer::TCP,
            scope: FailureScope::Endpoint,
            reason: "TCPTimeout".into(),
            summary: "endpoint 10.0.0.5:80 of api fails from 3/3 sources".into(),
            sources: vec!["node-a".into()],
            destinations: vec!["10.0.0.5:80".into()],
            since: None,
        });
        assert!(urgent_change(Some(&healthy), &localised));
    }

    #[test]
    fn suspending_a_stalled_check_keeps_one_condition_per_type() {
        let mut stalled = setup();
        stalled.stalled = Some(Stall {
            reason: StallReason::InvalidSpec,
            message: "bad".into(),
        });
        let before = build(&stalled, None, &[], None, T0);
        stalled.suspended = true;
        let s = build(&stalled, None, &[], Some(&before), T0 + MINUTE_MS);
        let present: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(present, [types::READY, types::STALLED]);
        assert_eq!(brief(&s, types::READY), pair("False", reasons::SUSPENDED));
    }

    #[test]
    fn suspended_keeps_the_last_figures() {
        let running = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 1), T0)),
            &[],
            None,
            T0,
        );
        let mut paused = setup();
        paused.suspended = true;
        let s = build(&paused, None, &[], Some(&running), T0 + HOUR_MS);
        assert_eq!(s.slo, running.slo);
        assert_eq!(brief(&s, types::READY), pair("False", reasons::SUSPENDED));
        assert_eq!(brief(&s, types::SLO_MET), brief(&running, types::SLO_MET));
        assert_eq!(
            condition(&s, types::SLO_MET).unwrap().last_transition_time,
            condition_time(T0)
        );
    }

    #[test]
    fn status_stays_under_4_kib_at_any_scale() {
        let long = |prefix: &str, i: usize| format!("{prefix}-{}-{i:05}", "x".repeat(240));
        // 5,000 sources, 64 targets with 300-character endpoints, every path failing somewhere.
        let mut cells = Vec::new();
        for s in 0..5_000 {
            for t in 0..64 {
                cells.push(Cell {
                    source_node: long("node", s).into(),
                    source_zone: Some(long("zone", s % 7).into()),
                    target: format!("target-{t:02}-{}", "t".repeat(50)).into(),
                    protocol: Protocol::HTTPS,
                    path: None,
                    endpoint: Some(long("endpoint", t).into()),
                    dest_zone: Some(long("zone", t % 7).into()),
                    dest_node: Some(long("node", t).into()),
                    resolver: None,
                    expect_deny: t == 0,
                    good: 0,
                    bad: 10,
                    held_bad: 10,
                    silent: false,
                    reason: Some(if t == 0 {
                        FailureReason::UnexpectedlyReachable
                    } else {
                        FailureReason::TlsCertificate
                    }),
                    answered: 0,
                    slow: 0,
                    p99_us: None,
                });
            }
        }
        let targets: Vec<TargetStats> = (0..64)
            .map(|t| {
                let mut latency = Histogram::new();
                latency.record(1_234_567);
                TargetStats {
                    name: format!("target-{t:02}-{}", "t".repeat(50)),
                    via: None,
                    endpoint: Some(long("endpoint", t)),
                    locality: Some(Locality::CrossNode),
                    protocol: Protocol::HTTPS,
                    good: 1,
                    valid: 3,
                    latency,
                    last_failure: Some(verdict::LastFailure {
                        reason: FailureReason::TlsCertificate,
                        protocol: Protocol::HTTPS,
                        source: long("node", t),
                        at_ms: T0,
                    }),
                }
            })
            .collect();
        let mut big = setup();
        big.agents = AgentCounts {
            desired: 5_000,
            reporting: 4_999,
        };
        big.stalled = Some(Stall {
            reason: StallReason::TargetNotPermitted,
            message: "m".repeat(10_000),
        });
        let eval = eval_at(&history(DAY_MS, 1), T0);
        let s = desired_status(
            &StatusInput {
                setup: &big,
                evaluation: Some(&eval),
                cells: &cells,
                targets: &targets,
                mesh: Some(MeshCoverage {
                    peers_per_agent: 16,
                    rotation_period: "52m10s".into(),
                    pairs_covered: Some("0.999".into()),
                }),
            },
            None,
            T0,
        );
        let size = status_size(&s);
        assert!(size <= MAX_STATUS_BYTES, "{size} bytes");
        assert_eq!(
            s.verdict.as_ref().map(|v| v.scope),
            Some(FailureScope::PolicyViolation)
        );
        assert!(!s.targets.is_empty(), "the worst targets survive");
    }

    #[test]
    fn events_follow_transitions_from_status() {
        let healthy = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 0), T0)),
            &[],
            None,
            T0,
        );
        let breached = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 1), T0)),
            &[],
            Some(&healthy),
            T0,
        );
        let reasons_of = |old: Option<&ConnectivityCheckStatus>, new: &ConnectivityCheckStatus| {
            transition_events(old, new)
                .into_iter()
                .map(|e| e.reason)
                .collect::<Vec<_>>()
        };
        assert_eq!(reasons_of(None, &healthy), []);
        // 1% errors at 99.9%: breached, and burning at 10x.
        assert_eq!(
            reasons_of(Some(&healthy), &breached),
            [EventReason::ObjectiveBreached, EventReason::BudgetBurning]
        );
        assert_eq!(
            reasons_of(Some(&breached), &breached),
            [],
            "no repeat while it holds"
        );
        assert_eq!(
            reasons_of(Some(&breached), &healthy),
            [
                EventReason::ObjectiveRecovered,
                EventReason::BudgetBurnStopped
            ]
        );
        let violated = build(
            &setup(),
            Some(&eval_at(&history(DAY_MS, 0), T0)),
            &violation(),
            Some(&healthy),
            T0,
        );
        assert_eq!(
            reasons_of(Some(&healthy), &violated),
            [EventReason::ExpectedDenyViolated]
        );
        assert_eq!(reasons_of(Some(&violated), &violated), []);
        let mut missing = setup();
        missing.agents.reporting = 1;
        let missing = build(
            &missing,
            Some(&eval_at(&history(DAY_MS, 0), T0)),
            &[],
            Some(&healthy),
            T0,
        );
        assert_eq!(
            reasons_of(Some(&healthy), &missing),
            [EventReason::AgentsMissing]
        );
        assert_eq!(
            reasons_of(Some(&missing), &healthy),
            [EventReason::ResultsResumed]
        );
        let events = transition_events(Some(&healthy), &breached);
        assert_eq!(events[0].type_.as_str(), "Warning");
        assert!(
            events[0].note.starts_with("availability 0.99"),
            "{}",
            events[0].note
        );
    }
}
