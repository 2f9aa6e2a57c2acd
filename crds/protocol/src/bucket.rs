//! The unit of results on the wire: one series' counters over one window ([`Bucket`]), as
//! closed and reported by an agent ([`BucketReport`]) and stored by the operator.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::Histogram;
use crate::time::UnixMs;
use crate::verdict::{FailureReason, Layer, Outcome, ProbeResult};

/// The first failure in a bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirstFailure {
    pub reason: FailureReason,
    pub layer: Layer,
    /// Milliseconds after the bucket's start.
    pub offset_ms: u64,
}

/// Counters of one series over one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    pub total: u64,
    pub good: u64,
    pub bad: u64,
    pub invalid: u64,
    /// Latency thresholds (µs) of the check, ascending.
    pub thresholds_us: Arc<[u64]>,
    /// Per threshold: good probes with latency at or below it (exact).
    pub good_within: Vec<u64>,
    /// Latencies of good probes.
    pub latency: Histogram,
    /// Count per failure reason (bad and invalid), sorted by reason.
    pub reasons: Vec<(FailureReason, u64)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<FirstFailure>,
    /// Largest scheduling lag seen (µs).
    pub max_lag_us: u64,
}

impl Bucket {
    pub fn new(thresholds_us: Arc<[u64]>) -> Self {
        let n = thresholds_us.len();
        Bucket {
            total: 0,
            good: 0,
            bad: 0,
            invalid: 0,
            thresholds_us,
            good_within: vec![0; n],
            latency: Histogram::new(),
            reasons: Vec::new(),
            first_failure: None,
            max_lag_us: 0,
        }
    }

    /// Adds one probe result; `offset` is its time since the bucket's start.
    /// Latency counts only for good probes that measured a path (not expected-deny ones).
    pub fn add(&mut self, r: &ProbeResult, offset: Duration) {
        self.total += 1;
        self.max_lag_us = self.max_lag_us.max(r.lag_us);
        match r.outcome {
            Outcome::Good => {
                self.good += 1;
                if r.blocked_by.is_none() {
                    self.latency.record(r.latency_us);
                    for (t, n) in self.thresholds_us.iter().zip(self.good_within.iter_mut()) {
                        if r.latency_us <= *t {
                            *n += 1;
                        }
                    }
                }
            }
            Outcome::Bad => self.bad += 1,
            Outcome::Invalid => self.invalid += 1,
        }
        if let Some(reason) = r.reason {
            match self.reasons.binary_search_by_key(&reason, |(x, _)| *x) {
                Ok(i) => self.reasons[i].1 += 1,
                Err(i) => self.reasons.insert(i, (reason, 1)),
            }
            if self.first_failure.is_none() && r.outcome == Outcome::Bad {
                self.first_failure = Some(FirstFailure {
                    reason,
                    layer: r.layer.unwrap_or(reason.layer()),
                    offset_ms: u64::try_from(offset.as_millis()).unwrap_or(u64::MAX),
                });
            }
        }
    }

    pub fn p(&self, q: f64) -> Option<u64> {
        self.latency.quantile(q)
    }
}

/// A closed window of one series, ready to be reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketReport {
    /// Per-aggregator sequence number (with the agent's boot id, identifies a report).
    pub seq: u64,
    pub check: Arc<str>,
    pub target: Arc<str>,
    pub source: Arc<str>,
    /// Window start, Unix milliseconds (wall clock read at agent start + monotonic offset).
    pub start_unix_ms: UnixMs,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub bucket: Bucket,
    /// Convenience percentiles of good latencies (µs), derived from the histogram.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p99_us: Option<u64>,
}
