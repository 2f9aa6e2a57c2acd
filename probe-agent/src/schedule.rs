//! Pure schedule arithmetic: when each target's probes fire.
//!
//! A target fires in round `r` at `start + phase + r·interval + u_r·jitter·interval`, where
//! `phase` spreads targets evenly over the interval (a stable hash of the series key), and
//! `u_r ∈ [0, 1)` is a per-round pseudo-random draw. Since `jitter < 1`, consecutive fire
//! times are at least `(1 − jitter)·interval` apart and never reorder. A target whose probe
//! overran skips the rounds it missed instead of bursting to catch up.

use std::time::{Duration, Instant};

use netslo_protocol::hash::{fnv1a_64, splitmix64};

/// Stable 64-bit hash of some strings, each followed by `0xff` (a byte no UTF-8 text holds),
/// so ("ab","c") ≠ ("a","bc").
pub fn stable_hash(parts: &[&str]) -> u64 {
    fnv1a_64(parts.iter().flat_map(|p| p.bytes().chain([0xff])))
}

/// A value in `[0, 1)` from 64 random bits.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The schedule of one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub interval: Duration,
    /// Fraction of the interval, in `[0, 1)`.
    pub jitter: f64,
    /// Offset of round 0 from the start.
    pub phase: Duration,
    pub seed: u64,
}

impl Schedule {
    /// A schedule whose phase and jitter derive from the series key hash.
    pub fn new(interval: Duration, jitter: f64, key_hash: u64) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 0.99)
        } else {
            0.0
        };
        let phase = interval.mul_f64(unit(splitmix64(key_hash)));
        Schedule {
            interval,
            jitter,
            phase,
            seed: key_hash,
        }
    }

    /// Offset from the start of round `r`.
    pub fn offset(&self, round: u64) -> Duration {
        let j = self
            .interval
            .mul_f64(self.jitter * unit(splitmix64(self.seed ^ splitmix64(round))));
        let base = self
            .interval
            .saturating_mul(u32::try_from(round).unwrap_or(u32::MAX));
        self.phase + base + j
    }

    /// The first round after `after` (or 0) whose fire time is at or after `now`, and that time.
    pub fn next(&self, start: Instant, now: Instant, after: Option<u64>) -> (u64, Instant) {
        let elapsed = now.saturating_duration_since(start);
        // Estimate the round from elapsed time, then correct for phase and jitter.
        let est = u64::try_from(elapsed.as_nanos() / self.interval.as_nanos()).unwrap_or(u64::MAX);
        let mut r = est.saturating_sub(1);
        if let Some(a) = after {
            r = r.max(a + 1);
        }
        while start + self.offset(r) < now {
            r += 1;
        }
        (r, start + self.offset(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fire_times_are_ordered_and_spaced() {
        let s = Schedule::new(Duration::from_secs(10), 0.2, stable_hash(&["c", "t", "s"]));
        assert!(s.phase < Duration::from_secs(10));
        let mut prev = s.offset(0);
        for r in 1..1_000 {
            let o = s.offset(r);
            assert!(o >= prev + Duration::from_secs(8), "round {r}");
            assert!(o <= s.phase + Duration::from_secs(10 * r + 2));
            prev = o;
        }
    }

    #[test]
    fn phases_spread_targets() {
        let interval = Duration::from_secs(10);
        let mut per_second = [0u32; 10];
        for t in 0..1_000 {
            let s = Schedule::new(
                interval,
                0.1,
                stable_hash(&["check", &format!("t{t}"), "n"]),
            );
            per_second[s.phase.as_secs() as usize] += 1;
        }
        for n in per_second {
            assert!((60..=140).contains(&n), "uneven spread: {per_second:?}");
        }
    }

    #[test]
    fn next_skips_missed_rounds_and_never_repeats() {
        let start = Instant::now();
        let s = Schedule::new(Duration::from_secs(1), 0.0, 42);
        let (r0, t0) = s.next(start, start, None);
        assert_eq!(r0, 0);
        assert_eq!(t0, start + s.phase);
        // The probe of round 0 overran by 3.5 s: the next fire is the first one in the future.
        let now = t0 + Duration::from_millis(3_500);
        let (r, t) = s.next(start, now, Some(r0));
        assert_eq!(r, 4);
        assert!(t >= now && t < now + Duration::from_secs(1));
        // Asking again at the same moment does not repeat the round.
        let (r2, _) = s.next(start, t, Some(r));
        assert_eq!(r2, 5);
    }

    #[test]
    fn hash_separates_parts() {
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        assert_eq!(stable_hash(&["x"]), stable_hash(&["x"]));
    }

    #[test]
    fn degenerate_inputs_are_clamped() {
        let s = Schedule::new(Duration::ZERO, f64::NAN, 1);
        assert_eq!(s.interval, Duration::from_millis(1));
        assert_eq!(s.jitter, 0.0);
        let s = Schedule::new(Duration::from_secs(1), 5.0, 1);
        assert!(s.jitter < 1.0);
    }
}
