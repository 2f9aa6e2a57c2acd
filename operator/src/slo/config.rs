//! A check's objectives with every default applied: the one place spec strings become numbers.
//!
//! The API server already enforces the CRD's CEL rules; the parse here repeats the few checks the
//! maths depends on (a target of 100% leaves no budget to divide by), so a spec that slipped past
//! validation (an old CRD, a disabled webhook) becomes `Stalled/InvalidSpec`, never a panic.

use std::time::Duration;

use netslo_crds::v1alpha1::{
    AlertSeverity, AlertingProfile, BudgetingMethod, BurnRateWindow, Objectives, SloWindow,
};

use super::{DAY_MS, HOUR_MS, MINUTE_MS, Ppm, format_window};

/// Objective bounds the CRD enforces, in millionths: 50% to 99.999%.
const TARGET_MIN: Ppm = Ppm(500_000);
const TARGET_MAX: Ppm = Ppm(999_990);

/// The Standard alerting profile (SRE workbook, as Sloth ships it): severity, long, short, and
/// the share of the whole budget that, spent within the long window, fires.
const STANDARD_WINDOWS: [(AlertSeverity, i64, i64, Ppm); 4] = [
    (AlertSeverity::Page, HOUR_MS, 5 * MINUTE_MS, Ppm(20_000)),
    (
        AlertSeverity::Page,
        6 * HOUR_MS,
        30 * MINUTE_MS,
        Ppm(50_000),
    ),
    (AlertSeverity::Ticket, DAY_MS, 2 * HOUR_MS, Ppm(100_000)),
    (AlertSeverity::Ticket, 3 * DAY_MS, 6 * HOUR_MS, Ppm(100_000)),
];

/// Why a spec's objectives cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {value:?} is not a percentage with at most four decimals")]
    NotAPercent { field: &'static str, value: String },
    #[error("{field}: {value}% is outside {min}% to {max}%")]
    PercentOutOfRange {
        field: &'static str,
        value: String,
        min: &'static str,
        max: &'static str,
    },
    #[error("{field}: {value} is outside {min} to {max}")]
    DurationOutOfRange {
        field: &'static str,
        value: String,
        min: &'static str,
        max: &'static str,
    },
    #[error("alerting: burn-rate window {short}/{long} needs short < long")]
    ShortNotShorter { short: String, long: String },
    #[error("alerting: profile Custom needs burnRateWindows")]
    CustomWithoutWindows,
}

impl SpecError {
    /// PascalCase reason for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAPercent { .. } => "NotAPercent",
            Self::PercentOutOfRange { .. } => "PercentOutOfRange",
            Self::DurationOutOfRange { .. } => "DurationOutOfRange",
            Self::ShortNotShorter { .. } => "ShortNotShorter",
            Self::CustomWithoutWindows => "CustomWithoutWindows",
        }
    }
}

/// When a timeslice counts as good (budgeting method Timeslices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceRule {
    pub duration_ms: i64,
    /// A slice is good when at least this fraction of its valid probes is good.
    pub good: Ppm,
}

impl SliceRule {
    /// Default: 1m slices, good at 99%.
    pub const DEFAULT: SliceRule = SliceRule {
        duration_ms: MINUTE_MS,
        good: Ppm(990_000),
    };

    /// Whether a slice with these counts is good; a slice without valid probes is not.
    pub fn is_good(self, good: u64, valid: u64) -> bool {
        valid > 0 && u128::from(good) * 1_000_000 >= u128::from(self.good.0) * u128::from(valid)
    }
}

/// A latency objective: at least `target` of valid probes within `threshold_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyTarget {
    pub threshold_us: u64,
    pub target: Ppm,
}

/// One multi-window burn-rate alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertWindow {
    pub severity: AlertSeverity,
    pub long_ms: i64,
    pub short_ms: i64,
    /// Share of the whole budget that, spent within `long_ms`, fires the alert.
    pub budget_share: Ppm,
}

impl AlertWindow {
    /// Sloth's burn factor `budget% × period / (100 × long)`: 14.4 for 1h at 2% of 30d, 13.44
    /// at 28d. Derived, never hard-coded, so every period gets its own.
    pub fn factor(&self, period_ms: i64) -> f64 {
        self.budget_share.as_f64() * period_ms as f64 / self.long_ms as f64
    }

    /// "1h/5m".
    pub fn label(&self) -> String {
        format!(
            "{}/{}",
            format_window(self.long_ms),
            format_window(self.short_ms)
        )
    }
}

/// Objectives of a check, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SloConfig {
    pub window: SloWindow,
    pub window_ms: i64,
    pub budgeting: BudgetingMethod,
    pub slice: SliceRule,
    pub availability: Option<Ppm>,
    pub latency: Option<LatencyTarget>,
    /// Alert windows, in spec order (Standard: the four of the SRE workbook).
    pub alert_windows: Vec<AlertWindow>,
    /// A burn-rate alert needs at least this many bad events in its long window.
    pub min_events_to_alert: u64,
    pub no_data_after_ms: i64,
}

impl SloConfig {
    /// Applies defaults: 28d window, Occurrences, 99.9% availability when no objective is
    /// given, Standard alerting, minEventsToAlert 3, noDataAfter 5m, timeslices 1m at 99%.
    pub fn from_spec(spec: Option<&Objectives>) -> Result<Self, SpecError> {
        let default = Objectives::default();
        let spec = spec.unwrap_or(&default);
        let window = spec.window.unwrap_or_default();
        let availability = match (&spec.availability, &spec.latency) {
            (Some(a), _) => Some(parse_target("availability.target", &a.target)?),
            (None, None) => Some(Ppm(999_000)),
            (None, Some(_)) => None,
        };
        let latency = match &spec.latency {
            Some(l) => {
                let threshold = l.threshold.get();
                if threshold < Duration::from_micros(50) || threshold > Duration::from_secs(60) {
                    return Err(SpecError::DurationOutOfRange {
                        field: "latency.threshold",
                        value: l.threshold.to_string(),
                        min: "50us",
                        max: "60s",
                    });
                }
                Some(LatencyTarget {
                    threshold_us: u64::try_from(threshold.as_micros()).unwrap_or(u64::MAX),
                    target: parse_target("latency.target", &l.target)?,
                })
            }
            None => None,
        };
        let slice = match &spec.timeslice {
            None => SliceRule::DEFAULT,
            Some(t) => SliceRule {
                duration_ms: match &t.duration {
                    None => SliceRule::DEFAULT.duration_ms,
                    Some(d) => duration_in(
                        "timeslice.duration",
                        d.get(),
                        MINUTE_MS,
                        HOUR_MS,
                        ("1m", "1h"),
                    )?,
                },
                good: match &t.good_percent {
                    None => SliceRule::DEFAULT.good,
                    Some(p) => {
                        let good = parse_percent("timeslice.goodPercent", p)?;
                        if good.0 == 0 || good > Ppm::ONE {
                            return Err(SpecError::PercentOutOfRange {
                                field: "timeslice.goodPercent",
                                value: p.clone(),
                                min: "0 (exclusive)",
                                max: "100",
                            });
                        }
                        good
                    }
                },
            },
        };
        let alerting = spec.alerting.clone().unwrap_or_default();
        let alert_windows = match (
            alerting.profile.unwrap_or_default(),
            alerting.burn_rate_windows,
        ) {
            (AlertingProfile::Custom, Some(windows)) if !windows.is_empty() => windows
                .iter()
                .map(parse_alert_window)
                .collect::<Result<Vec<_>, _>>()?,
            (AlertingProfile::Custom, _) => return Err(SpecError::CustomWithoutWindows),
            (AlertingProfile::Standard, _) => STANDARD_WINDOWS
                .iter()
                .map(|&(severity, long_ms, short_ms, budget_share)| AlertWindow {
                    severity,
                    long_ms,
                    short_ms,
                    budget_share,
                })
                .collect(),
        };
        let no_data_after_ms = match &spec.no_data_after {
            None => 5 * MINUTE_MS,
            Some(d) => duration_in("noDataAfter", d.get(), 30_000, DAY_MS, ("30s", "24h"))?,
        };
        Ok(SloConfig {
            window,
            window_ms: window_ms(window),
            budgeting: spec.budgeting_method.unwrap_or_default(),
            slice,
            availability,
            latency,
            alert_windows,
            min_events_to_alert: alerting
                .min_events_to_alert
                .map_or(3, |n| u64::try_from(n).unwrap_or(0)),
            no_data_after_ms,
        })
    }
}

/// Length of a rolling window.
pub fn window_ms(window: SloWindow) -> i64 {
    match window {
        SloWindow::Days7 => 7 * DAY_MS,
        SloWindow::Days14 => 14 * DAY_MS,
        SloWindow::Days28 => 28 * DAY_MS,
        SloWindow::Days30 => 30 * DAY_MS,
    }
}

fn parse_alert_window(w: &BurnRateWindow) -> Result<AlertWindow, SpecError> {
    let long_ms = duration_in(
        "burnRateWindows.long",
        w.long.get(),
        5 * MINUTE_MS,
        7 * DAY_MS,
        ("5m", "168h"),
    )?;
    let short_ms = duration_in(
        "burnRateWindows.short",
        w.short.get(),
        1,
        long_ms,
        ("1ms", "long"),
    )?;
    if short_ms >= long_ms {
        return Err(SpecError::ShortNotShorter {
            short: w.short.to_string(),
            long: w.long.to_string(),
        });
    }
    let budget_share = parse_percent("burnRateWindows.budgetPercent", &w.budget_percent)?;
    if budget_share.0 == 0 || budget_share > Ppm::ONE {
        return Err(SpecError::PercentOutOfRange {
            field: "burnRateWindows.budgetPercent",
            value: w.budget_percent.clone(),
            min: "0 (exclusive)",
            max: "100",
        });
    }
    Ok(AlertWindow {
        severity: w.severity,
        long_ms,
        short_ms,
        budget_share,
    })
}

fn duration_in(
    field: &'static str,
    d: Duration,
    min_ms: i64,
    max_ms: i64,
    (min, max): (&'static str, &'static str),
) -> Result<i64, SpecError> {
    let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    if ms < min_ms || ms > max_ms {
        return Err(SpecError::DurationOutOfRange {
            field,
            value: format!("{d:?}"),
            min,
            max,
        });
    }
    Ok(ms)
}

fn parse_target(field: &'static str, s: &str) -> Result<Ppm, SpecError> {
    let target = parse_percent(field, s)?;
    if target < TARGET_MIN || target > TARGET_MAX {
        return Err(SpecError::PercentOutOfRange {
            field,
            value: s.to_owned(),
            min: "50",
            max: "99.999",
        });
    }
    Ok(target)
}

/// Parses "99.95" (the CRD's pattern: up to three integer digits, up to four decimals) exactly
/// into millionths.
pub fn parse_percent(field: &'static str, s: &str) -> Result<Ppm, SpecError> {
    let bad = || SpecError::NotAPercent {
        field,
        value: s.chars().take(16).collect(),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || int.len() > 3 || frac.len() > 4 || !digits(int) || !digits(frac) {
        return Err(bad());
    }
    if s.contains('.') && frac.is_empty() {
        return Err(bad());
    }
    let int: u32 = int.parse().map_err(|_| bad())?;
    let frac_value: u32 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let frac_scaled = frac_value * 10u32.pow(4 - u32::try_from(frac.len()).unwrap_or(4));
    // percent × 10^4 = fraction × 10^6.
    Ok(Ppm(int * 10_000 + frac_scaled))
}

#[cfg(test)]
mod tests {
    use netslo_crds::duration::GoDuration;
    use netslo_crds::v1alpha1::{Alerting, AvailabilityObjective, LatencyObjective, Timeslice};

    use super::*;

    #[test]
    fn percents_parse_exactly() {
        let cases = [
            ("99.9", Some(999_000)),
            ("99", Some(990_000)),
            ("99.999", Some(999_990)),
            ("50", Some(500_000)),
            ("0.0001", Some(1)),
            ("100", Some(1_000_000)),
            ("99.", None),
            (".9", None),
            ("9a", None),
            ("99.12345", None),
            ("1000", None),
            ("", None),
            ("-1", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_percent("f", input).ok().map(|p| p.0),
                want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn defaults_apply() {
        let c = SloConfig::from_spec(None).unwrap();
        assert_eq!(c.window, SloWindow::Days28);
        assert_eq!(c.window_ms, 28 * DAY_MS);
        assert_eq!(c.budgeting, BudgetingMethod::Occurrences);
        assert_eq!(c.availability, Some(Ppm(999_000)));
        assert_eq!(c.latency, None);
        assert_eq!(c.slice, SliceRule::DEFAULT);
        assert_eq!(c.min_events_to_alert, 3);
        assert_eq!(c.no_data_after_ms, 5 * MINUTE_MS);
        let labels: Vec<_> = c.alert_windows.iter().map(AlertWindow::label).collect();
        assert_eq!(labels, ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]);
    }

    #[test]
    fn burn_factors_follow_the_period() {
        let c = SloConfig::from_spec(None).unwrap();
        let at = |days: i64| -> Vec<f64> {
            c.alert_windows
                .iter()
                .map(|w| (w.factor(days * DAY_MS) * 100.0).round() / 100.0)
                .collect()
        };
        assert_eq!(at(30), [14.4, 6.0, 3.0, 1.0]);
        assert_eq!(at(28), [13.44, 5.6, 2.8, 0.93]);
    }

    #[test]
    fn latency_only_has_no_default_availability() {
        let spec = Objectives {
            latency: Some(LatencyObjective {
                threshold: GoDuration::from_millis(5),
                target: "99".into(),
            }),
            ..Objectives::default()
        };
        let c = SloConfig::from_spec(Some(&spec)).unwrap();
        assert_eq!(c.availability, None);
        assert_eq!(
            c.latency,
            Some(LatencyTarget {
                threshold_us: 5_000,
                target: Ppm(990_000)
            })
        );
    }

    #[test]
    fn invalid_specs_are_errors_not_panics() {
        let with = |f: fn(&mut Objectives)| {
            let mut o = Objectives::default();
            f(&mut o);
            SloConfig::from_spec(Some(&o))
                .map(|_| ())
                .map_err(|e| e.reason())
        };
        type Case = (fn(&mut Objectives), Result<(), &'static str>);
        let cases: [Case; 6] = [
            (
                |o| {
                    o.availability = Some(AvailabilityObjective {
                        target: "100".into(),
                    })
                },
                Err("PercentOutOfRange"),
            ),
            (
                |o| {
                    o.availability = Some(AvailabilityObjective {
                        target: "ninety".into(),
                    })
                },
                Err("NotAPercent"),
            ),
            (
                |o| {
                    o.alerting = Some(Alerting {
                        profile: Some(AlertingProfile::Custom),
                        ..Alerting::default()
                    })
                },
                Err("CustomWithoutWindows"),
            ),
            (
                |o| {
                    o.alerting = Some(Alerting {
                        profile: Some(AlertingProfile::Custom),
                        burn_rate_windows: Some(vec![BurnRateWindow {
                            severity: AlertSeverity::Page,
                            long: GoDuration::from_secs(3600),
                            short: GoDuration::from_secs(3600),
                            budget_percent: "2".into(),
                        }]),
                        min_events_to_alert: None,
                    })
                },
                Err("ShortNotShorter"),
            ),
            (
                |o| {
                    o.timeslice = Some(Timeslice {
                        duration: Some(GoDuration::from_secs(10)),
                        good_percent: None,
                    })
                },
                Err("DurationOutOfRange"),
            ),
            (
                |o| {
                    o.timeslice = Some(Timeslice {
                        duration: Some(GoDuration::from_secs(300)),
                        good_percent: Some("95".into()),
                    })
                },
                Ok(()),
            ),
        ];
        for (i, (f, want)) in cases.into_iter().enumerate() {
            assert_eq!(with(f), want, "case {i}");
        }
    }

    #[test]
    fn slice_rule_is_exact_at_the_boundary() {
        let rule = SliceRule::DEFAULT;
        assert!(rule.is_good(99, 100));
        assert!(!rule.is_good(98, 100));
        assert!(rule.is_good(990, 1000));
        assert!(!rule.is_good(0, 0), "a slice without data is never good");
    }
}
