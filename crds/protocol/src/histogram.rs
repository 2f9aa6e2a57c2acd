//! A sparse log-linear latency histogram in microseconds.
//!
//! Values below 64 µs are kept exactly; above, each power of two is split into 32 equal
//! sub-buckets, so a bucket is at most 1/32 (≈3.1%) of its lower bound wide, and a value read
//! back from a bucket's midpoint is within ±1.6% of the truth. Values are clamped at
//! 2^36 − 1 µs (≈19 h). The bucket space has 1,024 indices; only occupied buckets are stored,
//! sorted, so a histogram holding a handful of probes costs a handful of entries.

use serde::{Deserialize, Serialize};

/// log2 of the sub-buckets per power of two.
pub const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Largest representable value; larger values are clamped to it.
pub const MAX_VALUE_US: u64 = (1 << 36) - 1;
/// Number of distinct bucket indices.
pub const BUCKETS: usize = bucket_index(MAX_VALUE_US) as usize + 1;

/// Bucket index of a value in microseconds.
pub const fn bucket_index(v: u64) -> u16 {
    let v = if v > MAX_VALUE_US { MAX_VALUE_US } else { v };
    if v < 2 * SUB {
        return v as u16;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (v >> shift) - SUB;
    (2 * SUB + (shift as u64 - 1) * SUB + sub) as u16
}

/// Inclusive value range `[lo, hi]` of a bucket.
pub const fn bucket_bounds(i: u16) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, i);
    }
    let k = i - 2 * SUB;
    let shift = k / SUB + 1;
    let sub = k % SUB;
    let lo = (SUB + sub) << shift;
    (lo, lo + (1 << shift) - 1)
}

/// A sparse histogram with exact count, sum, min and max.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Histogram {
    /// `(bucket index, count)`, sorted by index, counts > 0.
    pub buckets: Vec<(u16, u64)>,
    pub count: u64,
    pub sum_us: u64,
    pub min_us: u64,
    pub max_us: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    pub fn record_n(&mut self, v: u64, n: u64) {
        if n == 0 {
            return;
        }
        let v = v.min(MAX_VALUE_US);
        let i = bucket_index(v);
        match self.buckets.binary_search_by_key(&i, |(b, _)| *b) {
            Ok(pos) => self.buckets[pos].1 += n,
            Err(pos) => self.buckets.insert(pos, (i, n)),
        }
        if self.count == 0 || v < self.min_us {
            self.min_us = v;
        }
        self.max_us = self.max_us.max(v);
        self.count += n;
        self.sum_us = self.sum_us.saturating_add(v.saturating_mul(n));
    }

    /// Adds another histogram into this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        let mut out = Vec::with_capacity(self.buckets.len() + other.buckets.len());
        let (mut a, mut b) = (
            self.buckets.iter().peekable(),
            other.buckets.iter().peekable(),
        );
        loop {
            match (a.peek(), b.peek()) {
                (Some(&&(ia, ca)), Some(&&(ib, cb))) => {
                    if ia == ib {
                        out.push((ia, ca + cb));
                        a.next();
                        b.next();
                    } else if ia < ib {
                        out.push((ia, ca));
                        a.next();
                    } else {
                        out.push((ib, cb));
                        b.next();
                    }
                }
                (Some(&&x), None) => {
                    out.push(x);
                    a.next();
                }
                (None, Some(&&x)) => {
                    out.push(x);
                    b.next();
                }
                (None, None) => break,
            }
        }
        self.buckets = out;
        self.min_us = if self.count == 0 {
            other.min_us
        } else {
            self.min_us.min(other.min_us)
        };
        self.max_us = self.max_us.max(other.max_us);
        self.count += other.count;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding the
    /// `ceil(q·count)`-th smallest value, clamped to the observed min and max (the extreme ranks
    /// return the exact min and max).
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // Rank is at least 1 and at most count. The float maths is bounded by count.
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == 1 {
            return Some(self.min_us);
        }
        if rank == self.count {
            return Some(self.max_us);
        }
        let mut seen = 0;
        for &(i, c) in &self.buckets {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(i);
                let mid = lo + (hi - lo) / 2;
                return Some(mid.clamp(self.min_us, self.max_us));
            }
        }
        Some(self.max_us)
    }

    /// Number of recorded values that are certainly at or below `threshold_us` (bucket
    /// granularity, rounding down). Exact threshold counts are kept separately by the
    /// aggregator; this serves thresholds chosen after the fact.
    pub fn count_at_or_below(&self, threshold_us: u64) -> u64 {
        self.buckets
            .iter()
            .take_while(|(i, _)| bucket_bounds(*i).1 <= threshold_us)
            .map(|(_, c)| c)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_and_bounds_are_consistent() {
        assert_eq!(BUCKETS, 1024);
        let mut prev_hi = None;
        for i in 0..BUCKETS as u16 {
            let (lo, hi) = bucket_bounds(i);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "buckets are contiguous at {i}");
            }
            prev_hi = Some(hi);
            assert_eq!(bucket_index(lo), i);
            assert_eq!(bucket_index(hi), i);
            if lo >= 64 {
                // Relative width at most 1/32.
                assert!((hi - lo + 1) * 32 <= lo, "bucket {i} too wide: {lo}..{hi}");
            }
        }
        assert_eq!(prev_hi, Some(MAX_VALUE_US));
        assert_eq!(bucket_index(u64::MAX), (BUCKETS - 1) as u16);
    }

    #[test]
    fn exact_below_64us() {
        for v in 0..64 {
            assert_eq!(bucket_bounds(bucket_index(v)), (v, v));
        }
    }

    #[test]
    fn quantiles_within_relative_error() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 10);
        }
        for (q, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!(
                (got - want).abs() / want < 0.02,
                "q{q}: got {got}, want {want}"
            );
        }
        assert_eq!(h.quantile(0.0), Some(10));
        assert_eq!(h.quantile(1.0), Some(100_000));
        assert_eq!(h.count, 10_000);
        assert_eq!(h.min_us, 10);
        assert!(Histogram::new().quantile(0.5).is_none());
    }

    #[test]
    fn merge_equals_recording_all() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in [5u64, 70, 900, 12_345, 5, 1_000_000] {
            a.record(v);
            all.record(v);
        }
        for v in [3u64, 70, 88_000, 2] {
            b.record(v);
            all.record(v);
        }
        a.merge(&b);
        assert_eq!(a, all);
        let mut empty = Histogram::new();
        empty.merge(&b);
        assert_eq!(empty, b);
    }

    #[test]
    fn sparse_and_bounded() {
        let mut h = Histogram::new();
        for v in 0..5_000_000u64 {
            h.record(v.wrapping_mul(2_654_435_761) % (1 << 40));
        }
        assert!(h.buckets.len() <= BUCKETS);
        assert_eq!(h.max_us, MAX_VALUE_US);
        let mut one = Histogram::new();
        one.record(42);
        assert_eq!(one.buckets.len(), 1);
    }

    #[test]
    fn count_at_or_below_rounds_down() {
        let mut h = Histogram::new();
        for v in [10u64, 20, 63, 64, 1000, 5000] {
            h.record(v);
        }
        assert_eq!(h.count_at_or_below(63), 3);
        assert_eq!(h.count_at_or_below(65), 4);
        assert_eq!(h.count_at_or_below(u64::MAX), 6);
    }
}
