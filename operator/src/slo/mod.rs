//! Pure SLO maths: no I/O, no kube client, time passed in as `now` (Unix milliseconds).
//!
//! * [`config`]: a check's objectives with every default applied, parsed once;
//! * [`window`]: the per-check history of good/total counts in time buckets, with a compact
//!   encoding that survives operator restarts;
//! * [`evaluate`]: SLIs, error budget, burn rates, multi-window multi-burn-rate alerts,
//!   coverage and NoData, from a history and `now`.
//!
//! Time throughout is Unix milliseconds as `i64` ([`UnixMs`]), the unit agents label their
//! buckets with; callers convert once at the edge.

pub mod config;
pub mod evaluate;
pub mod window;

pub use netslo_protocol::time::UnixMs;

pub const SECOND_MS: i64 = 1_000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A fraction in millionths: 99.9% is `Ppm(999_000)`. Percentages in the spec have at most four
/// decimals, so every target is exact in this unit and comparisons stay in integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ppm(pub u32);

impl Ppm {
    pub const ONE: Ppm = Ppm(1_000_000);

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1e6
    }

    /// `1 - self`, the error budget of an objective.
    pub fn complement(self) -> Ppm {
        Ppm(Self::ONE.0.saturating_sub(self.0))
    }
}

/// Renders a window length the way users write it: "5m", "1h", "3d", "90s".
pub fn format_window(ms: i64) -> String {
    match ms {
        ms if ms > 0 && ms % DAY_MS == 0 => format!("{}d", ms / DAY_MS),
        ms if ms > 0 && ms % HOUR_MS == 0 => format!("{}h", ms / HOUR_MS),
        ms if ms > 0 && ms % MINUTE_MS == 0 => format!("{}m", ms / MINUTE_MS),
        ms if ms % SECOND_MS == 0 => format!("{}s", ms / SECOND_MS),
        ms => format!("{ms}ms"),
    }
}

/// The wall clock, read at the edges only (the store stamping ingest, the reconciler's
/// `now`); everything below takes `now` as an argument.
pub use netslo_protocol::time::now_unix_ms as now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_labels() {
        for (ms, want) in [
            (5 * MINUTE_MS, "5m"),
            (HOUR_MS, "1h"),
            (90 * MINUTE_MS, "90m"),
            (3 * DAY_MS, "3d"),
            (28 * DAY_MS, "28d"),
            (90 * SECOND_MS, "90s"),
            (1_500, "1500ms"),
        ] {
            assert_eq!(format_window(ms), want);
        }
    }
}
