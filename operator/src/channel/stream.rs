//! One agent's channel after its upgrade ([`netslo_protocol::frame`]): the assignment pushed
//! whenever its version changes, batches settled as the HTTP endpoint settles them, pings, and
//! between frames nothing held but the TLS state. Reads and writes make progress side by side
//! in one task (neither waits for the other, so two large frames crossing cannot deadlock).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use http::StatusCode;
use hyper::body::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use netslo_protocol::channel::ErrorBody;
use netslo_protocol::frame::{
    self, BatchAnswer, Closing, FrameIoError, FrameKind, PING_INTERVAL, SILENCE_LIMIT, Sender,
};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::auth::AgentIdentity;
use super::server::{Refusal, State};
use super::source::HeldAddresses;
use super::stats::ChannelStats;

/// A request that asked for a channel and was answered `101 Switching Protocols`.
#[derive(Debug)]
pub(super) struct ChannelOpen {
    pub(super) on_upgrade: OnUpgrade,
    pub(super) id: Arc<AgentIdentity>,
    pub(super) agent: String,
    /// Digest of the node addresses the agent holds; `None` from an agent without digests.
    pub(super) held: Option<String>,
    pub(super) runs_one_shots: bool,
    /// The assignment version the agent holds.
    pub(super) known: Option<String>,
}

type Io = TokioIo<Upgraded>;
type Reader = ReadHalf<Io>;
type Writer = WriteHalf<Io>;
type Pending<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Batches settled or answered-but-unsent at once per channel: the next frame is read only
/// when one is out (an agent sends its next batch once the last is answered), so an agent
/// that sends without reading cannot pile answers up in the operator.
const MAX_BATCHES_IN_FLIGHT: usize = 2;

/// A frame from the agent, read whole.
enum Inbound {
    /// A batch's body, with its place among the bodies being read.
    Batch(Vec<u8>, OwnedSemaphorePermit),
    Pong,
}

/// Reads the agent's next frame. A batch takes its place among the bodies being read before
/// its body is read, so that thousands of channels cannot each hold a large body at once.
async fn next_frame(
    state: &State,
    reader: Reader,
) -> (Reader, Result<Option<Inbound>, FrameIoError>) {
    let (reader, header) = frame::read_header(reader, Sender::Agent).await;
    let header = match header {
        Ok(Some(h)) => h,
        Ok(None) => return (reader, Ok(None)),
        Err(e) => return (reader, Err(e)),
    };
    match header.kind {
        FrameKind::Pong => (reader, Ok(Some(Inbound::Pong))),
        FrameKind::Batch => {
            let Ok(place) = state.batches.clone().acquire_owned().await else {
                return (
                    reader,
                    Err(std::io::Error::other("the channel is stopping").into()),
                );
            };
            let (reader, body) = frame::read_body(reader, header, state.cfg.body_timeout).await;
            (reader, body.map(|b| Some(Inbound::Batch(b, place))))
        }
        // `read_header` admits only what agents send.
        kind => (reader, Err(frame::FrameError::WrongSender { kind }.into())),
    }
}

/// Settles one batch frame into the answer the agent waits for.
async fn settle(
    state: &State,
    id: Arc<AgentIdentity>,
    agent: Arc<str>,
    body: Vec<u8>,
    place: OwnedSemaphorePermit,
) -> BatchAnswer {
    let parsed = state.parse_batch(&body).and_then(|batch| {
        if *batch.agent_name == *agent {
            Ok(batch)
        } else {
            // The channel was opened for one agent; its batches speak for that one only.
            Err(state.not_bound(&id, &batch.agent_name))
        }
    });
    drop(body);
    let (seq_to, settled) = match parsed {
        Ok(batch) => (batch.seq_to, state.settle_batch(&id, batch, place).await),
        Err(r) => (0, Err(r)),
    };
    match settled {
        Ok(ack) => BatchAnswer {
            seq_to,
            status: StatusCode::OK.as_u16(),
            ack: Some(ack),
            error: None,
        },
        Err(r) => BatchAnswer {
            seq_to,
            status: r.status.as_u16(),
            ack: None,
            error: Some(ErrorBody {
                reason: r.reason.to_owned(),
                message: r.message,
            }),
        },
    }
}

/// Waits for an optional pending operation; never, when there is none.
async fn maybe<T>(pending: &mut Option<Pending<'_, T>>) -> T {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// One open channel's state between frames.
struct Channel<'a> {
    state: &'a State,
    id: Arc<AgentIdentity>,
    agent: Arc<str>,
    held: Option<String>,
    runs_one_shots: bool,
    /// The version the agent holds or has on its way.
    sent: Option<String>,
    /// Frames waiting to be written, oldest first (a few at most: one assignment, answers of
    /// the batches in flight, a ping, a closing).
    outgoing: VecDeque<(FrameKind, Bytes)>,
    /// A closing frame is queued: nothing more is read, and the channel ends once it is out.
    closing: bool,
}

impl State {
    /// Serves an upgraded channel until it ends.
    pub(super) async fn serve_channel(&self, open: ChannelOpen) {
        let upgraded = match open.on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(agent = %open.agent, error = %e, "channel upgrade failed");
                return;
            }
        };
        ChannelStats::add(&self.stats.channels_opened, 1);
        let agent = open.agent.clone();
        let channel = Channel {
            state: self,
            id: open.id,
            agent: Arc::from(open.agent),
            held: open.held,
            runs_one_shots: open.runs_one_shots,
            sent: open.known,
            outgoing: VecDeque::new(),
            closing: false,
        };
        let (reason, detail) = channel.run(TokioIo::new(upgraded)).await;
        ChannelStats::add(&self.stats.channels_closed, 1);
        tracing::debug!(%agent, reason, "agent channel ended: {detail}");
    }
}

impl<'a> Channel<'a> {
    fn close(&mut self, refusal: Refusal) {
        let closing = Closing {
            status: refusal.status.as_u16(),
            reason: refusal.reason.to_owned(),
            message: refusal.message,
        };
        let body = serde_json::to_vec(&closing).unwrap_or_default();
        self.outgoing
            .push_back((FrameKind::Closing, Bytes::from(body)));
        self.closing = true;
    }

    /// Queues the agent's assignment if its version moved; closes the channel if the caller
    /// may no longer act as the agent (its pod is gone) or the agent is no longer planned.
    fn push_assignment(&mut self) {
        let source = &self.state.source;
        if !source.ready() {
            return;
        }
        let entry = match source.agent(&self.agent) {
            Some(entry) if entry.binding.permits(&self.id) => entry,
            _ => {
                let refusal = self.state.not_bound(&self.id, &self.agent);
                return self.close(refusal);
            }
        };
        if self.sent.as_deref() == Some(entry.version.as_str()) {
            return;
        }
        let held = match &self.held {
            None => HeldAddresses::Unspoken,
            Some(digest) => HeldAddresses::Digest(digest),
        };
        match entry.body_for(held, self.runs_one_shots) {
            Ok(body) => {
                // One not on its way yet is replaced by the newer one.
                self.outgoing
                    .retain(|(kind, _)| *kind != FrameKind::Assignment);
                self.outgoing.push_back((FrameKind::Assignment, body));
                self.sent = Some(entry.version.clone());
                if self.held.is_some() {
                    self.held = Some(entry.node_addresses.digest.clone());
                }
                ChannelStats::add(&self.state.stats.assignments_served, 1);
            }
            Err(e) => {
                let refusal = self
                    .state
                    .unavailable("AssignmentUnavailable", e.to_string());
                self.close(refusal);
            }
        }
    }

    /// Runs the channel; returns why it ended (a reason and a message for the log).
    async fn run(mut self, io: Io) -> (&'static str, String) {
        let state = self.state;
        let (reader, writer) = tokio::io::split(io);
        let mut reading: Option<Pending<'a, _>> = Some(Box::pin(next_frame(state, reader)));
        let mut parked: Option<Reader> = None;
        let mut writer: Option<Writer> = Some(writer);
        let mut writing: Option<Pending<'a, (Writer, Result<(), FrameIoError>)>> = None;
        let mut write_started = Instant::now();
        let mut settling: FuturesUnordered<Pending<'a, BatchAnswer>> = FuturesUnordered::new();
        let mut changes = state.source.changes(&self.agent);
        let mut watching = true;
        // The plan is read when it moved (and first thing), not per frame: thousands of
        // channels would otherwise take the plan's lock for every batch and ping.
        let mut plan_moved = true;
        let start = Instant::now();
        let mut last_heard = start;
        let mut ping = tokio::time::interval_at(start + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let aged = tokio::time::sleep_until(start + state.cfg.max_channel_age);
        tokio::pin!(aged);
        loop {
            if plan_moved && !self.closing {
                plan_moved = false;
                changes.borrow_and_update();
                self.push_assignment();
            }
            if self.closing {
                // Nothing more is read once the channel is closing.
                reading = None;
                parked = None;
            }
            let unsent_answers = self
                .outgoing
                .iter()
                .filter(|(kind, _)| *kind == FrameKind::BatchAnswer)
                .count();
            if settling.len() + unsent_answers < MAX_BATCHES_IN_FLIGHT
                && let Some(r) = parked.take()
            {
                reading = Some(Box::pin(next_frame(state, r)));
            }
            if writing.is_none() {
                match (self.outgoing.pop_front(), writer.take()) {
                    (Some((kind, body)), Some(w)) => {
                        write_started = Instant::now();
                        writing =
                            Some(Box::pin(
                                async move { frame::write_frame(w, kind, &body).await },
                            ));
                    }
                    (None, w) if self.closing => {
                        // TLS close_notify: the agent reads a clean end after the closing frame.
                        if let Some(mut w) = w {
                            let _ = tokio::time::timeout(PING_INTERVAL, w.shutdown()).await;
                        }
                        return ("Closed", "closed by the operator".into());
                    }
                    (_, w) => writer = w,
                }
            }
            tokio::select! {
                (r, got) = maybe(&mut reading) => {
                    reading = None;
                    match got {
                        Ok(None) => return ("AgentClosed", "closed by the agent".into()),
                        Err(FrameIoError::Frame(e)) => {
                            let refusal = state.malformed(StatusCode::BAD_REQUEST, e.reason(), e.to_string());
                            self.close(refusal);
                            continue;
                        }
                        Err(e) => return (e.reason(), e.to_string()),
                        Ok(Some(Inbound::Pong)) => last_heard = Instant::now(),
                        Ok(Some(Inbound::Batch(body, place))) => {
                            last_heard = Instant::now();
                            settling.push(Box::pin(settle(state, self.id.clone(), self.agent.clone(), body, place)));
                        }
                    }
                    // Read on at the top of the loop, once there is room.
                    parked = Some(r);
                }
                (w, written) = maybe(&mut writing) => {
                    writing = None;
                    if let Err(e) = written {
                        return (e.reason(), e.to_string());
                    }
                    writer = Some(w);
                }
                Some(answer) = settling.next(), if !settling.is_empty() => {
                    let body = serde_json::to_vec(&answer).unwrap_or_default();
                    self.outgoing.push_back((FrameKind::BatchAnswer, Bytes::from(body)));
                }
                changed = changes.changed(), if watching => {
                    // The source is gone: nothing will change any more.
                    watching = changed.is_ok();
                    plan_moved = watching;
                }
                _ = ping.tick() => {
                    if last_heard.elapsed() > SILENCE_LIMIT {
                        return ("AgentSilent", format!("nothing heard for {SILENCE_LIMIT:?}"));
                    }
                    if writing.is_some() && write_started.elapsed() > SILENCE_LIMIT {
                        return ("WriteStalled", format!("a frame not taken for {SILENCE_LIMIT:?}"));
                    }
                    if !self.outgoing.iter().any(|(kind, _)| *kind == FrameKind::Ping) {
                        self.outgoing.push_back((FrameKind::Ping, Bytes::new()));
                    }
                }
                () = &mut aged, if !self.closing => {
                    self.close(Refusal::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ChannelAged",
                        "the channel is older than its longest life: dial again",
                    ));
                }
            }
        }
    }
}
