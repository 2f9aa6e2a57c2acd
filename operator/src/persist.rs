//! Where each check's SLO window lives between operator processes: in ConfigMaps of the
//! operator's namespace, many checks to one ("shards", `netslo-windows-<n>`), written by the
//! flusher and read back at start.
//!
//! A check's record holds the encoded window ([`History::encode`]), the watermarks of what it
//! has counted ([`Settled::encode`]) and how results were counted (latency threshold,
//! expected-deny targets), so a restarted operator counts resent results exactly as before,
//! before its first reconcile. Results are acknowledged once written, so every check that
//! received results is written every flush: one ConfigMap per check made that one request per
//! check per flush (200 a second at 1,000 checks, more than an API server on a small control
//! plane answers in time), while a shard carries up to [`SHARD_BUDGET`] of records in one.
//!
//! New checks join the first shard with room; a shard that grows past [`SHARD_LIMIT`] hands
//! its largest records to others. A moving record stays in its old shard until its new one is
//! written, and each record carries the flush sequence that wrote it, so a crash between the
//! two writes leaves two copies, of which the reader takes the newest, never none.
//! ConfigMaps of one check each (the format before shards) are read too, moved into shards
//! and deleted once their check's shard is written.
//!
//! Checks live in other namespaces, so the ConfigMaps cannot be owned by them: the operator
//! removes a check's record when the check goes away.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use netslo_protocol::hash::fnv1a_64;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;

use crate::check_key::CheckKey;
use crate::settled::Settled;
use crate::slo::window::History;
use crate::slo::{UnixMs, now_ms};
use crate::store::{CheckRecord, FlushWork, RestoredCheck, ResultStore};

/// Label selecting the window ConfigMaps.
pub const LABEL_SELECTOR: &str = "app.kubernetes.io/component=slo-window";
/// Name prefix of the shards; the shard's number follows.
pub const SHARD_PREFIX: &str = "netslo-windows-";
/// A shard takes new records while it holds less than this (encoded as the API stores it).
pub const SHARD_BUDGET: usize = 512 * 1024;
/// A shard above this hands records to others: ConfigMaps are limited to 1 MiB.
pub const SHARD_LIMIT: usize = 900 * 1024;
const ANNOTATION_CHECK: &str = "netslo.io/check";
const ANNOTATION_UID: &str = "netslo.io/check-uid";
const KEY_HISTORY: &str = "history";
const KEY_SETTLED: &str = "settled";
const KEY_COUNTING: &str = "counting.json";
/// Suffix of a record's keys in a shard: `<digest>.json`, `<digest>.history`, `<digest>.settled`.
const SUFFIX_META: &str = ".json";
/// Writes in flight at once during a flush.
const CONCURRENT_WRITES: usize = 8;

/// Why stored state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot list window ConfigMaps: {0}")]
    List(#[source] kube::Error),
    #[error("ConfigMap {name}: {detail}")]
    Corrupt { name: String, detail: String },
}

impl PersistError {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::List(_) => "ListFailed",
            Self::Corrupt { .. } => "CorruptWindow",
        }
    }
}

/// How results were counted, stored beside the window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Counting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latency_threshold_us: Option<u64>,
    #[serde(default)]
    deny_targets: Vec<String>,
}

/// What a shard says about one of its records beside the encoded window and watermarks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordMeta {
    check: String,
    uid: String,
    /// The flush that wrote the record: of two copies, the higher is the newer.
    seq: u64,
    #[serde(flatten)]
    counting: Counting,
}

/// One check's record as stored: encoded, ready to write again as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub record: CheckRecord,
    pub seq: u64,
}

impl StoredRecord {
    /// Bytes it takes in a ConfigMap (base64 for the binary parts, and the keys).
    fn size(&self) -> usize {
        let r = &self.record;
        (r.history.len() + r.settled.len()).div_ceil(3) * 4
            + r.key.to_string().len()
            + r.uid.len()
            + r.deny_targets.iter().map(|t| t.len() + 3).sum::<usize>()
            + 160
    }

    fn decode(&self) -> Result<RestoredCheck, String> {
        let r = &self.record;
        Ok(RestoredCheck {
            key: r.key.clone(),
            uid: r.uid.clone(),
            latency_threshold_us: r.latency_threshold_us,
            deny_targets: r.deny_targets.clone(),
            history: History::decode(&r.history).map_err(|e| format!("{KEY_HISTORY}: {e}"))?,
            settled: Settled::decode(&r.settled).map_err(|e| format!("{KEY_SETTLED}: {e}"))?,
        })
    }
}

/// The key prefix of a check's record in a shard: 16 hex digits of FNV-1a 64 of its key.
fn record_digest(check: &CheckKey) -> String {
    format!("{:016x}", fnv1a_64(check.to_string().bytes()))
}

/// The name of a check's ConfigMap in the format before shards (one per check).
pub fn config_map_name(check: &CheckKey) -> String {
    format!("netslo-window-{}", record_digest(check))
}

fn shard_name(index: u32) -> String {
    format!("{SHARD_PREFIX}{index}")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The ConfigMap holding `records` as shard `index`.
pub fn shard_config_map<'a>(
    index: u32,
    records: impl IntoIterator<Item = &'a StoredRecord>,
) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    let mut binary = serde_json::Map::new();
    for stored in records {
        let r = &stored.record;
        let digest = record_digest(&r.key);
        let meta = RecordMeta {
            check: r.key.to_string(),
            uid: r.uid.clone(),
            seq: stored.seq,
            counting: Counting {
                latency_threshold_us: r.latency_threshold_us,
                deny_targets: r.deny_targets.clone(),
            },
        };
        data.insert(
            format!("{digest}{SUFFIX_META}"),
            serde_json::to_string(&meta).unwrap_or_default().into(),
        );
        binary.insert(format!("{digest}.{KEY_HISTORY}"), b64(&r.history).into());
        binary.insert(format!("{digest}.{KEY_SETTLED}"), b64(&r.settled).into());
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": shard_name(index),
            "labels": {
                "app.kubernetes.io/name": "netslo",
                "app.kubernetes.io/component": "slo-window",
                "app.kubernetes.io/managed-by": "netslo-operator",
            },
        },
        "data": data,
        "binaryData": binary,
    })
}

/// Where a stored record was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Shard(u32),
    /// A ConfigMap of one check (the format before shards), by name.
    Single(String),
}

/// Reads the records of one window ConfigMap, of either format. A damaged record is
/// skipped with a warning (its check starts a new window); the others are read.
fn records_of(cm: &ConfigMap) -> Result<(Origin, Vec<StoredRecord>), PersistError> {
    let name = cm.name_any();
    if cm.annotations().contains_key(ANNOTATION_CHECK) {
        return Ok((Origin::Single(name), vec![single_record(cm)?]));
    }
    let index = name
        .strip_prefix(SHARD_PREFIX)
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| shard_name(*n) == name)
        .ok_or_else(|| PersistError::Corrupt {
            name: name.clone(),
            detail: "neither a shard nor a single check's window".into(),
        })?;
    let empty = BTreeMap::new();
    let data = cm.data.as_ref().unwrap_or(&empty);
    let mut records = Vec::new();
    for (key, meta) in data {
        let Some(digest) = key.strip_suffix(SUFFIX_META) else {
            continue;
        };
        match shard_record(cm, digest, meta) {
            Ok(record) => records.push(record),
            Err(detail) => tracing::warn!(
                reason = "CorruptWindow",
                "skipping a stored window in ConfigMap {name}: {digest}: {detail}"
            ),
        }
    }
    Ok((Origin::Shard(index), records))
}

fn shard_record(cm: &ConfigMap, digest: &str, meta: &str) -> Result<StoredRecord, String> {
    let meta: RecordMeta =
        serde_json::from_str(meta).map_err(|e| format!("{digest}{SUFFIX_META}: {e}"))?;
    let key: CheckKey = meta
        .check
        .parse()
        .ok()
        .filter(|k| record_digest(k) == digest)
        .ok_or_else(|| format!("check {:?} is not this record's", meta.check))?;
    let binary = |part: &str| -> Result<Vec<u8>, String> {
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(&format!("{digest}.{part}")))
            .map(|ByteString(bytes)| bytes.clone())
            .ok_or_else(|| format!("binaryData {digest}.{part} missing"))
    };
    Ok(StoredRecord {
        record: CheckRecord {
            key,
            uid: meta.uid,
            latency_threshold_us: meta.counting.latency_threshold_us,
            deny_targets: meta.counting.deny_targets,
            history: binary(KEY_HISTORY)?,
            settled: binary(KEY_SETTLED)?,
        },
        seq: meta.seq,
    })
}

/// Reads a ConfigMap of one check (the format before shards).
fn single_record(cm: &ConfigMap) -> Result<StoredRecord, PersistError> {
    let name = cm.name_any();
    let corrupt = |detail: String| PersistError::Corrupt {
        name: name.clone(),
        detail,
    };
    let annotations = cm.annotations();
    let key = annotations
        .get(ANNOTATION_CHECK)
        .and_then(|k| k.parse::<CheckKey>().ok())
        .filter(|k| config_map_name(k) == name)
        .ok_or_else(|| {
            corrupt(format!(
                "annotation {ANNOTATION_CHECK} missing or not its check"
            ))
        })?;
    let uid = annotations
        .get(ANNOTATION_UID)
        .ok_or_else(|| corrupt(format!("annotation {ANNOTATION_UID} missing")))?;
    let binary = |key: &str| -> Result<Vec<u8>, PersistError> {
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|ByteString(bytes)| bytes.clone())
            .ok_or_else(|| corrupt(format!("binaryData.{key} missing")))
    };
    let counting: Counting = cm
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_COUNTING))
        .ok_or_else(|| corrupt(format!("data.{KEY_COUNTING} missing")))
        .and_then(|text| {
            serde_json::from_str(text).map_err(|e| corrupt(format!("data.{KEY_COUNTING}: {e}")))
        })?;
    Ok(StoredRecord {
        record: CheckRecord {
            key,
            uid: uid.clone(),
            latency_threshold_us: counting.latency_threshold_us,
            deny_targets: counting.deny_targets,
            history: binary(KEY_HISTORY)?,
            settled: binary(KEY_SETTLED)?,
        },
        // Older than any shard's copy.
        seq: 0,
    })
}

/// One shard as this process last wrote it (or read it), and what is left to write.
#[derive(Debug, Default)]
struct Shard {
    records: BTreeMap<CheckKey, StoredRecord>,
    /// Records moved to another shard, still written here until that shard has them.
    leaving: BTreeMap<CheckKey, StoredRecord>,
    /// Differs from what the API server holds.
    dirty: bool,
}

impl Shard {
    /// Bytes of the ConfigMap as it is written now.
    fn size(&self) -> usize {
        self.records_size() + self.leaving.values().map(StoredRecord::size).sum::<usize>()
    }

    /// Bytes of its own records (not of those on their way out).
    fn records_size(&self) -> usize {
        self.records.values().map(StoredRecord::size).sum()
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.leaving.is_empty()
    }
}

/// Every check's place among the shards, and the shards' contents: the flusher's state.
#[derive(Debug, Default)]
pub struct Shards {
    shards: BTreeMap<u32, Shard>,
    home: HashMap<CheckKey, u32>,
    /// Single-check ConfigMaps still on the server.
    singles: BTreeMap<CheckKey, String>,
    /// The sequence of the next flush.
    seq: u64,
}

impl Shards {
    /// The shards as read at start, and the newest record of every check. Copies older than
    /// a check's newest are dropped from their shards (written again without them); checks
    /// found only in single-check ConfigMaps are placed in shards.
    fn from_stored(read: Vec<(Origin, Vec<StoredRecord>)>) -> (Self, Vec<StoredRecord>) {
        let mut shards = Shards::default();
        let mut newest: BTreeMap<CheckKey, (Origin, StoredRecord)> = BTreeMap::new();
        for (origin, records) in read {
            for record in records {
                shards.seq = shards.seq.max(record.seq + 1);
                match &origin {
                    Origin::Shard(i) => {
                        let shard = shards.shards.entry(*i).or_default();
                        shard
                            .records
                            .insert(record.record.key.clone(), record.clone());
                    }
                    Origin::Single(name) => {
                        shards
                            .singles
                            .insert(record.record.key.clone(), name.clone());
                    }
                }
                let newer = newest.get(&record.record.key).is_none_or(|(o, r)| {
                    record.seq > r.seq || (record.seq == r.seq && matches!(o, Origin::Single(_)))
                });
                if newer {
                    newest.insert(record.record.key.clone(), (origin.clone(), record));
                }
            }
        }
        // Sequences start at 1: a single-check window (0) is older than any shard's copy.
        shards.seq = shards.seq.max(1);
        for (key, (origin, record)) in &newest {
            for (i, shard) in shards.shards.iter_mut() {
                if Some(*i) != matches_shard(origin) && shard.records.remove(key).is_some() {
                    shard.dirty = true;
                }
            }
            match origin {
                Origin::Shard(i) => {
                    shards.home.insert(key.clone(), *i);
                }
                Origin::Single(_) => shards.put(record.clone()),
            }
        }
        (shards, newest.into_values().map(|(_, r)| r).collect())
    }

    /// Where a new record of `size` bytes goes: the first shard with room, other than
    /// `except`, or a new one.
    fn place(&self, size: usize, except: Option<u32>) -> u32 {
        self.shards
            .iter()
            .find(|(i, s)| Some(**i) != except && s.size() + size <= SHARD_BUDGET)
            .map(|(i, _)| *i)
            .unwrap_or_else(|| {
                (0..)
                    .find(|i| !self.shards.contains_key(i) && Some(*i) != except)
                    .unwrap_or(u32::MAX)
            })
    }

    /// Puts a record in its check's shard (placing a new check).
    fn put(&mut self, record: StoredRecord) {
        let key = record.record.key.clone();
        let index = match self.home.get(&key) {
            Some(i) => *i,
            None => {
                let i = self.place(record.size(), None);
                self.home.insert(key.clone(), i);
                i
            }
        };
        let shard = self.shards.entry(index).or_default();
        shard.records.insert(key, record);
        shard.dirty = true;
    }

    /// Takes a check out of every shard.
    fn remove(&mut self, key: &CheckKey) {
        self.home.remove(key);
        for shard in self.shards.values_mut() {
            let had = shard.records.remove(key).is_some() | shard.leaving.remove(key).is_some();
            shard.dirty |= had;
        }
    }

    /// Moves the largest records out of shards above [`SHARD_LIMIT`] until they are within
    /// [`SHARD_BUDGET`] (a shard keeps at least one record).
    fn rebalance(&mut self) {
        let full: Vec<u32> = self
            .shards
            .iter()
            .filter(|(_, s)| s.records_size() > SHARD_LIMIT)
            .map(|(i, _)| *i)
            .collect();
        for from in full {
            while let Some(record) = self.take_largest_over_budget(from) {
                let key = record.record.key.clone();
                let to = self.place(record.size(), Some(from));
                if let Some(shard) = self.shards.get_mut(&from) {
                    shard.leaving.insert(key.clone(), record.clone());
                }
                self.home.insert(key.clone(), to);
                let target = self.shards.entry(to).or_default();
                target.records.insert(key, record);
                target.dirty = true;
            }
        }
    }

    fn take_largest_over_budget(&mut self, index: u32) -> Option<StoredRecord> {
        let shard = self.shards.get_mut(&index)?;
        if shard.records_size() <= SHARD_BUDGET || shard.records.len() <= 1 {
            return None;
        }
        let largest = shard.records.values().max_by_key(|r| r.size())?;
        let key = largest.record.key.clone();
        shard.records.remove(&key)
    }

    /// Takes the store's flush work into the shards: every record written with this flush's
    /// sequence, removed checks taken out, full shards relieved.
    pub fn take(&mut self, work: &FlushWork) {
        let seq = self.seq;
        self.seq += 1;
        for key in &work.deletes {
            self.remove(key);
        }
        for record in &work.writes {
            self.put(StoredRecord {
                record: record.clone(),
                seq,
            });
        }
        self.rebalance();
    }

    /// The shards to write now (whole: server-side apply removes the keys left out). First
    /// those that hold no records on their way out; after [`Shards::written`] has dropped the
    /// copies that arrived, the rest.
    pub fn writes(&self, first: bool) -> Vec<(u32, serde_json::Value)> {
        self.shards
            .iter()
            .filter(|(_, s)| s.dirty && !s.is_empty() && (!first || s.leaving.is_empty()))
            .map(|(i, s)| {
                (
                    *i,
                    shard_config_map(*i, s.records.values().chain(s.leaving.values())),
                )
            })
            .collect()
    }

    /// Records the shards the server now holds.
    pub fn written(&mut self, indices: &[u32]) {
        for i in indices {
            if let Some(shard) = self.shards.get_mut(i) {
                shard.dirty = false;
            }
        }
    }

    /// Drops the copies of moved records whose new shard the server holds: their old shards
    /// are to be written without them.
    pub fn release_arrived(&mut self) {
        let arrived: Vec<CheckKey> = self
            .shards
            .values()
            .flat_map(|s| s.leaving.keys())
            .filter(|key| {
                self.home
                    .get(*key)
                    .and_then(|i| self.shards.get(i))
                    .is_some_and(|s| !s.dirty)
            })
            .cloned()
            .collect();
        for key in arrived {
            for shard in self.shards.values_mut() {
                if shard.leaving.remove(&key).is_some() {
                    shard.dirty = true;
                }
            }
        }
    }

    /// ConfigMaps to delete once the writes are done: emptied shards, and single-check
    /// windows whose check a written shard holds (or that is gone).
    pub fn deletes(&self) -> Vec<String> {
        let emptied = self
            .shards
            .iter()
            .filter(|(_, s)| s.dirty && s.is_empty())
            .map(|(i, _)| shard_name(*i));
        let singles = self
            .singles
            .iter()
            .filter(|(key, _)| match self.home.get(*key) {
                Some(i) => self.shards.get(i).is_some_and(|s| !s.dirty),
                None => true,
            })
            .map(|(_, name)| name.clone());
        emptied.chain(singles).collect()
    }

    /// Records the ConfigMaps deleted.
    pub fn deleted(&mut self, names: &[String]) {
        self.shards
            .retain(|i, s| !(s.is_empty() && names.contains(&shard_name(*i))));
        self.singles.retain(|_, name| !names.contains(name));
    }

    /// The checks whose records a shard the server does not hold yet carries: their flush is
    /// not durable.
    pub fn unwritten(&self) -> Vec<CheckKey> {
        self.shards
            .values()
            .filter(|s| s.dirty)
            .flat_map(|s| s.records.keys().cloned())
            .collect()
    }
}

fn matches_shard(origin: &Origin) -> Option<u32> {
    match origin {
        Origin::Shard(i) => Some(*i),
        Origin::Single(_) => None,
    }
}

/// Reads every window ConfigMap: the flusher's starting state and each check's newest record.
async fn read_all(api: &Api<ConfigMap>) -> Result<(Shards, Vec<StoredRecord>), PersistError> {
    let list = api
        .list(&ListParams::default().labels(LABEL_SELECTOR))
        .await
        .map_err(PersistError::List)?;
    let mut read = Vec::new();
    for cm in &list.items {
        match records_of(cm) {
            Ok(records) => read.push(records),
            Err(err) => tracing::warn!(reason = err.reason(), "skipping stored windows: {err}"),
        }
    }
    Ok(Shards::from_stored(read))
}

/// Every check's stored window, as a restarted operator would read it.
pub async fn stored_windows(
    api: &Api<ConfigMap>,
) -> Result<BTreeMap<CheckKey, RestoredCheck>, PersistError> {
    let (_, records) = read_all(api).await?;
    Ok(records
        .iter()
        .filter_map(|r| r.decode().ok())
        .map(|check| (check.key.clone(), check))
        .collect())
}

/// Loads every stored window into `store`; unreadable ones are logged and skipped (their
/// check starts a new window, and the next flush overwrites them). Returns how many loaded,
/// and the shards for the flusher.
pub async fn load(
    api: &Api<ConfigMap>,
    store: &ResultStore,
) -> Result<(usize, Shards), PersistError> {
    let (mut shards, records) = read_all(api).await?;
    let now = now_ms();
    let mut loaded = 0;
    for stored in records {
        match stored.decode() {
            Ok(check) => {
                store.restore(check, now);
                loaded += 1;
            }
            Err(detail) => {
                tracing::warn!(reason = "CorruptWindow", check = %stored.record.key,
                    "skipping a stored window: {detail}");
                shards.remove(&stored.record.key);
            }
        }
    }
    Ok((loaded, shards))
}

/// Where shards are written: the API server, or a test's map.
trait ShardServer {
    async fn apply(&self, index: u32, object: serde_json::Value) -> Result<(), String>;
    /// Deletes a ConfigMap; one that is not there counts as deleted.
    async fn delete(&self, name: &str) -> Result<(), String>;
}

impl ShardServer for Api<ConfigMap> {
    async fn apply(&self, index: u32, object: serde_json::Value) -> Result<(), String> {
        let params = PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force();
        self.patch(&shard_name(index), &params, &Patch::Apply(object))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn delete(&self, name: &str) -> Result<(), String> {
        match Api::delete(self, name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err.to_string()),
        }
    }
}

/// Takes one flush's work into the shards and writes them: the shards receiving moved
/// records first, then the shards those leave (without the copies that arrived) and the
/// rest, then the deletions. Returns the checks whose records are not written (their flush
/// is not durable) and the first error.
async fn flush_shards(
    server: &impl ShardServer,
    shards: &mut Shards,
    work: &FlushWork,
) -> (Vec<CheckKey>, Option<String>) {
    shards.take(work);
    let mut first_error = None;
    for first in [true, false] {
        let writes = shards
            .writes(first)
            .into_iter()
            .map(|(index, object)| async move { (index, server.apply(index, object).await) });
        let results: Vec<(u32, Result<(), String>)> = stream::iter(writes)
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        let mut written = Vec::new();
        for (index, result) in results {
            match result {
                Ok(()) => written.push(index),
                Err(err) => {
                    tracing::warn!(shard = %shard_name(index), "cannot persist SLO windows: {err}");
                    first_error.get_or_insert(err);
                }
            }
        }
        shards.written(&written);
        if first {
            shards.release_arrived();
        }
    }
    let mut deleted = Vec::new();
    for name in shards.deletes() {
        match server.delete(&name).await {
            Ok(()) => deleted.push(name),
            Err(err) => {
                tracing::warn!(config_map = %name, "cannot delete a stored window: {err}");
                first_error.get_or_insert(err);
            }
        }
    }
    shards.deleted(&deleted);
    (shards.unwritten(), first_error)
}

/// Writes and deletes what one flush took; returns the generation, the keys that failed
/// and the first error.
async fn flush_once(
    api: &Api<ConfigMap>,
    store: &ResultStore,
    shards: &mut Shards,
    now: UnixMs,
) -> (u64, Vec<CheckKey>, Option<String>) {
    let started = std::time::Instant::now();
    let work = store.take_flush(now);
    let (failed, first_error) = flush_shards(api, shards, &work).await;
    tracing::debug!(
        records = work.writes.len(),
        removed = work.deletes.len(),
        failed = failed.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "SLO windows flushed"
    );
    (work.generation, failed, first_error)
}

/// Flushes `store` every `interval` until `stop` turns true, then once more, so that a
/// graceful shutdown leaves nothing unwritten.
pub async fn run_flusher(
    client: Client,
    namespace: String,
    store: Arc<ResultStore>,
    mut shards: Shards,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let (generation, failed, error) = flush_once(&api, &store, &mut shards, now_ms()).await;
        store.finish_flush(generation, &failed, error);
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(check: &str, history_bytes: usize) -> CheckRecord {
        let mut settled = Settled::default();
        settled.insert("node-a", "boot", 42, 1_800_000_000_000);
        let history =
            History::new(crate::slo::config::SliceRule::DEFAULT, 1_800_000_000_000).encode();
        // A window's size, as a long-lived check's would be; only the flusher sees the bytes.
        let mut padded = history.clone();
        padded.resize(history.len().max(history_bytes), 0);
        CheckRecord {
            key: CheckKey::new("shop", check),
            uid: format!("uid-{check}"),
            latency_threshold_us: Some(250_000),
            deny_targets: vec!["db".into()],
            history: if history_bytes == 0 { history } else { padded },
            settled: settled.encode(),
        }
    }

    fn work(writes: Vec<CheckRecord>, deletes: Vec<CheckKey>) -> FlushWork {
        FlushWork {
            generation: 0,
            writes,
            deletes,
        }
    }

    /// A map of ConfigMaps standing in for the API server; writes to the shards in `fail`
    /// fail.
    #[derive(Default)]
    struct Server {
        objects: std::sync::Mutex<BTreeMap<String, ConfigMap>>,
        fail: Vec<u32>,
    }

    impl ShardServer for Server {
        async fn apply(&self, index: u32, object: serde_json::Value) -> Result<(), String> {
            if self.fail.contains(&index) {
                return Err("injected".into());
            }
            let cm: ConfigMap = serde_json::from_value(object).unwrap();
            let bytes = serde_json::to_vec(&cm).unwrap().len();
            assert!(
                bytes <= SHARD_LIMIT + 100 * 1024,
                "{} of {bytes} bytes",
                cm.name_any()
            );
            self.objects.lock().unwrap().insert(shard_name(index), cm);
            Ok(())
        }

        async fn delete(&self, name: &str) -> Result<(), String> {
            self.objects.lock().unwrap().remove(name);
            Ok(())
        }
    }

    impl Server {
        fn names(&self) -> Vec<String> {
            self.objects.lock().unwrap().keys().cloned().collect()
        }

        fn copies(&self) -> usize {
            let objects = self.objects.lock().unwrap();
            objects
                .values()
                .map(|cm| records_of(cm).unwrap().1.len())
                .sum()
        }
    }

    /// One flush as the flusher runs it; `fail` names shards whose writes fail.
    async fn flush(
        shards: &mut Shards,
        server: &mut Server,
        w: FlushWork,
        fail: &[u32],
    ) -> Vec<CheckKey> {
        server.fail = fail.to_vec();
        flush_shards(server, shards, &w).await.0
    }

    /// What a restarted operator reads from `server`.
    fn restart(server: &Server) -> (Shards, BTreeMap<CheckKey, StoredRecord>) {
        let objects = server.objects.lock().unwrap();
        let read = objects.values().map(|cm| records_of(cm).unwrap()).collect();
        let (shards, newest) = Shards::from_stored(read);
        let newest = newest
            .into_iter()
            .map(|r| (r.record.key.clone(), r))
            .collect();
        (shards, newest)
    }

    #[tokio::test]
    async fn a_thousand_checks_are_written_in_a_few_config_maps_and_read_back() {
        let mut shards = Shards::default();
        let mut server = Server::default();
        // Windows of a few KiB each, as checks with weeks of history have.
        let records: Vec<CheckRecord> = (0..1_000)
            .map(|i| record(&format!("check-{i:04}"), 6_000))
            .collect();
        let failed = flush(&mut shards, &mut server, work(records.clone(), vec![]), &[]).await;
        assert!(failed.is_empty());
        let written = server.names().len();
        assert!(
            (16..=24).contains(&written),
            "1,000 records of 8 KiB in shards of 512 KiB: {written} ConfigMaps"
        );
        let (_, newest) = restart(&server);
        assert_eq!(newest.len(), 1_000);
        for r in &records {
            assert_eq!(newest[&r.key].record, *r);
        }

        // The next flush writes the shards of the checks that changed, not every check's.
        shards.take(&work(vec![record("check-0001", 6_000)], vec![]));
        assert_eq!(shards.writes(false).len(), 1);
    }

    #[tokio::test]
    async fn a_growing_shard_hands_records_on_and_a_crash_midway_loses_none() {
        let mut shards = Shards::default();
        let mut server = Server::default();
        let small: Vec<CheckRecord> = (0..4).map(|i| record(&format!("c{i}"), 90_000)).collect();
        flush(&mut shards, &mut server, work(small, vec![]), &[]).await;
        assert_eq!(server.names().len(), 1, "4 × 120 KiB fit one shard");

        // Two checks' windows grow: the shard passes its limit and hands its largest on. The
        // new shard's write fails: the old one still holds the moved records.
        let grown = vec![record("c0", 330_000), record("c1", 330_000)];
        let failed = flush(&mut shards, &mut server, work(grown.clone(), vec![]), &[1]).await;
        assert!(!failed.is_empty(), "the moved checks' flush is not durable");
        let (_, newest) = restart(&server);
        assert_eq!(newest.len(), 4, "nothing lost");
        for r in &grown {
            assert_eq!(newest[&r.key].record, *r, "the newest copy wins");
        }

        // Written at last: the copies leave the old shard on the flush after.
        assert!(
            flush(&mut shards, &mut server, work(vec![], vec![]), &[])
                .await
                .is_empty()
        );
        flush(&mut shards, &mut server, work(vec![], vec![]), &[]).await;
        assert!(server.names().len() >= 2);
        assert_eq!(
            server.copies(),
            4,
            "one copy of each record once the move is done"
        );
        let (_, newest) = restart(&server);
        for r in &grown {
            assert_eq!(newest[&r.key].record, *r);
        }
    }

    #[tokio::test]
    async fn a_removed_check_leaves_its_shard_and_an_emptied_shard_goes() {
        let mut shards = Shards::default();
        let mut server = Server::default();
        flush(
            &mut shards,
            &mut server,
            work(vec![record("a", 0), record("b", 0)], vec![]),
            &[],
        )
        .await;
        flush(
            &mut shards,
            &mut server,
            work(vec![], vec![CheckKey::new("shop", "a")]),
            &[],
        )
        .await;
        let (_, newest) = restart(&server);
        assert_eq!(
            newest.keys().collect::<Vec<_>>(),
            [&CheckKey::new("shop", "b")]
        );
        flush(
            &mut shards,
            &mut server,
            work(vec![], vec![CheckKey::new("shop", "b")]),
            &[],
        )
        .await;
        assert!(server.names().is_empty(), "{:?}", server.names());
    }

    #[tokio::test]
    async fn single_check_windows_from_before_shards_move_into_a_shard_then_go() {
        let r = record("web", 0);
        let legacy = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_map_name(&r.key),
                "annotations": {ANNOTATION_CHECK: r.key.to_string(), ANNOTATION_UID: r.uid}},
            "data": {KEY_COUNTING: r#"{"latencyThresholdUs":250000,"denyTargets":["db"]}"#},
            "binaryData": {KEY_HISTORY: b64(&r.history), KEY_SETTLED: b64(&r.settled)},
        });
        let mut server = Server::default();
        server.objects.lock().unwrap().insert(
            config_map_name(&r.key),
            serde_json::from_value(legacy).unwrap(),
        );
        let (mut shards, newest) = restart(&server);
        assert_eq!(newest[&r.key].record, r);
        // Kept until a shard holds the check: first the shard, then the deletion.
        flush(&mut shards, &mut server, work(vec![], vec![]), &[]).await;
        assert!(server.names().contains(&shard_name(0)));
        flush(&mut shards, &mut server, work(vec![], vec![]), &[]).await;
        assert_eq!(server.names(), [shard_name(0)]);
        let (_, newest) = restart(&server);
        assert_eq!(newest[&r.key].record, r);
        let restored = newest[&r.key].decode().unwrap();
        assert_eq!(
            (restored.uid.as_str(), restored.latency_threshold_us),
            ("uid-web", Some(250_000))
        );
    }

    #[tokio::test]
    async fn a_damaged_record_is_skipped_and_its_neighbours_read() {
        let mut shards = Shards::default();
        let mut server = Server::default();
        flush(
            &mut shards,
            &mut server,
            work(vec![record("a", 0), record("b", 0)], vec![]),
            &[],
        )
        .await;
        let mut objects = server.objects.lock().unwrap();
        let cm = objects.get_mut(&shard_name(0)).unwrap();
        let digest = record_digest(&CheckKey::new("shop", "a"));
        cm.data
            .as_mut()
            .unwrap()
            .insert(format!("{digest}{SUFFIX_META}"), "{".into());
        let digest_b = record_digest(&CheckKey::new("shop", "b"));
        let meta = cm.data.as_ref().unwrap()[&format!("{digest_b}{SUFFIX_META}")].clone();
        let (_, records) = records_of(cm).unwrap();
        assert_eq!(records.len(), 1, "the damaged record is skipped");
        assert_eq!(records[0].record.key, CheckKey::new("shop", "b"));
        // A record claiming another check's key is not that check's window.
        cm.data.as_mut().unwrap().insert(
            format!("{digest_b}{SUFFIX_META}"),
            meta.replace("shop/b", "shop/x"),
        );
        assert!(records_of(cm).unwrap().1.is_empty());
        let not_ours: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": "netslo-windows-x"}})).unwrap();
        assert!(
            records_of(&not_ours)
                .unwrap_err()
                .to_string()
                .contains("netslo-windows-x")
        );
    }
}
