//! The authenticated agent ↔ operator channel.
//!
//! Agents fetch their assignment and report result batches over HTTPS (HTTP/1.1 keep-alive,
//! rustls with ring) to [`ChannelServer`]:
//!
//! * `GET /v1/assignment` (header `x-netslo-agent`, optional `If-None-Match: "<version>"` and
//!   `x-netslo-wait-seconds`): a long-poll answered with the agent's current
//!   [`AssignmentEnvelope`](netslo_protocol::channel::AssignmentEnvelope) as soon as its version
//!   differs from the one the agent holds, or `304 Not Modified` when the wait ends;
//! * `POST /v1/one-shot-results` with a [`OneShotReport`](netslo_protocol::channel::OneShotReport)
//!   of a one-shot probe of the agent's current assignment: kept in the [`OneShotInbox`] for the
//!   probe controller;
//! * `POST /v1/results` with a [`ResultBatch`](netslo_protocol::channel::ResultBatch): answered with a
//!   [`BatchAck`](netslo_protocol::channel::BatchAck) only after the [`ResultSink`] said the accepted
//!   buckets are durable.
//!
//! Every request carries `Authorization: Bearer <projected service-account token>` (audience
//! [`AUDIENCE`]). A [`TokenVerifier`] turns it into an [`AgentIdentity`] (the real one,
//! [`TokenReviewVerifier`], asks the API server; [`CachingVerifier`] keeps positive verdicts
//! until the token's expiry, at most a few minutes, so TokenReview load follows token
//! rotation, not batches). The identity must match the [`AgentBinding`] of the agent it claims
//! to be, and each bucket's `(check, source)` must have been assigned to that agent (the
//! [`AssignmentSource`] remembers retired pairs for a grace period so buffered results of a
//! just-removed check still land). Everything else is refused and counted in
//! [`ChannelStats`]. Buckets are de-duplicated by `(agent, bootId, seq)` with bounded memory
//! ([`SeqSet`]).
//!
//! The serving certificate and its CA are generated in memory at start ([`ServingCert`]); only
//! the CA certificate is published ([`publish_ca`]) for agents to mount.

mod auth;
mod dedup;
mod one_shot;
mod server;
mod sink;
mod source;
mod stats;
mod stream;
mod tls;

pub use auth::{
    AUDIENCE, AgentIdentity, AuthError, CachingVerifier, LivePods, StaticTokens,
    TokenReviewVerifier, TokenVerifier, Verified, unverified_jwt_expiry,
};
pub use dedup::{AgentSeqs, Dedup, SeqSet};
pub use one_shot::OneShotInbox;
pub use server::{ChannelConfig, ChannelServer};
pub use sink::{
    AcceptedBatch, Counted, IngestOutcome, MemorySink, ResultSink, SinkError, StoredBucket,
};
pub use source::{AgentBinding, AgentEntry, AssignmentSource, MemoryAssignments};
pub use stats::{ChannelCounters, ChannelStats};
pub use tls::{CA_CONFIGMAP_KEY, ServingCert, publish_ca};

use std::future::Future;
use std::pin::Pin;

/// A boxed, sendable future: what the channel's object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Errors starting the channel or publishing its CA.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot generate the serving certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot publish the CA certificate: {0}")]
    Publish(#[source] kube::Error),
}

impl ChannelError {
    pub fn reason(&self) -> &'static str {
        match self {
            ChannelError::Certificate(_) => "ChannelCertificateFailed",
            ChannelError::Tls(_) => "ChannelTlsInvalid",
            ChannelError::Bind { .. } => "ChannelBindFailed",
            ChannelError::Publish(_) => "ChannelCaPublishFailed",
        }
    }
}
