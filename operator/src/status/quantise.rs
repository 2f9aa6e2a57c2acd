//! Figures as status strings: rounded from exact counts so that a steady state renders the same
//! string on every evaluation, and a write happens only when a rounded figure moves.
//!
//! | Figure | Rounding | Moves (steady 99.9% check, 10⁶ probes in the window) |
//! |---|---|---|
//! | SLI | 5 significant digits, down | every ~10 bad probes |
//! | error budget remaining | 0.01, down, clamped to [−1, 1] | every ~10 bad probes |
//! | burn rate | 0.1, nearest | when the burn visibly changes |
//! | coverage | 0.001, down | every ~40 minutes while a 28d window fills |
//! | per-target success (1h) | 4 significant digits, down | |
//! | latency percentiles | 2 significant digits | |
//!
//! Ratios round down so that status never overstates how good things are ("1" only when every
//! probe was good). Everything is integer arithmetic: an SLI exactly at its target prints as the
//! target, which floating point does not guarantee.

use netslo_crds::v1alpha1::{BurnRate, ObjectiveStatus, SloStatus};

use crate::slo::evaluate::{Evaluation, Fraction};
use crate::slo::{Ppm, format_window};

/// Significant digits of an SLI.
pub const SLI_DIGITS: u32 = 5;
/// Significant digits of a per-target success ratio.
pub const TARGET_RATIO_DIGITS: u32 = 4;
/// Decimals of the error budget remaining.
pub const BUDGET_DECIMALS: u32 = 2;
/// Decimals of coverage.
pub const COVERAGE_DECIMALS: u32 = 3;

/// The SLO block of status.
pub fn slo_status(eval: &Evaluation) -> SloStatus {
    SloStatus {
        window: format_window(eval.window_ms),
        coverage: decimals_down(
            i128::from(eval.coverage.num),
            u128::from(eval.coverage.den),
            COVERAGE_DECIMALS,
        ),
        objectives: eval
            .objectives
            .iter()
            .map(|o| ObjectiveStatus {
                name: o.name,
                target: ppm(o.target),
                sli: o.sli().map(|s| ratio(s, SLI_DIGITS)),
                error_budget_remaining: o
                    .budget_remaining_exact()
                    .map(|(num, den)| decimals_down(num, den, BUDGET_DECIMALS)),
                burn_rates: o
                    .burn_rates
                    .iter()
                    .filter_map(|w| {
                        w.rate_exact(o.target).map(|(num, den)| BurnRate {
                            window: format_window(w.window_ms),
                            rate: tenths(num, den),
                        })
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// A fraction in [0, 1] to `digits` significant digits, rounded down: "0.99953", "1", "0".
pub fn ratio(f: Fraction, digits: u32) -> String {
    significant_down(u128::from(f.num), u128::from(f.den), digits)
}

/// An exact target: `Ppm(999_000)` is "0.999".
pub fn ppm(p: Ppm) -> String {
    decimals_down(i128::from(p.0), 1_000_000, 6)
}

/// `num/den` rounded to the nearest 0.1 (halves up), always with one decimal: "14.4", "0.0".
pub fn tenths(num: u128, den: u128) -> String {
    if den == 0 {
        return "0.0".into();
    }
    let t = num.saturating_mul(20).saturating_add(den) / den.saturating_mul(2);
    format!("{}.{}", t / 10, t % 10)
}

/// `num/den` rounded down (towards −∞) to `decimals` places, trailing zeros trimmed.
pub fn decimals_down(num: i128, den: u128, decimals: u32) -> String {
    if den == 0 {
        return "0".into();
    }
    let scale = 10u128.pow(decimals);
    let magnitude = num.unsigned_abs().saturating_mul(scale);
    // Towards −∞: a negative value's magnitude rounds up.
    let scaled = if num < 0 {
        magnitude.div_ceil(den)
    } else {
        magnitude / den
    };
    render(num < 0 && scaled > 0, scaled, decimals)
}

/// `num/den ≥ 0` rounded down to `digits` significant digits, trailing zeros trimmed.
fn significant_down(num: u128, den: u128, digits: u32) -> String {
    if num == 0 || den == 0 {
        return "0".into();
    }
    // Decimal exponent e with 10^e ≤ num/den < 10^(e+1).
    let mut e: i32 = 0;
    if num >= den {
        while den
            .checked_mul(10u128.saturating_pow(e.unsigned_abs() + 1))
            .is_some_and(|d| num >= d)
        {
            e += 1;
        }
    } else {
        while num.saturating_mul(10u128.saturating_pow(e.unsigned_abs() + 1)) < den {
            e -= 1;
        }
        e -= 1;
    }
    let shift = i32::try_from(digits).unwrap_or(5) - 1 - e;
    if shift >= 0 {
        let scaled = num.saturating_mul(10u128.saturating_pow(shift.unsigned_abs())) / den;
        render(false, scaled, shift.unsigned_abs())
    } else {
        let scaled = num / den.saturating_mul(10u128.saturating_pow(shift.unsigned_abs()));
        let zeros = "0".repeat(shift.unsigned_abs() as usize);
        format!("{scaled}{zeros}")
    }
}

/// `scaled × 10^−decimals` as a decimal string without trailing zeros.
fn render(negative: bool, scaled: u128, decimals: u32) -> String {
    let digits = format!("{scaled:0>width$}", width = decimals as usize + 1);
    let (int, frac) = digits.split_at(digits.len() - decimals as usize);
    let frac = frac.trim_end_matches('0');
    let sign = if negative { "-" } else { "" };
    if frac.is_empty() {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    }
}

/// A latency as a short duration with two significant digits: "412us" → "410us", "3.1ms",
/// "12ms", "1.5s".
pub fn duration_us(us: u64) -> String {
    let two_digits = |v: u64, unit_us: u64, unit: &str| {
        // Two significant digits of v/unit_us, rounded to nearest.
        let tenths = (u128::from(v) * 10 + u128::from(unit_us) / 2) / u128::from(unit_us);
        if tenths < 100 {
            format!("{}{}", render(false, tenths, 1), unit)
        } else {
            let whole = tenths / 10;
            let magnitude = 10u128.pow(whole.ilog10().saturating_sub(1));
            let rounded = (whole + magnitude / 2) / magnitude * magnitude;
            format!("{rounded}{unit}")
        }
    };
    match us {
        0..1_000 => two_digits(us, 1, "us"),
        1_000..1_000_000 => two_digits(us, 1_000, "ms"),
        _ => two_digits(us, 1_000_000, "s"),
    }
}

/// Reads back what [`duration_us`] writes.
pub fn parse_duration_us(s: &str) -> Option<u64> {
    let (number, unit_us) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else {
        (s.strip_suffix('s')?, 1e6)
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * unit_us).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits_round_down() {
        let f = |num, den| ratio(Fraction { num, den }, 5);
        let cases = [
            ((999, 1000), "0.999"),
            ((999_530, 1_000_000), "0.99953"),
            ((9_999_996, 10_000_000), "0.99999"),
            ((1, 1), "1"),
            ((0, 5), "0"),
            ((0, 0), "0"),
            ((12, 28), "0.42857"),
            ((1, 3), "0.33333"),
            ((2, 3), "0.66666"),
            ((1, 1_000_000), "0.000001"),
            ((1, 7_000_000), "0.00000014285"),
            ((u64::MAX - 1, u64::MAX), "0.99999"),
        ];
        for ((num, den), want) in cases {
            assert_eq!(f(num, den), want, "{num}/{den}");
        }
        assert_eq!(significant_down(123_456, 1, 5), "123450");
        assert_eq!(significant_down(10, 1, 5), "10");
    }

    #[test]
    fn decimals_round_towards_minus_infinity() {
        let cases = [
            ((53, 100), "0.53"),
            ((5399, 10_000), "0.53"),
            ((-1, 1000), "-0.01"),
            ((-1, 1), "-1"),
            ((1, 1), "1"),
            ((0, 1), "0"),
            ((-5300, 10_000), "-0.53"),
            ((-5301, 10_000), "-0.54"),
        ];
        for ((num, den), want) in cases {
            assert_eq!(decimals_down(num, den, 2), want, "{num}/{den}");
        }
        assert_eq!(ppm(Ppm(999_000)), "0.999");
        assert_eq!(ppm(Ppm(999_990)), "0.99999");
        assert_eq!(ppm(Ppm(500_000)), "0.5");
    }

    #[test]
    fn burn_rates_to_tenths() {
        let cases = [
            ((144, 10), "14.4"),
            ((0, 7), "0.0"),
            ((1, 20), "0.1"),
            ((1, 21), "0.0"),
            ((3, 1), "3.0"),
            ((1000, 1), "1000.0"),
            ((5, 0), "0.0"),
        ];
        for ((num, den), want) in cases {
            assert_eq!(tenths(num, den), want, "{num}/{den}");
        }
    }

    #[test]
    fn durations_have_two_significant_digits_and_parse_back() {
        let cases = [
            (0, "0us"),
            (7, "7us"),
            (412, "410us"),
            (999, "1000us"),
            (1_000, "1ms"),
            (3_100, "3.1ms"),
            (3_149, "3.1ms"),
            (12_345, "12ms"),
            (412_000, "410ms"),
            (1_500_000, "1.5s"),
            (61_000_000, "61s"),
        ];
        for (us, want) in cases {
            let s = duration_us(us);
            assert_eq!(s, want, "{us}");
            let back = parse_duration_us(&s).unwrap();
            assert!(back.abs_diff(us) * 20 <= us.max(1), "{us} -> {s} -> {back}");
        }
        assert_eq!(parse_duration_us("5 parsecs"), None);
        assert_eq!(parse_duration_us("-1ms"), None);
    }

    #[test]
    fn tiny_changes_do_not_move_the_strings() {
        // A steady check at ~99.95% over a million probes: a few more probes, good or bad,
        // leave every rendered figure unchanged.
        let base = ratio(
            Fraction {
                num: 999_531,
                den: 1_000_000,
            },
            SLI_DIGITS,
        );
        for extra_good in 0..5 {
            let s = ratio(
                Fraction {
                    num: 999_531 + extra_good,
                    den: 1_000_000 + extra_good + 1,
                },
                SLI_DIGITS,
            );
            assert_eq!(s, base);
        }
        assert_eq!(tenths(1441, 1000), tenths(1449, 1000));
    }
}
