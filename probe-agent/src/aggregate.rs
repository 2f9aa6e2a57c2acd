//! Windowed aggregation per (check, target, source).
//!
//! Time is cut into fixed windows counted from the aggregator's start (monotonic; the wall
//! clock is read once, to label windows). Each series keeps only its open window; a window
//! closes when a probe lands in a later one or when [`Aggregator::rotate`] passes its end, and
//! the closed bucket goes to a bounded outbox (oldest dropped first, drops counted) from which
//! the result channel drains. Series with no open window are forgotten, so memory follows the
//! set of active targets, never time.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netslo_protocol::bucket::{Bucket, BucketReport};
use netslo_protocol::time::UnixMs;
use serde::{Deserialize, Serialize};

use crate::verdict::ProbeResult;

/// Identity of a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeriesKey {
    pub check: Arc<str>,
    pub target: Arc<str>,
    pub source: Arc<str>,
}

#[derive(Debug)]
struct Series {
    window: u64,
    bucket: Bucket,
}

/// Aggregates probe results into windows.
#[derive(Debug)]
pub struct Aggregator {
    window: Duration,
    epoch: Instant,
    epoch_unix_ms: UnixMs,
    series: HashMap<SeriesKey, Series>,
    outbox: VecDeque<BucketReport>,
    max_outbox: usize,
    dropped: u64,
    seq: u64,
}

impl Aggregator {
    /// `window` must be non-zero (it is clamped to at least 1 ms); `epoch_unix_ms` labels
    /// the window that starts at `epoch`.
    pub fn new(window: Duration, epoch: Instant, epoch_unix_ms: UnixMs, max_outbox: usize) -> Self {
        Aggregator {
            window: window.max(Duration::from_millis(1)),
            epoch,
            epoch_unix_ms,
            series: HashMap::new(),
            outbox: VecDeque::new(),
            max_outbox: max_outbox.max(1),
            dropped: 0,
            seq: 0,
        }
    }

    fn window_of(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.epoch);
        u64::try_from(since.as_nanos() / self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    fn window_start(&self, w: u64) -> Instant {
        let off = self
            .window
            .saturating_mul(u32::try_from(w).unwrap_or(u32::MAX));
        self.epoch + off
    }

    /// Records a result observed at `at`.
    pub fn record(
        &mut self,
        key: &SeriesKey,
        thresholds_us: &Arc<[u64]>,
        r: &ProbeResult,
        at: Instant,
    ) {
        let w = self.window_of(at);
        let offset = at.saturating_duration_since(self.window_start(w));
        if let Some(s) = self.series.get_mut(key)
            && s.window == w
        {
            s.bucket.add(r, offset);
            return;
        }
        let mut bucket = Bucket::new(thresholds_us.clone());
        bucket.add(r, offset);
        if let Some(old) = self
            .series
            .insert(key.clone(), Series { window: w, bucket })
        {
            // A result for an earlier window arriving late is folded into the current one's
            // predecessor only if still open; here the old window is simply closed.
            self.close(key.clone(), old);
        }
    }

    fn close(&mut self, key: SeriesKey, s: Series) {
        self.seq += 1;
        let b = s.bucket;
        let report = BucketReport {
            seq: self.seq,
            check: key.check,
            target: key.target,
            source: key.source,
            start_unix_ms: self.epoch_unix_ms.saturating_add(
                i64::try_from(s.window)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)),
            ),
            duration_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
            p50_us: b.p(0.5),
            p90_us: b.p(0.9),
            p99_us: b.p(0.99),
            bucket: b,
        };
        if self.outbox.len() >= self.max_outbox {
            self.outbox.pop_front();
            self.dropped += 1;
        }
        self.outbox.push_back(report);
    }

    /// Closes every window that ended at or before `now`; returns how many closed.
    pub fn rotate(&mut self, now: Instant) -> usize {
        let w = self.window_of(now);
        let ended: Vec<SeriesKey> = self
            .series
            .iter()
            .filter(|(_, s)| s.window < w)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &ended {
            if let Some(s) = self.series.remove(k) {
                self.close(k.clone(), s);
            }
        }
        ended.len()
    }

    /// Closes every open window now (at shutdown).
    pub fn flush(&mut self) {
        let all: Vec<SeriesKey> = self.series.keys().cloned().collect();
        for k in all {
            if let Some(s) = self.series.remove(&k) {
                self.close(k, s);
            }
        }
    }

    /// Takes every closed bucket.
    pub fn drain(&mut self) -> Vec<BucketReport> {
        self.outbox.drain(..).collect()
    }

    /// Closed buckets dropped because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Series with an open window.
    pub fn open_series(&self) -> usize {
        self.series.len()
    }

    /// When the current window ends, as seen from `now`.
    pub fn next_rotation(&self, now: Instant) -> Instant {
        self.window_start(self.window_of(now).saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Phases;
    use crate::verdict::{FailureReason, Layer, Outcome};

    fn key(t: &str) -> SeriesKey {
        SeriesKey {
            check: "ns/c".into(),
            target: t.into(),
            source: "node-a".into(),
        }
    }

    fn res(outcome: Outcome, latency_us: u64, reason: Option<FailureReason>) -> ProbeResult {
        ProbeResult {
            outcome,
            latency_us,
            lag_us: 7,
            phases: Phases::default(),
            reason,
            layer: reason.map(FailureReason::layer),
            blocked_by: None,
        }
    }

    #[test]
    fn counts_thresholds_and_reasons() {
        let t0 = Instant::now();
        let th: Arc<[u64]> = Arc::from(vec![100u64, 1_000]);
        let mut a = Aggregator::new(Duration::from_secs(10), t0, 1_000_000, 100);
        let k = key("t1");
        a.record(
            &k,
            &th,
            &res(Outcome::Good, 50, None),
            t0 + Duration::from_secs(1),
        );
        a.record(
            &k,
            &th,
            &res(Outcome::Good, 100, None),
            t0 + Duration::from_secs(2),
        );
        a.record(
            &k,
            &th,
            &res(Outcome::Good, 500, None),
            t0 + Duration::from_secs(3),
        );
        a.record(
            &k,
            &th,
            &res(Outcome::Good, 5_000, None),
            t0 + Duration::from_secs(3),
        );
        a.record(
            &k,
            &th,
            &res(Outcome::Bad, 2_000_000, Some(FailureReason::TcpTimeout)),
            t0 + Duration::from_millis(4_500),
        );
        a.record(
            &k,
            &th,
            &res(Outcome::Bad, 10, Some(FailureReason::TcpRefused)),
            t0 + Duration::from_secs(5),
        );
        a.record(
            &k,
            &th,
            &res(Outcome::Invalid, 0, Some(FailureReason::ProberLate)),
            t0 + Duration::from_secs(6),
        );
        assert_eq!(a.rotate(t0 + Duration::from_secs(9)), 0);
        assert_eq!(a.rotate(t0 + Duration::from_secs(10)), 1);
        let out = a.drain();
        assert_eq!(out.len(), 1);
        let b = &out[0];
        assert_eq!(
            (
                b.bucket.total,
                b.bucket.good,
                b.bucket.bad,
                b.bucket.invalid
            ),
            (7, 4, 2, 1)
        );
        assert_eq!(b.bucket.good_within, vec![2, 3]);
        assert_eq!(b.bucket.latency.count, 4);
        assert_eq!(b.start_unix_ms, 1_000_000);
        assert_eq!(b.duration_ms, 10_000);
        let ff = b.bucket.first_failure.as_ref().unwrap();
        assert_eq!(
            (ff.reason, ff.layer, ff.offset_ms),
            (FailureReason::TcpTimeout, Layer::Tcp, 4_500)
        );
        assert_eq!(
            b.bucket.reasons,
            vec![
                (FailureReason::TcpRefused, 1),
                (FailureReason::TcpTimeout, 1),
                (FailureReason::ProberLate, 1)
            ]
        );
        assert_eq!(a.open_series(), 0, "closed series are forgotten");
        let json = serde_json::to_value(b).unwrap();
        assert_eq!(json["goodWithin"], serde_json::json!([2, 3]));
        assert_eq!(json["check"], "ns/c");
    }

    #[test]
    fn a_later_window_closes_the_earlier_one() {
        let t0 = Instant::now();
        let th: Arc<[u64]> = Arc::from(vec![]);
        let mut a = Aggregator::new(Duration::from_secs(10), t0, 0, 100);
        let k = key("t1");
        a.record(&k, &th, &res(Outcome::Good, 1, None), t0);
        a.record(
            &k,
            &th,
            &res(Outcome::Good, 1, None),
            t0 + Duration::from_secs(25),
        );
        let out = a.drain();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].start_unix_ms, 0);
        a.flush();
        let out = a.drain();
        assert_eq!(out[0].start_unix_ms, 20_000);
        assert!(out[0].seq > 1);
    }

    #[test]
    fn expected_deny_good_probes_do_not_feed_latency() {
        let t0 = Instant::now();
        let th: Arc<[u64]> = Arc::from(vec![1_000u64]);
        let mut a = Aggregator::new(Duration::from_secs(10), t0, 0, 10);
        let mut r = res(Outcome::Good, 2_000_000, None);
        r.blocked_by = Some(FailureReason::TcpTimeout);
        a.record(&key("d"), &th, &r, t0);
        a.flush();
        let b = &a.drain()[0];
        assert_eq!(b.bucket.good, 1);
        assert_eq!(b.bucket.latency.count, 0);
        assert_eq!(b.bucket.good_within, vec![0]);
    }

    #[test]
    fn outbox_is_bounded_and_memory_follows_active_series() {
        let t0 = Instant::now();
        let th: Arc<[u64]> = Arc::from(vec![]);
        let mut a = Aggregator::new(Duration::from_secs(1), t0, 0, 50);
        for round in 0..100u64 {
            let at = t0 + Duration::from_secs(round);
            for t in 0..10 {
                a.record(
                    &key(&format!("t{t}")),
                    &th,
                    &res(Outcome::Good, 10, None),
                    at,
                );
            }
            a.rotate(at);
            assert!(a.open_series() <= 10);
        }
        assert_eq!(a.drain().len(), 50);
        assert_eq!(a.dropped(), 990 - 50);
    }

    #[test]
    fn next_rotation_is_the_window_end() {
        let t0 = Instant::now();
        let a = Aggregator::new(Duration::from_secs(10), t0, 0, 1);
        assert_eq!(
            a.next_rotation(t0 + Duration::from_secs(3)),
            t0 + Duration::from_secs(10)
        );
        assert_eq!(
            a.next_rotation(t0 + Duration::from_secs(10)),
            t0 + Duration::from_secs(20)
        );
    }
}
