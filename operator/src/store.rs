//! Where agent results land: per check, the SLO window history ([`History`]) and, per series
//! (source × target path/endpoint), the recent minutes that verdicts and target summaries
//! read. The channel's [`ResultSink`]: idempotent per (agent, boot id, sequence number), so a
//! batch resent after a lost acknowledgement is counted once.
//!
//! Memory is bounded by what status and verdicts read, not by the paths ever probed:
//! histories have a fixed number of buckets; a series keeps an hour of five-minute slots
//! ([`SUMMARY_SLOTS`]), its agent buckets of the evidence span and the failing ones of its
//! hold span, and is forgotten once silent for longer. A mesh's (source, peer) pairs rotate through every ordered pair of its N agents
//! within the rotation period, N² series over an hour: a mesh pair is not a series but a few
//! words per agent bucket ([`MeshPairs`]), kept over its hold span only (what verdicts read),
//! and the hour's figures are kept per peer, all sources together ([`PooledView`]), and per
//! source ([`SourceView`]).
//!
//! Durability: a store made with [`ResultStore::durable`] acknowledges a batch only once a
//! flush has written every check it touched (its window and its [`Settled`] watermarks, one
//! object per check, see `persist`). Flushes are group commits: one per interval for all the
//! batches that arrived in it, so the API server sees at most one write per check and
//! interval however many agents report. Recent per-series data (verdicts, target summaries)
//! is not persisted: it refills within one agent window after a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netslo_protocol::bucket::BucketReport;
use netslo_protocol::histogram::Histogram;
use netslo_protocol::names::AssignedCheck;
use netslo_protocol::verdict::FailureReason;

use crate::check_key::CheckKey;
use tokio::sync::{mpsc, watch};

use crate::channel::{AcceptedBatch, AgentIdentity, Counted, IngestOutcome, ResultSink, SinkError};
use crate::settled::Settled;
use crate::slo::UnixMs;
use crate::slo::config::SliceRule;
use crate::slo::window::{History, Sample};

/// A minute: the unit sources' activity (when they last reported, which minutes a mesh
/// source reported in) is kept in.
pub const SLOT_MS: i64 = 60_000;
/// How long the recent history (target summaries) is kept: an hour.
pub const RECENT_SPAN_MS: i64 = 60 * SLOT_MS;
/// Length of one slot of a series' (or mesh peer's) recent counts. Five minutes: each slot
/// holds a latency histogram, and a check probed from hundreds of nodes has thousands of
/// series (12 slots an hour rather than 60 is most of their memory).
pub const SUMMARY_SLOT_MS: i64 = 5 * SLOT_MS;
/// Slots kept per series: the hour and the slot under way.
pub const SUMMARY_SLOTS: usize = (RECENT_SPAN_MS / SUMMARY_SLOT_MS) as usize + 1;

/// How a check's results are counted, set by the planner before it assigns the check's
/// agents, so that their first results are counted as the spec says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// The latency objective's threshold, whose exact count the agents report.
    pub latency_threshold_us: Option<u64>,
    /// Targets (by name) that must stay blocked: no latency to judge.
    pub deny_targets: Vec<String>,
    pub slice: SliceRule,
    /// Mesh targets (by name): their hour figures are kept per peer, not per pair.
    pub mesh_targets: Vec<String>,
}

/// Every series of a check as the reconciler reads them, keyed by (source, target label),
/// sorted by key. A sorted list, not a map: a mesh has hundreds of thousands of pairs at
/// cluster sizes, read on every reconcile of its check.
pub type SeriesViews = Vec<((String, String), SeriesView)>;

/// A mesh source whose reports of a mesh target stopped while the check's other series
/// report: (source agent, mesh target). Its rotating pairs leave the evidence span within
/// it; this says the source was there, for as long as a verdict is held.
pub type SilentMeshSource = (String, String);

/// A mesh pair as verdicts read it: its agent buckets within the evidence and hold spans.
/// Names shared with the store: a mesh has hundreds of thousands of pairs at cluster sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPairView {
    /// The source agent.
    pub source: Arc<str>,
    /// The peer's target label.
    pub peer: Arc<str>,
    pub good: u32,
    pub bad: u32,
    pub answered: u32,
    pub slow: u32,
    pub reason: Option<FailureReason>,
    /// Bad probes within the hold span.
    pub held_bad: u32,
    /// As [`SeriesView::silent`], for the pair's newest agent window.
    pub silent: bool,
}

impl MeshPairView {
    /// The pair's evidence as a series' reads.
    pub fn matrix(&self) -> EvidenceStats {
        EvidenceStats {
            good: self.good.into(),
            bad: self.bad.into(),
            reason: self.reason,
            answered: self.answered.into(),
            slow: self.slow.into(),
        }
    }
}

/// A check's recent results as the reconciler reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recent {
    /// Per (source, target label): the paths with results within the summary span; mesh
    /// pairs are in `mesh_pairs`.
    pub paths: SeriesViews,
    /// Mesh pairs with results within their evidence span or bad probes within their hold
    /// span, sorted by (source, peer).
    pub mesh_pairs: Vec<MeshPairView>,
    /// Per mesh target label (peer): the summary span's figures, all sources together.
    pub pooled: BTreeMap<String, PooledView>,
    /// Per source agent with results within the summary span.
    pub sources: BTreeMap<String, SourceView>,
    /// Mesh sources silent within the hold span (see [`SilentMeshSource`]).
    pub silent_mesh_sources: Vec<SilentMeshSource>,
}

/// A mesh peer's figures over the summary span, all sources together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PooledView {
    pub summary: SeriesStats,
    /// The source of the latest failure.
    pub last_failure_source: Option<String>,
}

/// One source agent's results, whatever it probed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceView {
    /// Start of the latest slot with data.
    pub last_slot_ms: UnixMs,
    /// Per mesh target: the minutes in which it reported the target's peers.
    pub mesh_minutes: BTreeMap<String, MinuteMask>,
}

/// Which of the last 64 minutes had something, one bit each: what mesh coverage reads, as
/// the rotation decides which peers an agent probes in each of its rounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MinuteMask {
    /// Start of the newest minute marked (bit 0).
    newest_ms: UnixMs,
    bits: u64,
}

impl MinuteMask {
    /// Marks the minute `at` falls in; minutes more than 63 before the newest are not kept.
    pub fn mark(&mut self, at: UnixMs) {
        let minute = slot_of(at);
        if self.bits == 0 || minute > self.newest_ms {
            let shift = minute.saturating_sub(self.newest_ms) / SLOT_MS;
            self.bits = match u32::try_from(shift) {
                Ok(shift) if self.bits != 0 && shift < 64 => self.bits << shift,
                _ => 0,
            };
            self.bits |= 1;
            self.newest_ms = minute;
        } else if let Ok(age) = u32::try_from(self.newest_ms.saturating_sub(minute) / SLOT_MS)
            && age < 64
        {
            self.bits |= 1 << age;
        }
    }

    /// Minutes marked that end after `since`.
    pub fn count_since(&self, since: UnixMs) -> u32 {
        (0..64u32)
            .filter(|age| self.bits >> age & 1 == 1)
            .filter(|age| {
                let start = self.newest_ms.saturating_sub(i64::from(*age) * SLOT_MS);
                start.saturating_add(SLOT_MS) > since
            })
            .count() as u32
    }
}

/// One series as the reconciler reads it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesView {
    /// Over the summary span (an hour).
    pub summary: SeriesStats,
    /// The agent buckets that started within the evidence span: what verdicts are decided on.
    pub matrix: EvidenceStats,
    /// Bad probes within the longer hold span: a verdict is kept while its place has any.
    pub held_bad: u64,
    /// Start of the latest slot with data.
    pub last_slot_ms: UnixMs,
    /// Whether the series stopped reporting while the check's other series report: its
    /// newest agent window ended more than two of its windows (plus [`SILENCE_SLACK_MS`])
    /// before the newest window of any series of the check. Relative to the others, so that
    /// the batching of results (an agent sends once the operator has persisted the previous
    /// batch) is never taken for silence.
    pub silent: bool,
}

/// A series' agent buckets within the evidence span, as verdicts read them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvidenceStats {
    pub good: u64,
    pub bad: u64,
    /// The most frequent reason of the bad probes (counted from the path's failure onset).
    pub reason: Option<FailureReason>,
    /// Good probes over the whole span, and those of them later than the latency objective's
    /// threshold.
    pub answered: u64,
    pub slow: u64,
}

/// Delivery jitter between agents allowed before a series counts as silent.
pub const SILENCE_SLACK_MS: i64 = 2_000;

/// One series' counters over a span of recent slots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesStats {
    pub good: u64,
    pub bad: u64,
    pub invalid: u64,
    /// Of the invalid probes, those the agents refused to send: the destination resolved to
    /// an address the check's namespace is not granted (a tenancy finding, not a failure).
    pub refused: u64,
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
    refused: u64,
    reasons: BTreeMap<FailureReason, u64>,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct Series {
    slots: VecDeque<Slot>,
    /// Start of the newest bucket.
    last_ms: UnixMs,
    last_failure: Option<(FailureReason, UnixMs)>,
    /// The newest agent buckets, newest last, within [`MAX_EVIDENCE_BUCKETS`]: what the
    /// failure matrix reads, so a verdict follows the network within agent windows rather than
    /// minute slots, and rests on several of them rather than the newest alone.
    evidence: VecDeque<Evidence>,
}

/// A check's mesh pairs: per source agent, its agent buckets of each peer within their hold
/// span. At cluster sizes a source probes each peer about once per rotation, so a pair is one
/// bucket, not a series: a few words, its names shared.
#[derive(Debug, Default)]
struct MeshPairs {
    /// Peer target labels, one copy each.
    peers: HashSet<Arc<str>>,
    by_source: HashMap<Arc<str>, Vec<PairBucket>>,
}

impl MeshPairs {
    fn peer(&mut self, label: &str) -> Arc<str> {
        match self.peers.get(label) {
            Some(peer) => peer.clone(),
            None => {
                let peer: Arc<str> = label.into();
                self.peers.insert(peer.clone());
                peer
            }
        }
    }
}

/// One agent bucket of a mesh pair, as verdicts read it.
#[derive(Debug)]
struct PairBucket {
    peer: Arc<str>,
    start_ms: UnixMs,
    /// The agent window's length.
    duration_ms: u32,
    good: u32,
    bad: u32,
    /// Of the good probes, those later than the latency objective's threshold.
    slow: u32,
    /// The reason of most of the bad probes.
    reason: Option<FailureReason>,
}

impl PairBucket {
    fn failing(&self) -> (bool, bool) {
        (self.bad > 0, self.slow > 0)
    }
}

/// A mesh peer's recent slots, all sources together.
#[derive(Debug, Default)]
struct Pooled {
    slots: VecDeque<Slot>,
    /// Latest failure: reason, when, and from which source.
    last_failure: Option<(FailureReason, UnixMs, String)>,
}

#[derive(Debug, Default)]
struct SourceActivity {
    last_ms: UnixMs,
    /// Per mesh target.
    mesh: HashMap<String, MeshActivity>,
}

/// A source's reports of one mesh target.
#[derive(Debug, Default, Clone, Copy)]
struct MeshActivity {
    /// The minutes it reported the target's peers in.
    minutes: MinuteMask,
    /// Its newest agent window of them: start and length.
    newest_ms: UnixMs,
    window_ms: i64,
}

impl MeshActivity {
    fn newest_end(&self) -> UnixMs {
        self.newest_ms + self.window_ms.max(0)
    }
}

/// One agent bucket's counts, as verdicts read them (no latencies).
#[derive(Debug, Default)]
struct Evidence {
    start_ms: UnixMs,
    /// The agent window's length.
    duration_ms: i64,
    good: u64,
    bad: u64,
    /// Of the good probes, those later than the latency objective's threshold.
    slow: u64,
    reasons: BTreeMap<FailureReason, u64>,
}

/// Most agent buckets kept per series for verdicts: the hold span over the shortest agent
/// window (a second) with room to spare.
pub const MAX_EVIDENCE_BUCKETS: usize = 64;

/// The spans a check's verdict reads: its evidence (several probe intervals) and the longer
/// span a verdict is held over once named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvidenceSpans {
    pub evidence_ms: i64,
    pub hold_ms: i64,
}

#[derive(Debug)]
struct CheckData {
    /// The check object's UID: a check deleted and created again under the same name starts
    /// a new window.
    uid: String,
    config: CheckConfig,
    history: History,
    settled: Settled,
    /// Changed since the last flush took it.
    dirty: bool,
    /// Keyed by (source, target label); mesh pairs are in `mesh`.
    series: HashMap<(String, String), Series>,
    mesh: MeshPairs,
    /// Mesh peers' slots, keyed by target label.
    pooled: HashMap<String, Pooled>,
    /// Keyed by source agent.
    sources: HashMap<String, SourceActivity>,
    /// What the metrics export: events counted since this process started.
    events: SloEvents,
}

impl CheckData {
    fn new(uid: &str, config: CheckConfig, now: UnixMs) -> Self {
        CheckData {
            uid: uid.to_owned(),
            history: History::new(config.slice, now),
            config,
            settled: Settled::default(),
            dirty: true,
            series: HashMap::new(),
            mesh: MeshPairs::default(),
            pooled: HashMap::new(),
            sources: HashMap::new(),
            events: SloEvents::default(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    checks: HashMap<CheckKey, CheckData>,
    /// Removed checks whose stored state the next flush deletes.
    removed: BTreeSet<CheckKey>,
    unknown_check_buckets: u64,
    /// The flush generation being filled: a batch ingested now is durable once this
    /// generation's flush succeeds.
    generation: u64,
}

/// One check's durable state, encoded, as a flush writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    pub key: CheckKey,
    pub uid: String,
    pub latency_threshold_us: Option<u64>,
    pub deny_targets: Vec<String>,
    /// [`History::encode`].
    pub history: Vec<u8>,
    /// [`Settled::encode`].
    pub settled: Vec<u8>,
}

/// A check's state read back from storage at start.
#[derive(Debug, Clone)]
pub struct RestoredCheck {
    pub key: CheckKey,
    pub uid: String,
    pub latency_threshold_us: Option<u64>,
    pub deny_targets: Vec<String>,
    pub history: History,
    pub settled: Settled,
}

/// What one flush must write and delete.
#[derive(Debug, Default)]
pub struct FlushWork {
    pub generation: u64,
    pub writes: Vec<CheckRecord>,
    pub deletes: Vec<CheckKey>,
}

/// Outcome of the latest flushes, for batches waiting to be acknowledged.
#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Every generation up to this one is durable.
    durable: u64,
    /// The latest generation whose flush failed, and why.
    failed: u64,
    error: String,
}

#[derive(Debug)]
struct Durability {
    flushed: watch::Sender<Flushed>,
    /// Longest a batch waits for its flush; below the agents' request timeout (30 s), so a
    /// slow API server turns into a retried batch, not a cut connection.
    max_wait: Duration,
}

/// The operator's result store.
#[derive(Debug)]
pub struct ResultStore {
    inner: Mutex<Inner>,
    /// `None`: acknowledged once in memory (tests, benchmarks).
    durability: Option<Durability>,
    /// Told the key of a check one of whose series started or stopped failing (or first
    /// reported), so that its status follows within one agent window rather than at the next
    /// periodic reconcile.
    changes: Mutex<Option<mpsc::Sender<CheckKey>>>,
}

impl Default for ResultStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ResultStore {
    /// A store whose acknowledgements mean "in memory".
    pub fn new() -> Self {
        ResultStore {
            inner: Mutex::new(Inner {
                checks: HashMap::new(),
                removed: BTreeSet::new(),
                unknown_check_buckets: 0,
                generation: 1,
            }),
            durability: None,
            changes: Mutex::new(None),
        }
    }

    /// Where to send the keys of checks whose failing state changed. Sends never block: when
    /// the receiver lags, the periodic reconcile catches up.
    pub fn notify_changes(&self, sender: mpsc::Sender<CheckKey>) {
        *self.changes.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
    }

    /// A store whose acknowledgements wait for a flush ([`ResultStore::take_flush`] and
    /// [`ResultStore::finish_flush`], driven by `persist`), at most `max_wait`.
    pub fn durable(max_wait: Duration) -> Self {
        let (flushed, _) = watch::channel(Flushed::default());
        ResultStore {
            durability: Some(Durability { flushed, max_wait }),
            ..Self::new()
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere never leaves the counters half-updated in a way that matters more
        // than losing every result would: keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers or updates a check (object `uid`). Results for unregistered checks are
    /// dropped and counted. A different `uid` (the check was deleted and created again)
    /// starts a new window.
    pub fn configure(&self, check: &CheckKey, uid: &str, config: CheckConfig, now: UnixMs) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        match inner.checks.get_mut(check) {
            Some(data) if data.uid == uid => {
                if data.config.slice != config.slice {
                    data.history.set_slice_rule(config.slice, now);
                }
                if data.config != config {
                    data.config = config;
                    data.dirty = true;
                }
            }
            _ => {
                inner.removed.remove(check);
                inner
                    .checks
                    .insert(check.clone(), CheckData::new(uid, config, now));
            }
        }
    }

    /// Adopts a check's stored state (at start, before results are accepted), so results
    /// resent after a restart are counted against the window they belong to.
    pub fn restore(&self, check: RestoredCheck, now: UnixMs) {
        let mut history = check.history;
        history.advance(now);
        let mut settled = check.settled;
        settled.prune(now);
        // The planner tells which targets are meshes before any agent is assigned.
        let config = CheckConfig {
            latency_threshold_us: check.latency_threshold_us,
            deny_targets: check.deny_targets,
            slice: history.slice_rule(),
            mesh_targets: Vec::new(),
        };
        let mut data = CheckData::new(&check.uid, config, now);
        data.history = history;
        data.settled = settled;
        data.dirty = false;
        self.lock().checks.insert(check.key, data);
    }

    /// The SLO events counted per check, for the metrics. A deleted check is gone from here
    /// with the rest of its data, and so are its series.
    pub fn slo_events(&self) -> HashMap<CheckKey, SloEvents> {
        self.lock()
            .checks
            .iter()
            .map(|(key, data)| (key.clone(), data.events))
            .collect()
    }

    /// The object UID a check's window belongs to, if the store holds one.
    pub fn window_uid(&self, check: &CheckKey) -> Option<String> {
        self.lock().checks.get(check).map(|data| data.uid.clone())
    }

    /// Forgets a deleted check; a durable store deletes its stored state at the next flush.
    pub fn remove(&self, check: &CheckKey) {
        let mut inner = self.lock();
        if inner.checks.remove(check).is_some() && self.durability.is_some() {
            inner.removed.insert(check.clone());
        }
    }

    /// The checks held.
    pub fn checks(&self) -> Vec<CheckKey> {
        self.lock().checks.keys().cloned().collect()
    }

    /// Takes what the next flush writes: every changed check, encoded, and the removed
    /// ones; starts a new generation.
    pub fn take_flush(&self, now: UnixMs) -> FlushWork {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let generation = inner.generation;
        inner.generation += 1;
        let mut writes = Vec::new();
        for (key, data) in inner.checks.iter_mut().filter(|(_, d)| d.dirty) {
            data.dirty = false;
            data.history.advance(now);
            data.settled.prune(now);
            writes.push(CheckRecord {
                key: key.clone(),
                uid: data.uid.clone(),
                latency_threshold_us: data.config.latency_threshold_us,
                deny_targets: data.config.deny_targets.clone(),
                history: data.history.encode(),
                settled: data.settled.encode(),
            });
        }
        FlushWork {
            generation,
            writes,
            deletes: std::mem::take(&mut inner.removed).into_iter().collect(),
        }
    }

    /// Reports a flush: `failed` are the keys not written or deleted (retried next time).
    /// Batches of this generation and before are acknowledged if nothing failed.
    pub fn finish_flush(&self, generation: u64, failed: &[CheckKey], error: Option<String>) {
        {
            let mut inner = self.lock();
            let inner = &mut *inner;
            for key in failed {
                match inner.checks.get_mut(key) {
                    Some(data) => data.dirty = true,
                    None => {
                        inner.removed.insert(key.clone());
                    }
                }
            }
        }
        let Some(durability) = &self.durability else {
            return;
        };
        durability.flushed.send_modify(|f| {
            if failed.is_empty() {
                f.durable = f.durable.max(generation);
            } else {
                f.failed = f.failed.max(generation);
                f.error = error.unwrap_or_else(|| "flush failed".into());
            }
        });
    }

    /// Waits until `generation` is durable.
    async fn durable_by(&self, generation: u64) -> Result<(), SinkError> {
        let Some(durability) = &self.durability else {
            return Ok(());
        };
        let mut flushed = durability.flushed.subscribe();
        let waited = tokio::time::timeout(
            durability.max_wait,
            flushed.wait_for(|f| f.durable >= generation || f.failed >= generation),
        )
        .await;
        match waited {
            Ok(Ok(f)) if f.durable >= generation => Ok(()),
            Ok(Ok(f)) => Err(SinkError::Unavailable(format!(
                "results not persisted: {}",
                f.error
            ))),
            Ok(Err(_)) => Err(SinkError::Unavailable("result store stopped".into())),
            Err(_) => Err(SinkError::Unavailable(format!(
                "results not persisted within {:?}",
                durability.max_wait
            ))),
        }
    }

    /// Buckets dropped because their check was unknown (deleted, or never assigned).
    pub fn unknown_check_buckets(&self) -> u64 {
        self.lock().unknown_check_buckets
    }

    /// Reads a check: its history (for evaluation) and its [`Recent`] results: per series
    /// keyed by (source, target label), its counters over the last `summary_ms` (target
    /// summaries) and the agent buckets within `spans` (the failure matrix verdicts read); per
    /// mesh peer and per source, their figures over `summary_ms`.
    pub fn read<T>(
        &self,
        check: &CheckKey,
        now: UnixMs,
        summary_ms: i64,
        spans: EvidenceSpans,
        f: impl FnOnce(&History, Recent) -> T,
    ) -> Option<T> {
        let mut inner = self.lock();
        let data = inner.checks.get_mut(check)?;
        data.history.advance(now);
        forget_the_past(data, now, spans);
        let mesh_activity = || {
            data.sources.iter().flat_map(|(source, activity)| {
                activity
                    .mesh
                    .iter()
                    .map(move |(target, mesh)| (source, target, mesh))
            })
        };
        // A mesh pair's newest window is its source's, in `mesh_activity`.
        let freshest = data
            .series
            .values()
            .filter_map(newest_end)
            .chain(mesh_activity().map(|(_, _, mesh)| mesh.newest_end()))
            .max();
        let silent_after = |newest_end: UnixMs, window_ms: i64| {
            freshest.is_some_and(|freshest| {
                freshest - newest_end > window_ms.max(0).saturating_mul(2) + SILENCE_SLACK_MS
            })
        };
        // Where each path began to fail within its evidence span: the first bad bucket from
        // any source. Every source's probes of the path count from there.
        let mut onsets: HashMap<&str, UnixMs> = HashMap::new();
        for ((_, label), series) in &data.series {
            let since = now - spans_of(series, spans).evidence_ms;
            if let Some(first_bad) = series
                .evidence
                .iter()
                .find(|e| e.start_ms >= since && e.bad > 0)
            {
                let onset = onsets.entry(label.as_str()).or_insert(first_bad.start_ms);
                *onset = (*onset).min(first_bad.start_ms);
            }
        }
        for bucket in data.mesh.by_source.values().flatten().filter(|b| b.bad > 0) {
            let since = now - spans_of_window(bucket.duration_ms.into(), spans).evidence_ms;
            if bucket.start_ms >= since {
                let onset = onsets.entry(&bucket.peer).or_insert(bucket.start_ms);
                *onset = (*onset).min(bucket.start_ms);
            }
        }
        let mut paths: SeriesViews = data
            .series
            .iter()
            .filter_map(|(key, series)| {
                let spans = spans_of(series, spans);
                let onset = onsets.get(key.1.as_str()).copied();
                let silent = series.evidence.back().is_some_and(|newest| {
                    silent_after(
                        newest.start_ms + newest.duration_ms.max(0),
                        newest.duration_ms,
                    )
                });
                let summary = slot_stats(&series.slots, series.last_failure, now - summary_ms);
                let view = SeriesView {
                    summary,
                    matrix: evidence_stats(series, now - spans.evidence_ms, onset),
                    held_bad: series
                        .evidence
                        .iter()
                        .filter(|e| e.start_ms >= now - spans.hold_ms)
                        .map(|e| e.bad)
                        .sum(),
                    last_slot_ms: slot_of(series.last_ms),
                    silent,
                };
                let summed = &view.summary;
                let probes = summed.good + summed.bad + summed.invalid;
                (probes + view.matrix.good + view.matrix.bad + view.held_bad > 0)
                    .then(|| (key.clone(), view))
            })
            .collect();
        paths.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut mesh_pairs = mesh_pair_views(&data.mesh, now, spans, &onsets, silent_after);
        mesh_pairs.sort_unstable_by(|a, b| (&a.source, &a.peer).cmp(&(&b.source, &b.peer)));
        let pooled = data
            .pooled
            .iter()
            .map(|(label, pooled)| {
                let (last_failure, source) = match &pooled.last_failure {
                    Some((reason, at, source)) => (Some((*reason, *at)), Some(source.clone())),
                    None => (None, None),
                };
                let view = PooledView {
                    summary: slot_stats(&pooled.slots, last_failure, now - summary_ms),
                    last_failure_source: source,
                };
                (label.clone(), view)
            })
            .collect();
        let sources = data
            .sources
            .iter()
            .map(|(source, activity)| {
                let view = SourceView {
                    last_slot_ms: slot_of(activity.last_ms),
                    mesh_minutes: activity
                        .mesh
                        .iter()
                        .map(|(target, mesh)| (target.clone(), mesh.minutes))
                        .collect(),
                };
                (source.clone(), view)
            })
            .collect();
        let mut silent_mesh_sources: Vec<SilentMeshSource> = mesh_activity()
            .filter(|(_, _, mesh)| {
                let hold_ms = spans_of_window(mesh.window_ms, spans).hold_ms;
                mesh.newest_ms >= now - hold_ms - SLOT_MS
                    && silent_after(mesh.newest_end(), mesh.window_ms)
            })
            .map(|(source, target, _)| (source.clone(), target.clone()))
            .collect();
        silent_mesh_sources.sort_unstable();
        let recent = Recent {
            paths,
            mesh_pairs,
            pooled,
            sources,
            silent_mesh_sources,
        };
        Some(f(&data.history, recent))
    }

    /// Counts a batch's new buckets; returns the outcome and the flush generation that makes
    /// it durable.
    fn ingest_batch(&self, batch: &AcceptedBatch, now: UnixMs) -> (IngestOutcome, u64) {
        let mut changed: BTreeSet<CheckKey> = BTreeSet::new();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut outcome = IngestOutcome::default();
        for report in &batch.buckets {
            let Some(name) = AssignedCheck::parse(&report.check) else {
                inner.unknown_check_buckets += 1;
                continue;
            };
            let key = CheckKey::new(name.namespace, name.check);
            let Some(data) = inner.checks.get_mut(&key) else {
                inner.unknown_check_buckets += 1;
                continue;
            };
            if data
                .settled
                .contains(&batch.agent_name, &batch.boot_id, report.seq)
            {
                outcome.duplicates += 1;
                continue;
            }
            let deny = data.config.deny_targets.iter().any(|t| t == name.target);
            let sample = Sample::from_report(report, data.config.latency_threshold_us, deny);
            data.history.ingest(&sample, now);
            data.events.add(&sample);
            // Answered, but later than the latency objective's threshold.
            let slow = if sample.latency_valid > 0 {
                sample.good.saturating_sub(sample.latency_good)
            } else {
                0
            };
            let mesh_target = data
                .config
                .mesh_targets
                .iter()
                .any(|t| t == name.target)
                .then_some(name.target);
            if record_recent(data, report, slow, mesh_target) {
                changed.insert(key);
            }
            data.settled
                .insert(&batch.agent_name, &batch.boot_id, report.seq, now);
            data.dirty = true;
            outcome.stored += 1;
        }
        let generation = inner.generation;
        drop(guard);
        if !changed.is_empty()
            && let Some(tx) = &*self.changes.lock().unwrap_or_else(|p| p.into_inner())
        {
            for key in changed {
                let _ = tx.try_send(key);
            }
        }
        (outcome, generation)
    }
}

/// SLO events counted since this process started: cumulative counters, which alerting
/// rules turn into ratios over any window (a restart is a counter reset, which `rate()`
/// handles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SloEvents {
    pub availability_good: u64,
    pub availability_bad: u64,
    pub latency_good: u64,
    pub latency_bad: u64,
}

impl SloEvents {
    fn add(&mut self, sample: &Sample) {
        let valid = sample.total.saturating_sub(sample.invalid);
        let good = sample.good.min(valid);
        self.availability_good += good;
        self.availability_bad += valid - good;
        let latency_good = sample.latency_good.min(sample.latency_valid);
        self.latency_good += latency_good;
        self.latency_bad += sample.latency_valid - latency_good;
    }
}

/// Adds a bucket to its series (and, for a mesh target, to its peer's pooled slots) and to its
/// source's activity; true if the series' newest bucket changed from failing to not failing
/// or back (or the series is new).
fn record_recent(
    data: &mut CheckData,
    report: &BucketReport,
    slow: u64,
    mesh_target: Option<&str>,
) -> bool {
    let start = report.start_unix_ms;
    let activity = match data.sources.get_mut(&*report.source) {
        Some(activity) => activity,
        None => data.sources.entry(report.source.to_string()).or_default(),
    };
    activity.last_ms = activity.last_ms.max(start);
    let mut first_of_source = false;
    if let Some(target) = mesh_target {
        first_of_source = !activity.mesh.contains_key(target);
        let mesh = match activity.mesh.get_mut(target) {
            Some(mesh) => mesh,
            None => activity.mesh.entry(target.to_owned()).or_default(),
        };
        mesh.minutes.mark(start);
        if start >= mesh.newest_ms {
            mesh.newest_ms = start;
            mesh.window_ms = i64::try_from(report.duration_ms).unwrap_or(i64::MAX);
        }
        let pooled = match data.pooled.get_mut(&*report.target) {
            Some(pooled) => pooled,
            None => data.pooled.entry(report.target.to_string()).or_default(),
        };
        if let Some(slot) = slot_at(&mut pooled.slots, start) {
            add_bucket(slot, &report.bucket);
            if let Some((reason, at)) = failure_of(report)
                && pooled
                    .last_failure
                    .as_ref()
                    .is_none_or(|(_, t, _)| *t <= at)
            {
                pooled.last_failure = Some((reason, at, report.source.to_string()));
            }
        }
    }
    if mesh_target.is_some() {
        return record_mesh_pair(&mut data.mesh, report, slow) || first_of_source;
    }
    let key = (report.source.to_string(), report.target.to_string());
    let series = data.series.entry(key).or_default();
    // Failing, or answering later than the latency objective allows.
    let failing = |s: &Series| s.evidence.back().map(|l| (l.bad > 0, l.slow > 0));
    let before = failing(series);
    record_in_series(series, report, slow);
    before != failing(series)
}

/// Adds a bucket to its mesh pair; true if the pair's newest bucket changed from failing to
/// not failing or back. A pair new to the store is the rotation's next peer, not news (every
/// pair of a round is new at cluster sizes): it tells only when it fails.
fn record_mesh_pair(mesh: &mut MeshPairs, report: &BucketReport, slow: u64) -> bool {
    let peer = mesh.peer(&report.target);
    let buckets = match mesh.by_source.get_mut(&*report.source) {
        Some(buckets) => buckets,
        None => mesh
            .by_source
            .entry(report.source.as_ref().into())
            .or_default(),
    };
    let start = report.start_unix_ms;
    let newest_of_pair = |buckets: &[PairBucket], peer: &Arc<str>| {
        buckets
            .iter()
            .filter(|b| Arc::ptr_eq(&b.peer, peer))
            .max_by_key(|b| b.start_ms)
            .map(PairBucket::failing)
    };
    let before = newest_of_pair(buckets, &peer).unwrap_or((false, false));
    let b = &report.bucket;
    let (_, good, bad) = probe_counts(b);
    let count = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
    let reason = most_frequent(
        b.reasons
            .iter()
            .copied()
            .filter(|(r, _)| network_failure(*r)),
    );
    // An agent may send one window in more than one bucket.
    match buckets
        .iter_mut()
        .find(|b| b.start_ms == start && Arc::ptr_eq(&b.peer, &peer))
    {
        Some(pair) => {
            if bad > u64::from(pair.bad) {
                pair.reason = reason.or(pair.reason);
            }
            pair.good = pair.good.saturating_add(count(good));
            pair.bad = pair.bad.saturating_add(count(bad));
            pair.slow = pair.slow.saturating_add(count(slow.min(good)));
        }
        None => buckets.push(PairBucket {
            peer: peer.clone(),
            start_ms: start,
            duration_ms: u32::try_from(report.duration_ms).unwrap_or(u32::MAX),
            good: count(good),
            bad: count(bad),
            slow: count(slow.min(good)),
            reason,
        }),
    }
    newest_of_pair(buckets, &peer) != Some(before)
}

/// The mesh pairs as verdicts read them: per (source, peer), its buckets within the evidence
/// span (from the peer's failure `onsets`, as [`evidence_stats`]) and its bad probes within
/// the hold span; silent as `silent_after` tells for its newest window.
fn mesh_pair_views(
    mesh: &MeshPairs,
    now: UnixMs,
    spans: EvidenceSpans,
    onsets: &HashMap<&str, UnixMs>,
    silent_after: impl Fn(UnixMs, i64) -> bool,
) -> Vec<MeshPairView> {
    // At most one view per bucket, and at large sizes about that many (a pair probed once
    // per evidence span): reserved up front, the vector does not double past it, and a
    // 5,000-node mesh's views are 45 MB, not up to twice that.
    let mut views: Vec<MeshPairView> =
        Vec::with_capacity(mesh.by_source.values().map(Vec::len).sum());
    for (source, buckets) in &mesh.by_source {
        // One view per peer: a source's buckets of the same peer together.
        // Per peer: its view, its newest window (start and length) and its reasons' counts.
        type PairRead = (MeshPairView, UnixMs, i64, BTreeMap<FailureReason, u64>);
        let mut of_source: HashMap<*const u8, PairRead> = HashMap::new();
        for b in buckets {
            let spans = spans_of_window(b.duration_ms.into(), spans);
            let (view, newest_start, newest_window, reasons) =
                of_source.entry(b.peer.as_ptr()).or_insert_with(|| {
                    let view = MeshPairView {
                        source: source.clone(),
                        peer: b.peer.clone(),
                        good: 0,
                        bad: 0,
                        answered: 0,
                        slow: 0,
                        reason: None,
                        held_bad: 0,
                        silent: false,
                    };
                    (view, UnixMs::MIN, 0, BTreeMap::new())
                });
            if b.start_ms >= *newest_start {
                *newest_start = b.start_ms;
                *newest_window = b.duration_ms.into();
            }
            if b.start_ms >= now - spans.hold_ms {
                view.held_bad = view.held_bad.saturating_add(b.bad);
            }
            if b.start_ms < now - spans.evidence_ms {
                continue;
            }
            view.answered = view.answered.saturating_add(b.good);
            view.slow = view.slow.saturating_add(b.slow);
            if b.start_ms >= onsets.get(&*b.peer).copied().unwrap_or(UnixMs::MIN) {
                view.good = view.good.saturating_add(b.good);
                view.bad = view.bad.saturating_add(b.bad);
                if let Some(reason) = b.reason {
                    *reasons.entry(reason).or_default() += u64::from(b.bad);
                }
            }
        }
        views.extend(
            of_source
                .into_iter()
                // As a series' view: probes counted from the onset, or held bad ones.
                .filter(|(_, (view, _, _, _))| view.good + view.bad + view.held_bad > 0)
                .map(|(_, (mut view, newest_start, window, reasons))| {
                    view.reason = most_frequent(reasons);
                    view.silent = silent_after(newest_start + window.max(0), window);
                    view
                }),
        );
    }
    views
}

/// Adds a bucket to a series: its slots and its agent buckets.
fn record_in_series(series: &mut Series, report: &BucketReport, slow: u64) {
    let start = report.start_unix_ms;
    let b = &report.bucket;
    let Some(slot) = slot_at(&mut series.slots, start) else {
        return;
    };
    add_bucket(slot, b);
    series.last_ms = series.last_ms.max(start);
    let duration_ms = i64::try_from(report.duration_ms).unwrap_or(i64::MAX);
    add_evidence(&mut series.evidence, start, duration_ms, b, slow);
    if let Some((reason, at)) = failure_of(report)
        && series.last_failure.is_none_or(|(_, t)| t <= at)
    {
        series.last_failure = Some((reason, at));
    }
}

/// A bucket's first failure, when the network failed (not the prober): reason and time.
fn failure_of(report: &BucketReport) -> Option<(FailureReason, UnixMs)> {
    let first = report.bucket.first_failure.as_ref()?;
    (!first.reason.is_prober_problem()).then(|| {
        let at = report.start_unix_ms + i64::try_from(first.offset_ms).unwrap_or(0);
        (first.reason, at)
    })
}

/// The slot a bucket starting at `start` is counted in, made if new; `None` for a late
/// bucket older than every slot kept (it is not recent).
fn slot_at(slots: &mut VecDeque<Slot>, start: UnixMs) -> Option<&mut Slot> {
    let slot_start = start - start.rem_euclid(SUMMARY_SLOT_MS);
    // Slots stay ordered.
    let at = slots.partition_point(|s| s.start_ms < slot_start);
    if slots.get(at).is_none_or(|s| s.start_ms != slot_start) {
        if at == 0 && slots.len() >= SUMMARY_SLOTS {
            return None;
        }
        slots.insert(
            at,
            Slot {
                start_ms: slot_start,
                ..Slot::default()
            },
        );
        while slots.len() > SUMMARY_SLOTS {
            slots.pop_front();
        }
    }
    let index = slots.partition_point(|s| s.start_ms < slot_start);
    slots.get_mut(index)
}

/// Start of the minute `at` falls in.
fn slot_of(at: UnixMs) -> UnixMs {
    at - at.rem_euclid(SLOT_MS)
}

/// Forgets what no reader reads again: series, mesh peers and sources without results within
/// the recent span; agent buckets older than their series' hold span (and a slot: a series
/// that stopped within the hold span still reads as silent there); mesh pair buckets beyond
/// the evidence span unless failing, and beyond the hold span.
fn forget_the_past(data: &mut CheckData, now: UnixMs, spans: EvidenceSpans) {
    let horizon = now - RECENT_SPAN_MS;
    let slots_horizon = horizon - SUMMARY_SLOT_MS;
    data.series.retain(|_, series| {
        let spans = spans_of(series, spans);
        let held_from = now - spans.hold_ms - SLOT_MS;
        let evidence_from = now - spans.evidence_ms;
        // Beyond the evidence span only failures count (a held verdict's bad probes). The
        // newest bucket stays, whatever its age: it tells when the series last reported.
        let newest = series.evidence.back().map(|e| e.start_ms);
        series.evidence.retain(|e| {
            e.start_ms >= held_from
                && (e.start_ms >= evidence_from || e.bad > 0 || Some(e.start_ms) == newest)
        });
        if series.evidence.capacity() >= 16
            && series.evidence.len() * 4 <= series.evidence.capacity()
        {
            series.evidence.shrink_to_fit();
        }
        match series.slots.back() {
            Some(slot) => slot.start_ms >= slots_horizon,
            None => !series.evidence.is_empty(),
        }
    });
    // A mesh pair likewise, but not its newest bucket: its source's activity tells when it
    // last reported, and a pair is probed about once per rotation, so pairs kept for it
    // would be every pair of the hold span.
    data.mesh.by_source.retain(|_, buckets| {
        buckets.retain(|b| {
            let spans = spans_of_window(b.duration_ms.into(), spans);
            b.start_ms >= now - spans.hold_ms - SLOT_MS
                && (b.start_ms >= now - spans.evidence_ms || b.bad > 0)
        });
        if buckets.capacity() >= 16 && buckets.len() * 4 <= buckets.capacity() {
            buckets.shrink_to_fit();
        }
        !buckets.is_empty()
    });
    // A peer's label is held by its buckets and this set: once only here, it goes.
    data.mesh.peers.retain(|peer| Arc::strong_count(peer) > 1);
    data.pooled.retain(|_, pooled| {
        pooled
            .slots
            .back()
            .is_some_and(|s| s.start_ms >= slots_horizon)
    });
    data.sources.retain(|_, activity| {
        activity
            .mesh
            .retain(|_, mesh| mesh.newest_ms >= now - 64 * SLOT_MS);
        activity.last_ms >= horizon
    });
}

/// A bucket's probes as (invalid, good, bad), each within its total.
fn probe_counts(b: &netslo_protocol::bucket::Bucket) -> (u64, u64, u64) {
    let invalid = b.invalid.min(b.total);
    let good = b.good.min(b.total - invalid);
    (invalid, good, b.total - invalid - good)
}

/// A reason that tells how the network failed: not a refusal by the agent's grants, not the
/// prober's own trouble.
fn network_failure(reason: FailureReason) -> bool {
    reason != FailureReason::DestinationRefused && !reason.is_prober_problem()
}

/// The reason with the most probes, ties to the first in order.
fn most_frequent(counts: impl IntoIterator<Item = (FailureReason, u64)>) -> Option<FailureReason> {
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(reason, _)| reason)
}

fn add_bucket(slot: &mut Slot, b: &netslo_protocol::bucket::Bucket) {
    let (invalid, good, bad) = probe_counts(b);
    slot.good += good;
    slot.bad += bad;
    slot.invalid += invalid;
    for (reason, count) in &b.reasons {
        if *reason == FailureReason::DestinationRefused {
            slot.refused += count;
        } else if !reason.is_prober_problem() {
            *slot.reasons.entry(*reason).or_default() += count;
        }
    }
    slot.latency.merge(&b.latency);
}

/// Adds a bucket to the evidence, in start order (agents may send a window in more than
/// one bucket, and late); the oldest go beyond [`MAX_EVIDENCE_BUCKETS`].
fn add_evidence(
    evidence: &mut VecDeque<Evidence>,
    start: UnixMs,
    duration_ms: i64,
    b: &netslo_protocol::bucket::Bucket,
    slow: u64,
) {
    let at = evidence.partition_point(|e| e.start_ms < start);
    if evidence.get(at).is_none_or(|e| e.start_ms != start) {
        if at == 0 && evidence.len() >= MAX_EVIDENCE_BUCKETS {
            return;
        }
        evidence.insert(
            at,
            Evidence {
                start_ms: start,
                duration_ms,
                ..Evidence::default()
            },
        );
    }
    let (_, good, bad) = probe_counts(b);
    if let Some(e) = evidence.iter_mut().find(|e| e.start_ms == start) {
        e.good += good;
        e.bad += bad;
        e.slow += slow.min(good);
        for (reason, count) in b.reasons.iter().filter(|(r, _)| network_failure(*r)) {
            *e.reasons.entry(*reason).or_default() += count;
        }
    }
    while evidence.len() > MAX_EVIDENCE_BUCKETS {
        evidence.pop_front();
    }
}

/// The spans read for one series: at least three of its agent windows plus the time a
/// window takes to arrive (its end, one persist interval, the settling), so that an agent
/// window longer than the probe interval (10 s windows, 1 s probes) still leaves evidence.
fn spans_of(series: &Series, spans: EvidenceSpans) -> EvidenceSpans {
    let window = series.evidence.back().map_or(0, |e| e.duration_ms);
    spans_of_window(window, spans)
}

/// The spans read for agent windows of `window` ms (see [`spans_of`]).
fn spans_of_window(window: i64, spans: EvidenceSpans) -> EvidenceSpans {
    let window = window.max(0);
    let evidence_ms = spans
        .evidence_ms
        .max(window.saturating_mul(3).saturating_add(ARRIVAL_SLACK_MS));
    EvidenceSpans {
        evidence_ms,
        hold_ms: spans.hold_ms.max(evidence_ms.saturating_mul(3)),
    }
}

/// When a series' newest agent window ended.
fn newest_end(series: &Series) -> Option<UnixMs> {
    series
        .evidence
        .back()
        .map(|e| e.start_ms + e.duration_ms.max(0))
}

/// How long after its window a bucket may arrive and be counted: the persist interval
/// (5 s by default) and the settling before a reconcile, with room to spare.
const ARRIVAL_SLACK_MS: i64 = 10_000;

/// The counts of the agent buckets that started at or after `since`, from the path's
/// failure `onset` on if it has one (the first bad bucket of any source within the span): a
/// fault that began within the span is measured over its own time, not diluted by the good
/// probes before it (a port dropping everything since two windows fails 100%, not 20%), and
/// every source of the path over the same time (a partial fault seen so far by some sources
/// is not diluted by the whole span of the others).
fn evidence_stats(series: &Series, since: UnixMs, onset: Option<UnixMs>) -> EvidenceStats {
    let mut stats = EvidenceStats::default();
    let mut reasons: BTreeMap<FailureReason, u64> = BTreeMap::new();
    let within = series.evidence.iter().filter(|e| e.start_ms >= since);
    // Latency over the whole span: slowness has no onset to measure from.
    for e in within.clone() {
        stats.answered += e.good;
        stats.slow += e.slow;
    }
    let from = onset.unwrap_or(UnixMs::MIN);
    for e in within.filter(|e| e.start_ms >= from) {
        stats.good += e.good;
        stats.bad += e.bad;
        for (reason, count) in &e.reasons {
            *reasons.entry(*reason).or_default() += count;
        }
    }
    // Ties to the first in order (as `sorted_reasons`).
    stats.reason = most_frequent(reasons);
    stats
}

fn sorted_reasons(counts: &BTreeMap<FailureReason, u64>) -> Vec<(FailureReason, u64)> {
    let mut reasons: Vec<(FailureReason, u64)> = counts.iter().map(|(r, n)| (*r, *n)).collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    reasons
}

/// The counters of the slots that end after `since`.
fn slot_stats(
    slots: &VecDeque<Slot>,
    last_failure: Option<(FailureReason, UnixMs)>,
    since: UnixMs,
) -> SeriesStats {
    let mut stats = SeriesStats {
        last_failure,
        ..SeriesStats::default()
    };
    let mut reasons: BTreeMap<FailureReason, u64> = BTreeMap::new();
    for slot in slots
        .iter()
        .filter(|s| s.start_ms + SUMMARY_SLOT_MS > since)
    {
        stats.good += slot.good;
        stats.bad += slot.bad;
        stats.invalid += slot.invalid;
        stats.refused += slot.refused;
        stats.latency.merge(&slot.latency);
        for (r, n) in &slot.reasons {
            *reasons.entry(*r).or_default() += n;
        }
    }
    stats.reasons = sorted_reasons(&reasons);
    stats
}

impl ResultSink for ResultStore {
    fn ingest(
        &self,
        _identity: &AgentIdentity,
        batch: &AcceptedBatch,
    ) -> Result<Counted<'_>, SinkError> {
        let (outcome, generation) = self.ingest_batch(batch, crate::slo::now_ms());
        Ok(Counted {
            outcome,
            // Duplicates wait too: what they duplicate may still be in flight to storage.
            durable: Box::pin(self.durable_by(generation)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web() -> CheckKey {
        CheckKey::new("shop", "web")
    }

    /// What the channel answers for a batch: its outcome, once durable.
    async fn acknowledged(
        store: &ResultStore,
        batch: &AcceptedBatch,
    ) -> Result<IngestOutcome, SinkError> {
        let counted = store.ingest(&identity(), batch)?;
        counted.durable.await?;
        Ok(counted.outcome)
    }

    /// The view of one series.
    fn view_of<'a>(views: &'a SeriesViews, source: &str, label: &str) -> &'a SeriesView {
        views
            .iter()
            .find(|((s, l), _)| s == source && l == label)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no series ({source}, {label})"))
    }

    fn spans(evidence_ms: i64) -> EvidenceSpans {
        EvidenceSpans {
            evidence_ms,
            hold_ms: 3 * evidence_ms,
        }
    }

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

    /// A store with one check whose target "peers" is a mesh, configured at `since`.
    fn mesh_store(since: UnixMs) -> ResultStore {
        let store = ResultStore::new();
        let config = CheckConfig {
            latency_threshold_us: None,
            deny_targets: vec![],
            slice: SliceRule::DEFAULT,
            mesh_targets: vec!["peers".into()],
        };
        store.configure(&web(), "uid-1", config, since);
        store
    }

    fn store(now: UnixMs) -> ResultStore {
        let store = ResultStore::new();
        let config = CheckConfig {
            latency_threshold_us: Some(5000),
            deny_targets: vec![],
            slice: SliceRule::DEFAULT,
            mesh_targets: vec![],
        };
        store.configure(&web(), "uid-1", config, now);
        store
    }

    #[test]
    fn evidence_is_measured_from_the_first_failure_and_held_over_the_hold_span() {
        let now = 1_800_000_000_000;
        let store = store(now - 600_000);
        let at = |seconds_ago: i64| u64::try_from(now - seconds_ago * 1_000).unwrap();
        // Good for 60 s, then failing for the last 20 s; an older failure 200 s ago.
        let mut buckets = vec![report(
            1,
            "shop/web/api",
            "node-a",
            "api/Pod/a",
            at(200),
            0,
            10,
        )];
        for (i, ago) in (20..=80).rev().step_by(10).enumerate() {
            let (good, bad) = if ago <= 20 { (0, 10) } else { (10, 0) };
            let seq = 2 + i as u64;
            buckets.push(report(
                seq,
                "shop/web/api",
                "node-a",
                "api/Pod/a",
                at(ago),
                good,
                bad,
            ));
        }
        buckets.push(report(
            99,
            "shop/web/api",
            "node-a",
            "api/Pod/a",
            at(10),
            0,
            10,
        ));
        store.ingest_batch(&batch("b", buckets), now);
        let spans = EvidenceSpans {
            evidence_ms: 100_000,
            hold_ms: 300_000,
        };
        let views = store
            .read(&web(), now, 3_600_000, spans, |_, s| s.paths.clone())
            .unwrap();
        let view = view_of(&views, "node-a", "api/Pod/a");
        assert_eq!(
            (view.matrix.good, view.matrix.bad),
            (0, 20),
            "the good probes before the fault do not dilute it"
        );
        assert_eq!(view.held_bad, 30, "the hold span reaches the older failure");
    }

    #[test]
    fn a_series_is_silent_when_it_stops_while_the_others_report() {
        let now = 1_800_000_000_000;
        let first = store(now - 600_000);
        let at = |seconds_ago: i64| u64::try_from(now - seconds_ago * 1_000).unwrap();
        // 10 s windows. node-a's newest ended 10 s before node-b's: within two windows and
        // the slack. node-c's ended 30 s before: silent.
        let buckets = vec![
            report(1, "shop/web/api", "node-a", "api/Pod/a", at(30), 10, 0),
            report(2, "shop/web/api", "node-b", "api/Pod/a", at(20), 10, 0),
            report(3, "shop/web/api", "node-c", "api/Pod/a", at(50), 10, 0),
        ];
        first.ingest_batch(&batch("b", buckets), now);
        let silent: Vec<(String, bool)> = first
            .read(&web(), now, 3_600_000, spans(300_000), |_, recent| {
                let views = recent.paths;
                views
                    .iter()
                    .map(|((source, _), v)| (source.clone(), v.silent))
                    .collect()
            })
            .unwrap();
        assert_eq!(
            silent,
            [
                ("node-a".to_owned(), false),
                ("node-b".to_owned(), false),
                ("node-c".to_owned(), true),
            ]
        );
        // One-second windows, reported each second: node-c stops 6 s before the others.
        let second = store(now - 600_000);
        let mut buckets = Vec::new();
        for (i, ago) in (1..=30).rev().enumerate() {
            for (k, source) in ["node-a", "node-b", "node-c"].into_iter().enumerate() {
                if source == "node-c" && ago < 7 {
                    continue;
                }
                let seq = (i * 3 + k) as u64;
                let mut r = report(seq, "shop/web/api", source, "api/Pod/a", at(ago), 1, 0);
                r.duration_ms = 1_000;
                buckets.push(r);
            }
        }
        second.ingest_batch(&batch("b", buckets), now);
        let silent: Vec<bool> = second
            .read(&web(), now, 3_600_000, spans(10_000), |_, recent| {
                let views = recent.paths;
                views.iter().map(|(_, v)| v.silent).collect()
            })
            .unwrap();
        assert_eq!(silent, [false, false, true]);
    }

    #[test]
    fn every_source_of_a_path_counts_from_where_the_path_began_to_fail() {
        let now = 1_800_000_000_000;
        let store = store(now - 600_000);
        let at = |seconds_ago: i64| u64::try_from(now - seconds_ago * 1_000).unwrap();
        // Both sources good for 60 s; node-a's probes fail from 20 s ago, node-b's stay
        // good. Another path fails nowhere.
        let mut buckets = Vec::new();
        for (i, ago) in (10..=80).rev().step_by(10).enumerate() {
            let bad = if ago <= 20 { 5 } else { 0 };
            let seq = 10 * i as u64;
            buckets.push(report(
                seq,
                "shop/web/api",
                "node-a",
                "api/Pod/a",
                at(ago),
                10 - bad,
                bad,
            ));
            buckets.push(report(
                seq + 1,
                "shop/web/api",
                "node-b",
                "api/Pod/a",
                at(ago),
                10,
                0,
            ));
            buckets.push(report(
                seq + 2,
                "shop/web/api",
                "node-b",
                "api/Pod/b",
                at(ago),
                10,
                0,
            ));
        }
        store.ingest_batch(&batch("b", buckets), now);
        let counts: Vec<(String, String, u64, u64)> = store
            .read(&web(), now, 3_600_000, spans(100_000), |_, recent| {
                let views = recent.paths;
                views
                    .iter()
                    .map(|((source, label), v)| {
                        (source.clone(), label.clone(), v.matrix.good, v.matrix.bad)
                    })
                    .collect()
            })
            .unwrap();
        assert_eq!(
            counts,
            [
                ("node-a".to_owned(), "api/Pod/a".to_owned(), 10, 10),
                ("node-b".to_owned(), "api/Pod/a".to_owned(), 20, 0),
                ("node-b".to_owned(), "api/Pod/b".to_owned(), 80, 0),
            ]
        );
    }

    #[test]
    fn evidence_spans_cover_agent_windows_longer_than_the_probe_interval() {
        // 1 s probes (10 s of evidence) reported in 10 s agent windows that arrive up to
        // ~17 s after they start: the span stretches to three windows and their arrival.
        let mut series = Series::default();
        let bucket = report(1, "shop/web/api", "node-a", "api/Pod/a", 0, 10, 0).bucket;
        add_evidence(&mut series.evidence, 0, 10_000, &bucket, 0);
        let asked = EvidenceSpans {
            evidence_ms: 10_000,
            hold_ms: 30_000,
        };
        let spans = spans_of(&series, asked);
        assert_eq!((spans.evidence_ms, spans.hold_ms), (40_000, 120_000));
        // Windows of one second keep the spans asked for.
        let mut short = Series::default();
        add_evidence(&mut short.evidence, 0, 1_000, &bucket, 0);
        assert_eq!(spans_of(&short, asked).evidence_ms, 13_000);
        assert_eq!(
            spans_of(&Series::default(), asked),
            EvidenceSpans {
                evidence_ms: 10_000,
                hold_ms: 30_000
            }
        );
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
            store.ingest_batch(&b, now).0,
            IngestOutcome {
                stored: 1,
                duplicates: 0
            }
        );
        assert_eq!(
            store.ingest_batch(&b, now).0,
            IngestOutcome {
                stored: 0,
                duplicates: 1
            }
        );
        let (total, stats) = store
            .read(&web(), now, 300_000, spans(300_000), |history, recent| {
                let stats = recent.paths;
                (history.window(now, 3_600_000).counts.total, stats.clone())
            })
            .unwrap();
        assert_eq!(total, 10);
        let s = &view_of(&stats, "node-a", "api/ClusterIP/10.96.0.9:80").summary;
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
        assert_eq!(store.ingest_batch(&b, now).0.stored, 0);
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
            .read(&web(), now, 60 * 60_000, spans(5 * 60_000), |_, recent| {
                let s = recent.paths;
                s.clone()
            })
            .unwrap();
        let a = view_of(&views, "node-a", "api/Pod/a");
        assert_eq!(
            (a.summary.good, a.summary.bad),
            (5, 5),
            "the hour holds both"
        );
        assert_eq!(
            (a.matrix.good, a.matrix.bad),
            (5, 0),
            "the matrix reads the buckets within the evidence span"
        );
        let b = view_of(&views, "node-b", "api/Pod/b");
        assert_eq!(
            b.matrix.good + b.matrix.bad,
            0,
            "node-b's newest bucket is stale"
        );
        assert!(b.last_slot_ms < now - 40 * 60_000);
        // Two hours later every series is silent and forgotten.
        let later = store
            .read(
                &web(),
                now + 2 * 3_600_000,
                60 * 60_000,
                spans(5 * 60_000),
                |_, s| s.paths.len(),
            )
            .unwrap();
        assert_eq!(later, 0);
    }

    /// The memory bound of every series: an hour of agent windows leaves twelve-odd summary
    /// slots, the buckets of the evidence span and the failing ones of the hold span, not an
    /// hour of minutes and every bucket of the hold span (a check probed from hundreds of
    /// nodes has thousands of series).
    #[test]
    fn a_series_holds_its_hour_in_slots_of_minutes_and_only_failures_beyond_its_evidence() {
        const WINDOW_MS: u64 = 10_000;
        let start = 1_800_000_000_000u64;
        let store = store(start as i64);
        let hour = 360u64;
        for i in 0..hour {
            let at = start + i * WINDOW_MS;
            // Two failing windows within the last hold span, the rest good.
            let bad = u64::from(i == hour - 10 || i == hour - 6);
            let b = batch(
                "boot",
                vec![report(
                    i + 1,
                    "shop/web/api",
                    "node-a",
                    "api/Pod/a",
                    at,
                    5 - bad,
                    bad,
                )],
            );
            store.ingest_batch(&b, (at + WINDOW_MS) as i64);
        }
        let now = (start + hour * WINDOW_MS) as i64;
        let spans = spans(30_000);
        let (summary, matrix, held_bad) = store
            .read(&web(), now, 60 * 60_000, spans, |_, recent| {
                let view = view_of(&recent.paths, "node-a", "api/Pod/a");
                (view.summary.clone(), view.matrix, view.held_bad)
            })
            .unwrap();
        assert_eq!(
            summary.good + summary.bad,
            5 * hour,
            "the hour counts every probe"
        );
        // Evidence: 4 windows (3 and the arrival slack); hold: 12 windows.
        assert_eq!((matrix.good + matrix.bad, held_bad), (20, 2));
        let inner = store.lock();
        let series = &inner.checks[&web()].series[&("node-a".into(), "api/Pod/a".into())];
        assert!(
            series.slots.len() <= SUMMARY_SLOTS,
            "{} slots",
            series.slots.len()
        );
        // The evidence span's 3-4 windows (with the arrival slack) and the 2 failing ones.
        assert!(
            series.evidence.len() <= 7,
            "{} buckets held",
            series.evidence.len()
        );
        assert!(series.evidence.iter().filter(|e| e.bad > 0).count() == 2);
    }

    /// The memory bound of a mesh: its agents rotate through every ordered pair within the
    /// hour, and the store holds an answering pair only over its evidence span (what verdicts
    /// read), so the series held follow N·k (agents × peers per round), not the N² pairs
    /// probed; the hour's figures are kept per peer and per source, and still count every
    /// probe.
    #[test]
    fn a_mesh_holds_its_answering_pairs_over_the_evidence_span_only_and_its_hour_per_peer() {
        const AGENTS: usize = 300;
        const ROUND_MS: i64 = 30_000;
        const ROUNDS: i64 = 3_600_000 / ROUND_MS;
        let agents: Vec<crate::mesh::Agent> = (0..AGENTS)
            .map(|i| crate::mesh::Agent {
                node: format!("node-{i:03}"),
                name: format!("agent-{i:03}"),
                zone: None,
            })
            .collect();
        let plan = crate::mesh::MeshPlan::new(agents, Some(3));
        let k = plan.peers_per_agent();
        // On the hour.
        let start: UnixMs = 1_800_000_000_000;
        let store = mesh_store(start);
        let spans = spans(20_000);
        let mut seq = 0;
        let mut pairs_probed = BTreeSet::new();
        let mut most_held = 0;
        for round in 0..ROUNDS {
            let round_start = start + round * ROUND_MS;
            let mut buckets = Vec::new();
            for (i, source) in plan.agents().iter().enumerate() {
                for p in plan.peer_indexes(i, round as u64) {
                    let peer = &plan.agents()[p].name;
                    pairs_probed.insert((i, p));
                    seq += 1;
                    let target = format!("peers/Pod/{peer}");
                    let start_ms = u64::try_from(round_start).unwrap();
                    let mut r =
                        report(seq, "shop/web/peers", &source.name, &target, start_ms, 1, 0);
                    r.duration_ms = ROUND_MS as u64;
                    buckets.push(r);
                }
            }
            let now = round_start + ROUND_MS;
            store.ingest_batch(&batch("b", buckets), now);
            // Reconciles read the check (a healthy one about once a minute); the most held
            // is just before a read.
            if round % 2 == 1 {
                let held: usize = store.lock().checks[&web()]
                    .mesh
                    .by_source
                    .values()
                    .map(Vec::len)
                    .sum();
                most_held = most_held.max(held);
                store
                    .read(&web(), now, 3_600_000, spans, |_, _| ())
                    .unwrap();
            }
        }
        assert_eq!(
            pairs_probed.len(),
            AGENTS * (AGENTS - 1),
            "the rotation probed every pair"
        );
        // The evidence span of windows of a round (3 windows + 10 s) and the minute between
        // reads, in rounds, each of N·k pairs.
        let evidence_ms = 3 * ROUND_MS + 10_000;
        let held_rounds = (evidence_ms + SLOT_MS) / ROUND_MS + 1;
        let bound = AGENTS * k * usize::try_from(held_rounds).unwrap();
        assert!(
            most_held <= bound,
            "{most_held} pair buckets held, bound {bound}"
        );
        assert!(
            bound * 2 < pairs_probed.len(),
            "the bound is below the pairs probed"
        );
        let now = start + ROUNDS * ROUND_MS;
        let (paths, pooled, sources) = store
            .read(&web(), now, 3_600_000, spans, |_, recent| {
                let good: u64 = recent.pooled.values().map(|p| p.summary.good).sum();
                (
                    recent.mesh_pairs.len(),
                    (recent.pooled.len(), good),
                    recent.sources,
                )
            })
            .unwrap();
        assert!(paths <= bound, "{paths}");
        assert_eq!(
            pooled,
            (AGENTS, ROUNDS as u64 * (AGENTS * k) as u64),
            "every probe of the hour, per peer"
        );
        assert_eq!(sources.len(), AGENTS);
        assert!(
            sources
                .values()
                .all(|s| s.mesh_minutes["peers"].count_since(start) == 60),
            "every source reported the mesh in each minute of the hour"
        );
        let data = &store.lock().checks[&web()];
        assert!(
            data.series.is_empty(),
            "no pair is a series, with its slots"
        );
        assert_eq!(data.mesh.peers.len(), AGENTS, "a peer's name held once");
    }

    /// A mesh pair is a few words per agent bucket, not a series, and verdicts read it as they
    /// read the same buckets' series: evidence from the peer's failure onset, the hold span's
    /// bad probes, silence.
    #[test]
    fn a_mesh_pair_reads_as_a_series_of_the_same_buckets_does() {
        assert!(
            size_of::<PairBucket>() <= 48,
            "{} bytes per pair bucket",
            size_of::<PairBucket>()
        );
        let now: UnixMs = 1_800_000_000_000;
        let agents = ["node-a", "node-b", "node-c"];
        let mut buckets = Vec::new();
        // 10 s windows over 300 s: node-c stops 100 s ago; probes of node-b fail in the
        // last six windows; node-a to node-c failed once 250 s ago, within the hold span
        // only.
        for window in 0..30 {
            let start = now - 300_000 + window * 10_000;
            let ago = now - start;
            for source in agents {
                if source == "node-c" && ago < 100_000 {
                    continue;
                }
                for peer in agents.iter().filter(|p| **p != source) {
                    let failing = (*peer == "node-b" && ago <= 60_000)
                        || (source == "node-a" && *peer == "node-c" && ago == 250_000);
                    let (good, bad) = if failing { (2, 8) } else { (10, 0) };
                    let target = format!("peers/Pod/{peer}");
                    let at = u64::try_from(start).unwrap();
                    let seq = buckets.len() as u64 + 1;
                    buckets.push(report(
                        seq,
                        "shop/web/peers",
                        source,
                        &target,
                        at,
                        good,
                        bad,
                    ));
                }
            }
        }
        let as_series = store(now - 600_000);
        let as_mesh = mesh_store(now - 600_000);
        as_series.ingest_batch(&batch("b", buckets.clone()), now);
        as_mesh.ingest_batch(&batch("b", buckets), now);
        let spans = spans(100_000);
        let series = as_series
            .read(&web(), now, 3_600_000, spans, |_, recent| recent.paths)
            .unwrap();
        let pairs = as_mesh
            .read(&web(), now, 3_600_000, spans, |_, recent| recent.mesh_pairs)
            .unwrap();
        let read_as_series: Vec<(String, String, EvidenceStats, u64, bool)> = series
            .iter()
            .filter(|(_, v)| v.matrix.good + v.matrix.bad + v.held_bad > 0)
            .map(|((source, peer), v)| {
                (source.clone(), peer.clone(), v.matrix, v.held_bad, v.silent)
            })
            .collect();
        let read_as_pairs: Vec<(String, String, EvidenceStats, u64, bool)> = pairs
            .iter()
            .map(|p| {
                let (source, peer) = (p.source.to_string(), p.peer.to_string());
                (source, peer, p.matrix(), p.held_bad.into(), p.silent)
            })
            .collect();
        assert_eq!(read_as_pairs, read_as_series);
        let a_to_b = pairs
            .iter()
            .find(|p| (&*p.source, &*p.peer) == ("node-a", "peers/Pod/node-b"))
            .unwrap();
        assert_eq!((a_to_b.good, a_to_b.bad), (12, 48), "from the onset on");
        assert_eq!(a_to_b.reason, Some(FailureReason::TcpTimeout));
        assert!(
            pairs.iter().any(|p| p.silent) && pairs.iter().any(|p| p.held_bad > p.bad),
            "silence and the hold span are read"
        );
    }

    /// A mesh source that stops reporting (its node cut off) leaves no pair within the
    /// evidence span, and is named silent for as long as verdicts are held.
    #[test]
    fn a_mesh_source_that_stops_is_silent_over_the_hold_span() {
        let start: UnixMs = 1_800_000_000_000;
        let store = mesh_store(start);
        let agents = ["node-a", "node-b", "node-c"];
        // 10 s windows; node-c stops after the first minute, the others go on for ten.
        let mut seq = 0;
        for window in 0..60 {
            let window_start = start + window * 10_000;
            let mut buckets = Vec::new();
            for source in agents {
                if source == "node-c" && window >= 6 {
                    continue;
                }
                for peer in agents.iter().filter(|p| **p != source) {
                    seq += 1;
                    let at = u64::try_from(window_start).unwrap();
                    let target = format!("peers/Pod/{peer}");
                    buckets.push(report(seq, "shop/web/peers", source, &target, at, 1, 0));
                }
            }
            store.ingest_batch(&batch("b", buckets), window_start + 10_000);
        }
        let spans = spans(100_000);
        let read = |now: UnixMs| {
            store
                .read(&web(), now, 3_600_000, spans, |_, recent| {
                    let sources_of_pairs: BTreeSet<String> = recent
                        .mesh_pairs
                        .iter()
                        .map(|pair| pair.source.to_string())
                        .collect();
                    (sources_of_pairs, recent.silent_mesh_sources)
                })
                .unwrap()
        };
        let c_stopped = start + 60_000;
        let (pairs_from, silent) = read(c_stopped + 30_000);
        assert!(
            pairs_from.contains("node-c"),
            "its pairs, within the evidence span"
        );
        assert_eq!(silent, [("node-c".to_owned(), "peers".to_owned())]);
        let (pairs_from, silent) = read(c_stopped + 200_000);
        assert!(
            !pairs_from.contains("node-c"),
            "beyond the evidence span, none of its pairs"
        );
        assert_eq!(
            silent,
            [("node-c".to_owned(), "peers".to_owned())],
            "within the hold span"
        );
        let (_, silent) = read(c_stopped + spans.hold_ms + 2 * SLOT_MS);
        assert!(silent.is_empty(), "beyond the hold span: {silent:?}");
    }

    #[test]
    fn a_minute_mask_keeps_the_last_64_minutes_in_any_order() {
        // On the minute.
        let t0: UnixMs = 1_800_000_000_000;
        let mut mask = MinuteMask::default();
        assert_eq!(mask.count_since(UnixMs::MIN), 0);
        mask.mark(t0 + 5_000);
        mask.mark(t0 + 59_999);
        assert_eq!(mask.count_since(UnixMs::MIN), 1, "one minute, twice");
        mask.mark(t0 + 3 * SLOT_MS);
        mask.mark(t0 + SLOT_MS);
        assert_eq!(mask.count_since(UnixMs::MIN), 3, "late minutes count");
        assert_eq!(
            mask.count_since(t0 + SLOT_MS),
            2,
            "minutes ending after since"
        );
        mask.mark(t0 - 70 * SLOT_MS);
        assert_eq!(
            mask.count_since(UnixMs::MIN),
            3,
            "older than 64 minutes: not kept"
        );
        mask.mark(t0 + 66 * SLOT_MS);
        assert_eq!(mask.count_since(UnixMs::MIN), 2, "t0 is now 66 minutes old");
        mask.mark(t0 + 1_000 * SLOT_MS);
        assert_eq!(mask.count_since(UnixMs::MIN), 1);
    }

    fn identity() -> AgentIdentity {
        AgentIdentity::service_account("netslo-system", "netslo-agent")
    }

    fn durable_store(now: UnixMs) -> ResultStore {
        let store = ResultStore::durable(Duration::from_secs(5));
        let config = CheckConfig {
            latency_threshold_us: Some(5000),
            deny_targets: vec![],
            slice: SliceRule::DEFAULT,
            mesh_targets: vec![],
        };
        store.configure(&web(), "uid-1", config, now);
        store
    }

    fn window_total(store: &ResultStore, now: UnixMs) -> u64 {
        store
            .read(&web(), now, 300_000, spans(300_000), |h, _| {
                h.window(now, 3_600_000).counts.total
            })
            .unwrap()
    }

    #[tokio::test]
    async fn a_durable_store_acknowledges_after_its_flush() {
        let now = crate::slo::now_ms();
        let store = Arc::new(durable_store(now));
        let start = u64::try_from(now - 20_000).unwrap();
        let b = batch(
            "boot-1",
            vec![report(
                1,
                "shop/web/api",
                "node-a",
                "api/Pod/a",
                start,
                10,
                0,
            )],
        );
        let id = identity();
        let pending = {
            let store = store.clone();
            let b = b.clone();
            tokio::spawn(async move { acknowledged(&store, &b).await })
        };
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !pending.is_finished(),
            "no acknowledgement before the flush"
        );

        // A failed flush fails the batch (the agent keeps it) and keeps the check dirty.
        let work = store.take_flush(now);
        assert_eq!(work.writes.len(), 1);
        store.finish_flush(work.generation, &[web()], Some("etcd down".into()));
        let err = pending.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("etcd down"), "{err}");

        // The resend is a duplicate in memory, yet waits for the next flush too.
        let resent = {
            let store = store.clone();
            tokio::spawn(async move { acknowledged(&store, &b).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!resent.is_finished());
        let work = store.take_flush(now);
        assert_eq!(work.writes.len(), 1, "the failed write is retried");
        store.finish_flush(work.generation, &[], None);
        let outcome = resent.await.unwrap().unwrap();
        assert_eq!((outcome.stored, outcome.duplicates), (0, 1));
        assert_eq!(window_total(&store, now), 10, "counted once");

        // Nothing changed: the next flush writes nothing.
        assert!(store.take_flush(now).writes.is_empty());
        drop(id);
    }

    #[test]
    fn stored_state_restores_the_window_and_what_was_counted() {
        let now = 1_800_000_000_000;
        let store = durable_store(now - 600_000);
        let start = u64::try_from(now - 120_000).unwrap();
        let first = batch(
            "boot-1",
            vec![report(
                4,
                "shop/web/api",
                "node-a",
                "api/Pod/a",
                start,
                9,
                1,
            )],
        );
        store.ingest_batch(&first, now);
        let record = store.take_flush(now).writes.remove(0);
        assert_eq!((&record.key, record.uid.as_str()), (&web(), "uid-1"));

        // A new operator process reads the record back.
        let restarted = ResultStore::durable(Duration::from_secs(5));
        restarted.restore(
            RestoredCheck {
                key: record.key,
                uid: record.uid,
                latency_threshold_us: record.latency_threshold_us,
                deny_targets: record.deny_targets,
                history: History::decode(&record.history).unwrap(),
                settled: Settled::decode(&record.settled).unwrap(),
            },
            now,
        );
        assert_eq!(window_total(&restarted, now), 10, "the budget is not reset");
        assert!(
            restarted.take_flush(now).writes.is_empty(),
            "restored, not changed"
        );
        // The agent resends the batch whose acknowledgement was lost, plus a new bucket.
        let resent = batch(
            "boot-1",
            vec![
                report(4, "shop/web/api", "node-a", "api/Pod/a", start, 9, 1),
                report(
                    5,
                    "shop/web/api",
                    "node-a",
                    "api/Pod/a",
                    start + 10_000,
                    5,
                    0,
                ),
            ],
        );
        let (outcome, _) = restarted.ingest_batch(&resent, now);
        assert_eq!((outcome.stored, outcome.duplicates), (1, 1));
        assert_eq!(window_total(&restarted, now), 15);
        // The same spec keeps the window; a new object under the same name starts over.
        let config = CheckConfig {
            latency_threshold_us: Some(5000),
            deny_targets: vec![],
            slice: SliceRule::DEFAULT,
            mesh_targets: vec![],
        };
        restarted.configure(&web(), "uid-1", config.clone(), now);
        assert_eq!(window_total(&restarted, now), 15);
        restarted.configure(&web(), "uid-2", config, now);
        assert_eq!(window_total(&restarted, now), 0);
    }

    #[test]
    fn removing_a_check_schedules_the_deletion_of_its_stored_state() {
        let now = 1_800_000_000_000;
        let store = durable_store(now);
        store.take_flush(now);
        store.remove(&web());
        let work = store.take_flush(now);
        assert_eq!(work.deletes, vec![web()]);
        // A failed deletion is retried.
        store.finish_flush(work.generation, &[web()], None);
        assert_eq!(store.take_flush(now).deletes, vec![web()]);
        assert!(store.take_flush(now).deletes.is_empty());
    }

    #[test]
    fn a_series_that_starts_or_stops_failing_signals_its_check() {
        let now = 1_800_000_000_000;
        let store = store(now - 600_000);
        let (tx, mut rx) = mpsc::channel(16);
        store.notify_changes(tx);
        let t = |i: i64| u64::try_from(now - 100_000 + i * 10_000).unwrap();
        let ingest = |seq: u64, start: u64, bad: u64| {
            let b = batch(
                "boot-1",
                vec![report(
                    seq,
                    "shop/web/api",
                    "node-a",
                    "api/Pod/a",
                    start,
                    10 - bad,
                    bad,
                )],
            );
            store.ingest_batch(&b, now);
        };
        ingest(1, t(0), 0);
        assert_eq!(rx.try_recv().ok(), Some(web()), "a new series");
        ingest(2, t(1), 0);
        assert!(rx.try_recv().is_err(), "still healthy: nothing to say");
        ingest(3, t(2), 3);
        assert_eq!(rx.try_recv().ok(), Some(web()), "started failing");
        ingest(4, t(3), 2);
        assert!(rx.try_recv().is_err(), "still failing");
        ingest(5, t(4), 0);
        assert_eq!(rx.try_recv().ok(), Some(web()), "recovered");
    }

    /// A rotating mesh probes new pairs every round: a new pair that answers is not a change.
    #[test]
    fn a_mesh_signals_its_sources_first_reports_and_failing_pairs_not_each_new_pair() {
        let now = 1_800_000_000_000;
        let store = mesh_store(now - 600_000);
        let (tx, mut rx) = mpsc::channel(16);
        store.notify_changes(tx);
        let start = u64::try_from(now - 100_000).unwrap();
        let ingest = |seq: u64, peer: &str, bad: u64| {
            let target = format!("peers/Pod/{peer}");
            let r = report(seq, "shop/web/peers", "node-a", &target, start, 1, bad);
            store.ingest_batch(&batch("boot-1", vec![r]), now);
        };
        ingest(1, "node-b", 0);
        assert_eq!(rx.try_recv().ok(), Some(web()), "the source's first report");
        ingest(2, "node-c", 0);
        assert!(
            rx.try_recv().is_err(),
            "the next peer answers: nothing to say"
        );
        ingest(3, "node-d", 2);
        assert_eq!(rx.try_recv().ok(), Some(web()), "a new pair that fails");
    }
}
