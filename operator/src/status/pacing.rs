//! Write pacing: at most one status write per object per 30 s, and a global token bucket
//! (10 writes/s, burst 20) so that a thousand checks changing at once cannot flood the API
//! server (rust-operator-style §5.3). Pure state plus `now`.
//!
//! A clock that steps backwards never blocks writes for the length of the step: elapsed time is
//! taken as zero and the object's floor restarts from the stepped-back `now`.

use std::collections::HashMap;

use crate::slo::{SECOND_MS, UnixMs};

/// Limits of a [`WritePacer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PacingLimits {
    /// Least time between two writes of one object.
    pub per_object_ms: i64,
    /// Sustained global writes per second.
    pub rate_per_s: f64,
    /// Global burst.
    pub burst: f64,
}

impl Default for PacingLimits {
    fn default() -> Self {
        PacingLimits {
            per_object_ms: 30 * SECOND_MS,
            rate_per_s: 10.0,
            burst: 20.0,
        }
    }
}

/// Whether to write now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteDecision {
    /// Write now; the write has been accounted for.
    Write,
    /// Not before this time (Unix ms): requeue then.
    NotBefore(UnixMs),
}

/// A condition flip may be written this soon after the previous write...
const TRANSITION_GAP_MS: i64 = SECOND_MS;
/// ...this many times per floor: an outage's first picture and the one it settles on (a
/// node's outbound half, then the whole node) both go out without waiting out the floor.
const EARLY_WRITES_PER_FLOOR: usize = 2;

/// Per-object floors and the global bucket.
#[derive(Debug, Clone)]
pub struct WritePacer {
    limits: PacingLimits,
    last_write: HashMap<String, UnixMs>,
    /// ...and when its early writes of the last floor were.
    early_writes: HashMap<String, Vec<UnixMs>>,
    tokens: f64,
    refilled_at: Option<UnixMs>,
}

impl WritePacer {
    pub fn new(limits: PacingLimits) -> Self {
        WritePacer {
            limits,
            last_write: HashMap::new(),
            early_writes: HashMap::new(),
            tokens: limits.burst,
            refilled_at: None,
        }
    }

    /// Asks to write the status of `object` (e.g. "namespace/name") at `now`.
    pub fn request(&mut self, object: &str, now: UnixMs) -> WriteDecision {
        self.refill(now);
        if let Some(last) = self.last_write.get_mut(object) {
            if *last > now {
                *last = now;
            }
            let allowed = last.saturating_add(self.limits.per_object_ms);
            if now < allowed {
                return WriteDecision::NotBefore(allowed);
            }
        }
        self.take_token(object, now)
    }

    /// Asks to write a status in which a condition flipped or the verdict changed: an outage
    /// must show without waiting out the floor that a figure-only change (or a first,
    /// partial picture of the same outage) started. Allowed [`TRANSITION_GAP_MS`] after the
    /// previous write, [`EARLY_WRITES_PER_FLOOR`] times per floor, within the global bucket;
    /// otherwise as [`WritePacer::request`]. Flapping therefore costs at most three writes
    /// per floor.
    pub fn request_transition(&mut self, object: &str, now: UnixMs) -> WriteDecision {
        let floor = self.limits.per_object_ms;
        let early_used = self.early_writes.get(object).is_some_and(|times| {
            times
                .iter()
                .filter(|t| **t <= now && now < t.saturating_add(floor))
                .count()
                >= EARLY_WRITES_PER_FLOOR
        });
        let last = self.last_write.get(object).copied();
        let within_floor =
            last.is_some_and(|l| l <= now && now < l.saturating_add(self.limits.per_object_ms));
        if early_used || !within_floor {
            return self.request(object, now);
        }
        let gap_end = last.map_or(now, |l| l.saturating_add(TRANSITION_GAP_MS));
        if now < gap_end {
            return WriteDecision::NotBefore(gap_end);
        }
        self.refill(now);
        let decision = self.take_token(object, now);
        if decision == WriteDecision::Write {
            let times = self.early_writes.entry(object.to_owned()).or_default();
            times.retain(|t| *t <= now && now < t.saturating_add(floor));
            times.push(now);
        }
        decision
    }

    /// The global bucket's say (after [`WritePacer::refill`]): a write now, taking a token
    /// and starting the object's floor, or when the next token is due.
    fn take_token(&mut self, object: &str, now: UnixMs) -> WriteDecision {
        if self.tokens < 1.0 {
            let wait_ms = ((1.0 - self.tokens) / self.limits.rate_per_s * 1_000.0).ceil() as i64;
            return WriteDecision::NotBefore(now.saturating_add(wait_ms.max(1)));
        }
        self.tokens -= 1.0;
        self.last_write.insert(object.to_owned(), now);
        WriteDecision::Write
    }

    /// Forgets a deleted object.
    pub fn forget(&mut self, object: &str) {
        self.last_write.remove(object);
        self.early_writes.remove(object);
    }

    /// Drops floors that have passed, so memory follows the objects written recently.
    pub fn prune(&mut self, now: UnixMs) {
        let floor = self.limits.per_object_ms;
        self.last_write
            .retain(|_, last| now.saturating_sub(*last) < floor && *last <= now);
        self.early_writes.retain(|_, times| {
            times.retain(|t| now.saturating_sub(*t) < floor && *t <= now);
            !times.is_empty()
        });
    }

    fn refill(&mut self, now: UnixMs) {
        let elapsed_ms = self.refilled_at.map_or(0, |t| now.saturating_sub(t).max(0));
        self.tokens = (self.tokens + elapsed_ms as f64 / 1_000.0 * self.limits.rate_per_s)
            .min(self.limits.burst);
        self.refilled_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMs = 1_767_225_600_000;

    #[test]
    fn one_write_per_object_per_floor() {
        let mut p = WritePacer::new(PacingLimits::default());
        let cases = [
            (0, WriteDecision::Write),
            (1_000, WriteDecision::NotBefore(T0 + 30_000)),
            (29_999, WriteDecision::NotBefore(T0 + 30_000)),
            (30_000, WriteDecision::Write),
            (45_000, WriteDecision::NotBefore(T0 + 60_000)),
        ];
        for (at, want) in cases {
            assert_eq!(p.request("ns/a", T0 + at), want, "at +{at}");
        }
        assert_eq!(p.request("ns/b", T0 + 45_000), WriteDecision::Write);
    }

    #[test]
    fn a_condition_flip_is_written_early_twice_per_floor() {
        let mut p = WritePacer::new(PacingLimits::default());
        assert_eq!(p.request("ns/a", T0), WriteDecision::Write);
        let cases = [
            // Too soon even for a flip.
            (500, WriteDecision::NotBefore(T0 + 1_000)),
            // The flip goes out early...
            (2_000, WriteDecision::Write),
            // ...and so does the one it settles on, a second after...
            (2_500, WriteDecision::NotBefore(T0 + 3_000)),
            (4_000, WriteDecision::Write),
            // ...but a third waits for the floor of that write.
            (5_000, WriteDecision::NotBefore(T0 + 34_000)),
            (34_000, WriteDecision::Write),
        ];
        for (at, want) in cases {
            assert_eq!(p.request_transition("ns/a", T0 + at), want, "at +{at}");
        }
        // The early writes at +2 s and +4 s are a floor old by +34 s: two early writes again
        // (the one at +34 s went through the floor), then the floor.
        let cases = [
            (35_000, WriteDecision::Write),
            (36_000, WriteDecision::Write),
            (37_000, WriteDecision::NotBefore(T0 + 66_000)),
        ];
        for (at, want) in cases {
            assert_eq!(p.request_transition("ns/a", T0 + at), want, "at +{at}");
        }
        // Figure-only changes keep the plain floor.
        assert_eq!(
            p.request("ns/a", T0 + 40_000),
            WriteDecision::NotBefore(T0 + 66_000)
        );
    }

    #[test]
    fn the_global_bucket_bounds_bursts_and_rate() {
        let mut p = WritePacer::new(PacingLimits::default());
        let writes = (0..100)
            .filter(|i| p.request(&format!("ns/c{i}"), T0) == WriteDecision::Write)
            .count();
        assert_eq!(writes, 20, "burst");
        assert_eq!(p.request("ns/late", T0), WriteDecision::NotBefore(T0 + 100));
        // Over the next 10 s, 10 writes/s.
        let mut later = 0;
        for ms in (0..10_000).step_by(10) {
            if p.request(&format!("ns/d{ms}"), T0 + ms) == WriteDecision::Write {
                later += 1;
            }
        }
        assert!((98..=101).contains(&later), "{later}");
    }

    #[test]
    fn a_backwards_clock_step_does_not_block_writes_for_its_length() {
        let mut p = WritePacer::new(PacingLimits::default());
        assert_eq!(p.request("ns/a", T0), WriteDecision::Write);
        let back = T0 - 3_600_000;
        assert_eq!(
            p.request("ns/a", back),
            WriteDecision::NotBefore(back + 30_000)
        );
        assert_eq!(p.request("ns/a", back + 30_000), WriteDecision::Write);
    }

    #[test]
    fn prune_and_forget_bound_memory() {
        let mut p = WritePacer::new(PacingLimits::default());
        for i in 0..10 {
            p.request(&format!("ns/c{i}"), T0);
        }
        p.forget("ns/c0");
        assert_eq!(p.request("ns/c0", T0 + 1), WriteDecision::Write);
        p.prune(T0 + 30_001);
        assert!(p.last_write.is_empty());
    }
}
