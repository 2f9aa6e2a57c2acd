//! The HTTPS server agents talk to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use netslo_protocol::channel::{
    AGENT_HEADER, ASSIGNMENT_PATH, BatchAck, ErrorBody, FEATURE_ONE_SHOTS, FEATURES_HEADER,
    MAX_BATCH_BYTES, MAX_ONE_SHOT_REPORT_BYTES, NODE_ADDRESSES_HEADER, ONE_SHOT_PATH,
    OneShotReport, RESULTS_PATH, RefusedBucket, ResultBatch, WAIT_HEADER, validate_agent_name,
};
use netslo_protocol::frame::{CHANNEL_PATH, CHANNEL_UPGRADE, MAX_CHANNEL_AGE};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use super::ChannelError;
use super::auth::{AgentIdentity, TokenVerifier};
use super::dedup::Dedup;
use super::one_shot::OneShotInbox;
use super::sink::{AcceptedBatch, ResultSink, SinkError};
use super::source::{AgentEntry, AssignmentSource, HeldAddresses};
use super::stats::ChannelStats;
use super::stream::ChannelOpen;
use super::tls::ServingCert;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub listen: SocketAddr,
    /// Names of the serving certificate (DNS names or IP addresses as text).
    pub names: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most concurrent connections (one per agent, two for agents that speak HTTP only).
    pub max_connections: usize,
    /// Longest assignment long-poll, and longest an unplanned agent's channel waits to open.
    pub max_wait: Duration,
    /// Channels older than this are closed (agents dial again before, with a fresh token).
    pub max_channel_age: Duration,
    /// Whether `/v1/channel` upgrades (off: it answers 404, and agents use HTTP requests).
    pub upgrades: bool,
    /// TLS handshake, request head and request body deadlines.
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Most agents whose de-duplication state is kept.
    pub max_agents: usize,
    /// Most result bodies read and ingested at once (bounds memory: this × `max_body_bytes`).
    pub max_concurrent_batches: usize,
    /// Where one-shot reports go.
    pub one_shots: Arc<OneShotInbox>,
}

impl ChannelConfig {
    pub fn new(listen: SocketAddr, names: Vec<String>) -> Self {
        ChannelConfig {
            listen,
            names,
            max_body_bytes: MAX_BATCH_BYTES,
            max_connections: 12_000,
            max_wait: netslo_protocol::channel::MAX_WAIT,
            max_channel_age: MAX_CHANNEL_AGE + Duration::from_secs(5 * 60),
            upgrades: true,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            max_agents: 100_000,
            max_concurrent_batches: 32,
            one_shots: Arc::default(),
        }
    }
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) cfg: ChannelConfig,
    verifier: Arc<dyn TokenVerifier>,
    pub(super) source: Arc<dyn AssignmentSource>,
    sink: Arc<dyn ResultSink>,
    pub(super) stats: Arc<ChannelStats>,
    dedup: Dedup,
    /// Places for result bodies being read and ingested.
    pub(super) batches: Arc<Semaphore>,
}

/// A running channel server; dropping it stops it at once (every connection is cut, as if
/// the operator died).
#[derive(Debug)]
pub struct ChannelServer {
    local_addr: SocketAddr,
    ca_pem: String,
    stats: Arc<ChannelStats>,
    task: Option<JoinHandle<()>>,
}

impl Drop for ChannelServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl ChannelServer {
    /// Generates a serving certificate for `cfg.names` and starts serving.
    pub async fn start(
        cfg: ChannelConfig,
        verifier: Arc<dyn TokenVerifier>,
        source: Arc<dyn AssignmentSource>,
        sink: Arc<dyn ResultSink>,
    ) -> Result<Self, ChannelError> {
        let cert = ServingCert::generate(&cfg.names)?;
        Self::start_with_cert(cfg, &cert, verifier, source, sink).await
    }

    /// Starts serving with a given certificate.
    pub async fn start_with_cert(
        cfg: ChannelConfig,
        cert: &ServingCert,
        verifier: Arc<dyn TokenVerifier>,
        source: Arc<dyn AssignmentSource>,
        sink: Arc<dyn ResultSink>,
    ) -> Result<Self, ChannelError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config()?);
        let listener =
            TcpListener::bind(cfg.listen)
                .await
                .map_err(|source| ChannelError::Bind {
                    addr: cfg.listen,
                    source,
                })?;
        let local_addr = listener.local_addr().map_err(|source| ChannelError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let stats = Arc::new(ChannelStats::default());
        let state = Arc::new(State {
            dedup: Dedup::new(cfg.max_agents),
            batches: Arc::new(Semaphore::new(
                cfg.max_concurrent_batches.clamp(1, Semaphore::MAX_PERMITS),
            )),
            cfg,
            verifier,
            source,
            sink,
            stats: stats.clone(),
        });
        let task = tokio::spawn(accept_loop(listener, acceptor, state));
        tracing::info!(%local_addr, "agent channel listening");
        Ok(ChannelServer {
            local_addr,
            ca_pem: cert.ca_pem().to_owned(),
            stats,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The CA certificate (PEM) agents must trust; publish it with
    /// [`publish_ca`](super::publish_ca).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn stats(&self) -> &Arc<ChannelStats> {
        &self.stats
    }

    /// Stops at once, like dropping, and returns once the listening socket is closed (so the
    /// port can be bound again). Requests in flight are cut, unacknowledged.
    pub async fn stop(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
) {
    let permits = Arc::new(Semaphore::new(
        state.cfg.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    // Owned here: when this task is aborted, every connection task is aborted with it.
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let _ = stream.set_nodelay(true);
        ChannelStats::add(&state.stats.connections, 1);
        let acceptor = acceptor.clone();
        let state = state.clone();
        conns.spawn(async move {
            let _permit = permit;
            let tls =
                match tokio::time::timeout(state.cfg.handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let header_timeout = state.cfg.header_timeout;
            // A request that opens a channel leaves its upgrade here; the channel then runs in
            // this task, which holds the connection's permit and ends with the server.
            let opened: Arc<std::sync::Mutex<Option<ChannelOpen>>> = Arc::default();
            let svc = {
                let (state, opened) = (state.clone(), opened.clone());
                service_fn(move |req| {
                    let (state, opened) = (state.clone(), opened.clone());
                    async move { Ok::<_, Infallible>(state.handle(req, &opened).await) }
                })
            };
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(32 * 1024);
            // Boxed: the HTTP state is freed when the connection turns into a channel.
            let served = Box::pin(
                http.serve_connection(TokioIo::new(tls), svc)
                    .with_upgrades(),
            )
            .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "agent connection ended");
            }
            let open = opened.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(open) = open {
                state.serve_channel(open).await;
            }
        });
    }
}

/// A refused request: status, reason (PascalCase) and message.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) reason: &'static str,
    pub(super) message: String,
}

impl Refusal {
    pub(super) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let mut message: String = message.into();
        // Messages echo what agents sent: cut at a character boundary, never inside one.
        let mut end = message.len().min(512);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        Refusal {
            status,
            reason,
            message,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(&ErrorBody {
            reason: self.reason.to_owned(),
            message: self.message,
        })
        .unwrap_or_default();
        let mut resp = json_response(self.status, Bytes::from(body));
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
        }
        resp
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// The digest of the node addresses the agent says it holds; `None` from an agent that does
/// not know digests.
fn held_addresses(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(NODE_ADDRESSES_HEADER)
        .map(|v| v.to_str().unwrap_or_default())
}

/// Whether the agent says it runs one-shot probes.
fn runs_one_shots(headers: &HeaderMap) -> bool {
    headers
        .get(FEATURES_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|f| f.trim() == FEATURE_ONE_SHOTS))
}

/// The version an `If-None-Match` names (`"v"`, `W/"v"` or `v`).
fn known_version(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::IF_NONE_MATCH)?.to_str().ok()?.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v.trim_matches('"');
    (!v.is_empty() && v.len() <= 128).then(|| v.to_owned())
}

impl State {
    async fn handle(
        &self,
        req: Request<Incoming>,
        opened: &std::sync::Mutex<Option<ChannelOpen>>,
    ) -> Response<Full<Bytes>> {
        ChannelStats::add(&self.stats.requests, 1);
        let result = match (req.method(), req.uri().path()) {
            (&Method::GET, CHANNEL_PATH) if self.cfg.upgrades => {
                self.open_channel(req).await.map(|(resp, open)| {
                    *opened.lock().unwrap_or_else(|p| p.into_inner()) = Some(open);
                    resp
                })
            }
            (&Method::GET, ASSIGNMENT_PATH) => self.assignment(req.headers()).await,
            (&Method::POST, RESULTS_PATH) => self.results(req).await,
            (&Method::POST, ONE_SHOT_PATH) => self.one_shot_report(req).await,
            (_, CHANNEL_PATH) if !self.cfg.upgrades => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the channel is off (--channel-upgrade=false): use the HTTP endpoints",
            )),
            (_, CHANNEL_PATH | ASSIGNMENT_PATH | RESULTS_PATH | ONE_SHOT_PATH) => {
                Err(Refusal::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "method not allowed",
                ))
            }
            _ => Err(Refusal::new(
                StatusCode::NOT_FOUND,
                "NotFound",
                "no such endpoint",
            )),
        };
        match result {
            Ok(resp) => resp,
            Err(refusal) => {
                tracing::debug!(reason = refusal.reason, status = %refusal.status, "{}", refusal.message);
                refusal.into_response()
            }
        }
    }

    pub(super) fn malformed(
        &self,
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Refusal {
        ChannelStats::add(&self.stats.refused_malformed, 1);
        Refusal::new(status, reason, message)
    }

    pub(super) fn unavailable(&self, reason: &'static str, message: impl Into<String>) -> Refusal {
        ChannelStats::add(&self.stats.unavailable, 1);
        Refusal::new(StatusCode::SERVICE_UNAVAILABLE, reason, message)
    }

    /// The result store could not take or keep a batch: the agent keeps it and retries.
    fn sink_failed(&self, agent: &str, e: SinkError) -> Refusal {
        ChannelStats::add(&self.stats.sink_errors, 1);
        tracing::warn!(reason = e.reason(), agent, "{e}");
        self.unavailable(e.reason(), e.to_string())
    }

    fn forbidden(&self, reason: &'static str, message: impl Into<String>) -> Refusal {
        ChannelStats::add(&self.stats.refused_forbidden, 1);
        Refusal::new(StatusCode::FORBIDDEN, reason, message)
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<AgentIdentity>, Refusal> {
        let unauthenticated = |reason: &'static str, message: String| {
            ChannelStats::add(&self.stats.refused_unauthenticated, 1);
            Refusal::new(StatusCode::UNAUTHORIZED, reason, message)
        };
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(unauthenticated("TokenMissing", "no bearer token".into()));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(unauthenticated(
                "TokenMalformed",
                "expected Authorization: Bearer <token>".into(),
            ));
        };
        match self.verifier.verify(token).await {
            Ok(v) => Ok(v.identity),
            Err(e) if e.is_refusal() => Err(unauthenticated(e.reason(), e.to_string())),
            Err(e) => {
                tracing::warn!(reason = e.reason(), "cannot verify an agent token: {e}");
                Err(self.unavailable(e.reason(), e.to_string()))
            }
        }
    }

    /// The agent's entry, if the plan is in and `id` may act as `agent`.
    fn bind(&self, id: &AgentIdentity, agent: &str) -> Result<Arc<AgentEntry>, Refusal> {
        if !self.source.ready() {
            return Err(self.unavailable("NotReady", "assignments not planned yet"));
        }
        match self.source.agent(agent) {
            Some(entry) if entry.binding.permits(id) => Ok(entry),
            _ => Err(self.not_bound(id, agent)),
        }
    }

    /// Unknown agents and foreign identities get the same answer.
    pub(super) fn not_bound(&self, id: &AgentIdentity, agent: &str) -> Refusal {
        self.forbidden(
            "AgentForbidden",
            format!("{} may not act as agent {agent:?}", id.username),
        )
    }

    fn agent_header(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        headers
            .get(AGENT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|a| validate_agent_name(a).is_ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                self.malformed(
                    StatusCode::BAD_REQUEST,
                    "AgentNameInvalid",
                    format!("header {AGENT_HEADER} must name the agent"),
                )
            })
    }

    /// Upgrades `GET /v1/channel` to a channel once the agent is planned and the caller may
    /// act as it (waiting for a new node's agent to be planned, as a long-poll does).
    async fn open_channel(
        &self,
        mut req: Request<Incoming>,
    ) -> Result<(Response<Full<Bytes>>, ChannelOpen), Refusal> {
        let headers = req.headers();
        let id = self.authenticate(headers).await?;
        let agent = self.agent_header(headers)?;
        let upgrade = headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(CHANNEL_UPGRADE));
        if !upgrade {
            return Err(self.malformed(
                StatusCode::UPGRADE_REQUIRED,
                "UpgradeRequired",
                format!("{CHANNEL_PATH} needs Upgrade: {CHANNEL_UPGRADE}"),
            ));
        }
        let deadline = tokio::time::Instant::now() + self.cfg.max_wait;
        let mut changes = self.source.changes(&agent);
        loop {
            changes.borrow_and_update();
            let past = tokio::time::Instant::now() >= deadline;
            if self.source.ready() {
                match self.source.agent(&agent) {
                    Some(entry) if entry.binding.permits(&id) => break,
                    Some(_) => return Err(self.not_bound(&id, &agent)),
                    None if past => return Err(self.not_bound(&id, &agent)),
                    None => {}
                }
            } else if past {
                return Err(self.unavailable("NotReady", "assignments not planned yet"));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep_until(deadline).await,
            }
        }
        let open = ChannelOpen {
            on_upgrade: hyper::upgrade::on(&mut req),
            id,
            agent,
            held: held_addresses(req.headers()).map(str::to_owned),
            runs_one_shots: runs_one_shots(req.headers()),
            known: known_version(req.headers()),
        };
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        h.insert(
            header::UPGRADE,
            http::HeaderValue::from_static(CHANNEL_UPGRADE),
        );
        Ok((resp, open))
    }

    async fn assignment(&self, headers: &HeaderMap) -> Result<Response<Full<Bytes>>, Refusal> {
        let id = self.authenticate(headers).await?;
        let agent = self.agent_header(headers)?;
        let wait = match headers.get(WAIT_HEADER) {
            None => Duration::ZERO,
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(3_600)).min(self.cfg.max_wait))
                .ok_or_else(|| {
                    self.malformed(
                        StatusCode::BAD_REQUEST,
                        "WaitInvalid",
                        format!("header {WAIT_HEADER} must be whole seconds"),
                    )
                })?,
        };
        let known = known_version(headers);
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.source.changes(&agent);
        loop {
            changes.borrow_and_update();
            let past = tokio::time::Instant::now() >= deadline;
            if self.source.ready() {
                match self.source.agent(&agent) {
                    Some(entry) if !entry.binding.permits(&id) => {
                        return Err(self.not_bound(&id, &agent));
                    }
                    Some(entry) if known.as_deref() != Some(entry.version.as_str()) => {
                        let held = match held_addresses(headers) {
                            None => HeldAddresses::Unspoken,
                            Some(digest) => HeldAddresses::Digest(digest),
                        };
                        let body = entry.body_for(held, runs_one_shots(headers)).map_err(|e| {
                            self.unavailable("AssignmentUnavailable", e.to_string())
                        })?;
                        ChannelStats::add(&self.stats.assignments_served, 1);
                        let mut resp = json_response(StatusCode::OK, body);
                        if let Ok(v) =
                            http::HeaderValue::from_str(&format!("\"{}\"", entry.version))
                        {
                            resp.headers_mut().insert(header::ETAG, v);
                        }
                        return Ok(resp);
                    }
                    Some(_) if past => {
                        ChannelStats::add(&self.stats.assignments_unchanged, 1);
                        let mut resp = Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = StatusCode::NOT_MODIFIED;
                        return Ok(resp);
                    }
                    // An agent not planned yet (a new node) waits in the poll; it is refused
                    // only if still unknown when the wait ends.
                    None if past => return Err(self.not_bound(&id, &agent)),
                    _ => {}
                }
            } else if past {
                return Err(self.unavailable("NotReady", "assignments not planned yet"));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The source is gone: nothing will change; wait out the poll.
                Ok(Err(_)) => tokio::time::sleep_until(deadline).await,
            }
        }
    }

    /// Accepts a one-shot report from the agent it was assigned to.
    async fn one_shot_report(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, Refusal> {
        let id = self.authenticate(req.headers()).await?;
        // Bodies read at once are bounded with the result batches'.
        let _reading = self
            .batches
            .acquire()
            .await
            .map_err(|_| self.unavailable("ShuttingDown", "the channel is stopping"))?;
        let body = self.read_body(req, MAX_ONE_SHOT_REPORT_BYTES).await?;
        let report: OneShotReport = serde_json::from_slice(&body).map_err(|e| {
            self.malformed(StatusCode::BAD_REQUEST, "ReportMalformed", e.to_string())
        })?;
        report
            .validate()
            .map_err(|e| self.malformed(StatusCode::BAD_REQUEST, "ReportInvalid", e.to_string()))?;
        let entry = self.bind(&id, &report.agent_name)?;
        if !entry.assignment.one_shots.iter().any(|o| o.id == report.id) {
            return Err(self.forbidden(
                "OneShotUnassigned",
                format!(
                    "one-shot {:?} is not assigned to agent {:?}",
                    report.id, report.agent_name
                ),
            ));
        }
        if !self.cfg.one_shots.put(report) {
            return Err(self.unavailable("OneShotInboxFull", "too many one-shot reports held"));
        }
        Ok(json_response(StatusCode::OK, Bytes::from_static(b"{}")))
    }

    async fn read_batch(&self, req: Request<Incoming>) -> Result<ResultBatch, Refusal> {
        let body = self.read_body(req, self.cfg.max_body_bytes).await?;
        self.parse_batch(&body)
    }

    /// A request's body, at most `max` bytes, within the body deadline.
    async fn read_body(&self, req: Request<Incoming>, max: usize) -> Result<Bytes, Refusal> {
        let too_large = || {
            self.malformed(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BatchTooLarge",
                format!("bodies are limited to {max} bytes"),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        let body = match tokio::time::timeout(
            self.cfg.body_timeout,
            Limited::new(req.into_body(), max).collect(),
        )
        .await
        {
            Err(_) => {
                return Err(self.malformed(
                    StatusCode::REQUEST_TIMEOUT,
                    "BodyTimeout",
                    "request body too slow",
                ));
            }
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Ok(Err(e)) => {
                return Err(self.malformed(
                    StatusCode::BAD_REQUEST,
                    "BodyUnreadable",
                    e.to_string(),
                ));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
        };
        Ok(body)
    }

    async fn results(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Refusal> {
        // Authenticate before reading a byte of the body.
        let id = self.authenticate(req.headers()).await?;
        let reading = self
            .batches
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.unavailable("ShuttingDown", "the channel is stopping"))?;
        let batch = self.read_batch(req).await?;
        let ack = self.settle_batch(&id, batch, reading).await?;
        let body =
            serde_json::to_vec(&ack).map_err(|e| self.unavailable("Internal", e.to_string()))?;
        Ok(json_response(StatusCode::OK, Bytes::from(body)))
    }

    /// Parses and checks a batch's body (the channel's frames carry the same JSON).
    pub(super) fn parse_batch(&self, body: &[u8]) -> Result<ResultBatch, Refusal> {
        let batch: ResultBatch = serde_json::from_slice(body).map_err(|e| {
            self.malformed(StatusCode::BAD_REQUEST, "BatchMalformed", e.to_string())
        })?;
        batch
            .validate()
            .map_err(|e| self.malformed(StatusCode::BAD_REQUEST, "BatchInvalid", e.to_string()))?;
        Ok(batch)
    }

    /// Takes a batch from `id`: de-duplicated, checked against the agent's assignment, stored,
    /// and acknowledged once durable. `reading` is the batch's place among those being read,
    /// given up before the wait for durability.
    pub(super) async fn settle_batch(
        &self,
        id: &AgentIdentity,
        batch: ResultBatch,
        reading: OwnedSemaphorePermit,
    ) -> Result<BatchAck, Refusal> {
        let entry = self.bind(id, &batch.agent_name)?;
        let state = self.dedup.agent(&batch.agent_name);
        // Held until the batch is settled: a concurrent resend waits and then sees duplicates.
        let mut seqs = state.lock().await;
        let now = Instant::now();
        let mut duplicates = 0u64;
        let mut refused = Vec::new();
        let mut accepted = Vec::new();
        for b in batch.buckets {
            if seqs.contains(&batch.boot_id, b.seq) {
                duplicates += 1;
            } else if !entry.assigned(&b.check, &b.source, now) {
                refused.push(RefusedBucket {
                    seq: b.seq,
                    reason: "Unassigned".into(),
                });
            } else {
                accepted.push(b);
            }
        }
        let accepted = AcceptedBatch {
            agent_name: batch.agent_name,
            boot_id: batch.boot_id,
            dropped_buckets: batch.dropped_buckets,
            buckets: accepted,
        };
        let mut stored = 0;
        let accepted_seqs: Vec<u64> = accepted.buckets.iter().map(|b| b.seq).collect();
        let durable = if accepted.buckets.is_empty() {
            None
        } else {
            let ingested = self
                .sink
                .ingest(id, &accepted)
                .map_err(|e| self.sink_failed(&accepted.agent_name, e))?;
            stored = ingested.outcome.stored;
            duplicates += ingested.outcome.duplicates;
            Some(ingested.durable)
        };
        let (agent_name, boot_id, agent_dropped) = (
            accepted.agent_name,
            accepted.boot_id,
            accepted.dropped_buckets,
        );
        // Counted: the batch's body and place among those being read go before the wait for
        // durability, which is a group commit seconds away.
        drop(accepted.buckets);
        drop(reading);
        if let Some(durable) = durable {
            durable
                .await
                .map_err(|e| self.sink_failed(&agent_name, e))?;
        }
        // Settled: stored, known duplicates and refusals alike.
        for seq in accepted_seqs {
            seqs.insert(&boot_id, seq);
        }
        for r in &refused {
            seqs.insert(&boot_id, r.seq);
        }
        let dropped = seqs.dropped(&boot_id, agent_dropped);
        drop(seqs);
        let s = &self.stats;
        ChannelStats::add(&s.accepted, stored);
        ChannelStats::add(&s.duplicates, duplicates);
        ChannelStats::add(&s.refused_unassigned, refused.len() as u64);
        ChannelStats::add(&s.agent_dropped, dropped);
        ChannelStats::add(&s.batches_acked, 1);
        if !refused.is_empty() {
            tracing::warn!(agent = %agent_name, identity = %id.username,
                refused = refused.len(), "refused results for unassigned checks");
        }
        Ok(BatchAck {
            accepted: stored,
            duplicates,
            refused,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(known_version(&h), None);
        for (v, want) in [
            ("\"abc-1\"", Some("abc-1")),
            ("W/\"abc-1\"", Some("abc-1")),
            ("abc-1", Some("abc-1")),
            ("\"\"", None),
        ] {
            h.insert(header::IF_NONE_MATCH, http::HeaderValue::from_static(v));
            assert_eq!(known_version(&h).as_deref(), want, "{v}");
        }
    }
}
