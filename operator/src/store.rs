//! Where agent results land: per check, the SLO window history ([`History`]) and, per series
//! (source × target path/endpoint), the recent minutes that verdicts and target summaries
//! read. The channel's [`ResultSink`]: idempotent per (agent, boot id, sequence number), so a
//! batch resent after a lost acknowledgement is counted once.
//!
//! Memory is bounded: histories have a fixed number of buckets; recent data keeps at most
//! [`RECENT_SLOTS`] one-minute slots per series and forgets series that stopped reporting.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use netslo_agent::aggregate::BucketReport;
use netslo_agent::histogram::Histogram;
use netslo_agent::verdict::FailureReason;

use crate::assign::parse_agent_check_name;
use crate::channel::{
    AcceptedBatch, AgentIdentity, AgentSeqs, BoxFuture, IngestOutcome, ResultSink, SinkError,
};
use crate::slo::UnixMs;
use crate::slo::config::SliceRule;
use crate::slo::window::{History, Sample};

/// Length of one recent slot.
pub const SLOT_MS: i64 = 60_000;
/// Slots kept per series: one hour, what target summaries cover.
pub const RECENT_SLOTS: usize = 60;

/// How a check's results are counted, set by the reconciler before results are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// The latency objective's threshold, whose exact count the agents report.
    pub latency_threshold_us: Option<u64>,
    /// Targets (by name) that must stay blocked: no latency to judge.
    pub deny_targets: Vec<String>,
    pub slice: SliceRule,
}

/// One series as the reconciler reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesView {
    /// Over the summary span (an hour).
    pub summary: SeriesStats,
    /// The newest agent bucket, if it started within the failure-matrix span.
    pub matrix: SeriesStats,
    /// Start of the latest slot with data.
    pub last_slot_ms: UnixMs,
}

/// One series' counters over a span of recent slots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesStats {
    pub good: u64,
    pub bad: u64,
    pub invalid: u64,
    /// Bad-probe reasons, most frequent first.
    pub reasons: Vec<(FailureReason, u64)>,
    pub latency: Histogram,
    /// Latest failure: reason and the slot it happened in.
    pub last_failure: Option<(FailureReason, UnixMs)>,
}

impl SeriesStats {
    pub fn dominant_reason(&self) -> Option<FailureReason> {
        self.reasons.first().map(|(r, _)| *r)
    }
}

#[derive(Debug, Default)]
struct Slot {
    start_ms: UnixMs,
    good: u64,
    bad: u64,
    invalid: u64,
    reasons: BTreeMap<FailureReason, u64>,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct Series {
    slots: VecDeque<Slot>,
    last_failure: Option<(FailureReason, UnixMs)>,
    /// The newest agent bucket: what the failure matrix reads, so a verdict follows the
    /// network within one agent window rather than a minute slot.
    latest: Option<Slot>,
}

#[derive(Debug)]
struct CheckData {
    config: CheckConfig,
    history: History,
    /// Keyed by (source, target label).
    series: HashMap<(String, String), Series>,
}

#[derive(Debug, Default)]
struct Inner {
    checks: HashMap<String, CheckData>,
    seen: HashMap<String, AgentSeqs>,
    unknown_check_buckets: u64,
}

/// The operator's result store.
#[derive(Debug, Default)]
pub struct ResultStore {
    inner: Mutex<Inner>,
}

impl ResultStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere never leaves the counters half-updated in a way that matters more
        // than losing every result would: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers or updates a check (`<namespace>/<name>`). Results for unregistered checks
    /// are dropped and counted.
    pub fn configure(&self, check: &str, config: CheckConfig, now: UnixMs) {
        let mut inner = self.lock();
        match inner.checks.get_mut(check) {
            Some(data) => {
                if data.config.slice != config.slice {
                    data.history.set_slice_rule(config.slice, now);
                }
                data.config = config;
            }
            None => {
                let history = History::new(config.slice, now);
                inner.checks.insert(
                    check.to_string(),
                    CheckData {
                        config,
                        history,
                        series: HashMap::new(),
                    },
                );
            }
        }
    }

    /// Forgets a deleted check.
    pub fn remove(&self, check: &str) {
        self.lock().checks.remove(check);
    }

    /// Buckets dropped because their check was unknown (deleted, or never assigned).
    pub fn unknown_check_buckets(&self) -> u64 {
        self.lock().unknown_check_buckets
    }

    /// Reads a check: its history (for evaluation) and, per series keyed by (source, target
    /// label), its counters over the last `summary_ms` (target summaries) and the last
    /// `matrix_ms`, its newest bucket (the failure matrix verdicts read).
    pub fn read<T>(
        &self,
        check: &str,
        now: UnixMs,
        summary_ms: i64,
        matrix_ms: i64,
        f: impl FnOnce(&History, &BTreeMap<(String, String), SeriesView>) -> T,
    ) -> Option<T> {
        let mut inner = self.lock();
        let data = inner.checks.get_mut(check)?;
        data.history.advance(now);
        // Series silent for longer than the recent span are forgotten: memory follows the
        // series that exist.
        let horizon = now - SLOT_MS * RECENT_SLOTS as i64;
        data.series
            .retain(|_, s| s.slots.back().is_some_and(|slot| slot.start_ms >= horizon));
        let views: BTreeMap<(String, String), SeriesView> = data
            .series
            .iter()
            .map(|(key, series)| {
                let view = SeriesView {
                    summary: series_stats(series, now - summary_ms),
                    matrix: latest_stats(series, now - matrix_ms),
                    last_slot_ms: series.slots.back().map_or(UnixMs::MIN, |s| s.start_ms),
                };
                (key.clone(), view)
            })
            .filter(|(_, v)| v.summary.good + v.summary.bad + v.summary.invalid > 0)
            .collect();
        Some(f(&data.history, &views))
    }

    fn ingest_batch(&self, batch: &AcceptedBatch, now: UnixMs) -> IngestOutcome {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let seen = inner.seen.entry(batch.agent_name.clone()).or_default();
        let mut outcome = IngestOutcome::default();
        for report in &batch.buckets {
            if seen.contains(&batch.boot_id, report.seq) {
                outcome.duplicates += 1;
                continue;
            }
            let Some((ns, name, target)) = parse_agent_check_name(&report.check) else {
                inner.unknown_check_buckets += 1;
                seen.insert(&batch.boot_id, report.seq);
                continue;
            };
            let Some(data) = inner.checks.get_mut(&format!("{ns}/{name}")) else {
                inner.unknown_check_buckets += 1;
                seen.insert(&batch.boot_id, report.seq);
                continue;
            };
            let deny = data.config.deny_targets.iter().any(|t| t == target);
            let sample = Sample::from_report(report, data.config.latency_threshold_us, deny);
            data.history.ingest(&sample, now);
            record_recent(data, report);
            seen.insert(&batch.boot_id, report.seq);
            outcome.stored += 1;
        }
        outcome
    }
}

fn record_recent(data: &mut CheckData, report: &BucketReport) {
    let key = (report.source.to_string(), report.target.to_string());
    let series = data.series.entry(key).or_default();
    let start = i64::try_from(report.start_unix_ms).unwrap_or(i64::MAX);
    let slot_start = start - start.rem_euclid(SLOT_MS);
    let b = &report.bucket;
    let index = match series.slots.iter().position(|s| s.start_ms == slot_start) {
        Some(i) => i,
        None => {
            // Slots stay ordered; a late bucket older than every slot kept is not recent.
            let at = series
                .slots
                .iter()
                .position(|s| s.start_ms > slot_start)
                .unwrap_or(series.slots.len());
            if at == 0 && series.slots.len() >= RECENT_SLOTS {
                return;
            }
            series.slots.insert(
                at,
                Slot {
                    start_ms: slot_start,
                    ..Slot::default()
                },
            );
            while series.slots.len() > RECENT_SLOTS {
                series.slots.pop_front();
            }
            series
                .slots
                .iter()
                .position(|s| s.start_ms == slot_start)
                .unwrap_or(0)
        }
    };
    let Some(slot) = series.slots.get_mut(index) else {
        return;
    };
    add_bucket(slot, b);
    match &mut series.latest {
        Some(latest) if latest.start_ms == start => add_bucket(latest, b),
        Some(latest) if latest.start_ms > start => {}
        _ => {
            let mut latest = Slot {
                start_ms: start,
                ..Slot::default()
            };
            add_bucket(&mut latest, b);
            series.latest = Some(latest);
        }
    }
    if let Some(first) = &b.first_failure
        && !first.reason.is_prober_problem()
    {
        let at = start + i64::try_from(first.offset_ms).unwrap_or(0);
        if series.last_failure.is_none_or(|(_, t)| t <= at) {
            series.last_failure = Some((first.reason, at));
        }
    }
}

fn add_bucket(slot: &mut Slot, b: &netslo_agent::aggregate::Bucket) {
    let invalid = b.invalid.min(b.total);
    let good = b.good.min(b.total - invalid);
    slot.good += good;
    slot.bad += b.total - invalid - good;
    slot.invalid += invalid;
    for (reason, count) in &b.reasons {
        if !reason.is_prober_problem() {
            *slot.reasons.entry(*reason).or_default() += count;
        }
    }
    slot.latency.merge(&b.latency);
}

fn latest_stats(series: &Series, since: UnixMs) -> SeriesStats {
    match &series.latest {
        Some(slot) if slot.start_ms >= since => SeriesStats {
            good: slot.good,
            bad: slot.bad,
            invalid: slot.invalid,
            reasons: sorted_reasons(&slot.reasons),
            latency: slot.latency.clone(),
            last_failure: series.last_failure,
        },
        _ => SeriesStats::default(),
    }
}

fn sorted_reasons(counts: &BTreeMap<FailureReason, u64>) -> Vec<(FailureReason, u64)> {
    let mut reasons: Vec<(FailureReason, u64)> = counts.iter().map(|(r, n)| (*r, *n)).collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    reasons
}

fn series_stats(series: &Series, since: UnixMs) -> SeriesStats {
    let mut stats = SeriesStats {
        last_failure: series.last_failure,
        ..SeriesStats::default()
    };
    let mut reasons: BTreeMap<FailureReason, u64> = BTreeMap::new();
    for slot in series.slots.iter().filter(|s| s.start_ms + SLOT_MS > since) {
        stats.good += slot.good;
        stats.bad += slot.bad;
        stats.invalid += slot.invalid;
        stats.latency.merge(&slot.latency);
        for (r, n) in &slot.reasons {
            *reasons.entry(*r).or_default() += n;
        }
    }
    stats.reasons = sorted_reasons(&reasons);
    stats
}

impl ResultSink for ResultStore {
    fn ingest<'a>(
        &'a self,
        _identity: &'a AgentIdentity,
        batch: &'a AcceptedBatch,
    ) -> BoxFuture<'a, Result<IngestOutcome, SinkError>> {
        let now = crate::slo::now_ms();
        Box::pin(std::future::ready(Ok(self.ingest_batch(batch, now))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(
        seq: u64,
        check: &str,
        source: &str,
        target: &str,
        start_ms: u64,
        good: u64,
        bad: u64,
    ) -> BucketReport {
        let mut reasons = Vec::new();
        let mut first = serde_json::Value::Null;
        if bad > 0 {
            reasons.push(json!(["TCPTimeout", bad]));
            first = json!({"reason": "TCPTimeout", "layer": "TCP", "offsetMs": 5});
        }
        let mut v = json!({
            "seq": seq, "check": check, "target": target, "source": source,
            "startUnixMs": start_ms, "durationMs": 10_000,
            "total": good + bad, "good": good, "bad": bad, "invalid": 0,
            "thresholdsUs": [5000], "goodWithin": [good],
            "latency": {"buckets": [], "count": 0, "sumUs": 0, "minUs": 0, "maxUs": 0}, "reasons": reasons, "maxLagUs": 10,
        });
        if !first.is_null() {
            v["firstFailure"] = first;
        }
        serde_json::from_value(v).unwrap()
    }

    fn batch(boot: &str, buckets: Vec<BucketReport>) -> AcceptedBatch {
        AcceptedBatch {
            agent_name: "node-a".into(),
            boot_id: boot.into(),
            dropped_buckets: 0,
            buckets,
        }
    }

    fn store(now: UnixMs) -> ResultStore {
        let store = ResultStore::new();
        let config = CheckConfig {
            latency_threshold_us: Some(5000),
            deny_targets: vec![],
            slice: SliceRule::DEFAULT,
        };
        store.configure("shop/web", config, now);
        store
    }

    #[test]
    fn counts_each_bucket_once_across_resends() {
        let now = 1_800_000_000_000;
        let store = store(now - 600_000);
        let start = u64::try_from(now - 120_000).unwrap();
        let b = batch(
            "boot-1",
            vec![report(
                1,
                "shop/web/api",
                "node-a",
                "api/ClusterIP/10.96.0.9:80",
                start,
                9,
                1,
            )],
        );
        assert_eq!(
            store.ingest_batch(&b, now),
            IngestOutcome {
                stored: 1,
                duplicates: 0
            }
        );
        assert_eq!(
            store.ingest_batch(&b, now),
            IngestOutcome {
                stored: 0,
                duplicates: 1
            }
        );
        let (total, stats) = store
            .read("shop/web", now, 300_000, 300_000, |history, stats| {
                (history.window(now, 3_600_000).counts.total, stats.clone())
            })
            .unwrap();
        assert_eq!(total, 10);
        let s = &stats[&(
            "node-a".to_string(),
            "api/ClusterIP/10.96.0.9:80".to_string(),
        )]
            .summary;
        assert_eq!((s.good, s.bad), (9, 1));
        assert_eq!(s.dominant_reason(), Some(FailureReason::TcpTimeout));
        assert!(s.last_failure.is_some());
    }

    #[test]
    fn unknown_checks_are_dropped_and_counted() {
        let now = 1_800_000_000_000;
        let store = store(now);
        let start = u64::try_from(now - 60_000).unwrap();
        let b = batch(
            "b",
            vec![
                report(1, "shop/gone/api", "node-a", "api/Pod/x", start, 1, 0),
                report(2, "garbage", "n", "t", start, 1, 0),
            ],
        );
        assert_eq!(store.ingest_batch(&b, now).stored, 0);
        assert_eq!(store.unknown_check_buckets(), 2);
    }

    #[test]
    fn recent_span_selects_slots_and_silent_series_are_forgotten() {
        let now = 1_800_000_000_000;
        let store = store(now - 7_200_000);
        let old = u64::try_from(now - 50 * 60_000).unwrap();
        let fresh = u64::try_from(now - 60_000).unwrap();
        let b = batch(
            "b",
            vec![
                report(1, "shop/web/api", "node-a", "api/Pod/a", old, 0, 5),
                report(2, "shop/web/api", "node-a", "api/Pod/a", fresh, 5, 0),
                report(3, "shop/web/api", "node-b", "api/Pod/b", old, 1, 0),
            ],
        );
        store.ingest_batch(&b, now);
        let views = store
            .read("shop/web", now, 60 * 60_000, 5 * 60_000, |_, s| s.clone())
            .unwrap();
        let a = &views[&("node-a".into(), "api/Pod/a".into())];
        assert_eq!(
            (a.summary.good, a.summary.bad),
            (5, 5),
            "the hour holds both"
        );
        assert_eq!(
            (a.matrix.good, a.matrix.bad),
            (5, 0),
            "the matrix reads the newest bucket"
        );
        let b = &views[&("node-b".into(), "api/Pod/b".into())];
        assert_eq!(
            b.matrix.good + b.matrix.bad,
            0,
            "node-b's newest bucket is stale"
        );
        assert!(b.last_slot_ms < now - 40 * 60_000);
        // Two hours later every series is silent and forgotten.
        let later = store
            .read(
                "shop/web",
                now + 2 * 3_600_000,
                60 * 60_000,
                5 * 60_000,
                |_, s| s.len(),
            )
            .unwrap();
        assert_eq!(later, 0);
    }
}
