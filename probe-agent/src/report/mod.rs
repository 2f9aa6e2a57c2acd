//! The agent side of the operator channel: fetch assignments from the operator, report closed
//! aggregation windows back, and survive the operator being away.
//!
//! * Transport: HTTPS (HTTP/1.1, ring) to `--operator-url`, the server certificate checked
//!   against `--operator-ca`, which is re-read on every new connection (a restarted operator
//!   publishes a new CA; the kubelet refreshes the mounted file). [`Reporter::run`] holds one
//!   connection, upgraded to the framed channel ([`netslo_protocol::frame`]) that carries the
//!   assignment and the results both; with an operator that has no channel it uses the HTTP
//!   requests below (a one-shot probe's report and the last flush at exit use them too).
//! * Authentication: `Authorization: Bearer <projected service-account token>`, re-read from
//!   `--token-file` before every request and channel because the kubelet rotates it.
//! * Assignments: pushed on the channel whenever their version changes, or a long-poll `GET`
//!   with `If-None-Match: <version>` (`304` means unchanged). Each new version is compiled and
//!   sent to the engine's `watch` input; when the operator is unreachable the engine keeps
//!   probing with the last assignment.
//! * Results: closed buckets move from the aggregator into a bounded [`Outbox`] (by bytes and
//!   age, oldest dropped first, drops counted and reported in every batch) and are sent in
//!   batches tagged with a per-process boot id and the aggregator's increasing sequence
//!   numbers. A bucket leaves the outbox only once the operator has acknowledged it (the
//!   operator acknowledges only what is durable), so a restart of either side loses nothing
//!   the outbox still holds, and the operator recognises resent buckets by
//!   `(agent, bootId, seq)`.
//!
//! The wire types ([`AssignmentEnvelope`], [`ResultBatch`], [`BatchAck`]) are the protocol
//! crate's, shared with the
//! operator, which validates every batch with [`ResultBatch::validate`].

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;

use netslo_protocol::bucket::BucketReport;
use netslo_protocol::channel::{
    AGENT_HEADER, ASSIGNMENT_PATH, AssignmentEnvelope, BatchAck, ErrorBody, FEATURE_ONE_SHOTS,
    FEATURES_HEADER, InvalidBatch, MAX_ASSIGNMENT_RESPONSE_BYTES, MAX_BATCH_BUCKETS, MAX_WAIT,
    NO_NODE_ADDRESSES, NODE_ADDRESSES_HEADER, ONE_SHOT_PATH, OneShotReport, RESULTS_PATH,
    ResultBatch, WAIT_HEADER, new_boot_id, node_addresses_digest, validate_agent_name,
};
use netslo_protocol::hash::random_u64;
use netslo_protocol::spec::SpecError;
use netslo_protocol::target::parse_ca_bundle;
use netslo_protocol::time::now_unix_ms;

use crate::engine::{Engine, Jobs, compile};
use crate::one_shot::{self, OneShotJob, compile_one_shots};
use crate::probe::trace::TraceSettings;

mod channel;

/// Largest token file read.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest ack or error body read by the agent.
const MAX_SMALL_RESPONSE_BYTES: usize = 1024 * 1024;

/// The node addresses this agent holds, named by their digest, so that the operator sends
/// them only when they change (see [`AssignmentEnvelope`]).
#[derive(Debug, Default)]
struct HeldNodeAddresses(Option<(String, Arc<[IpAddr]>)>);

impl HeldNodeAddresses {
    /// The value of [`NODE_ADDRESSES_HEADER`].
    fn header(&self) -> String {
        self.0
            .as_ref()
            .map_or(NO_NODE_ADDRESSES, |(digest, _)| digest.as_str())
            .to_owned()
    }

    /// Makes `env` whole: puts the held addresses in where the operator left them out, and
    /// holds the ones it sent. An envelope leaving out addresses this agent does not hold,
    /// or whose addresses do not match their digest, is refused and the held list dropped,
    /// so that the next request asks for the list again.
    fn complete(&mut self, env: &mut AssignmentEnvelope) -> Result<(), ReportError> {
        if env.node_addresses_held {
            match &self.0 {
                Some((digest, list)) if *digest == env.node_addresses_digest => {
                    env.assignment.node_addresses = list.clone();
                    env.node_addresses_held = false;
                }
                _ => {
                    self.0 = None;
                    return Err(ReportError::Response(
                        "node addresses left out that this agent does not hold".into(),
                    ));
                }
            }
        } else if !env.node_addresses_digest.is_empty() {
            if node_addresses_digest(&env.assignment.node_addresses) != env.node_addresses_digest {
                self.0 = None;
                return Err(ReportError::Response(
                    "node addresses do not match their digest".into(),
                ));
            }
            self.0 = Some((
                env.node_addresses_digest.clone(),
                env.assignment.node_addresses.clone(),
            ));
        }
        Ok(())
    }
}

/// Errors of the agent side of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("invalid reporter configuration: {0}")]
    Config(String),
    #[error("cannot read the token file {path}: {message}")]
    Token { path: String, message: String },
    #[error("cannot read the operator CA {path}: {message}")]
    Ca { path: String, message: String },
    #[error("cannot reach the operator: {0}")]
    Connect(String),
    #[error("operator request failed: {0}")]
    Transport(String),
    #[error("operator request timed out")]
    Timeout,
    #[error("operator refused the request: {status} {message}")]
    Refused { status: u16, message: String },
    #[error("operator unavailable: {status} {message}")]
    Unavailable { status: u16, message: String },
    #[error("malformed response from the operator: {0}")]
    Response(String),
    #[error(transparent)]
    Invalid(#[from] InvalidBatch),
    #[error("unusable assignment: {0}")]
    Assignment(#[from] SpecError),
}

impl ReportError {
    pub fn reason(&self) -> &'static str {
        match self {
            ReportError::Config(_) => "ReporterConfigInvalid",
            ReportError::Token { .. } => "TokenUnreadable",
            ReportError::Ca { .. } => "OperatorCaUnreadable",
            ReportError::Connect(_) => "OperatorUnreachable",
            ReportError::Transport(_) => "OperatorTransportError",
            ReportError::Timeout => "OperatorTimeout",
            ReportError::Refused { .. } => "OperatorRefused",
            ReportError::Unavailable { .. } => "OperatorUnavailable",
            ReportError::Response(_) => "OperatorResponseMalformed",
            ReportError::Invalid(e) => e.reason(),
            ReportError::Assignment(e) => e.reason(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outbox.

/// Bounds of the outbox.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Most serialized bytes held (estimated per bucket).
    pub max_bytes: usize,
    /// Oldest bucket kept, measured from when it entered the outbox.
    pub max_age: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits {
            max_bytes: 16 * 1024 * 1024,
            max_age: Duration::from_secs(3_600),
        }
    }
}

#[derive(Debug)]
struct Pending {
    report: BucketReport,
    bytes: usize,
    added: Instant,
}

/// Closed buckets not yet acknowledged, in `seq` order, bounded by bytes and age (oldest dropped
/// first, drops counted).
#[derive(Debug)]
pub struct Outbox {
    limits: OutboxLimits,
    queue: VecDeque<Pending>,
    bytes: usize,
    dropped: u64,
}

/// Serialized size of a bucket (an estimate is enough; falls back to a generous guess).
fn encoded_len(b: &BucketReport) -> usize {
    serde_json::to_vec(b).map(|v| v.len()).unwrap_or(4_096)
}

impl Outbox {
    pub fn new(limits: OutboxLimits) -> Self {
        Outbox {
            limits,
            queue: VecDeque::new(),
            bytes: 0,
            dropped: 0,
        }
    }

    /// Adds a closed bucket (buckets arrive in `seq` order), dropping the oldest when over a
    /// bound.
    pub fn push(&mut self, report: BucketReport, now: Instant) {
        let bytes = encoded_len(&report) + 1;
        self.bytes += bytes;
        self.queue.push_back(Pending {
            report,
            bytes,
            added: now,
        });
        self.enforce(now);
    }

    /// Drops what is older than `max_age` or beyond `max_bytes`, oldest first.
    pub fn enforce(&mut self, now: Instant) {
        while let Some(front) = self.queue.front() {
            let too_old = now.saturating_duration_since(front.added) > self.limits.max_age;
            // Always keep the newest bucket, whatever its size.
            let too_big = self.bytes > self.limits.max_bytes && self.queue.len() > 1;
            if !(too_old || too_big) {
                break;
            }
            if let Some(p) = self.queue.pop_front() {
                self.bytes -= p.bytes;
                self.dropped += 1;
            }
        }
    }

    /// The oldest buckets, at most `max_buckets` of them and about `max_bytes` (at least one).
    pub fn peek_batch(&self, max_buckets: usize, max_bytes: usize) -> Vec<BucketReport> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for p in &self.queue {
            if out.len() >= max_buckets.max(1) || (!out.is_empty() && bytes + p.bytes > max_bytes) {
                break;
            }
            bytes += p.bytes;
            out.push(p.report.clone());
        }
        out
    }

    /// Removes every bucket with `seq <= through` (a settled batch is always a prefix).
    pub fn settle_through(&mut self, through: u64) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|p| p.report.seq <= through) {
            if let Some(p) = self.queue.pop_front() {
                self.bytes -= p.bytes;
                n += 1;
            }
        }
        n
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Estimated serialized bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Buckets dropped because of a bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

// ---------------------------------------------------------------------------------------------
// Backoff.

/// Exponential backoff with jitter: each delay is uniform in `[d/2, d]`, `d` doubling from
/// `min` to `max`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        let frac = (random_u64() >> 11) as f64 / (1u64 << 53) as f64;
        d.mul_f64(0.5 + 0.5 * frac)
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

// ---------------------------------------------------------------------------------------------
// Client.

/// Agent-side channel settings.
#[derive(Debug, Clone)]
pub struct ReporterConfig {
    /// `https://host:port` of the operator's channel.
    pub operator_url: Uri,
    /// PEM CA certificate(s) of the operator's serving certificate (re-read per connection).
    pub ca_file: PathBuf,
    /// Projected service-account token (re-read per request).
    pub token_file: PathBuf,
    /// This agent's name (by default its node name); also the default source label.
    pub agent_name: String,
    /// Connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// One result request.
    pub request_timeout: Duration,
    /// How long the operator may hold an assignment long-poll.
    pub poll_wait: Duration,
    /// How often closed buckets are moved to the outbox and sent.
    pub flush_interval: Duration,
    pub outbox: OutboxLimits,
    /// Most buckets per batch and about the most bytes per batch.
    pub batch_buckets: usize,
    pub batch_bytes: usize,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Where the last assignment is saved, so a restarted agent probes on even while the
    /// operator is away (an `emptyDir` survives container restarts).
    pub assignment_cache: Option<PathBuf>,
}

impl ReporterConfig {
    /// Defaults for everything but the endpoint, files and name.
    pub fn new(
        operator_url: Uri,
        ca_file: PathBuf,
        token_file: PathBuf,
        agent_name: String,
    ) -> Self {
        ReporterConfig {
            operator_url,
            ca_file,
            token_file,
            agent_name,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            poll_wait: Duration::from_secs(30),
            flush_interval: Duration::from_secs(1),
            outbox: OutboxLimits::default(),
            batch_buckets: 1_000,
            batch_bytes: 1024 * 1024,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            assignment_cache: None,
        }
    }
}

/// Counters of the agent side, cumulative since start.
#[derive(Debug, Default)]
pub struct ReporterStats {
    pub batches_sent: AtomicU64,
    pub buckets_accepted: AtomicU64,
    pub buckets_duplicate: AtomicU64,
    pub buckets_refused: AtomicU64,
    /// Buckets given up because the operator called the batch malformed (a bug somewhere).
    pub buckets_rejected: AtomicU64,
    pub send_errors: AtomicU64,
    pub assignments_received: AtomicU64,
    pub assignment_errors: AtomicU64,
    /// Channels opened, and those that ended in an error (dialled again with backoff).
    pub channels_opened: AtomicU64,
    pub channel_errors: AtomicU64,
    /// Unix ms when the operator last confirmed the assignment (sent one that compiled, or
    /// said it is unchanged); 0 until then. Shared with the assignment-age gauge.
    pub assignment_confirmed_unix_ms: Arc<AtomicI64>,
}

#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    authority: String,
    base_path: String,
}

fn parse_target(uri: &Uri) -> Result<Target, ReportError> {
    if uri.scheme_str() != Some("https") {
        return Err(ReportError::Config(format!(
            "{uri}: the operator URL must be https"
        )));
    }
    let auth = uri
        .authority()
        .ok_or_else(|| ReportError::Config(format!("{uri}: no host")))?;
    if auth.as_str().contains('@') {
        return Err(ReportError::Config(format!(
            "{uri}: credentials in URLs are not supported"
        )));
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    let server_name = ServerName::try_from(host.to_owned())
        .map_err(|_| ReportError::Config(format!("{uri}: invalid host")))?;
    Ok(Target {
        host: host.to_owned(),
        port: auth.port_u16().unwrap_or(443),
        server_name,
        authority: auth.as_str().to_owned(),
        base_path: uri.path().trim_end_matches('/').to_owned(),
    })
}

type Sender = SendRequest<Full<Bytes>>;

/// One request to make.
#[derive(Debug)]
struct Call<'a> {
    method: Method,
    path: &'a str,
    headers: &'a [(&'a str, String)],
    body: Bytes,
    timeout: Duration,
    max_body: usize,
}

/// A batch encoded for sending, with what settling it needs.
#[derive(Debug)]
struct OutgoingBatch {
    seq_from: u64,
    seq_to: u64,
    buckets: u64,
    body: Bytes,
}

/// One keep-alive connection, re-established on demand.
#[derive(Debug, Default)]
struct Slot(tokio::sync::Mutex<Option<Sender>>);

/// The agent's channel client and result buffer.
#[derive(Debug)]
pub struct Reporter {
    cfg: ReporterConfig,
    target: Target,
    boot_id: String,
    poll: Slot,
    post: Slot,
    outbox: Mutex<Outbox>,
    /// Current batch size bound (halved after a 413).
    batch_buckets: AtomicU64,
    /// Version of the assignment held (at first the cached one): what the operator is told
    /// the agent has, by `If-None-Match`.
    version: Mutex<Option<String>>,
    node_addresses: Mutex<HeldNodeAddresses>,
    /// The one-shots of the current assignment, compiled, for [`Reporter::run_one_shots`].
    one_shots: watch::Sender<Arc<[OneShotJob]>>,
    stats: ReporterStats,
}

impl Reporter {
    pub fn new(cfg: ReporterConfig) -> Result<Self, ReportError> {
        validate_agent_name(&cfg.agent_name).map_err(|e| ReportError::Config(e.to_string()))?;
        let target = parse_target(&cfg.operator_url)?;
        Ok(Reporter {
            target,
            boot_id: new_boot_id(),
            poll: Slot::default(),
            post: Slot::default(),
            outbox: Mutex::new(Outbox::new(cfg.outbox)),
            batch_buckets: AtomicU64::new(cfg.batch_buckets.clamp(1, MAX_BATCH_BUCKETS) as u64),
            version: Mutex::new(None),
            node_addresses: Mutex::default(),
            one_shots: watch::Sender::new(Arc::from([])),
            stats: ReporterStats::default(),
            cfg,
        })
    }

    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    pub fn agent_name(&self) -> &str {
        &self.cfg.agent_name
    }

    pub fn stats(&self) -> &ReporterStats {
        &self.stats
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Buckets waiting for an acknowledgement.
    pub fn pending(&self) -> usize {
        self.outbox().len()
    }

    /// Buckets dropped so far: outbox bounds plus the engine aggregator's own bound.
    pub fn dropped(&self, engine: &Engine) -> u64 {
        self.outbox().dropped() + engine.with_aggregator(|a| a.dropped())
    }

    fn read_token(&self) -> Result<String, ReportError> {
        let path = &self.cfg.token_file;
        let err = |message: String| ReportError::Token {
            path: path.display().to_string(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.len() > MAX_TOKEN_BYTES as u64 {
            return Err(err(format!("larger than {MAX_TOKEN_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let token = text.trim();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("empty or not a printable token".into()));
        }
        Ok(token.to_owned())
    }

    /// A TLS connection to the operator, the CA read anew.
    async fn connect_tls(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ReportError> {
        let path = &self.cfg.ca_file;
        let ca_err = |message: String| ReportError::Ca {
            path: path.display().to_string(),
            message,
        };
        let pem = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ca_err(e.to_string()))?;
        let certificates = parse_ca_bundle(&pem).map_err(ca_err)?;
        let tls = crate::probe::http::tls_config(Some(certificates)).map_err(ca_err)?;
        let t = &self.target;
        let connect = async {
            let tcp = TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|e| ReportError::Connect(format!("{}: {e}", t.authority)))?;
            let _ = tcp.set_nodelay(true);
            tokio_rustls::TlsConnector::from(tls)
                .connect(t.server_name.clone(), tcp)
                .await
                .map_err(|e| ReportError::Connect(format!("TLS with {}: {e}", t.authority)))
        };
        tokio::time::timeout(self.cfg.connect_timeout, connect)
            .await
            .map_err(|_| ReportError::Connect(format!("{}: timed out", t.authority)))?
    }

    async fn connect(&self) -> Result<Sender, ReportError> {
        let tls = self.connect_tls().await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ReportError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "operator connection closed");
            }
        });
        Ok(sender)
    }

    /// Sends one request on the slot's connection (opening one if needed) and reads the
    /// response body up to `max_body` bytes.
    async fn exchange(
        &self,
        slot: &Slot,
        call: Call<'_>,
    ) -> Result<(StatusCode, Bytes), ReportError> {
        let Call {
            method,
            path,
            headers,
            body,
            timeout,
            max_body,
        } = call;
        let token = self.read_token()?;
        let mut guard = slot.0.lock().await;
        let result = tokio::time::timeout(timeout, async {
            let mut sender = match guard.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.connect().await?,
            };
            sender
                .ready()
                .await
                .map_err(|e| ReportError::Transport(e.to_string()))?;
            let mut req = Request::builder()
                .method(method)
                .uri(format!("{}{path}", self.target.base_path))
                .header(header::HOST, &self.target.authority)
                .header(header::USER_AGENT, "netslo-agent")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json");
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let req = req
                .body(Full::new(body))
                .map_err(|e| ReportError::Transport(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| ReportError::Transport(e.to_string()))?;
            let (parts, incoming) = resp.into_parts();
            let bytes = Limited::new(incoming, max_body)
                .collect()
                .await
                .map_err(|e| ReportError::Transport(format!("reading the response: {e}")))?
                .to_bytes();
            Ok::<_, ReportError>((sender, parts.status, bytes))
        })
        .await;
        match result {
            Ok(Ok((sender, status, bytes))) => {
                *guard = Some(sender);
                Ok((status, bytes))
            }
            // The connection is dropped on any failure: the next request opens a new one.
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ReportError::Timeout),
        }
    }

    /// Fetches the assignment; `known` is the version already held. `Ok(None)`: unchanged
    /// after waiting up to `wait`.
    pub async fn fetch_assignment(
        &self,
        known: Option<&str>,
        wait: Duration,
    ) -> Result<Option<AssignmentEnvelope>, ReportError> {
        let wait = wait.min(MAX_WAIT);
        let mut headers = vec![
            (AGENT_HEADER, self.cfg.agent_name.clone()),
            (FEATURES_HEADER, FEATURE_ONE_SHOTS.to_owned()),
            (WAIT_HEADER, wait.as_secs().to_string()),
            (NODE_ADDRESSES_HEADER, self.held_node_addresses().header()),
        ];
        if let Some(v) = known {
            headers.push((header::IF_NONE_MATCH.as_str(), format!("\"{v}\"")));
        }
        let call = Call {
            method: Method::GET,
            path: ASSIGNMENT_PATH,
            headers: &headers,
            body: Bytes::new(),
            timeout: wait + self.cfg.request_timeout,
            max_body: MAX_ASSIGNMENT_RESPONSE_BYTES,
        };
        let (status, body) = self.exchange(&self.poll, call).await?;
        match status {
            StatusCode::NOT_MODIFIED => Ok(None),
            StatusCode::OK => self.read_envelope(&body).map(Some),
            s => Err(status_error(s, &body)),
        }
    }

    /// The assignment the previous run saved (`assignment_cache`), compiled: what to probe
    /// until the operator answers. Its version becomes the first `If-None-Match`.
    pub fn load_cached_assignment(&self) -> Option<Jobs> {
        let path = self.cfg.assignment_cache.as_ref()?;
        let loaded = (|| {
            let meta = std::fs::metadata(path).ok()?;
            if meta.len() > MAX_ASSIGNMENT_RESPONSE_BYTES as u64 {
                return Some(Err("too large".to_owned()));
            }
            let bytes = std::fs::read(path).ok()?;
            Some(
                serde_json::from_slice::<AssignmentEnvelope>(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|mut env| {
                        // Saved whole; held again, so the first request need not fetch them.
                        self.held_node_addresses()
                            .complete(&mut env)
                            .map_err(|e| e.to_string())?;
                        compile(&env.assignment, &self.cfg.agent_name)
                            .map(|jobs| (env.version, jobs))
                            .map_err(|e| e.to_string())
                    }),
            )
        })();
        match loaded {
            None => None,
            Some(Ok((version, jobs))) => {
                tracing::info!(%version, targets = jobs.len(), cache = %path.display(),
                    "probing the cached assignment until the operator answers");
                *self.version() = Some(version);
                Some(jobs)
            }
            Some(Err(e)) => {
                tracing::warn!(cache = %path.display(), "ignoring the cached assignment: {e}");
                None
            }
        }
    }

    fn version(&self) -> MutexGuard<'_, Option<String>> {
        self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn held_node_addresses(&self) -> MutexGuard<'_, HeldNodeAddresses> {
        self.node_addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn confirm_assignment(&self) {
        self.stats
            .assignment_confirmed_unix_ms
            .store(now_unix_ms(), Ordering::Relaxed);
    }

    fn save_assignment(&self, env: &AssignmentEnvelope) {
        let Some(path) = &self.cfg.assignment_cache else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(env)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(cache = %path.display(), error = %e, "cannot save the assignment");
        }
    }

    /// Follows assignment updates forever, compiling each new one into `jobs`. When the
    /// operator is unreachable or sends something unusable, the engine keeps the last jobs.
    pub async fn follow_assignments(&self, jobs: &watch::Sender<Jobs>) {
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max);
        loop {
            let version = self.version().clone();
            match self
                .fetch_assignment(version.as_deref(), self.cfg.poll_wait)
                .await
            {
                Ok(None) => {
                    backoff.reset();
                    self.confirm_assignment();
                }
                Ok(Some(env)) => {
                    backoff.reset();
                    self.apply_assignment(env, jobs);
                }
                Err(e) => {
                    self.stats.assignment_errors.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        reason = e.reason(),
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot fetch the assignment, probing on with the last one: {e}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Compiles a new assignment into `jobs` (and its one-shots); an unusable one leaves the
    /// engine on the previous jobs.
    fn apply_assignment(&self, env: AssignmentEnvelope, jobs: &watch::Sender<Jobs>) {
        self.stats
            .assignments_received
            .fetch_add(1, Ordering::Relaxed);
        match compile(&env.assignment, &self.cfg.agent_name) {
            Ok(compiled) => {
                tracing::info!(
                    version = %env.version,
                    checks = env.assignment.checks.len(),
                    targets = compiled.len(),
                    "assignment received"
                );
                jobs.send_replace(compiled);
                match compile_one_shots(&env.assignment, &self.cfg.agent_name) {
                    Ok(one_shots) => {
                        self.one_shots.send_replace(one_shots);
                    }
                    Err(e) => tracing::warn!(
                        reason = e.reason(),
                        "cannot run the assignment's one-shot probes: {e}"
                    ),
                }
                self.confirm_assignment();
                self.save_assignment(&env);
            }
            Err(e) => {
                self.stats.assignment_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason = e.reason(), version = %env.version,
                    "keeping the previous assignment: {e}");
            }
        }
        // Even an unusable version is remembered: the operator must send a new one.
        *self.version() = Some(env.version);
    }

    /// Checks an envelope from the operator and completes its node addresses.
    fn read_envelope(&self, body: &[u8]) -> Result<AssignmentEnvelope, ReportError> {
        let mut env: AssignmentEnvelope =
            serde_json::from_slice(body).map_err(|e| ReportError::Response(e.to_string()))?;
        self.held_node_addresses().complete(&mut env)?;
        env.assignment.validate()?;
        if env.version.is_empty() || env.version.len() > 128 {
            return Err(ReportError::Response("version of 1 to 128 bytes".into()));
        }
        Ok(env)
    }

    /// Runs each one-shot probe of the assignment once, as it arrives (side by side: one
    /// probe's timeouts do not hold up another's), and reports it.
    pub async fn run_one_shots(self: Arc<Self>, engine: Arc<Engine>) {
        let mut current = self.one_shots.subscribe();
        // Ids run while they are still assigned: the operator keeps a one-shot in the
        // assignment until it has stored the report.
        let mut done: HashSet<String> = HashSet::new();
        let mut running = tokio::task::JoinSet::new();
        loop {
            let one_shots = current.borrow_and_update().clone();
            done.retain(|id| one_shots.iter().any(|o| o.id == *id));
            for one in one_shots.iter() {
                if !done.insert(one.id.clone()) {
                    continue;
                }
                tracing::info!(id = %one.id, targets = one.jobs.len(), count = one.count,
                    "running a one-shot probe");
                let (reporter, engine, one) = (self.clone(), engine.clone(), one.clone());
                running.spawn(async move {
                    let report = one_shot::run(
                        &engine,
                        &reporter.cfg.agent_name,
                        &one,
                        TraceSettings::default(),
                    )
                    .await;
                    reporter.send_one_shot(&report).await;
                });
            }
            tokio::select! {
                changed = current.changed() => if changed.is_err() { break },
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Sends a one-shot report, retrying while the operator is away (a few times: the
    /// ConnectivityProbe that asked times out meanwhile anyway).
    async fn send_one_shot(&self, report: &OneShotReport) {
        let body = match serde_json::to_vec(report) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::error!("cannot encode a one-shot report: {e}");
                return;
            }
        };
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max);
        // A connection of its own, closed once the report is in: one-shots are rare, and an
        // agent otherwise holds only its channel to the operator.
        let connection = Slot::default();
        for _ in 0..5 {
            let call = Call {
                method: Method::POST,
                path: ONE_SHOT_PATH,
                headers: &[],
                body: body.clone(),
                timeout: self.cfg.request_timeout,
                max_body: MAX_SMALL_RESPONSE_BYTES,
            };
            let error = match self.exchange(&connection, call).await {
                Ok((StatusCode::OK, _)) => return,
                Ok((status, body)) => status_error(status, &body),
                Err(e) => e,
            };
            if matches!(error, ReportError::Refused { .. }) {
                tracing::warn!(id = %report.id, reason = error.reason(),
                    "the operator refused a one-shot report: {error}");
                return;
            }
            let delay = backoff.next_delay();
            tracing::warn!(id = %report.id, reason = error.reason(),
                retry_in_ms = delay.as_millis() as u64, "cannot report a one-shot probe: {error}");
            tokio::time::sleep(delay).await;
        }
    }

    /// Moves every closed bucket from the engine's aggregator into the outbox.
    pub fn collect(&self, engine: &Engine) -> usize {
        let closed = engine.with_aggregator(|a| a.drain());
        let n = closed.len();
        let now = Instant::now();
        let mut outbox = self.outbox();
        for b in closed {
            outbox.push(b, now);
        }
        outbox.enforce(now);
        n
    }

    /// The next batch of the oldest pending buckets, encoded; `None` when nothing is pending.
    fn next_batch(&self, engine: &Engine) -> Result<Option<OutgoingBatch>, ReportError> {
        let limit = usize::try_from(self.batch_buckets.load(Ordering::Relaxed)).unwrap_or(1);
        let buckets = self.outbox().peek_batch(limit, self.cfg.batch_bytes);
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return Ok(None);
        };
        let (seq_from, seq_to, buckets_len) = (first.seq, last.seq, buckets.len() as u64);
        let batch = ResultBatch {
            agent_name: self.cfg.agent_name.clone(),
            boot_id: self.boot_id.clone(),
            seq_from,
            seq_to,
            dropped_buckets: self.dropped(engine),
            buckets,
        };
        let body = serde_json::to_vec(&batch).map_err(|e| ReportError::Transport(e.to_string()))?;
        Ok(Some(OutgoingBatch {
            seq_from,
            seq_to,
            buckets: buckets_len,
            body: Bytes::from(body),
        }))
    }

    /// Sends one batch of the oldest pending buckets. `Ok(None)` when nothing is pending.
    pub async fn send_batch(&self, engine: &Engine) -> Result<Option<BatchAck>, ReportError> {
        let Some(batch) = self.next_batch(engine)? else {
            return Ok(None);
        };
        let call = Call {
            method: Method::POST,
            path: RESULTS_PATH,
            headers: &[],
            body: batch.body.clone(),
            timeout: self.cfg.request_timeout,
            max_body: MAX_SMALL_RESPONSE_BYTES,
        };
        let (status, body) = match self.exchange(&self.post, call).await {
            Ok(r) => r,
            Err(e) => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        self.settle_batch(&batch, status, &body).map(Some)
    }

    /// Settles a sent batch by the operator's answer (`body`: the ack, or an error body).
    fn settle_batch(
        &self,
        batch: &OutgoingBatch,
        status: StatusCode,
        body: &[u8],
    ) -> Result<BatchAck, ReportError> {
        let (seq_from, seq_to, n) = (batch.seq_from, batch.seq_to, batch.buckets);
        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        match status {
            StatusCode::OK => {
                let ack: BatchAck = serde_json::from_slice(body)
                    .map_err(|e| ReportError::Response(e.to_string()))?;
                self.outbox().settle_through(seq_to);
                self.stats
                    .buckets_accepted
                    .fetch_add(ack.accepted, Ordering::Relaxed);
                self.stats
                    .buckets_duplicate
                    .fetch_add(ack.duplicates, Ordering::Relaxed);
                self.stats
                    .buckets_refused
                    .fetch_add(ack.refused.len() as u64, Ordering::Relaxed);
                for r in ack.refused.iter().take(3) {
                    tracing::warn!(seq = r.seq, reason = %r.reason, "operator refused a bucket");
                }
                Ok(ack)
            }
            StatusCode::PAYLOAD_TOO_LARGE if n > 1 => {
                self.batch_buckets.store((n / 2).max(1), Ordering::Relaxed);
                Err(status_error(status, body))
            }
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                // Resending cannot help: give the batch up rather than block everything after it.
                self.outbox().settle_through(seq_to);
                self.stats.buckets_rejected.fetch_add(n, Ordering::Relaxed);
                let e = status_error(status, body);
                tracing::error!(reason = e.reason(), seq_from, seq_to, "batch rejected: {e}");
                Err(e)
            }
            s => {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                Err(status_error(s, body))
            }
        }
    }

    /// Sends batches until the outbox is empty or a send fails.
    pub async fn send_pending(&self, engine: &Engine) -> Result<(), ReportError> {
        while self.send_batch(engine).await?.is_some() {}
        Ok(())
    }

    /// Collects and sends forever, backing off (with jitter) while the operator is away;
    /// nothing leaves the outbox unacknowledged.
    pub async fn report_results(&self, engine: &Engine) {
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max);
        let mut next_try = Instant::now();
        let mut tick =
            tokio::time::interval(self.cfg.flush_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.collect(engine);
            if Instant::now() < next_try || self.outbox().is_empty() {
                continue;
            }
            match self.send_pending(engine).await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    let delay = backoff.next_delay();
                    next_try = Instant::now() + delay;
                    tracing::warn!(
                        reason = e.reason(),
                        pending = self.pending(),
                        retry_in_ms = delay.as_millis() as u64,
                        "cannot report results: {e}"
                    );
                }
            }
        }
    }

    /// After the engine stopped (its open windows flushed): collects and tries to send
    /// everything pending until `deadline` passes. Returns what is still pending.
    pub async fn flush(&self, engine: &Engine, deadline: Duration) -> usize {
        let until = Instant::now() + deadline;
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max.min(deadline));
        loop {
            self.collect(engine);
            match tokio::time::timeout_at(until.into(), self.send_pending(engine)).await {
                Ok(Ok(())) => return self.pending(),
                Ok(Err(e)) => {
                    tracing::warn!(reason = e.reason(), pending = self.pending(), "flush: {e}");
                }
                Err(_) => return self.pending(),
            }
            let delay = backoff.next_delay();
            if Instant::now() + delay >= until {
                return self.pending();
            }
            tokio::time::sleep(delay).await;
        }
    }
}

fn status_error(status: StatusCode, body: &[u8]) -> ReportError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|e| format!("{}: {}", e.reason, e.message))
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned());
    let status = status.as_u16();
    if status == 429 || status >= 500 {
        ReportError::Unavailable { status, message }
    } else {
        ReportError::Refused { status, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netslo_protocol::bucket::Bucket;
    use netslo_protocol::spec::Assignment;
    use std::sync::Arc;

    fn report(seq: u64) -> BucketReport {
        let mut bucket = Bucket::new(Arc::from(vec![1_000u64]));
        bucket.total = 3;
        bucket.good = 2;
        bucket.bad = 1;
        bucket.good_within = vec![1];
        bucket.latency.record(500);
        bucket.latency.record(1_500);
        BucketReport {
            seq,
            check: "ns/c".into(),
            target: "t".into(),
            source: "node-a".into(),
            start_unix_ms: 1_000,
            duration_ms: 10_000,
            bucket,
            p50_us: None,
            p90_us: None,
            p99_us: None,
        }
    }

    #[test]
    fn outbox_drops_oldest_by_bytes_and_counts() {
        // Two-digit seqs throughout: every bucket encodes to the same size.
        let one = encoded_len(&report(11)) + 1;
        let mut ob = Outbox::new(OutboxLimits {
            max_bytes: one * 10,
            max_age: Duration::from_secs(3_600),
        });
        let t0 = Instant::now();
        for s in 11..=35 {
            ob.push(report(s), t0);
        }
        assert_eq!(ob.len(), 10);
        assert!(ob.bytes() <= one * 10);
        assert_eq!(ob.dropped(), 15);
        let b = ob.peek_batch(4, usize::MAX);
        assert_eq!(
            b.iter().map(|b| b.seq).collect::<Vec<_>>(),
            vec![26, 27, 28, 29]
        );
        // Peeking removes nothing; settling removes exactly the prefix.
        assert_eq!(ob.len(), 10);
        assert_eq!(ob.settle_through(29), 4);
        assert_eq!(ob.peek_batch(100, usize::MAX)[0].seq, 30);
        // Byte-bounded batches hold at least one bucket.
        assert_eq!(ob.peek_batch(100, 1).len(), 1);
        assert_eq!(ob.peek_batch(100, one * 3).len(), 3);
        // Settling what is already gone is harmless.
        assert_eq!(ob.settle_through(5), 0);
    }

    #[test]
    fn outbox_drops_by_age_and_keeps_an_oversized_newest_bucket() {
        let mut ob = Outbox::new(OutboxLimits {
            max_bytes: 10,
            max_age: Duration::from_secs(60),
        });
        let t0 = Instant::now();
        ob.push(report(1), t0);
        assert_eq!(
            ob.len(),
            1,
            "the newest bucket stays even if larger than the bound"
        );
        ob.push(report(2), t0);
        assert_eq!((ob.len(), ob.dropped()), (1, 1));
        let mut ob = Outbox::new(OutboxLimits {
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(60),
        });
        ob.push(report(1), t0);
        ob.push(report(2), t0 + Duration::from_secs(30));
        ob.enforce(t0 + Duration::from_secs(61));
        assert_eq!((ob.len(), ob.dropped()), (1, 1));
        ob.push(report(3), t0 + Duration::from_secs(200));
        assert_eq!((ob.len(), ob.dropped()), (1, 2));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[2] >= Duration::from_millis(200) && d[2] <= Duration::from_millis(400));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(1)));
        assert!(d[7] >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn operator_urls_must_be_https_without_credentials() {
        assert!(parse_target(&"http://op:8443".parse().unwrap()).is_err());
        assert!(parse_target(&"https://u:p@op:8443".parse().unwrap()).is_err());
        let t = parse_target(
            &"https://netslo.netslo-system.svc:8443/base/"
                .parse()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.base_path.as_str()),
            ("netslo.netslo-system.svc", 8443, "/base")
        );
        let t = parse_target(&"https://[::1]:9".parse().unwrap()).unwrap();
        assert_eq!(t.host, "::1");
        assert!(matches!(t.server_name, ServerName::IpAddress(_)));
    }

    #[test]
    fn assignments_are_cached_for_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ReporterConfig::new(
            "https://127.0.0.1:1".parse().unwrap(),
            dir.path().join("ca.crt"),
            dir.path().join("token"),
            "node-a".into(),
        );
        let r = Reporter::new(cfg.clone()).unwrap();
        assert!(r.load_cached_assignment().is_none(), "no cache configured");
        cfg.assignment_cache = Some(dir.path().join("assignment.json"));
        let r = Reporter::new(cfg.clone()).unwrap();
        assert!(r.load_cached_assignment().is_none(), "nothing cached yet");
        let doc = r#"{"checks":[{"name":"ns/a","probe":{"tcp":{}},"targets":[{"address":"127.0.0.1:1"}]}]}"#;
        let mut assignment = Assignment::from_json(doc.as_bytes()).unwrap();
        assignment.node_addresses = Arc::from(vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let env = AssignmentEnvelope {
            version: "v7".into(),
            node_addresses_digest: node_addresses_digest(&assignment.node_addresses),
            node_addresses_held: false,
            assignment,
        };
        r.save_assignment(&env);
        let next = Reporter::new(cfg.clone()).unwrap();
        let jobs = next.load_cached_assignment().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(&*jobs[0].key.source, "node-a");
        assert_eq!(next.version().as_deref(), Some("v7"));
        assert_eq!(
            next.held_node_addresses().header(),
            env.node_addresses_digest,
            "the cached addresses are held: the first request need not fetch them again"
        );
        std::fs::write(dir.path().join("assignment.json"), "{garbage").unwrap();
        assert!(
            Reporter::new(cfg)
                .unwrap()
                .load_cached_assignment()
                .is_none()
        );
    }

    #[test]
    fn held_node_addresses_fill_envelopes_that_leave_them_out() {
        let list: Arc<[IpAddr]> = Arc::from(vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let digest = node_addresses_digest(&list);
        let envelope = |addresses: &[IpAddr], digest: &str, held: bool| AssignmentEnvelope {
            version: "v1".into(),
            node_addresses_digest: digest.into(),
            node_addresses_held: held,
            assignment: Assignment {
                source: None,
                checks: vec![],
                node_addresses: Arc::from(addresses),
                cluster_cidrs: vec![],
                one_shots: vec![],
            },
        };
        let mut held = HeldNodeAddresses::default();
        assert_eq!(held.header(), NO_NODE_ADDRESSES);
        let mut left_out = envelope(&[], &digest, true);
        assert_eq!(
            held.complete(&mut left_out).unwrap_err().reason(),
            "OperatorResponseMalformed",
            "addresses this agent does not hold cannot be left out"
        );
        let mut whole = envelope(&list, &digest, false);
        held.complete(&mut whole).unwrap();
        assert_eq!(held.header(), digest);
        let mut left_out = envelope(&[], &digest, true);
        held.complete(&mut left_out).unwrap();
        assert_eq!(left_out.assignment.node_addresses, list);
        assert!(!left_out.node_addresses_held, "saved whole");

        let mut mismatched = envelope(&list, "0000000000000000", false);
        assert!(held.complete(&mut mismatched).is_err());
        assert_eq!(held.header(), NO_NODE_ADDRESSES, "asks for the list again");
        let mut old_operator = envelope(&list, "", false);
        held.complete(&mut old_operator).unwrap();
        assert_eq!(old_operator.assignment.node_addresses, list);
    }

    #[test]
    fn tokens_are_read_fresh_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let cfg = ReporterConfig::new(
            "https://127.0.0.1:1".parse().unwrap(),
            dir.path().join("ca.crt"),
            token.clone(),
            "node-a".into(),
        );
        let r = Reporter::new(cfg).unwrap();
        assert_eq!(r.read_token().unwrap_err().reason(), "TokenUnreadable");
        std::fs::write(&token, "abc.def.ghi\n").unwrap();
        assert_eq!(r.read_token().unwrap(), "abc.def.ghi");
        std::fs::write(&token, "rotated").unwrap();
        assert_eq!(r.read_token().unwrap(), "rotated");
        std::fs::write(&token, "bad token\r\n").unwrap();
        assert!(r.read_token().is_err());
        std::fs::write(&token, vec![b'a'; MAX_TOKEN_BYTES + 1]).unwrap();
        assert!(r.read_token().is_err());
    }
}
