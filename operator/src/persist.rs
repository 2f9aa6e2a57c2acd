//! Where each check's SLO window lives between operator processes: one ConfigMap per check in
//! the operator's namespace, written by the flusher, read back at start.
//!
//! The ConfigMap holds the encoded window ([`History::encode`]), the watermarks of what it has
//! counted ([`Settled::encode`]) and how results were counted (latency threshold, expected-deny
//! targets), so a restarted operator counts resent results exactly as before, before its first
//! reconcile. Its name is a hash of the check's key (names of any length fit); annotations
//! name the check and its UID. Checks live in other namespaces, so the ConfigMaps cannot be
//! owned by them: the operator deletes a check's ConfigMap when the check goes away.

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
use crate::store::{CheckRecord, RestoredCheck, ResultStore};

/// Label selecting the window ConfigMaps.
pub const LABEL_SELECTOR: &str = "app.kubernetes.io/component=slo-window";
const ANNOTATION_CHECK: &str = "netslo.io/check";
const ANNOTATION_UID: &str = "netslo.io/check-uid";
const KEY_HISTORY: &str = "history";
const KEY_SETTLED: &str = "settled";
const KEY_COUNTING: &str = "counting.json";
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

/// The ConfigMap name of a check's window: `netslo-window-` and 16 hex digits of FNV-1a 64.
/// The hash is of the key's string form, `<namespace>/<name>`: the names stored windows have.
pub fn config_map_name(check: &CheckKey) -> String {
    let hash = fnv1a_64(check.to_string().bytes());
    format!("netslo-window-{hash:016x}")
}

/// The ConfigMap holding `record`.
pub fn to_config_map(record: &CheckRecord) -> serde_json::Value {
    let counting = Counting {
        latency_threshold_us: record.latency_threshold_us,
        deny_targets: record.deny_targets.clone(),
    };
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(&record.key),
            "labels": {
                "app.kubernetes.io/name": "netslo",
                "app.kubernetes.io/component": "slo-window",
                "app.kubernetes.io/managed-by": "netslo-operator",
            },
            "annotations": {ANNOTATION_CHECK: record.key.to_string(), ANNOTATION_UID: record.uid},
        },
        "data": {KEY_COUNTING: serde_json::to_string(&counting).unwrap_or_default()},
        "binaryData": {KEY_HISTORY: b64(&record.history), KEY_SETTLED: b64(&record.settled)},
    })
}

/// Reads a window ConfigMap back.
pub fn from_config_map(cm: &ConfigMap) -> Result<RestoredCheck, PersistError> {
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
    let binary = |key: &str| -> Result<&[u8], PersistError> {
        cm.binary_data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|ByteString(bytes)| bytes.as_slice())
            .ok_or_else(|| corrupt(format!("binaryData.{key} missing")))
    };
    let history = History::decode(binary(KEY_HISTORY)?)
        .map_err(|e| corrupt(format!("binaryData.{KEY_HISTORY}: {e}")))?;
    let settled = Settled::decode(binary(KEY_SETTLED)?)
        .map_err(|e| corrupt(format!("binaryData.{KEY_SETTLED}: {e}")))?;
    let counting: Counting = cm
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_COUNTING))
        .ok_or_else(|| corrupt(format!("data.{KEY_COUNTING} missing")))
        .and_then(|text| {
            serde_json::from_str(text).map_err(|e| corrupt(format!("data.{KEY_COUNTING}: {e}")))
        })?;
    Ok(RestoredCheck {
        key,
        uid: uid.clone(),
        latency_threshold_us: counting.latency_threshold_us,
        deny_targets: counting.deny_targets,
        history,
        settled,
    })
}

/// Loads every stored window into `store`; unreadable ones are logged and skipped (their
/// check starts a new window, and the next flush overwrites them). Returns how many loaded.
pub async fn load(api: &Api<ConfigMap>, store: &ResultStore) -> Result<usize, PersistError> {
    let list = api
        .list(&ListParams::default().labels(LABEL_SELECTOR))
        .await
        .map_err(PersistError::List)?;
    let now = now_ms();
    let mut loaded = 0;
    for cm in &list.items {
        match from_config_map(cm) {
            Ok(check) => {
                store.restore(check, now);
                loaded += 1;
            }
            Err(err) => tracing::warn!(reason = err.reason(), "skipping stored window: {err}"),
        }
    }
    Ok(loaded)
}

/// Writes and deletes what one flush took; returns the keys that failed and the first error.
async fn flush_once(
    api: &Api<ConfigMap>,
    store: &ResultStore,
    now: UnixMs,
) -> (u64, Vec<CheckKey>, Option<String>) {
    let started = std::time::Instant::now();
    let work = store.take_flush(now);
    let (written, deleted) = (work.writes.len(), work.deletes.len());
    let writes = work.writes.into_iter().map(|record| async move {
        let name = config_map_name(&record.key);
        let params = PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force();
        let result = api
            .patch(&name, &params, &Patch::Apply(to_config_map(&record)))
            .await
            .map(|_| ());
        (record.key, result)
    });
    let deletes = work.deletes.into_iter().map(|key| async move {
        let result = match api
            .delete(&config_map_name(&key), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(err) => Err(err),
        };
        (key, result)
    });
    let results: Vec<(CheckKey, Result<(), kube::Error>)> = stream::iter(writes)
        .buffer_unordered(CONCURRENT_WRITES)
        .chain(stream::iter(deletes).buffer_unordered(CONCURRENT_WRITES))
        .collect()
        .await;
    let mut failed = Vec::new();
    let mut first_error = None;
    for (key, result) in results {
        if let Err(err) = result {
            tracing::warn!(check = %key, "cannot persist the SLO window: {err}");
            first_error.get_or_insert_with(|| err.to_string());
            failed.push(key);
        }
    }
    tracing::debug!(
        written,
        deleted,
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
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(interval) => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        let (generation, failed, error) = flush_once(&api, &store, now_ms()).await;
        store.finish_flush(generation, &failed, error);
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CheckRecord {
        let mut settled = Settled::default();
        settled.insert("node-a", "boot", 42, 1_800_000_000_000);
        CheckRecord {
            key: CheckKey::new("shop", "web"),
            uid: "uid-1".into(),
            latency_threshold_us: Some(250_000),
            deny_targets: vec!["db".into()],
            history: History::new(crate::slo::config::SliceRule::DEFAULT, 1_800_000_000_000)
                .encode(),
            settled: settled.encode(),
        }
    }

    #[test]
    fn a_record_round_trips_through_its_config_map() {
        let record = record();
        let cm: ConfigMap = serde_json::from_value(to_config_map(&record)).unwrap();
        assert_eq!(
            cm.name_any(),
            config_map_name(&CheckKey::new("shop", "web"))
        );
        assert!(cm.name_any().len() <= 63);
        let back = from_config_map(&cm).unwrap();
        assert_eq!(back.key, CheckKey::new("shop", "web"));
        assert_eq!(back.uid, "uid-1");
        assert_eq!(back.latency_threshold_us, Some(250_000));
        assert_eq!(back.deny_targets, vec!["db".to_string()]);
        assert_eq!(back.history.encode(), record.history);
        assert_eq!(back.settled.encode(), record.settled);
    }

    #[test]
    fn a_damaged_config_map_is_an_error_naming_what_is_wrong() {
        let good = to_config_map(&record());
        let damage = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            let cm: ConfigMap = serde_json::from_value(v).unwrap();
            from_config_map(&cm).unwrap_err().to_string()
        };
        let err = damage(&|v| v["binaryData"]["history"] = json!("AAAA"));
        assert!(err.contains("binaryData.history"), "{err}");
        let err = damage(&|v| {
            v["binaryData"].as_object_mut().unwrap().remove("settled");
        });
        assert!(err.contains("binaryData.settled missing"), "{err}");
        let err = damage(&|v| v["data"]["counting.json"] = json!("{"));
        assert!(err.contains("counting.json"), "{err}");
        // A ConfigMap claiming another check's key is not that check's window.
        let err = damage(&|v| v["metadata"]["annotations"]["netslo.io/check"] = json!("x/y"));
        assert!(err.contains("netslo.io/check"), "{err}");
    }
}
