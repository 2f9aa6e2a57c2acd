//! The agent's side of the framed channel ([`netslo_protocol::frame`]): one connection carries
//! the assignment and the results, dialled again when it ends. An operator without the channel
//! (older than this agent) is spoken to with HTTP requests for a while, then tried again.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use netslo_protocol::channel::{
    AGENT_HEADER, ErrorBody, FEATURE_ONE_SHOTS, FEATURES_HEADER, MAX_WAIT, NODE_ADDRESSES_HEADER,
};
use netslo_protocol::frame::{
    self, BatchAnswer, CHANNEL_PATH, CHANNEL_UPGRADE, Closing, FrameHeader, FrameIoError,
    FrameKind, MAX_CHANNEL_AGE, SILENCE_LIMIT, Sender,
};
use netslo_protocol::hash::random_u64;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::sync::watch;

use super::{
    Backoff, MAX_SMALL_RESPONSE_BYTES, OutgoingBatch, ReportError, Reporter, status_error,
};
use crate::engine::{Engine, Jobs};

/// How long an agent uses HTTP requests with an operator that has no channel before it tries
/// the channel again (the operator may have been upgraded meanwhile).
const HTTP_SPAN: Duration = Duration::from_secs(10 * 60);

type Io = TokioIo<Upgraded>;
type Reader = ReadHalf<Io>;
type Writer = WriteHalf<Io>;
type Pending<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Reads the operator's next frame whole (a body within `deadline`).
async fn next_frame(
    reader: Reader,
    deadline: Duration,
) -> (Reader, Result<Option<(FrameHeader, Vec<u8>)>, FrameIoError>) {
    let (reader, header) = frame::read_header(reader, Sender::Operator).await;
    match header {
        Ok(Some(h)) => {
            let (reader, body) = frame::read_body(reader, h, deadline).await;
            (reader, body.map(|b| Some((h, b))))
        }
        Ok(None) => (reader, Ok(None)),
        Err(e) => (reader, Err(e)),
    }
}

async fn maybe<T>(pending: &mut Option<Pending<T>>) -> T {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn malformed(what: &str, e: impl std::fmt::Display) -> ReportError {
    ReportError::Response(format!("{what}: {e}"))
}

impl Reporter {
    /// Follows assignments into `jobs` and reports `engine`'s closed buckets, forever: over
    /// the channel, dialled again whenever it ends (at once when it only grew old, with
    /// backoff otherwise); over HTTP requests with an operator that has no channel.
    pub async fn run(&self, engine: &Engine, jobs: &watch::Sender<Jobs>) {
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max);
        loop {
            let ended = match self.open_channel().await {
                Ok(io) => {
                    self.stats.channels_opened.fetch_add(1, Ordering::Relaxed);
                    self.serve_channel(io, engine, jobs, &mut backoff).await
                }
                Err(e) => Err(e),
            };
            match ended {
                Ok(()) => tracing::debug!("dialling the operator again, with a fresh token"),
                // 404: an operator older than the channel, or one run without it; 426: a proxy
                // in between that drops the upgrade.
                Err(ReportError::Refused {
                    status: 404 | 426, ..
                }) => {
                    tracing::warn!(
                        "the operator's channel is not reachable (an older operator, the channel \
                         off, or a proxy that drops upgrades): using HTTP requests for {} minutes",
                        HTTP_SPAN.as_secs() / 60
                    );
                    tokio::select! {
                        () = self.follow_assignments(jobs) => {}
                        () = self.report_results(engine) => {}
                        () = tokio::time::sleep(HTTP_SPAN) => {}
                    }
                }
                Err(e) => {
                    self.stats.channel_errors.fetch_add(1, Ordering::Relaxed);
                    let delay = backoff.next_delay();
                    tracing::warn!(
                        reason = e.reason(),
                        pending = self.pending(),
                        retry_in_ms = delay.as_millis() as u64,
                        "operator channel: {e}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Dials the operator and asks for the channel. The operator answers once this agent is
    /// planned (a new node's agent waits for its first plan).
    async fn open_channel(&self) -> Result<Io, ReportError> {
        let token = self.read_token()?;
        let open = async {
            let tls = self.connect_tls().await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| ReportError::Connect(e.to_string()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(error = %e, "operator connection closed");
                }
            });
            let mut req = Request::builder()
                .method(Method::GET)
                .uri(format!("{}{CHANNEL_PATH}", self.target.base_path))
                .header(header::HOST, &self.target.authority)
                .header(header::USER_AGENT, "netslo-agent")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, CHANNEL_UPGRADE)
                .header(AGENT_HEADER, &self.cfg.agent_name)
                .header(FEATURES_HEADER, FEATURE_ONE_SHOTS)
                .header(NODE_ADDRESSES_HEADER, self.held_node_addresses().header());
            if let Some(v) = self.version().clone() {
                req = req.header(header::IF_NONE_MATCH, format!("\"{v}\""));
            }
            let req = req
                .body(Full::new(Bytes::new()))
                .map_err(|e| ReportError::Transport(e.to_string()))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| ReportError::Transport(e.to_string()))?;
            let status = resp.status();
            if status != StatusCode::SWITCHING_PROTOCOLS {
                let body = Limited::new(resp.into_body(), MAX_SMALL_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| ReportError::Transport(format!("reading the response: {e}")))?
                    .to_bytes();
                return Err(status_error(status, &body));
            }
            hyper::upgrade::on(resp)
                .await
                .map(TokioIo::new)
                .map_err(|e| ReportError::Transport(format!("channel upgrade: {e}")))
        };
        tokio::time::timeout(MAX_WAIT + self.cfg.request_timeout, open)
            .await
            .map_err(|_| ReportError::Timeout)?
    }

    /// Serves one channel until it ends: `Ok` when it grew old (dial again at once), the
    /// error otherwise. Reading and writing go side by side. `redial` is reset once the
    /// channel proves healthy (a ping, an answer or an assignment), not merely opened.
    async fn serve_channel(
        &self,
        io: Io,
        engine: &Engine,
        jobs: &watch::Sender<Jobs>,
        redial: &mut Backoff,
    ) -> Result<(), ReportError> {
        let deadline = self.cfg.request_timeout;
        let (reader, writer) = tokio::io::split(io);
        let mut reading: Option<Pending<_>> = Some(Box::pin(next_frame(reader, deadline)));
        let mut writer = Some(writer);
        let mut writing: Option<Pending<(Writer, Result<(), FrameIoError>)>> = None;
        let mut outgoing: VecDeque<(FrameKind, Bytes)> = VecDeque::new();
        let mut in_flight: Option<(OutgoingBatch, Instant)> = None;
        let mut next_send = Instant::now();
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max);
        let mut tick =
            tokio::time::interval(self.cfg.flush_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let opened = Instant::now();
        // At a random point of the second half of the longest life, so that agents started
        // together do not all dial again together.
        let half = MAX_CHANNEL_AGE.as_millis() as u64 / 2;
        let age = Duration::from_millis(half + random_u64() % half.max(1));
        let mut last_heard = opened;
        loop {
            if in_flight.is_none()
                && Instant::now() >= next_send
                && let Some(batch) = self.next_batch(engine)?
            {
                if batch.body.len() > FrameKind::Batch.max_body() {
                    // What the operator answers such a post: halve the batches, or give up
                    // a single bucket that large.
                    let e = self
                        .settle_batch(&batch, StatusCode::PAYLOAD_TOO_LARGE, &[])
                        .err();
                    tracing::warn!(
                        reason = e.as_ref().map(ReportError::reason),
                        bytes = batch.body.len(),
                        "a batch above the channel's bound"
                    );
                    continue;
                }
                outgoing.push_back((FrameKind::Batch, batch.body.clone()));
                in_flight = Some((batch, Instant::now()));
            }
            if writing.is_none()
                && let Some(w) = writer.take()
            {
                match outgoing.pop_front() {
                    Some((kind, body)) => {
                        writing =
                            Some(Box::pin(
                                async move { frame::write_frame(w, kind, &body).await },
                            ));
                    }
                    None => writer = Some(w),
                }
            }
            tokio::select! {
                (r, got) = maybe(&mut reading) => {
                    let (header, body) = match got {
                        Ok(Some(frame)) => frame,
                        Ok(None) => return Err(ReportError::Transport("the operator closed the channel".into())),
                        Err(e) => return Err(ReportError::Transport(e.to_string())),
                    };
                    last_heard = Instant::now();
                    match header.kind {
                        FrameKind::Assignment => match self.read_envelope(&body) {
                            Ok(env) => {
                                redial.reset();
                                self.apply_assignment(env, jobs);
                            }
                            // One this agent cannot run (an operator newer than it): probing
                            // and reporting go on with the previous one, as over HTTP.
                            Err(e @ ReportError::Assignment(_)) => {
                                self.stats.assignment_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(reason = e.reason(),
                                    "keeping the previous assignment: {e}");
                            }
                            // Unreadable, or node addresses this agent does not hold: dial
                            // again (saying it holds none).
                            Err(e) => {
                                self.stats.assignment_errors.fetch_add(1, Ordering::Relaxed);
                                return Err(e);
                            }
                        },
                        FrameKind::BatchAnswer => {
                            let answer: BatchAnswer = serde_json::from_slice(&body)
                                .map_err(|e| malformed("batch answer", e))?;
                            let Some((batch, _)) = in_flight.take() else {
                                return Err(malformed("batch answer", "no batch was sent"));
                            };
                            if answer.status == 200 && answer.seq_to != batch.seq_to {
                                return Err(malformed("batch answer", "for another batch"));
                            }
                            let status = StatusCode::from_u16(answer.status)
                                .map_err(|e| malformed("batch answer", e))?;
                            let settled = match (answer.ack, answer.error) {
                                (Some(ack), _) => serde_json::to_vec(&ack),
                                (None, Some(error)) => serde_json::to_vec(&error),
                                (None, None) => Ok(Vec::new()),
                            }
                            .map_err(|e| malformed("batch answer", e))
                            .and_then(|body| self.settle_batch(&batch, status, &body));
                            redial.reset();
                            match settled {
                                Ok(_) => backoff.reset(),
                                Err(e) => {
                                    let delay = backoff.next_delay();
                                    next_send = Instant::now() + delay;
                                    tracing::warn!(reason = e.reason(), pending = self.pending(),
                                        retry_in_ms = delay.as_millis() as u64, "cannot report results: {e}");
                                }
                            }
                        }
                        FrameKind::Ping => {
                            // The operator serves this agent and would have pushed a newer
                            // version: the one held is current.
                            self.confirm_assignment();
                            redial.reset();
                            outgoing.push_back((FrameKind::Pong, Bytes::new()));
                        }
                        FrameKind::Closing => {
                            let closing: Closing = serde_json::from_slice(&body)
                                .map_err(|e| malformed("closing", e))?;
                            if closing.reason == "ChannelAged" {
                                return Ok(());
                            }
                            let body = serde_json::to_vec(&ErrorBody {
                                reason: closing.reason,
                                message: closing.message,
                            })
                            .unwrap_or_default();
                            let status = StatusCode::from_u16(closing.status)
                                .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                            return Err(status_error(status, &body));
                        }
                        // `read_header` admits only what the operator sends.
                        FrameKind::Batch | FrameKind::Pong => {
                            return Err(malformed("frame", "an agent's frame from the operator"));
                        }
                    }
                    reading = Some(Box::pin(next_frame(r, deadline)));
                }
                (w, written) = maybe(&mut writing) => {
                    writing = None;
                    written.map_err(|e| ReportError::Transport(e.to_string()))?;
                    writer = Some(w);
                }
                _ = tick.tick() => {
                    self.collect(engine);
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return Err(ReportError::Transport(format!(
                            "nothing heard from the operator for {}s", SILENCE_LIMIT.as_secs()
                        )));
                    }
                    if in_flight.as_ref().is_some_and(|(_, sent)| sent.elapsed() > deadline) {
                        self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                        return Err(ReportError::Timeout);
                    }
                    if in_flight.is_none() && opened.elapsed() > age {
                        return Ok(());
                    }
                }
            }
        }
    }
}
