//! An agent's result batch as the operator reads it: JSON, validation, then ingestion into a
//! check's window and recent series. Hostile bytes must give an error, never a panic, and
//! never an allocation they did not pay for.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use netslo_operator::channel::{AcceptedBatch, AgentIdentity, ResultSink};
use netslo_operator::check_key::CheckKey;
use netslo_operator::slo::config::SliceRule;
use netslo_operator::store::{CheckConfig, EvidenceSpans, ResultStore};
use netslo_protocol::channel::ResultBatch;

fn store() -> &'static ResultStore {
    static STORE: OnceLock<ResultStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let store = ResultStore::new();
        let config = CheckConfig {
            latency_threshold_us: Some(5_000),
            deny_targets: vec!["blocked".into()],
            slice: SliceRule::DEFAULT,
            // Results of "peers" are pooled per peer (a mesh): both ways of keeping them.
            mesh_targets: vec!["peers".into()],
        };
        store.configure(
            &CheckKey::new("shop", "web"),
            "uid",
            config,
            netslo_operator::slo::now_ms(),
        );
        store
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<ResultBatch>(data) else {
        return;
    };
    if batch.validate().is_err() {
        return;
    }
    let accepted = AcceptedBatch {
        agent_name: batch.agent_name,
        boot_id: batch.boot_id,
        dropped_buckets: batch.dropped_buckets,
        buckets: batch.buckets,
    };
    let identity = AgentIdentity::service_account("netslo-system", "netslo-agent");
    // An in-memory store: counted is durable.
    if let Ok(counted) = store().ingest(&identity, &accepted) {
        let _ = futures::executor::block_on(counted.durable);
    }
    let now = netslo_operator::slo::now_ms();
    let _ = store().read(
        &CheckKey::new("shop", "web"),
        now,
        3_600_000,
        EvidenceSpans {
            evidence_ms: 60_000,
            hold_ms: 180_000,
        },
        |history, recent| {
            (
                history.window(now, 3_600_000),
                recent.paths.len() + recent.pooled.len() + recent.sources.len(),
            )
        },
    );
});
