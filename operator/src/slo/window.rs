//! The per-check window history: counts in time buckets, at two resolutions.
//!
//! * **Fine**: 5-minute buckets over the last 3 days, so every standard burn-rate window (5m to
//!   3d) is answered exactly at 5-minute resolution.
//! * **Coarse**: 1-hour buckets over the last 30 days (the longest SLO window), for the SLI,
//!   the budget, coverage, and custom burn-rate windows longer than 3 days.
//!
//! Every sample is added to both levels (two additions are cheaper than merging fine buckets
//! into coarse ones on a schedule, and each level stays self-contained). Buckets are keyed by
//! their absolute start time, taken from the sample's own timestamp, never from arrival order:
//! late data lands where it belongs, and a clock that steps backwards cannot shift or mix
//! buckets. Only populated buckets are stored, so a young or sparse check costs little.
//!
//! Invariant after every operation at `now`: each level holds only buckets inside its span
//! relative to `now` (the oldest accepted bucket up to `now` plus [`MAX_FUTURE_SKEW_MS`]).
//! Data that falls outside is dropped and counted in [`IngestStats`], never silently.
//!
//! Timeslices (budgeting method Timeslices) need a verdict per slice, which needs all of the
//! slice's probes. Slices stay open (their counts kept apart) until [`SLICE_SETTLE_MS`] after
//! they end, then their verdicts are folded into the bucket holding the slice's start. Data
//! for a slice that already settled still counts as occurrences but cannot change the slice
//! (counted as `late_for_slice`). Evaluation judges open slices provisionally, so results do
//! not depend on when settlement ran.
//!
//! [`History::encode`] writes a compact, versioned, checksummed binary form (a few KiB to
//! ~10 KiB for a full 30-day history; ConfigMap `binaryData`), and [`History::decode`] rejects
//! corrupt or hostile input with an error, never a panic.

use std::collections::VecDeque;

use netslo_protocol::bucket::BucketReport;
use netslo_protocol::hash::fnv1a_32;

use super::config::SliceRule;
use super::{DAY_MS, HOUR_MS, MINUTE_MS, Ppm, UnixMs};

/// Width of a fine bucket.
pub const FINE_MS: i64 = 5 * MINUTE_MS;
/// How far back fine buckets reach: the longest standard burn-rate window.
pub const FINE_SPAN_MS: i64 = 3 * DAY_MS;
/// Width of a coarse bucket.
pub const COARSE_MS: i64 = HOUR_MS;
/// How far back coarse buckets reach: the longest SLO window.
pub const COARSE_SPAN_MS: i64 = 30 * DAY_MS;
/// Data stamped later than `now` by more than this is dropped (agent clocks drift a little;
/// more than a minute means a broken clock, whose data would land in buckets not yet lived).
pub const MAX_FUTURE_SKEW_MS: i64 = MINUTE_MS;
/// How long after its end a timeslice waits for late results before its verdict is final.
/// Agents send closed 10 s buckets within seconds; a reconnecting agent resends later data,
/// which then still counts as occurrences.
pub const SLICE_SETTLE_MS: i64 = 10 * MINUTE_MS;

/// Fine slots per coarse bucket: the most a coarse bucket's `covered` can be.
const FINE_PER_COARSE: u64 = (COARSE_MS / FINE_MS) as u64;

/// Counters of one bucket (or of a sum of buckets).
///
/// Availability: `good` of `valid()` probes (invalid probes are excluded, never bad). Latency:
/// `latency_good` of `latency_valid` (valid probes of targets with a latency to judge, i.e.
/// not expected-deny ones). Slices: settled timeslices with valid probes, and the good ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub invalid: u64,
    pub good: u64,
    pub latency_valid: u64,
    pub latency_good: u64,
    pub slices: u64,
    pub slices_good: u64,
    pub latency_slices: u64,
    pub latency_slices_good: u64,
    /// Fine (5-minute) slots with valid probes: 0 or 1 in a fine bucket, up to 12 in a coarse
    /// one. Coverage is built from it.
    pub covered: u64,
}

impl Counts {
    /// Probes that count towards availability.
    pub fn valid(&self) -> u64 {
        self.total.saturating_sub(self.invalid)
    }

    fn add(&mut self, o: &Counts) {
        self.total = self.total.saturating_add(o.total);
        self.invalid = self.invalid.saturating_add(o.invalid);
        self.good = self.good.saturating_add(o.good);
        self.latency_valid = self.latency_valid.saturating_add(o.latency_valid);
        self.latency_good = self.latency_good.saturating_add(o.latency_good);
        self.slices = self.slices.saturating_add(o.slices);
        self.slices_good = self.slices_good.saturating_add(o.slices_good);
        self.latency_slices = self.latency_slices.saturating_add(o.latency_slices);
        self.latency_slices_good = self
            .latency_slices_good
            .saturating_add(o.latency_slices_good);
        self.covered = self.covered.saturating_add(o.covered);
    }
}

/// The counts of one agent bucket, ready to add to a history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The agent's bucket start (its own timestamp), Unix ms.
    pub start_ms: UnixMs,
    pub total: u64,
    pub invalid: u64,
    pub good: u64,
    pub latency_valid: u64,
    pub latency_good: u64,
}

impl Sample {
    /// Takes a report's counters. `latency_threshold_us` is the check's latency objective (its
    /// `good_within` entry is used; a report without that threshold, from an agent on an older
    /// assignment, contributes no latency data rather than wrong data). Expected-deny targets
    /// have no latency to judge. Counters are clamped so that a malformed report cannot make
    /// good exceed valid.
    pub fn from_report(
        report: &BucketReport,
        latency_threshold_us: Option<u64>,
        expected_deny: bool,
    ) -> Sample {
        let b = &report.bucket;
        let total = b.total;
        let invalid = b.invalid.min(total);
        let good = b.good.min(total - invalid);
        let latency_good = latency_threshold_us
            .filter(|_| !expected_deny)
            .and_then(|t| b.thresholds_us.iter().position(|&x| x == t))
            .and_then(|i| b.good_within.get(i).copied());
        Sample {
            start_ms: report.start_unix_ms,
            total,
            invalid,
            good,
            latency_valid: if latency_good.is_some() {
                total - invalid
            } else {
                0
            },
            latency_good: latency_good.unwrap_or(0).min(good),
        }
    }

    /// The sample's counters, made consistent: invalid ≤ total, good ≤ valid, latency counts
    /// within valid. Every bucket then satisfies the same, which the encoding relies on.
    fn counts(&self) -> Counts {
        let invalid = self.invalid.min(self.total);
        let valid = self.total - invalid;
        let latency_valid = self.latency_valid.min(valid);
        Counts {
            total: self.total,
            invalid,
            good: self.good.min(valid),
            latency_valid,
            latency_good: self.latency_good.min(latency_valid),
            ..Counts::default()
        }
    }
}

/// What happened to one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// Added to the window.
    Added,
    /// Added as occurrences, but its timeslice had already settled.
    AddedLateForSlice,
    /// Nothing to add (no probes).
    Empty,
    /// Older than the longest window.
    TooOld,
    /// Stamped too far in the future.
    Future,
}

/// Data the history refused or lost, for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestStats {
    pub too_old: u64,
    pub future: u64,
    pub late_for_slice: u64,
    /// Buckets discarded because `now` moved back past them (a clock step).
    pub discarded_by_clock_step: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    index: i64,
    counts: Counts,
}

/// One resolution of the history: populated buckets, sorted by index.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Level {
    bucket_ms: i64,
    span_ms: i64,
    entries: VecDeque<Entry>,
}

impl Level {
    fn new(bucket_ms: i64, span_ms: i64) -> Self {
        Level {
            bucket_ms,
            span_ms,
            entries: VecDeque::new(),
        }
    }

    fn index_of(&self, t: UnixMs) -> i64 {
        t.div_euclid(self.bucket_ms)
    }

    /// Inclusive index range the level holds at `now`.
    fn range(&self, now: UnixMs) -> (i64, i64) {
        (
            self.index_of(now.saturating_sub(self.span_ms)),
            self.index_of(now.saturating_add(MAX_FUTURE_SKEW_MS)),
        )
    }

    /// Drops buckets outside the range; returns how many were in the future (clock step).
    fn prune(&mut self, now: UnixMs) -> u64 {
        let (lo, hi) = self.range(now);
        while self.entries.front().is_some_and(|e| e.index < lo) {
            self.entries.pop_front();
        }
        let mut future = 0;
        while self.entries.back().is_some_and(|e| e.index > hi) {
            self.entries.pop_back();
            future += 1;
        }
        future
    }

    /// The bucket with `index`, created empty if absent. Recent data hits the last bucket.
    fn entry_mut(&mut self, index: i64) -> &mut Counts {
        let pos = match self.entries.back() {
            Some(last) if last.index == index => self.entries.len() - 1,
            Some(last) if last.index < index => self.push(self.entries.len(), index),
            None => self.push(0, index),
            Some(_) => match self.entries.binary_search_by_key(&index, |e| e.index) {
                Ok(pos) => pos,
                Err(pos) => self.push(pos, index),
            },
        };
        &mut self.entries[pos].counts
    }

    fn push(&mut self, pos: usize, index: i64) -> usize {
        self.entries.insert(
            pos,
            Entry {
                index,
                counts: Counts::default(),
            },
        );
        pos
    }

    /// Sum over buckets with index in `lo..=hi`.
    fn sum(&self, lo: i64, hi: i64) -> Counts {
        let start = self.entries.partition_point(|e| e.index < lo);
        let mut sum = Counts::default();
        for e in self.entries.range(start..).take_while(|e| e.index <= hi) {
            sum.add(&e.counts);
        }
        sum
    }
}

/// Counts of a timeslice that has not settled yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct OpenSlice {
    index: i64,
    good: u64,
    valid: u64,
    latency_good: u64,
    latency_valid: u64,
}

impl OpenSlice {
    /// The slice's verdicts as slice counters.
    fn judged(&self, rule: SliceRule) -> Counts {
        Counts {
            slices: u64::from(self.valid > 0),
            slices_good: u64::from(rule.is_good(self.good, self.valid)),
            latency_slices: u64::from(self.latency_valid > 0),
            latency_slices_good: u64::from(rule.is_good(self.latency_good, self.latency_valid)),
            ..Counts::default()
        }
    }
}

/// Sums over one window, see [`History::window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCounts {
    pub counts: Counts,
    /// Start of the first bucket the window covers; it ends at `now` (plus skew).
    pub start_ms: UnixMs,
    /// Width of the buckets the sum was taken at.
    pub bucket_ms: i64,
}

/// The window history of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    slice: SliceRule,
    fine: Level,
    coarse: Level,
    open_slices: VecDeque<OpenSlice>,
    /// Operator time the history was started: with no results since, NoData counts from here.
    created_ms: UnixMs,
    /// Operator time of the last sample with probes.
    last_result_ms: Option<UnixMs>,
    /// Earliest timestamp of an accepted sample: how long the check has had data.
    first_result_ms: Option<UnixMs>,
    stats: IngestStats,
}

impl History {
    pub fn new(slice: SliceRule, now: UnixMs) -> Self {
        History {
            slice,
            created_ms: now,
            fine: Level::new(FINE_MS, FINE_SPAN_MS),
            coarse: Level::new(COARSE_MS, COARSE_SPAN_MS),
            open_slices: VecDeque::new(),
            last_result_ms: None,
            first_result_ms: None,
            stats: IngestStats::default(),
        }
    }

    pub fn slice_rule(&self) -> SliceRule {
        self.slice
    }

    /// Switches the timeslice rule (the spec changed). Open slices settle under the old rule
    /// first, so the verdicts already in the window keep meaning what they meant.
    pub fn set_slice_rule(&mut self, rule: SliceRule, now: UnixMs) {
        if rule != self.slice {
            self.settle_slices(now, true);
            self.slice = rule;
        }
    }

    /// Drops what fell out of the window and settles timeslices that are due. Ingest does this
    /// itself; call it before encoding.
    pub fn advance(&mut self, now: UnixMs) {
        let future = self.fine.prune(now) + self.coarse.prune(now);
        self.stats.discarded_by_clock_step =
            self.stats.discarded_by_clock_step.saturating_add(future);
        let newest_slice = self.slice_index(now.saturating_add(MAX_FUTURE_SKEW_MS));
        while self
            .open_slices
            .back()
            .is_some_and(|s| s.index > newest_slice)
        {
            self.open_slices.pop_back();
            self.stats.discarded_by_clock_step =
                self.stats.discarded_by_clock_step.saturating_add(1);
        }
        self.settle_slices(now, false);
    }

    /// Adds one sample received at `now` (the operator's clock).
    pub fn ingest(&mut self, sample: &Sample, now: UnixMs) -> Ingested {
        if sample.total == 0 {
            return Ingested::Empty;
        }
        self.advance(now);
        let coarse_lo = self.coarse.range(now).0;
        let coarse_index = self.coarse.index_of(sample.start_ms);
        if sample.start_ms > now.saturating_add(MAX_FUTURE_SKEW_MS) {
            self.stats.future = self.stats.future.saturating_add(1);
            return Ingested::Future;
        }
        if coarse_index < coarse_lo {
            self.stats.too_old = self.stats.too_old.saturating_add(1);
            return Ingested::TooOld;
        }
        self.last_result_ms = Some(now);
        self.first_result_ms = Some(
            self.first_result_ms
                .map_or(sample.start_ms, |first| first.min(sample.start_ms)),
        );
        let counts = sample.counts();

        let fine_index = self.fine.index_of(sample.start_ms);
        let newly_covered = if fine_index >= self.fine.range(now).0 {
            let fine = self.fine.entry_mut(fine_index);
            let was_covered = fine.valid() > 0;
            fine.add(&counts);
            let covered = fine.valid() > 0;
            fine.covered = u64::from(covered);
            covered && !was_covered
        } else {
            false
        };
        let coarse = self.coarse.entry_mut(coarse_index);
        coarse.add(&counts);
        coarse.covered = (coarse.covered + u64::from(newly_covered)).min(FINE_PER_COARSE);

        let slice_index = self.slice_index(sample.start_ms);
        if self.slice_settles_by(slice_index) <= now {
            self.stats.late_for_slice = self.stats.late_for_slice.saturating_add(1);
            return Ingested::AddedLateForSlice;
        }
        let slice = self.open_slice_mut(slice_index);
        slice.good = slice.good.saturating_add(counts.good);
        slice.valid = slice.valid.saturating_add(counts.valid());
        slice.latency_good = slice.latency_good.saturating_add(counts.latency_good);
        slice.latency_valid = slice.latency_valid.saturating_add(counts.latency_valid);
        Ingested::Added
    }

    /// Sums the buckets of the last `len_ms` before `now`: every bucket overlapping
    /// `(now - len_ms, now]`, plus data stamped up to the allowed skew ahead. Windows up to
    /// 3 days use fine buckets (so they cover `len_ms` to `len_ms + 5m`), longer ones coarse
    /// buckets (`len_ms` to `len_ms + 1h`). Open timeslices are judged provisionally.
    pub fn window(&self, now: UnixMs, len_ms: i64) -> WindowCounts {
        let level = if len_ms <= FINE_SPAN_MS {
            &self.fine
        } else {
            &self.coarse
        };
        let lo = level.index_of(now.saturating_sub(len_ms));
        let hi = level.range(now).1;
        let mut counts = level.sum(lo, hi);
        let start_ms = lo.saturating_mul(level.bucket_ms);
        let end_ms = hi.saturating_add(1).saturating_mul(level.bucket_ms);
        for slice in &self.open_slices {
            let slice_start = slice.index.saturating_mul(self.slice.duration_ms);
            if slice_start >= start_ms && slice_start < end_ms {
                counts.add(&slice.judged(self.slice));
            }
        }
        WindowCounts {
            counts,
            start_ms,
            bucket_ms: level.bucket_ms,
        }
    }

    /// Timestamp of the earliest sample ever accepted (the agents' clock).
    pub fn first_result_ms(&self) -> Option<UnixMs> {
        self.first_result_ms
    }

    /// When the history was started (operator clock).
    pub fn created_ms(&self) -> UnixMs {
        self.created_ms
    }

    /// When the operator last received a sample with probes (its own clock).
    pub fn last_result_ms(&self) -> Option<UnixMs> {
        self.last_result_ms
    }

    pub fn stats(&self) -> IngestStats {
        self.stats
    }

    fn slice_index(&self, t: UnixMs) -> i64 {
        t.div_euclid(self.slice.duration_ms)
    }

    fn slice_settles_by(&self, index: i64) -> UnixMs {
        index
            .saturating_add(1)
            .saturating_mul(self.slice.duration_ms)
            .saturating_add(SLICE_SETTLE_MS)
    }

    fn open_slice_mut(&mut self, index: i64) -> &mut OpenSlice {
        let pos = match self.open_slices.binary_search_by_key(&index, |s| s.index) {
            Ok(pos) => pos,
            Err(pos) => {
                self.open_slices.insert(
                    pos,
                    OpenSlice {
                        index,
                        ..OpenSlice::default()
                    },
                );
                pos
            }
        };
        &mut self.open_slices[pos]
    }

    /// Folds the verdicts of slices due by `now` (or of every open slice) into the buckets of
    /// their starts.
    fn settle_slices(&mut self, now: UnixMs, all: bool) {
        while let Some(slice) = self.open_slices.front().copied() {
            if !all && self.slice_settles_by(slice.index) > now {
                break;
            }
            self.open_slices.pop_front();
            let verdict = slice.judged(self.slice);
            let start = slice.index.saturating_mul(self.slice.duration_ms);
            for level in [&mut self.fine, &mut self.coarse] {
                let index = level.index_of(start);
                // After a long pause the slice's bucket may have aged out of the level.
                let (lo, hi) = level.range(now);
                if (lo..=hi).contains(&index) {
                    level.entry_mut(index).add(&verdict);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

const MAGIC: &[u8; 4] = b"NSLH";
const VERSION: u8 = 1;
/// Bounds on decoded lengths: above what a valid history can hold, far below what would let
/// hostile input allocate much.
const MAX_FINE_ENTRIES: u64 = (FINE_SPAN_MS / FINE_MS + 4) as u64;
const MAX_COARSE_ENTRIES: u64 = (COARSE_SPAN_MS / COARSE_MS + 4) as u64;
const MAX_OPEN_SLICES: u64 = 1_024;

/// Why a stored history cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a window history (bad magic)")]
    BadMagic,
    #[error("window history version {0} is not supported (this operator reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("window history checksum mismatch")]
    Checksum,
    #[error("window history ends early")]
    Truncated,
    #[error("window history holds a malformed number")]
    Varint,
    #[error("window history field {0} is out of range")]
    OutOfRange(&'static str),
    #[error("window history holds unexpected bytes after its end")]
    TrailingBytes,
}

impl DecodeError {
    /// PascalCase reason for logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadMagic => "BadMagic",
            Self::UnsupportedVersion(_) => "UnsupportedVersion",
            Self::Checksum => "ChecksumMismatch",
            Self::Truncated => "Truncated",
            Self::Varint => "MalformedNumber",
            Self::OutOfRange(_) => "OutOfRange",
            Self::TrailingBytes => "TrailingBytes",
        }
    }
}

/// Flags of optional counters in an encoded bucket: most buckets of a healthy check carry only
/// their total, so the rest is written only when non-zero (as differences, which also makes
/// inconsistent counts unrepresentable).
mod flag {
    pub const INVALID: u8 = 1;
    pub const BAD: u8 = 1 << 1;
    pub const LATENCY_UNCOUNTED: u8 = 1 << 2;
    pub const LATENCY_BAD: u8 = 1 << 3;
    pub const SLICES: u8 = 1 << 4;
    pub const SLICES_BAD: u8 = 1 << 5;
    pub const LATENCY_SLICES_UNCOUNTED: u8 = 1 << 6;
    pub const LATENCY_SLICES_BAD: u8 = 1 << 7;
}

impl History {
    /// Compact, deterministic binary form: magic, version, slice rule, last result, stats,
    /// both levels and open slices as delta-coded varints, then an FNV-1a checksum.
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(64 + 8 * (self.fine.entries.len() + self.coarse.entries.len()));
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        put_varint(&mut out, u64::try_from(self.slice.duration_ms).unwrap_or(0));
        put_varint(&mut out, u64::from(self.slice.good.0));
        put_varint(&mut out, zigzag(self.created_ms));
        for t in [self.last_result_ms, self.first_result_ms] {
            match t {
                None => out.push(0),
                Some(t) => {
                    out.push(1);
                    put_varint(&mut out, zigzag(t));
                }
            }
        }
        let s = self.stats;
        for v in [
            s.too_old,
            s.future,
            s.late_for_slice,
            s.discarded_by_clock_step,
        ] {
            put_varint(&mut out, v);
        }
        put_level(&mut out, &self.fine, false);
        put_level(&mut out, &self.coarse, true);
        put_varint(&mut out, self.open_slices.len() as u64);
        let mut previous = None;
        for slice in &self.open_slices {
            put_index(&mut out, &mut previous, slice.index);
            for v in [
                slice.valid,
                slice.valid.saturating_sub(slice.good),
                slice.latency_valid,
                slice.latency_valid.saturating_sub(slice.latency_good),
            ] {
                put_varint(&mut out, v);
            }
        }
        seal(&mut out);
        out
    }

    /// Reads what [`History::encode`] wrote. Call [`History::advance`] with `now` afterwards
    /// to drop what aged out while it was stored.
    pub fn decode(bytes: &[u8]) -> Result<History, DecodeError> {
        let mut r = Reader::framed(bytes, MAGIC, VERSION)?;
        let duration_ms = i64::try_from(r.varint()?)
            .ok()
            .filter(|d| (MINUTE_MS..=HOUR_MS).contains(d))
            .ok_or(DecodeError::OutOfRange("slice duration"))?;
        let good = u32::try_from(r.varint()?)
            .ok()
            .filter(|g| *g > 0 && *g <= Ppm::ONE.0)
            .ok_or(DecodeError::OutOfRange("slice good ratio"))?;
        let created_ms = unzigzag(r.varint()?);
        let mut history = History::new(
            SliceRule {
                duration_ms,
                good: Ppm(good),
            },
            created_ms,
        );
        history.last_result_ms = r.optional_time()?;
        history.first_result_ms = r.optional_time()?;
        history.stats = IngestStats {
            too_old: r.varint()?,
            future: r.varint()?,
            late_for_slice: r.varint()?,
            discarded_by_clock_step: r.varint()?,
        };
        read_level(&mut r, &mut history.fine, false, MAX_FINE_ENTRIES)?;
        read_level(&mut r, &mut history.coarse, true, MAX_COARSE_ENTRIES)?;
        let n = r.length(MAX_OPEN_SLICES)?;
        let mut previous = None;
        for _ in 0..n {
            let index = r.index(&mut previous, duration_ms)?;
            let valid = r.varint()?;
            let good = valid
                .checked_sub(r.varint()?)
                .ok_or(DecodeError::OutOfRange("slice good"))?;
            let latency_valid = r.varint()?;
            let latency_good = latency_valid
                .checked_sub(r.varint()?)
                .ok_or(DecodeError::OutOfRange("slice latency good"))?;
            history.open_slices.push_back(OpenSlice {
                index,
                good,
                valid,
                latency_good,
                latency_valid,
            });
        }
        r.finish()?;
        Ok(history)
    }
}

/// Buckets are written as: index gap, total as the (wrapping, zigzag) difference from the
/// previous bucket's total (a steady check repeats its volume, so this is a byte or two), a
/// flags byte, the non-zero optional counters, and for coarse buckets `covered`. Counters
/// only become inconsistent by saturating at 2^64, where the subtractions clamp.
fn put_level(out: &mut Vec<u8>, level: &Level, with_covered: bool) {
    put_varint(out, level.entries.len() as u64);
    let mut previous = None;
    let mut previous_total = 0u64;
    for e in &level.entries {
        put_index(out, &mut previous, e.index);
        let c = &e.counts;
        let valid = c.valid();
        let optional = [
            (flag::INVALID, c.invalid),
            (flag::BAD, valid.saturating_sub(c.good)),
            (
                flag::LATENCY_UNCOUNTED,
                valid.saturating_sub(c.latency_valid),
            ),
            (
                flag::LATENCY_BAD,
                c.latency_valid.saturating_sub(c.latency_good),
            ),
            (flag::SLICES, c.slices),
            (flag::SLICES_BAD, c.slices.saturating_sub(c.slices_good)),
            (
                flag::LATENCY_SLICES_UNCOUNTED,
                c.slices.saturating_sub(c.latency_slices),
            ),
            (
                flag::LATENCY_SLICES_BAD,
                c.latency_slices.saturating_sub(c.latency_slices_good),
            ),
        ];
        put_varint(out, zigzag(c.total.wrapping_sub(previous_total) as i64));
        previous_total = c.total;
        out.push(
            optional
                .iter()
                .filter(|(_, v)| *v != 0)
                .fold(0, |f, (bit, _)| f | bit),
        );
        for (_, v) in optional.iter().filter(|(_, v)| *v != 0) {
            put_varint(out, *v);
        }
        if with_covered {
            put_varint(out, c.covered);
        }
    }
}

fn read_level(
    r: &mut Reader<'_>,
    level: &mut Level,
    with_covered: bool,
    max: u64,
) -> Result<(), DecodeError> {
    let n = r.length(max)?;
    let mut previous = None;
    let mut previous_total = 0u64;
    for _ in 0..n {
        let index = r.index(&mut previous, level.bucket_ms)?;
        let total = previous_total.wrapping_add(unzigzag(r.varint()?) as u64);
        previous_total = total;
        let flags = r.byte()?;
        let mut optional = |bit: u8| if flags & bit != 0 { r.varint() } else { Ok(0) };
        let invalid = optional(flag::INVALID)?;
        let bad = optional(flag::BAD)?;
        let latency_uncounted = optional(flag::LATENCY_UNCOUNTED)?;
        let latency_bad = optional(flag::LATENCY_BAD)?;
        let slices = optional(flag::SLICES)?;
        let slices_bad = optional(flag::SLICES_BAD)?;
        let latency_slices_uncounted = optional(flag::LATENCY_SLICES_UNCOUNTED)?;
        let latency_slices_bad = optional(flag::LATENCY_SLICES_BAD)?;
        let less = |a: u64, b: u64, what| a.checked_sub(b).ok_or(DecodeError::OutOfRange(what));
        let valid = less(total, invalid, "invalid")?;
        let latency_valid = less(valid, latency_uncounted, "latency valid")?;
        let latency_slices = less(slices, latency_slices_uncounted, "latency slices")?;
        let covered = if with_covered {
            Some(r.varint()?)
                .filter(|c| *c <= FINE_PER_COARSE)
                .ok_or(DecodeError::OutOfRange("covered"))?
        } else {
            u64::from(valid > 0)
        };
        level.entries.push_back(Entry {
            index,
            counts: Counts {
                total,
                invalid,
                good: less(valid, bad, "good")?,
                latency_valid,
                latency_good: less(latency_valid, latency_bad, "latency good")?,
                slices,
                slices_good: less(slices, slices_bad, "slices good")?,
                latency_slices,
                latency_slices_good: less(
                    latency_slices,
                    latency_slices_bad,
                    "latency slices good",
                )?,
                covered,
            },
        });
    }
    Ok(())
}

/// Indexes are strictly increasing: the first is written whole (zigzag), the rest as gaps.
fn put_index(out: &mut Vec<u8>, previous: &mut Option<i64>, index: i64) {
    match *previous {
        None => put_varint(out, zigzag(index)),
        Some(p) => put_varint(out, index.abs_diff(p)),
    }
    *previous = Some(index);
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Appends the FNV-1a checksum of everything written so far: the frame's end.
pub(crate) fn seal(out: &mut Vec<u8>) {
    let checksum = fnv1a_32(out);
    out.extend_from_slice(&checksum.to_le_bytes());
}

/// Reads varint-coded fields, never past its bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks a frame written by `magic`, `version`, fields and [`seal`], and reads its fields.
    pub(crate) fn framed(
        bytes: &'a [u8],
        magic: &[u8; 4],
        version: u8,
    ) -> Result<Self, DecodeError> {
        if bytes.len() < magic.len() + 1 + 4 {
            return Err(DecodeError::Truncated);
        }
        if &bytes[..magic.len()] != magic {
            return Err(DecodeError::BadMagic);
        }
        if bytes[magic.len()] != version {
            return Err(DecodeError::UnsupportedVersion(bytes[magic.len()]));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 4);
        if fnv1a_32(body).to_le_bytes() != sum {
            return Err(DecodeError::Checksum);
        }
        Ok(Reader {
            bytes: body,
            pos: magic.len() + 1,
        })
    }

    /// Every byte of the frame was read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            // The tenth byte may only carry the top bit of a u64.
            if shift == 63 && b > 1 {
                return Err(DecodeError::Varint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Varint)
    }

    fn optional_time(&mut self) -> Result<Option<UnixMs>, DecodeError> {
        match self.byte()? {
            0 => Ok(None),
            1 => Ok(Some(unzigzag(self.varint()?))),
            _ => Err(DecodeError::OutOfRange("time flag")),
        }
    }

    pub(crate) fn length(&mut self, max: u64) -> Result<u64, DecodeError> {
        Some(self.varint()?)
            .filter(|n| *n <= max)
            .ok_or(DecodeError::OutOfRange("length"))
    }

    /// A bucket index whose start time (`index × width`) is representable.
    fn index(&mut self, previous: &mut Option<i64>, width_ms: i64) -> Result<i64, DecodeError> {
        let raw = self.varint()?;
        let index = match *previous {
            None => unzigzag(raw),
            Some(p) => i64::try_from(raw)
                .ok()
                .filter(|gap| *gap > 0)
                .and_then(|gap| p.checked_add(gap))
                .ok_or(DecodeError::OutOfRange("bucket order"))?,
        };
        index
            .checked_mul(width_ms)
            .ok_or(DecodeError::OutOfRange("bucket time"))?;
        *previous = Some(index);
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use netslo_protocol::bucket::Bucket;

    use super::*;

    /// A Monday, aligned to every bucket width used here.
    const T0: UnixMs = 1_767_225_600_000;

    fn sample(start_ms: UnixMs, total: u64, good: u64) -> Sample {
        Sample {
            start_ms,
            total,
            invalid: 0,
            good,
            latency_valid: total,
            latency_good: good,
        }
    }

    fn history() -> History {
        History::new(SliceRule::DEFAULT, T0 - 40 * DAY_MS)
    }

    /// One sample of `total` probes every `step` from `from` up to (excluding) `to`.
    fn fill(h: &mut History, from: UnixMs, to: UnixMs, step: i64, total: u64, good: u64) {
        let mut t = from;
        while t < to {
            assert_ne!(h.ingest(&sample(t, total, good), to), Ingested::Future);
            t += step;
        }
    }

    #[test]
    fn empty_history() {
        let h = history();
        let w = h.window(T0, HOUR_MS);
        assert_eq!(w.counts, Counts::default());
        assert_eq!(h.first_result_ms(), None);
        assert_eq!(h.last_result_ms(), None);
        assert_eq!(History::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn every_standard_window_is_exact_at_fine_resolution() {
        let mut h = history();
        // One probe per fine bucket for the last 3 days, plus older data in coarse buckets.
        fill(&mut h, T0 - 10 * DAY_MS, T0, FINE_MS, 1, 1);
        for (len, want) in [
            (5 * MINUTE_MS, 1),
            (30 * MINUTE_MS, 6),
            (HOUR_MS, 12),
            (2 * HOUR_MS, 24),
            (6 * HOUR_MS, 72),
            (DAY_MS, 288),
            (3 * DAY_MS, 864),
        ] {
            let w = h.window(T0, len);
            assert_eq!(w.counts.total, want, "window {len}");
            assert_eq!(w.bucket_ms, FINE_MS);
            assert_eq!(w.start_ms, T0 - len);
        }
        // Longer windows come from hourly buckets.
        let week = h.window(T0, 7 * DAY_MS);
        assert_eq!((week.counts.total, week.bucket_ms), (7 * 288, COARSE_MS));
        assert_eq!(h.window(T0, 28 * DAY_MS).counts.total, 10 * 288);
    }

    #[test]
    fn late_data_lands_in_its_own_bucket() {
        let mut h = history();
        h.ingest(&sample(T0 - 2 * MINUTE_MS, 10, 10), T0);
        // Resent 40 minutes late: stamped at T0 - 42m, received at T0 + 1s.
        assert_eq!(
            h.ingest(&sample(T0 - 42 * MINUTE_MS, 10, 0), T0 + 1_000),
            Ingested::AddedLateForSlice
        );
        assert_eq!(h.window(T0 + 1_000, 5 * MINUTE_MS).counts.good, 10);
        let hour = h.window(T0 + 1_000, HOUR_MS).counts;
        assert_eq!((hour.total, hour.good), (20, 10));
        assert_eq!(h.stats().late_for_slice, 1);
    }

    #[test]
    fn old_and_future_data_are_dropped_and_counted() {
        let cases = [
            (T0 - 31 * DAY_MS, Ingested::TooOld),
            (T0 - 29 * DAY_MS, Ingested::AddedLateForSlice),
            (T0 + MAX_FUTURE_SKEW_MS, Ingested::Added),
            (T0 + MAX_FUTURE_SKEW_MS + 1, Ingested::Future),
            (UnixMs::MAX, Ingested::Future),
            (UnixMs::MIN, Ingested::TooOld),
        ];
        let mut h = history();
        for (start, want) in cases {
            assert_eq!(h.ingest(&sample(start, 1, 1), T0), want, "{start}");
        }
        assert_eq!(h.ingest(&sample(T0, 0, 0), T0), Ingested::Empty);
        let s = h.stats();
        assert_eq!((s.too_old, s.future), (2, 2));
        assert_eq!(h.window(T0, 30 * DAY_MS).counts.total, 2);
    }

    #[test]
    fn clock_steps_back_and_forth_never_corrupt() {
        let mut h = history();
        fill(&mut h, T0 - 2 * HOUR_MS, T0, MINUTE_MS, 10, 9);
        let before = h.window(T0, 6 * HOUR_MS).counts;
        assert_eq!((before.total, before.good), (1_200, 1_080));

        // The operator's clock steps back one hour: the last hour is now "the future".
        let back = T0 - HOUR_MS;
        h.advance(back);
        let seen = h.window(back, 6 * HOUR_MS).counts;
        // Fine buckets up to the one holding `back + skew` stay: 60 + 5 minutes of samples.
        assert_eq!((seen.total, seen.good), (650, 585));
        assert!(h.stats().discarded_by_clock_step > 0);
        // New data at the stepped-back clock lands by its own timestamp.
        assert_eq!(h.ingest(&sample(back, 10, 10), back), Ingested::Added);
        // The clock returns: nothing double counted, nothing negative.
        h.advance(T0);
        let after = h.window(T0, 6 * HOUR_MS).counts;
        assert!(after.total <= before.total);
        assert!(after.good <= after.valid());
        assert_eq!(History::decode(&h.encode()).as_ref(), Ok(&h));
        // A wild step (to 1970 and back) is survivable too.
        h.advance(0);
        assert_eq!(h.window(0, DAY_MS).counts, Counts::default());
        h.advance(T0);
        assert_eq!(h.ingest(&sample(T0, 1, 1), T0), Ingested::Added);
    }

    #[test]
    fn timeslices_settle_to_what_was_judged_provisionally() {
        let mut h = history();
        // Five 1-minute slices of 100 probes; the third has only 98 good (below 99%).
        for minute in 0..5 {
            let good = if minute == 2 { 98 } else { 100 };
            for second in (0..60).step_by(10) {
                let at = T0 + minute * MINUTE_MS + second * 1_000;
                let (total, good) = if second == 0 {
                    (50, good - 50)
                } else {
                    (10, 10)
                };
                h.ingest(&sample(at, total, good), T0 + 5 * MINUTE_MS);
            }
        }
        let provisional = h.window(T0 + 5 * MINUTE_MS, HOUR_MS).counts;
        assert_eq!((provisional.slices, provisional.slices_good), (5, 4));
        h.advance(T0 + HOUR_MS);
        assert!(h.open_slices.is_empty());
        let settled = h.window(T0 + HOUR_MS, 2 * HOUR_MS).counts;
        assert_eq!((settled.slices, settled.slices_good), (5, 4));
        assert_eq!(settled.total, 500);
        // A result for a settled slice still counts as an occurrence.
        assert_eq!(
            h.ingest(&sample(T0 + 30_000, 10, 0), T0 + HOUR_MS),
            Ingested::AddedLateForSlice
        );
        let late = h.window(T0 + HOUR_MS, 2 * HOUR_MS).counts;
        assert_eq!((late.total, late.slices_good), (510, 4));
    }

    #[test]
    fn a_slice_rule_change_settles_open_slices_under_the_old_rule() {
        let mut h = history();
        h.ingest(&sample(T0, 100, 98), T0 + 1_000);
        let strict = SliceRule {
            duration_ms: 5 * MINUTE_MS,
            good: Ppm(950_000),
        };
        h.set_slice_rule(strict, T0 + 2_000);
        let c = h.window(T0 + 2_000, HOUR_MS).counts;
        assert_eq!((c.slices, c.slices_good), (1, 0), "judged at 99%");
        assert_eq!(h.slice_rule(), strict);
    }

    #[test]
    fn coverage_counts_fine_slots_with_valid_probes() {
        let mut h = history();
        fill(&mut h, T0 - HOUR_MS, T0, MINUTE_MS, 1, 1);
        let invalid_only = Sample {
            invalid: 5,
            ..sample(T0 - 2 * HOUR_MS, 5, 0)
        };
        h.ingest(&invalid_only, T0);
        let c = h.window(T0, 28 * DAY_MS).counts;
        assert_eq!(c.covered, 12);
        assert_eq!(h.first_result_ms(), Some(T0 - 2 * HOUR_MS));
    }

    #[test]
    fn encoding_round_trips_deterministically_and_stays_small() {
        let mut h = history();
        // A full 30 days of a steady 1,000-node mesh: ~48,000 probes per 10 s bucket.
        let mut t = T0 - 30 * DAY_MS + FINE_MS;
        while t < T0 {
            let bad = u64::from(t % (7 * FINE_MS) == 0);
            h.ingest(&sample(t, 480_000, 480_000 - bad), t + 30_000);
            t += FINE_MS;
        }
        h.advance(T0);
        let bytes = h.encode();
        assert!(bytes.len() < 12 * 1024, "{} bytes", bytes.len());
        let back = History::decode(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.encode(), bytes);
    }

    /// Hand-made input: header with this slice duration, then raw varints for the levels
    /// (`levels`) and the rest (`tail`), sealed with a valid checksum.
    fn crafted(slice_ms: u64, levels: &[u64], tail: &[u64]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.push(VERSION);
        for v in [slice_ms, 990_000, zigzag(T0)] {
            put_varint(&mut b, v);
        }
        b.extend_from_slice(&[0, 0]);
        for v in [0, 0, 0, 0].iter().chain(levels).chain(tail) {
            put_varint(&mut b, *v);
        }
        let sum = fnv1a_32(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    #[test]
    fn corrupt_encodings_are_errors() {
        let mut h = history();
        fill(&mut h, T0 - HOUR_MS, T0, MINUTE_MS, 10, 9);
        let good = h.encode();
        let reseal = |mut body: Vec<u8>| {
            body.truncate(body.len() - 4);
            let sum = fnv1a_32(&body);
            body.extend_from_slice(&sum.to_le_bytes());
            body
        };
        let mut flipped = good.clone();
        flipped[20] ^= 0x40;
        let mut version = good.clone();
        version[4] = 9;
        let mut trailing = good.clone();
        trailing.insert(good.len() - 4, 0);
        let cases: Vec<(&str, Vec<u8>, DecodeError)> = vec![
            ("empty", vec![], DecodeError::Truncated),
            ("magic", b"XXXX\x01\0\0\0\0".to_vec(), DecodeError::BadMagic),
            ("version", version, DecodeError::UnsupportedVersion(9)),
            ("bit flip", flipped, DecodeError::Checksum),
            ("trailing", reseal(trailing), DecodeError::TrailingBytes),
            (
                "varint overflow",
                reseal([&good[..5], &[0xff; 12], &[0, 0, 0, 0]].concat()),
                DecodeError::Varint,
            ),
            (
                "slice duration",
                crafted(7, &[], &[]),
                DecodeError::OutOfRange("slice duration"),
            ),
            (
                "invalid above total",
                crafted(
                    MINUTE_MS as u64,
                    &[1, zigzag(9), zigzag(5), u64::from(flag::INVALID), 6],
                    &[0, 0],
                ),
                DecodeError::OutOfRange("invalid"),
            ),
            (
                "indexes not increasing",
                crafted(
                    MINUTE_MS as u64,
                    &[2, zigzag(9), zigzag(5), 0, 0, zigzag(0), 0],
                    &[0, 0],
                ),
                DecodeError::OutOfRange("bucket order"),
            ),
            (
                "huge length",
                crafted(MINUTE_MS as u64, &[1_000_000], &[]),
                DecodeError::OutOfRange("length"),
            ),
            (
                "covered above 12",
                crafted(MINUTE_MS as u64, &[0, 1, zigzag(9), zigzag(5), 0, 13], &[0]),
                DecodeError::OutOfRange("covered"),
            ),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(History::decode(&bytes), Err(want), "{name}");
        }
        // Every truncation is an error, never a panic, even when resealed.
        for len in 0..good.len() {
            assert!(History::decode(&good[..len]).is_err(), "prefix {len}");
            if len >= 9 {
                assert!(
                    History::decode(&reseal(good[..len].to_vec())).is_err(),
                    "{len}"
                );
            }
        }
    }

    #[test]
    fn hostile_bytes_with_a_valid_checksum_never_panic() {
        let mut h = history();
        fill(&mut h, T0 - 3 * HOUR_MS, T0, MINUTE_MS, 10, 9);
        let good = h.encode();
        // Deterministic pseudo-random mutations (xorshift), resealed so parsing is exercised.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5_000 {
            let mut bytes = good.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = 5 + (next() as usize) % (bytes.len() - 9);
                bytes[i] = next() as u8;
            }
            let body_len = bytes.len() - 4;
            let sum = fnv1a_32(&bytes[..body_len]);
            bytes[body_len..].copy_from_slice(&sum.to_le_bytes());
            if let Ok(decoded) = History::decode(&bytes) {
                // Whatever decodes is internally consistent and usable.
                let mut decoded = decoded;
                decoded.advance(T0);
                let c = decoded.window(T0, 30 * DAY_MS).counts;
                assert!(c.good <= c.valid() && c.latency_good <= c.latency_valid);
                decoded.ingest(&sample(T0, 1, 1), T0);
            }
        }
    }

    #[test]
    fn samples_from_reports() {
        let report = |total, good, invalid, thresholds: &[u64], within: &[u64]| {
            let mut bucket = Bucket::new(Arc::from(thresholds.to_vec()));
            bucket.total = total;
            bucket.good = good;
            bucket.bad = total.saturating_sub(good + invalid);
            bucket.invalid = invalid;
            bucket.good_within = within.to_vec();
            BucketReport {
                seq: 1,
                check: "ns/c".into(),
                target: "t".into(),
                source: "n".into(),
                start_unix_ms: 1_000,
                duration_ms: 10_000,
                bucket,
                p50_us: None,
                p90_us: None,
                p99_us: None,
            }
        };
        let r = report(10, 8, 1, &[1_000, 5_000], &[6, 8]);
        let s = Sample::from_report(&r, Some(5_000), false);
        assert_eq!(
            (
                s.start_ms,
                s.total,
                s.invalid,
                s.good,
                s.latency_valid,
                s.latency_good
            ),
            (1_000, 10, 1, 8, 9, 8)
        );
        // A threshold the agent did not count: no latency data, never good by default.
        let s = Sample::from_report(&r, Some(2_000), false);
        assert_eq!((s.latency_valid, s.latency_good), (0, 0));
        // Expected-deny targets have no latency to judge.
        let s = Sample::from_report(&r, Some(5_000), true);
        assert_eq!((s.latency_valid, s.latency_good), (0, 0));
        // A malformed report cannot make good exceed valid.
        let s = Sample::from_report(&report(5, 9, 7, &[1], &[50]), Some(1), false);
        assert_eq!((s.total, s.invalid, s.good, s.latency_good), (5, 5, 0, 0));
    }
}
