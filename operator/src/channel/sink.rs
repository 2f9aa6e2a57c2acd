//! Where accepted results go: the SLO store behind [`ResultSink`] (someone else's), or the
//! in-memory [`MemorySink`] for tests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use netslo_protocol::bucket::BucketReport;

use super::BoxFuture;
use super::auth::AgentIdentity;
use super::dedup::AgentSeqs;

/// Buckets the channel accepted from one agent process: authenticated, assigned and not seen
/// before by this operator instance.
#[derive(Debug, Clone)]
pub struct AcceptedBatch {
    pub agent_name: String,
    pub boot_id: String,
    /// The agent's cumulative count of buckets it had to drop.
    pub dropped_buckets: u64,
    pub buckets: Vec<BucketReport>,
}

/// What the sink did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub stored: u64,
    /// Buckets the sink already held (resent after an operator restart lost the ack).
    pub duplicates: u64,
}

/// The sink could not make the batch durable; the agent keeps it and retries.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("result store unavailable: {0}")]
    Unavailable(String),
    #[error("result store full: {0}")]
    Full(String),
}

impl SinkError {
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Unavailable(_) => "ResultStoreUnavailable",
            SinkError::Full(_) => "ResultStoreFull",
        }
    }
}

/// A batch counted: what the sink did, and a wait that resolves once it is durable.
pub struct Counted<'a> {
    pub outcome: IngestOutcome,
    /// Resolves `Ok` once what was counted is durable (the agent forgets the buckets when
    /// acknowledged). The channel waits on it holding neither the batch nor its place among
    /// the batches being read: a durable store acknowledges in group commits seconds apart,
    /// and holding those places through them would cap throughput at a few batches a second.
    pub durable: BoxFuture<'a, Result<(), SinkError>>,
}

impl std::fmt::Debug for Counted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("outcome", &self.outcome)
            .finish_non_exhaustive()
    }
}

/// Takes accepted buckets. `ingest` counts them at once and must be idempotent per
/// `(agent_name, boot_id, seq)`: the channel filters duplicates in memory, but after an
/// operator restart a batch whose acknowledgement was lost arrives again, and only the store
/// knows it already holds it (keep the [`SeqSet`](super::SeqSet)s with the data).
pub trait ResultSink: Send + Sync + std::fmt::Debug {
    fn ingest(
        &self,
        identity: &AgentIdentity,
        batch: &AcceptedBatch,
    ) -> Result<Counted<'_>, SinkError>;
}

/// A stored bucket with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBucket {
    pub agent_name: String,
    pub boot_id: String,
    pub service_account: String,
    pub report: BucketReport,
}

#[derive(Debug, Default)]
struct MemoryState {
    buckets: Vec<StoredBucket>,
    seen: HashMap<String, AgentSeqs>,
    dropped: HashMap<(String, String), u64>,
}

/// Keeps everything in memory, idempotently; can be told to fail. Share one across channel
/// server restarts (with `Arc`) to stand in for a durable store.
#[derive(Debug, Default)]
pub struct MemorySink {
    state: Mutex<MemoryState>,
    failing: AtomicBool,
}

impl MemorySink {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every bucket stored, in arrival order.
    pub fn buckets(&self) -> Vec<StoredBucket> {
        self.state().buckets.clone()
    }

    /// The last dropped count an agent process reported.
    pub fn dropped(&self, agent: &str, boot: &str) -> u64 {
        self.state()
            .dropped
            .get(&(agent.to_owned(), boot.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// While true, every ingest fails (`Unavailable`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl ResultSink for MemorySink {
    fn ingest(
        &self,
        identity: &AgentIdentity,
        batch: &AcceptedBatch,
    ) -> Result<Counted<'_>, SinkError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(SinkError::Unavailable("failing on request".into()))
        } else {
            let mut st = self.state();
            let st = &mut *st;
            let seen = st.seen.entry(batch.agent_name.clone()).or_default();
            let mut outcome = IngestOutcome::default();
            for b in &batch.buckets {
                if seen.insert(&batch.boot_id, b.seq) {
                    outcome.stored += 1;
                    st.buckets.push(StoredBucket {
                        agent_name: batch.agent_name.clone(),
                        boot_id: batch.boot_id.clone(),
                        service_account: identity.username.clone(),
                        report: b.clone(),
                    });
                } else {
                    outcome.duplicates += 1;
                }
            }
            let d = st
                .dropped
                .entry((batch.agent_name.clone(), batch.boot_id.clone()))
                .or_default();
            *d = (*d).max(batch.dropped_buckets);
            Ok(Counted {
                outcome,
                durable: Box::pin(std::future::ready(Ok(()))),
            })
        }
    }
}
