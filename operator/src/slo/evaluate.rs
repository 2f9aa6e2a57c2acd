//! SLO evaluation: `(objectives, history, now) -> Evaluation`.
//!
//! Every figure keeps its exact counts beside it, so that status quantisation can round from
//! integers (an SLI exactly at target must read as met, which floating point cannot promise)
//! and alert thresholds compare in integers too.
//!
//! * SLI = good / valid over the SLO window; invalid probes are excluded, missing data is never
//!   good (it lowers coverage instead).
//! * Error budget remaining = 1 − (bad/valid)/(1 − T), clamped to [−1, 1].
//! * Burn rate over a window = (bad/valid)/(1 − T): 1.0 spends the budget exactly over the period.
//! * Alert (Sloth/SRE workbook MWMBR): both windows' error ratios above f·(1 − T), with
//!   f = budget share × period / long window, and at least `minEventsToAlert` bad events in
//!   the long window.
//! * Timeslices: the same formulas over slices (good slices / slices with data).

use netslo_crds::v1alpha1::{AlertSeverity, BudgetingMethod, ObjectiveName, SloWindow};

use super::config::{AlertWindow, SloConfig};
use super::window::{Counts, FINE_MS, History};
use super::{Ppm, UnixMs};

/// Below this many bad probes a page alert is too easy to trigger (SLO semantics §4).
pub const LOW_VOLUME_BAD_PROBES: f64 = 3.0;

/// An exact non-negative fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fraction {
    pub num: u64,
    pub den: u64,
}

/// Good and valid events (probes, or slices) over one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowBurn {
    pub window_ms: i64,
    pub good: u64,
    pub valid: u64,
}

impl WindowBurn {
    pub fn bad(&self) -> u64 {
        self.valid - self.good
    }

    /// `(bad/valid)/(1 − T)`, as an exact fraction; `None` without data.
    pub fn rate_exact(&self, target: Ppm) -> Option<(u128, u128)> {
        (self.valid > 0).then(|| {
            (
                u128::from(self.bad()) * 1_000_000,
                u128::from(self.valid) * u128::from(target.complement().0),
            )
        })
    }

    pub fn rate(&self, target: Ppm) -> Option<f64> {
        self.rate_exact(target).map(|(n, d)| n as f64 / d as f64)
    }
}

/// State of one multi-window burn-rate alert.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlertState {
    pub window: AlertWindow,
    /// Burn factor for this check's period.
    pub factor: f64,
    pub long: WindowBurn,
    pub short: WindowBurn,
    pub firing: bool,
}

/// Figures of one objective.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectiveEvaluation {
    pub name: ObjectiveName,
    pub target: Ppm,
    /// Latency objectives: the threshold.
    pub threshold_us: Option<u64>,
    /// Over the SLO window.
    pub window: WindowBurn,
    /// One per distinct alert window length, shortest first.
    pub burn_rates: Vec<WindowBurn>,
    pub alerts: Vec<AlertState>,
}

impl ObjectiveEvaluation {
    /// `None` without valid events.
    pub fn sli(&self) -> Option<Fraction> {
        (self.window.valid > 0).then_some(Fraction {
            num: self.window.good,
            den: self.window.valid,
        })
    }

    /// SLI ≥ target, exactly; `None` without data.
    pub fn met(&self) -> Option<bool> {
        self.sli().map(|s| {
            u128::from(s.num) * u128::from(Ppm::ONE.0)
                >= u128::from(self.target.0) * u128::from(s.den)
        })
    }

    /// `1 − (bad/valid)/(1 − T)` clamped to [−1, 1] as an exact signed fraction `(num, den)`.
    pub fn budget_remaining_exact(&self) -> Option<(i128, u128)> {
        let (spent_num, den) = self.window.rate_exact(self.target)?;
        let den_signed = i128::try_from(den).ok()?;
        let num = den_signed - i128::try_from(spent_num).ok()?;
        Some((num.max(-den_signed), den))
    }

    pub fn budget_remaining(&self) -> Option<f64> {
        self.budget_remaining_exact()
            .map(|(n, d)| n as f64 / d as f64)
    }

    /// The firing alert of a severity with the highest factor (the fastest burn).
    pub fn firing(&self, severity: AlertSeverity) -> Option<&AlertState> {
        self.alerts
            .iter()
            .filter(|a| a.firing && a.window.severity == severity)
            .max_by(|a, b| a.factor.total_cmp(&b.factor))
    }
}

/// Something a user should know about the objectives as configured.
#[derive(Debug, Clone, PartialEq)]
pub enum Warning {
    /// `f(1 − T) ≥ 1`: the error ratio can never exceed the threshold, so the alert cannot fire.
    AlertInfeasible {
        objective: ObjectiveName,
        window: String,
        factor: f64,
    },
    /// At the observed volume, fewer than three bad probes in the long window fire this page.
    LowVolume {
        objective: ObjectiveName,
        window: String,
        bad_probes_to_page: f64,
    },
}

impl Warning {
    /// One line for an admission warning or a condition message.
    pub fn message(&self) -> String {
        match self {
            Warning::AlertInfeasible {
                objective,
                window,
                factor,
            } => format!(
                "{objective:?} alert {window} ({factor:.2}x) can never fire at this target: factor × (1 − target) ≥ 1"
            ),
            Warning::LowVolume {
                objective,
                window,
                bad_probes_to_page,
            } => format!(
                "{objective:?} page {window} fires on {bad_probes_to_page:.1} bad probes at the observed volume; aggregate more probes or lower the target"
            ),
        }
    }
}

/// The evaluated state of a check at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub now_ms: UnixMs,
    pub window: SloWindow,
    pub window_ms: i64,
    pub budgeting: BudgetingMethod,
    /// Fraction of the window with data: 5-minute slots with valid probes (Occurrences), or
    /// slices with valid probes (Timeslices).
    pub coverage: Fraction,
    /// Timestamp of the first result the check ever had.
    pub first_result_ms: Option<UnixMs>,
    /// Too little data yet to judge: less than the shortest alert window.
    pub young: bool,
    /// Time since the last result arrived (0 after a backwards clock step).
    pub last_result_age_ms: Option<i64>,
    /// No results for `noDataAfter` (since the history started, if none ever came).
    pub no_data: bool,
    pub objectives: Vec<ObjectiveEvaluation>,
    pub warnings: Vec<Warning>,
}

impl Evaluation {
    /// Every objective has data and meets its target.
    pub fn all_met(&self) -> bool {
        !self.objectives.is_empty() && self.objectives.iter().all(|o| o.met() == Some(true))
    }

    /// Some objective has data and misses its target.
    pub fn any_breached(&self) -> bool {
        self.objectives.iter().any(|o| o.met() == Some(false))
    }
}

/// Evaluates `config`'s objectives over `history` at `now`.
pub fn evaluate(config: &SloConfig, history: &History, now: UnixMs) -> Evaluation {
    let slo_window = history.window(now, config.window_ms);
    let coverage = match config.budgeting {
        BudgetingMethod::Occurrences => Fraction {
            num: slo_window.counts.covered,
            den: u64::try_from(config.window_ms / FINE_MS).unwrap_or(1),
        },
        BudgetingMethod::Timeslices => Fraction {
            num: slo_window.counts.slices,
            den: u64::try_from(config.window_ms / config.slice.duration_ms).unwrap_or(1),
        },
    };
    // The window reaches up to a bucket further back than its length: cap at "all of it".
    let coverage = Fraction {
        num: coverage.num.min(coverage.den),
        ..coverage
    };
    let first_result_ms = history.first_result_ms();
    let shortest_window = config
        .alert_windows
        .iter()
        .map(|w| w.short_ms)
        .min()
        .unwrap_or(FINE_MS);
    let young = first_result_ms.is_none_or(|first| now.saturating_sub(first) < shortest_window);
    let last_result_age_ms = history
        .last_result_ms()
        .map(|t| now.saturating_sub(t).max(0));
    let silent_since = history.last_result_ms().unwrap_or(history.created_ms());
    let no_data = now.saturating_sub(silent_since) > config.no_data_after_ms;

    // Each distinct window length is summed once and shared by every objective.
    let mut lengths: Vec<i64> = config
        .alert_windows
        .iter()
        .flat_map(|w| [w.short_ms, w.long_ms])
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    let sums: Vec<(i64, Counts)> = lengths
        .iter()
        .map(|&len| (len, history.window(now, len).counts))
        .collect();
    let sum_of = |len: i64| {
        sums.iter()
            .find(|(l, _)| *l == len)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    };

    let mut objectives = Vec::new();
    let mut warnings = Vec::new();
    let mut add = |name: ObjectiveName, target: Ppm, threshold_us: Option<u64>| {
        let burn = |window_ms: i64, c: &Counts| {
            let (good, valid) = events(name, config.budgeting, c);
            WindowBurn {
                window_ms,
                good,
                valid,
            }
        };
        let alerts: Vec<AlertState> = config
            .alert_windows
            .iter()
            .map(|&window| {
                let factor = window.factor(config.window_ms);
                let long = burn(window.long_ms, &sum_of(window.long_ms));
                let short = burn(window.short_ms, &sum_of(window.short_ms));
                let firing = above_threshold(&long, window, target, config.window_ms)
                    && above_threshold(&short, window, target, config.window_ms)
                    && long.bad() >= config.min_events_to_alert;
                AlertState {
                    window,
                    factor,
                    long,
                    short,
                    firing,
                }
            })
            .collect();
        for alert in &alerts {
            let per_bad = alert.factor * target.complement().as_f64();
            if per_bad >= 1.0 {
                warnings.push(Warning::AlertInfeasible {
                    objective: name,
                    window: alert.window.label(),
                    factor: alert.factor,
                });
            } else if alert.window.severity == AlertSeverity::Page
                && !young
                && first_result_ms.is_some_and(|f| now.saturating_sub(f) >= alert.window.long_ms)
                && alert.long.valid as f64 * per_bad < LOW_VOLUME_BAD_PROBES
            {
                warnings.push(Warning::LowVolume {
                    objective: name,
                    window: alert.window.label(),
                    bad_probes_to_page: alert.long.valid as f64 * per_bad,
                });
            }
        }
        objectives.push(ObjectiveEvaluation {
            name,
            target,
            threshold_us,
            window: burn(config.window_ms, &slo_window.counts),
            burn_rates: sums.iter().map(|(len, c)| burn(*len, c)).collect(),
            alerts,
        });
    };
    if let Some(target) = config.availability {
        add(ObjectiveName::Availability, target, None);
    }
    if let Some(latency) = config.latency {
        add(
            ObjectiveName::Latency,
            latency.target,
            Some(latency.threshold_us),
        );
    }

    Evaluation {
        now_ms: now,
        window: config.window,
        window_ms: config.window_ms,
        budgeting: config.budgeting,
        coverage,
        first_result_ms,
        young,
        last_result_age_ms,
        no_data,
        objectives,
        warnings,
    }
}

/// `(good, valid)` events of an objective under a budgeting method.
fn events(name: ObjectiveName, budgeting: BudgetingMethod, c: &Counts) -> (u64, u64) {
    match (name, budgeting) {
        (ObjectiveName::Availability, BudgetingMethod::Occurrences) => (c.good, c.valid()),
        (ObjectiveName::Latency, BudgetingMethod::Occurrences) => (c.latency_good, c.latency_valid),
        (ObjectiveName::Availability, BudgetingMethod::Timeslices) => (c.slices_good, c.slices),
        (ObjectiveName::Latency, BudgetingMethod::Timeslices) => {
            (c.latency_slices_good, c.latency_slices)
        }
    }
}

/// `bad/valid > share × period/long × (1 − T)`, in integers:
/// `bad × long × 10¹² > valid × share × period × (10⁶ − T)` (all in millionths and ms).
fn above_threshold(w: &WindowBurn, alert: AlertWindow, target: Ppm, period_ms: i64) -> bool {
    if w.valid == 0 {
        return false;
    }
    let ms = |v: i64| u128::try_from(v).unwrap_or(0);
    let lhs = u128::from(w.bad())
        .saturating_mul(ms(alert.long_ms))
        .saturating_mul(1_000_000_000_000);
    let rhs = u128::from(w.valid)
        .saturating_mul(u128::from(alert.budget_share.0))
        .saturating_mul(ms(period_ms))
        .saturating_mul(u128::from(target.complement().0));
    lhs > rhs
}

#[cfg(test)]
mod tests {
    use netslo_crds::duration::GoDuration;
    use netslo_crds::v1alpha1::{AvailabilityObjective, LatencyObjective, Objectives, Timeslice};

    use super::*;
    use crate::slo::window::Sample;
    use crate::slo::{DAY_MS, HOUR_MS, MINUTE_MS};

    const T0: UnixMs = 1_767_225_600_000;

    fn config(f: impl FnOnce(&mut Objectives)) -> SloConfig {
        let mut o = Objectives::default();
        f(&mut o);
        SloConfig::from_spec(Some(&o)).unwrap()
    }

    fn default_config() -> SloConfig {
        SloConfig::from_spec(None).unwrap()
    }

    /// A history started `age_ms` before T0 with `per_minute` probes per minute up to T0, of
    /// which `bad_at(minute_start)` are bad.
    fn history(
        c: &SloConfig,
        age_ms: i64,
        per_minute: u64,
        bad_at: impl Fn(UnixMs) -> u64,
    ) -> History {
        let mut h = History::new(c.slice, T0 - age_ms);
        let mut t = T0 - age_ms;
        while t < T0 {
            let bad = bad_at(t).min(per_minute);
            let s = Sample {
                start_ms: t,
                total: per_minute,
                invalid: 0,
                good: per_minute - bad,
                latency_valid: per_minute,
                latency_good: per_minute - bad,
            };
            h.ingest(&s, t + 10_000);
            t += MINUTE_MS;
        }
        h
    }

    fn availability(e: &Evaluation) -> &ObjectiveEvaluation {
        &e.objectives[0]
    }

    #[test]
    fn empty_window() {
        let c = default_config();
        let h = History::new(c.slice, T0);
        let e = evaluate(&c, &h, T0);
        assert!(e.young);
        assert!(!e.no_data, "a new history is not silent yet");
        assert_eq!(e.coverage.num, 0);
        let a = availability(&e);
        assert_eq!((a.sli(), a.met(), a.budget_remaining()), (None, None, None));
        assert!(a.alerts.iter().all(|al| !al.firing));
        assert!(!e.all_met() && !e.any_breached());
        // Five minutes later, still nothing: NoData.
        assert!(evaluate(&c, &h, T0 + 5 * MINUTE_MS + 1).no_data);
    }

    #[test]
    fn young_window_is_explicit() {
        let c = default_config();
        let cases = [
            (2 * MINUTE_MS, true),
            (5 * MINUTE_MS, false),
            (12 * DAY_MS, false),
        ];
        for (age, young) in cases {
            let h = history(&c, age, 6, |_| 0);
            let e = evaluate(&c, &h, T0);
            assert_eq!(e.young, young, "age {age}");
            assert_eq!(availability(&e).met(), Some(true));
        }
        // Twelve days into a 28-day window: coverage ≈ 12/28.
        let h = history(&c, 12 * DAY_MS, 6, |_| 0);
        let cov = evaluate(&c, &h, T0).coverage;
        assert_eq!((cov.num, cov.den), (12 * 288, 28 * 288));
    }

    #[test]
    fn exactly_at_target_is_met() {
        // 99.9%: 1 bad in 1000 is exactly at target, budget exactly 0.
        let c = default_config();
        let cases = [
            (0, Some(true), (1, 1)),
            (1, Some(true), (0, 1)),
            (2, Some(false), (-1, 1)),
            (1000, Some(false), (-1, 1)),
        ];
        for (bad, met, (num, den)) in cases {
            let mut h = History::new(c.slice, T0 - HOUR_MS);
            h.ingest(
                &Sample {
                    start_ms: T0 - HOUR_MS,
                    total: 1000,
                    invalid: 0,
                    good: 1000 - bad,
                    latency_valid: 0,
                    latency_good: 0,
                },
                T0 - HOUR_MS,
            );
            let e = evaluate(&c, &h, T0);
            let a = availability(&e);
            assert_eq!(a.met(), met, "bad {bad}");
            let (n, d) = a.budget_remaining_exact().unwrap();
            assert_eq!(
                n * den as i128,
                num * d as i128,
                "bad {bad}: budget {n}/{d}"
            );
        }
    }

    #[test]
    fn invalid_probes_are_excluded() {
        let c = default_config();
        let mut h = History::new(c.slice, T0 - HOUR_MS);
        h.ingest(
            &Sample {
                start_ms: T0 - HOUR_MS,
                total: 1000,
                invalid: 500,
                good: 500,
                latency_valid: 0,
                latency_good: 0,
            },
            T0 - HOUR_MS,
        );
        let a = evaluate(&c, &h, T0).objectives[0].clone();
        assert_eq!(a.sli(), Some(Fraction { num: 500, den: 500 }));
    }

    #[test]
    fn burn_rates_and_page_alerts() {
        let c = default_config();
        let page = |e: &Evaluation| {
            availability(e)
                .firing(AlertSeverity::Page)
                .map(|a| a.window.label())
        };
        // Steady 100 probes/minute for a week, with bad probes per minute in the last hour.
        let bad_last = |minutes: i64, per_minute: u64| {
            move |t: UnixMs| {
                if t >= T0 - minutes * MINUTE_MS {
                    per_minute
                } else {
                    0
                }
            }
        };
        // 28d, 99.9%: the 1h/5m threshold is 13.44 × 0.1% = 1.344% of probes.
        let cases: [(&str, History, Option<&str>); 5] = [
            ("healthy", history(&c, 7 * DAY_MS, 100, |_| 0), None),
            // 2 bad/min for an hour = 2% (> 1.344%) in both 1h and 5m windows.
            (
                "fast burn",
                history(&c, 7 * DAY_MS, 100, bad_last(60, 2)),
                Some("1h/5m"),
            ),
            // 1% over the last hour: below 1h/5m's 1.344%, and only 0.17% over 6h.
            ("slow", history(&c, 7 * DAY_MS, 100, bad_last(60, 1)), None),
            // A burst that ended 10 minutes ago: the clean 5m window resets the fast page;
            // the slow page (6h/30m) still fires.
            (
                "recovered",
                history(&c, 7 * DAY_MS, 100, |t| {
                    u64::from((T0 - 60 * MINUTE_MS..T0 - 10 * MINUTE_MS).contains(&t)) * 10
                }),
                Some("6h/30m"),
            ),
            // A single bad probe in a quiet hour: below minEventsToAlert.
            (
                "one failure",
                history(&c, 7 * DAY_MS, 1, |t| u64::from(t == T0 - 2 * MINUTE_MS)),
                None,
            ),
        ];
        for (name, h, want) in cases {
            let e = evaluate(&c, &h, T0);
            assert_eq!(page(&e).as_deref(), want, "{name}");
        }
        // Burn rate figures: 2% errors over the last hour at 99.9% is a 20x burn.
        let e = evaluate(&c, &history(&c, 7 * DAY_MS, 100, bad_last(60, 2)), T0);
        let hour = availability(&e)
            .burn_rates
            .iter()
            .find(|w| w.window_ms == HOUR_MS)
            .unwrap();
        assert_eq!((hour.valid, hour.bad()), (6_000, 120));
        assert!((hour.rate(Ppm(999_000)).unwrap() - 20.0).abs() < 1e-9);
        let windows: Vec<i64> = availability(&e)
            .burn_rates
            .iter()
            .map(|w| w.window_ms)
            .collect();
        assert_eq!(
            windows,
            [5, 30, 60, 120, 360, 1440, 4320].map(|m| m * MINUTE_MS)
        );
    }

    #[test]
    fn alert_threshold_is_exact() {
        // 1h window, 28d period, 99.9%: threshold 1.344%. 10,000 probes: 134 bad is below,
        // 135 above.
        let c = default_config();
        for (bad, firing) in [(134, false), (135, true)] {
            // One sample inside both the 5m and the 1h window.
            let h = history(&c, MINUTE_MS, 10_000, |_| bad);
            let e = evaluate(&c, &h, T0);
            let fast = &availability(&e).alerts[0];
            assert_eq!(fast.window.label(), "1h/5m");
            assert_eq!(fast.firing, firing, "{bad} bad");
        }
    }

    #[test]
    fn latency_objective_uses_latency_counts() {
        let c = config(|o| {
            o.latency = Some(LatencyObjective {
                threshold: GoDuration::from_millis(5),
                target: "99".into(),
            })
        });
        let mut h = History::new(c.slice, T0 - HOUR_MS);
        h.ingest(
            &Sample {
                start_ms: T0 - HOUR_MS,
                total: 100,
                invalid: 0,
                good: 100,
                latency_valid: 100,
                latency_good: 98,
            },
            T0 - HOUR_MS,
        );
        let e = evaluate(&c, &h, T0);
        assert_eq!(e.objectives.len(), 1);
        let l = &e.objectives[0];
        assert_eq!(
            (l.name, l.threshold_us),
            (ObjectiveName::Latency, Some(5_000))
        );
        assert_eq!(l.met(), Some(false));
        assert_eq!(l.sli(), Some(Fraction { num: 98, den: 100 }));
    }

    #[test]
    fn timeslices_count_slices_and_coverage() {
        let c = config(|o| {
            o.budgeting_method = Some(BudgetingMethod::Timeslices);
            o.timeslice = Some(Timeslice {
                duration: None,
                good_percent: Some("99".into()),
            });
        });
        // One hour of 1-minute slices, 100 probes each; 3 slices have 5 bad probes; 10
        // minutes have no data at all.
        let mut h = history(&c, HOUR_MS, 100, |t| {
            u64::from([5, 6, 7].contains(&((t - (T0 - HOUR_MS)) / MINUTE_MS))) * 5
        });
        h.advance(T0);
        let e = evaluate(&c, &h, T0 + 10 * MINUTE_MS);
        let a = availability(&e);
        assert_eq!((a.window.good, a.window.valid), (57, 60));
        assert_eq!((e.coverage.num, e.coverage.den), (60, 28 * 24 * 60));
    }

    #[test]
    fn warnings_for_infeasible_and_low_volume_alerts() {
        let low = config(|o| {
            o.availability = Some(AvailabilityObjective {
                target: "50".into(),
            })
        });
        let e = evaluate(&low, &History::new(low.slice, T0), T0);
        let infeasible: Vec<String> = e
            .warnings
            .iter()
            .filter_map(|w| match w {
                Warning::AlertInfeasible { window, .. } => Some(window.clone()),
                Warning::LowVolume { .. } => None,
            })
            .collect();
        // 13.44, 5.6 and 2.8 times 0.5 are ≥ 1; 0.93 × 0.5 is not.
        assert_eq!(infeasible, ["1h/5m", "6h/30m", "1d/2h"]);

        // One probe a minute at 99.9%: 60 × 13.44 × 0.001 = 0.8 bad probes page.
        let c = default_config();
        let e = evaluate(&c, &history(&c, 2 * HOUR_MS, 1, |_| 0), T0);
        let low_volume: Vec<&Warning> = e
            .warnings
            .iter()
            .filter(|w| matches!(w, Warning::LowVolume { .. }))
            .collect();
        assert_eq!(low_volume.len(), 1, "{:?}", e.warnings);
        assert!(low_volume[0].message().contains("1h/5m"));
        // At 100 probes a minute, 80 bad probes would page: no warning.
        let e = evaluate(&c, &history(&c, 2 * HOUR_MS, 100, |_| 0), T0);
        assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    }

    #[test]
    fn clock_steps_do_not_break_evaluation() {
        let c = default_config();
        let h = history(&c, DAY_MS, 10, |_| 1);
        for now in [
            T0 - 2 * HOUR_MS,
            T0 - 40 * DAY_MS,
            0,
            UnixMs::MIN,
            UnixMs::MAX,
            T0 + 365 * DAY_MS,
        ] {
            let e = evaluate(&c, &h, now);
            let a = availability(&e);
            assert!(a.window.good <= a.window.valid);
            assert!(e.coverage.num <= e.coverage.den);
            assert!(e.last_result_age_ms.is_none_or(|age| age >= 0));
        }
    }

    #[test]
    fn a_restart_keeps_the_budget() {
        let c = default_config();
        let h = history(&c, 20 * DAY_MS, 10, |t| u64::from(t % HOUR_MS == 0));
        let before = evaluate(&c, &h, T0);
        // The operator stores the history, restarts (or another replica takes over) a minute
        // later, and decodes it.
        let mut restored = History::decode(&h.encode()).unwrap();
        restored.advance(T0 + MINUTE_MS);
        let after = evaluate(&c, &restored, T0 + MINUTE_MS);
        let budget = |e: &Evaluation| availability(e).budget_remaining_exact();
        assert_eq!(budget(&after), budget(&before));
        assert_eq!(availability(&after).window, availability(&before).window);
        assert!(
            budget(&after).is_some_and(|(n, _)| n < 0),
            "the spent budget stays spent"
        );
    }

    #[test]
    fn no_data_after_silence() {
        let c = default_config();
        let h = history(&c, HOUR_MS, 10, |_| 0);
        // The last sample arrived at T0 - 1m + 10s.
        let last = T0 - MINUTE_MS + 10_000;
        assert!(!evaluate(&c, &h, last + 5 * MINUTE_MS).no_data);
        assert!(evaluate(&c, &h, last + 5 * MINUTE_MS + 1).no_data);
        assert_eq!(
            evaluate(&c, &h, last + MINUTE_MS).last_result_age_ms,
            Some(MINUTE_MS)
        );
    }
}
