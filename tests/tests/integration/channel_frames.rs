//! The framed channel's edges against a real server over TLS (no control plane needed), spoken
//! frame by frame as a real agent never would: one connection carries the pushed assignments
//! and the settled batches, frames beyond their bounds or from the wrong side close it with a
//! reason, an agent whose pod is gone is closed, old channels are closed for a fresh dial,
//! refusals before the upgrade are plain HTTP answers, and a real agent speaks HTTP requests
//! to an operator without the channel.

use std::sync::Arc;
use std::time::Duration;

use crate::channel_common::{batch, bucket, https};
use http::{Method, StatusCode};
use netslo_agent::engine::{Engine, EngineConfig, Jobs};
use netslo_agent::report::{Reporter, ReporterConfig};
use netslo_operator::channel::{
    AgentBinding, AgentIdentity, ChannelConfig, ChannelServer, MemoryAssignments, MemorySink,
    StaticTokens,
};
use netslo_protocol::channel::{AssignmentEnvelope, ErrorBody};
use netslo_protocol::frame::{
    self, BatchAnswer, CHANNEL_PATH, Closing, FrameHeader, FrameKind, Sender,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const AGENT: &str = "node-a";
const CHECK: &str = "team/web";

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

struct Fixture {
    server: ChannelServer,
    source: Arc<MemoryAssignments>,
    sink: Arc<MemorySink>,
}

async fn fixture(configure: impl FnOnce(&mut ChannelConfig)) -> Fixture {
    let source = Arc::new(MemoryAssignments::new(Duration::from_secs(3_600)));
    source
        .set(
            AGENT,
            AgentBinding::service_account("netslo", "agent"),
            crate::channel_common::tcp_assignment(CHECK, &["127.0.0.1:9".into()], 10_000),
        )
        .unwrap();
    source.mark_ready();
    let sink = MemorySink::new();
    let verifier = Arc::new(
        StaticTokens::new().with("t0ken", AgentIdentity::service_account("netslo", "agent")),
    );
    let mut cfg = ChannelConfig::new("127.0.0.1:0".parse().unwrap(), vec!["127.0.0.1".into()]);
    configure(&mut cfg);
    let server = ChannelServer::start(cfg, verifier, source.clone(), sink.clone())
        .await
        .unwrap();
    Fixture {
        server,
        source,
        sink,
    }
}

impl Fixture {
    /// A TLS connection upgraded to the channel by a hand-written request.
    async fn open(&self) -> Tls {
        self.open_receiving(None).await
    }

    /// As [`Fixture::open`], with a fixed socket receive buffer (no autotuning).
    async fn open_receiving(&self, receive_buffer: Option<u32>) -> Tls {
        let addr = self.server.local_addr();
        let certificates = netslo_protocol::target::parse_ca_bundle(self.server.ca_pem()).unwrap();
        let tls = netslo_agent::probe::http::tls_config(Some(certificates)).unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let tcp = socket.connect(addr).await.unwrap();
        let mut stream = tokio_rustls::TlsConnector::from(tls)
            .connect(ServerName::IpAddress(addr.ip().into()), tcp)
            .await
            .unwrap();
        let request = format!(
            "GET {CHANNEL_PATH} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer t0ken\r\n\
             connection: upgrade\r\nupgrade: netslo-channel/1\r\nx-netslo-agent: {AGENT}\r\n\
             x-netslo-node-addresses: none\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        stream
    }
}

async fn next(stream: &mut Tls) -> Option<(FrameKind, Vec<u8>)> {
    let read = async {
        let (_, header) = frame::read_header(&mut *stream, Sender::Operator).await;
        let header = header.unwrap()?;
        let (_, body) = frame::read_body(&mut *stream, header, Duration::from_secs(5)).await;
        Some((header.kind, body.unwrap()))
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a frame or the end within 10 s")
}

async fn send(stream: &mut Tls, kind: FrameKind, body: &[u8]) {
    let (_, written) = frame::write_frame(&mut *stream, kind, body).await;
    written.unwrap();
}

fn closing(frame: Option<(FrameKind, Vec<u8>)>) -> Closing {
    let (kind, body) = frame.expect("a closing frame");
    assert_eq!(kind, FrameKind::Closing);
    serde_json::from_slice(&body).unwrap()
}

fn answer(frame: Option<(FrameKind, Vec<u8>)>) -> BatchAnswer {
    let (kind, body) = frame.expect("an answer");
    assert_eq!(kind, FrameKind::BatchAnswer);
    serde_json::from_slice(&body).unwrap()
}

fn envelope(frame: Option<(FrameKind, Vec<u8>)>) -> AssignmentEnvelope {
    let (kind, body) = frame.expect("an assignment");
    assert_eq!(kind, FrameKind::Assignment);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn one_connection_carries_pushed_assignments_and_settled_batches() {
    let f = fixture(|_| {}).await;
    let mut channel = f.open().await;
    let first = envelope(next(&mut channel).await);
    assert_eq!(first.assignment.checks.len(), 1);
    assert!(
        !first.node_addresses_digest.is_empty(),
        "an agent that names the addresses it holds is told their digest"
    );

    send(
        &mut channel,
        FrameKind::Batch,
        &batch(
            AGENT,
            "boot",
            vec![bucket(1, CHECK, AGENT, 5), bucket(2, CHECK, AGENT, 5)],
        ),
    )
    .await;
    let a = answer(next(&mut channel).await);
    assert_eq!((a.status, a.seq_to), (200, 2));
    assert_eq!(a.ack.unwrap().accepted, 2);
    assert_eq!(f.sink.buckets().len(), 2);

    // Resent: recognised.
    send(
        &mut channel,
        FrameKind::Batch,
        &batch(AGENT, "boot", vec![bucket(2, CHECK, AGENT, 5)]),
    )
    .await;
    let a = answer(next(&mut channel).await);
    assert_eq!(a.ack.unwrap().duplicates, 1);

    // A new plan is pushed without being asked for; the addresses it holds are left out.
    f.source
        .set(
            AGENT,
            AgentBinding::service_account("netslo", "agent"),
            crate::channel_common::tcp_assignment(CHECK, &["127.0.0.1:10".into()], 10_000),
        )
        .unwrap();
    let second = envelope(next(&mut channel).await);
    assert_ne!(second.version, first.version);
    assert!(second.node_addresses_held);

    // Malformed batches and batches for another agent are answered and the channel goes on.
    send(&mut channel, FrameKind::Batch, b"{nope").await;
    let a = answer(next(&mut channel).await);
    assert_eq!(
        (a.status, a.error.unwrap().reason.as_str()),
        (400, "BatchMalformed")
    );
    send(
        &mut channel,
        FrameKind::Batch,
        &batch("node-b", "boot", vec![bucket(3, CHECK, "node-b", 1)]),
    )
    .await;
    let a = answer(next(&mut channel).await);
    assert_eq!(
        (a.status, a.error.unwrap().reason.as_str()),
        (403, "AgentForbidden")
    );
    send(&mut channel, FrameKind::Pong, &[]).await;
    send(
        &mut channel,
        FrameKind::Batch,
        &batch(AGENT, "boot", vec![bucket(4, CHECK, AGENT, 1)]),
    )
    .await;
    assert_eq!(answer(next(&mut channel).await).status, 200);

    let stats = f.server.stats().snapshot();
    assert_eq!(
        (stats.connections, stats.requests, stats.channels_opened),
        (1, 1, 1)
    );
    assert_eq!((stats.batches_acked, stats.assignments_served), (3, 2));
}

#[tokio::test]
async fn frames_beyond_their_bounds_or_from_the_wrong_side_close_the_channel() {
    let f = fixture(|_| {}).await;
    let cases: [(&str, [u8; 5], &str); 3] = [
        ("a batch above 4 MiB", [0x01, 0, 0, 0, 1], "FrameTooLarge"),
        ("an operator's frame", [0, 0, 0, 2, 16], "FrameMisdirected"),
        ("an unknown kind", [0, 0, 0, 0, 99], "FrameKindUnknown"),
    ];
    for (what, header, reason) in cases {
        let mut channel = f.open().await;
        envelope(next(&mut channel).await);
        channel.write_all(&header).await.unwrap();
        let closed = closing(next(&mut channel).await);
        assert_eq!(
            (closed.status, closed.reason.as_str()),
            (400, reason),
            "{what}"
        );
        assert!(next(&mut channel).await.is_none(), "{what}: then the end");
    }
    // A header is decoded before any body is taken.
    assert_eq!(
        FrameHeader::decode([0xff, 0xff, 0xff, 0xff, 1], Sender::Agent)
            .unwrap_err()
            .reason(),
        "FrameTooLarge"
    );
    assert_eq!(f.server.stats().snapshot().channels_closed, 3);
}

#[tokio::test]
async fn a_channel_is_closed_when_its_agent_is_gone_or_it_grew_old() {
    let f = fixture(|_| {}).await;
    let mut channel = f.open().await;
    envelope(next(&mut channel).await);
    f.source.remove(AGENT);
    let closed = closing(next(&mut channel).await);
    assert_eq!(
        (closed.status, closed.reason.as_str()),
        (403, "AgentForbidden")
    );
    assert!(next(&mut channel).await.is_none());

    let f = fixture(|cfg| cfg.max_channel_age = Duration::from_millis(500)).await;
    let mut channel = f.open().await;
    envelope(next(&mut channel).await);
    let closed = closing(next(&mut channel).await);
    assert_eq!(
        (closed.status, closed.reason.as_str()),
        (503, "ChannelAged")
    );
}

#[tokio::test]
async fn refusals_before_the_upgrade_are_http_answers() {
    let f = fixture(|_| {}).await;
    let ask = async |headers: &[(&str, &str)]| {
        https(
            f.server.local_addr(),
            f.server.ca_pem(),
            Method::GET,
            CHANNEL_PATH,
            headers,
            Vec::new(),
        )
        .await
    };
    let reason = |body: &[u8]| serde_json::from_slice::<ErrorBody>(body).unwrap().reason;
    let (status, body) = ask(&[("x-netslo-agent", AGENT)]).await;
    assert_eq!(
        (status, reason(&body).as_str()),
        (StatusCode::UNAUTHORIZED, "TokenMissing")
    );
    let (status, body) = ask(&[("authorization", "Bearer t0ken"), ("x-netslo-agent", AGENT)]).await;
    assert_eq!(
        (status, reason(&body).as_str()),
        (StatusCode::UPGRADE_REQUIRED, "UpgradeRequired")
    );
    f.source
        .set(
            "node-b",
            AgentBinding::service_account("netslo", "other"),
            crate::channel_common::tcp_assignment(CHECK, &["127.0.0.1:9".into()], 10_000),
        )
        .unwrap();
    let (status, body) = ask(&[
        ("authorization", "Bearer t0ken"),
        ("x-netslo-agent", "node-b"),
        ("connection", "upgrade"),
        ("upgrade", "netslo-channel/1"),
    ])
    .await;
    assert_eq!(
        (status, reason(&body).as_str()),
        (StatusCode::FORBIDDEN, "AgentForbidden")
    );
    assert_eq!(f.server.stats().snapshot().channels_opened, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_uses_http_requests_with_an_operator_without_the_channel() {
    let f = fixture(|cfg| cfg.upgrades = false).await;
    let dir = tempfile::tempdir().unwrap();
    let (ca_file, token_file) = (dir.path().join("ca.crt"), dir.path().join("token"));
    std::fs::write(&ca_file, f.server.ca_pem()).unwrap();
    std::fs::write(&token_file, "t0ken").unwrap();
    let mut cfg = ReporterConfig::new(
        format!("https://{}", f.server.local_addr())
            .parse()
            .unwrap(),
        ca_file,
        token_file,
        AGENT.into(),
    );
    cfg.flush_interval = Duration::from_millis(100);
    let reporter = Arc::new(Reporter::new(cfg).unwrap());
    let engine = Arc::new(Engine::new(EngineConfig {
        source: AGENT.into(),
        window: Duration::from_millis(200),
        ..EngineConfig::default()
    }));
    let (jobs_tx, jobs_rx) = watch::channel(Jobs::from(Vec::new()));
    let probing = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(jobs_rx, std::future::pending()).await })
    };
    let reporting = {
        let (reporter, engine) = (reporter.clone(), engine.clone());
        tokio::spawn(async move { reporter.run(&engine, &jobs_tx).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while f.sink.buckets().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no results over HTTP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reporting.abort();
    probing.abort();
    let stats = f.server.stats().snapshot();
    assert_eq!(stats.channels_opened, 0);
    assert_eq!(
        stats.connections, 3,
        "the refused channel's, then the long-poll's and the results' keep-alive connections"
    );
    assert!(stats.batches_acked >= 1 && stats.assignments_served >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_sends_without_reading_is_not_read_either() {
    let f = fixture(|_| {}).await;
    // A small receive buffer: loopback's autotuned one holds tens of MiB of answers.
    let mut channel = f.open_receiving(Some(64 * 1024)).await;
    envelope(next(&mut channel).await);
    // Far more answers (about 120 bytes each) than the socket buffers on both sides hold.
    const FRAMES: usize = 300_000;
    let frame: Vec<u8> = [&[0, 0, 0, 5, 1][..], b"{nope"].concat();
    let frames = frame.repeat(FRAMES);
    let (_, mut writer) = tokio::io::split(channel);
    let sending = tokio::spawn(async move {
        let _ = writer.write_all(&frames).await;
        writer
    });
    // The operator settles what it read, then stops reading once its answers wait unsent.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = f.server.stats().snapshot().refused_malformed;
        if now == last || now as usize >= FRAMES {
            break;
        }
        last = now;
    }
    let refused = f.server.stats().snapshot().refused_malformed as usize;
    assert!(
        refused < FRAMES / 2,
        "{refused} of {FRAMES} frames read from an agent that reads no answer"
    );
    sending.abort();
}
