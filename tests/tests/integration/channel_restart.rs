//! An operator restart loses no results and counts none twice: a real agent engine probes a
//! loopback TCP echo responder and reports through the channel; the channel server is killed
//! mid-run (connections cut, acknowledgements possibly lost) while the agent keeps probing,
//! and a new one, with a new CA and a freshly planned assignment source but the same result
//! store, comes back on the same port. The kill lands while the store has made a batch
//! durable but before its acknowledgement went out, the worst moment: the agent resends it, and
//! it is still counted once. Every probe the agent made is in the store exactly once.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netslo_agent::echo::Echo;
use netslo_agent::engine::{Engine, EngineConfig, Jobs};
use netslo_agent::report::{Reporter, ReporterConfig};
use netslo_operator::channel::{
    AcceptedBatch, AgentBinding, AgentIdentity, ChannelConfig, ChannelServer, Counted,
    MemoryAssignments, MemorySink, ResultSink, SinkError, StaticTokens,
};
use tokio::sync::watch;

const TOKEN: &str = "agent-token";
const AGENT: &str = "agent-1";
const CHECK: &str = "team/echo";

/// Stores, then (when told to) never answers: the operator dies between "durable" and "ack".
#[derive(Debug, Default)]
struct StallingSink {
    inner: Arc<MemorySink>,
    stall: std::sync::atomic::AtomicBool,
    stalled: tokio::sync::Notify,
}

impl ResultSink for StallingSink {
    fn ingest(
        &self,
        identity: &AgentIdentity,
        batch: &AcceptedBatch,
    ) -> Result<Counted<'_>, SinkError> {
        let counted = self.inner.ingest(identity, batch)?;
        let stall = self.stall.load(Ordering::SeqCst);
        Ok(Counted {
            outcome: counted.outcome,
            durable: Box::pin(async move {
                counted.durable.await?;
                if stall {
                    self.stalled.notify_one();
                    std::future::pending::<()>().await;
                }
                Ok(())
            }),
        })
    }
}

fn source(targets: &[String], ready: bool) -> Arc<MemoryAssignments> {
    let s = Arc::new(MemoryAssignments::new(Duration::from_secs(3_600)));
    s.set(
        AGENT,
        AgentBinding::service_account("netslo", "agent"),
        crate::channel_common::tcp_assignment(CHECK, targets, 100),
    )
    .unwrap();
    if ready {
        s.mark_ready();
    }
    s
}

async fn start(
    port: u16,
    ca_file: &Path,
    source: Arc<MemoryAssignments>,
    sink: Arc<dyn ResultSink>,
) -> ChannelServer {
    let verifier = Arc::new(
        StaticTokens::new().with(TOKEN, AgentIdentity::service_account("netslo", "agent")),
    );
    let cfg = ChannelConfig::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        vec!["127.0.0.1".into()],
    );
    // The old socket may linger for a moment after a kill.
    let deadline = Instant::now() + Duration::from_secs(10);
    let server = loop {
        match ChannelServer::start(cfg.clone(), verifier.clone(), source.clone(), sink.clone())
            .await
        {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("retrying bind: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    // What publishing to the ConfigMap and the kubelet's refresh amount to.
    std::fs::write(ca_file, server.ca_pem()).unwrap();
    server
}

async fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn stored_total(sink: &MemorySink) -> u64 {
    sink.buckets().iter().map(|b| b.report.bucket.total).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_loses_no_results_and_counts_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();

    // A TCP echo responder to probe, plus a closed port (bad probes must survive too).
    let echo = Echo::bind(&["127.0.0.1:0".parse().unwrap()], &[], "echo")
        .await
        .unwrap();
    let echo_addr = echo.local_addrs().0[0];
    tokio::spawn(echo.serve());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let targets = vec![echo_addr.to_string(), closed_addr.to_string()];

    let sink = MemorySink::new();
    let stalling = Arc::new(StallingSink {
        inner: sink.clone(),
        ..StallingSink::default()
    });
    let first = start(0, &ca_file, source(&targets, true), stalling.clone()).await;
    let port = first.local_addr().port();

    // The agent: engine + reporter, as `netslo-agent run --operator-url` wires them.
    let mut rcfg = ReporterConfig::new(
        format!("https://127.0.0.1:{port}").parse().unwrap(),
        ca_file.clone(),
        token_file.clone(),
        AGENT.into(),
    );
    rcfg.flush_interval = Duration::from_millis(100);
    rcfg.poll_wait = Duration::from_secs(2);
    rcfg.backoff_min = Duration::from_millis(100);
    rcfg.backoff_max = Duration::from_millis(500);
    rcfg.batch_buckets = 3; // many small batches: more acknowledgements in flight at the kill
    let reporter = Arc::new(Reporter::new(rcfg).unwrap());
    let (engine, mut raw) = Engine::with_raw_results(
        EngineConfig {
            source: AGENT.into(),
            window: Duration::from_millis(200),
            max_lag: Duration::from_millis(200),
            ..EngineConfig::default()
        },
        100_000,
    );
    let engine = Arc::new(engine);
    let probes = Arc::new(AtomicU64::new(0));
    let counter = {
        let probes = probes.clone();
        tokio::spawn(async move {
            while raw.recv().await.is_some() {
                probes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let (jobs_tx, jobs_rx) = watch::channel(Jobs::from(Vec::new()));
    let channel = {
        let (r, e) = (reporter.clone(), engine.clone());
        tokio::spawn(async move { r.run(&e, &jobs_tx).await })
    };
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let run = {
        let e = engine.clone();
        tokio::spawn(async move {
            e.run(jobs_rx, async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
        })
    };

    // Results flow through the first operator.
    wait_for(
        "results through the first operator",
        Duration::from_secs(10),
        || sink.buckets().len() >= 6,
    )
    .await;

    // Kill it mid-run, just after the store took a batch and before the ack went out; the
    // agent keeps probing with its last assignment meanwhile.
    stalling.stall.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), stalling.stalled.notified())
        .await
        .expect("a batch reached the store");
    first.stop().await;
    let at_kill = probes.load(Ordering::SeqCst);
    let stored_at_kill = stored_total(&sink);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        probes.load(Ordering::SeqCst) > at_kill + 10,
        "the agent kept probing while the operator was away"
    );
    assert_eq!(
        stored_total(&sink),
        stored_at_kill,
        "nobody stored anything meanwhile"
    );
    assert!(
        reporter.pending() > 0,
        "results buffered while the operator is away"
    );

    // A new operator: new CA (the agent re-reads the file), a source that is planned only a
    // moment after start (results are answered "retry later" until then), the same store.
    let planned = source(&targets, false);
    let second = start(port, &ca_file, planned.clone(), sink.clone()).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    planned.mark_ready();
    wait_for(
        "results through the second operator",
        Duration::from_secs(15),
        || second.stats().snapshot().accepted >= 6,
    )
    .await;

    let during = second.stats().snapshot();
    assert_eq!(
        (during.connections, during.requests),
        (1, 1),
        "one connection, opened by one request, carries the assignment and every batch"
    );
    assert!(during.batches_acked >= 2);

    // Stop the agent: the engine closes its open windows, the reporter delivers the rest.
    stop_tx.send(true).unwrap();
    run.await.unwrap();
    channel.abort();
    let left = reporter.flush(&engine, Duration::from_secs(15)).await;
    assert_eq!(left, 0, "everything acknowledged");
    drop(engine); // closes the raw stream
    let _ = tokio::time::timeout(Duration::from_secs(5), counter).await;

    let made = probes.load(Ordering::SeqCst);
    let stored = sink.buckets();
    let mut ids = HashSet::new();
    for b in &stored {
        assert!(
            ids.insert((b.boot_id.clone(), b.report.seq)),
            "bucket {} stored twice",
            b.report.seq
        );
        assert_eq!(&*b.report.check, CHECK);
        assert_eq!(&*b.report.source, AGENT);
    }
    let total: u64 = stored.iter().map(|b| b.report.bucket.total).sum();
    assert_eq!(total, made, "every probe counted exactly once");
    let bad: u64 = stored.iter().map(|b| b.report.bucket.bad).sum();
    assert!(bad > 0, "the closed port's failures are reported too");
    assert_eq!(reporter.stats().buckets_refused.load(Ordering::SeqCst), 0);
    assert_eq!(sink.dropped(AGENT, reporter.boot_id()), 0);
    let s2 = second.stats().snapshot();
    assert!(
        s2.duplicates >= 1,
        "the batch stored before the kill came again and was recognised"
    );
    assert!(reporter.stats().buckets_duplicate.load(Ordering::SeqCst) >= 1);
    assert_eq!(
        (s2.unavailable, s2.channels_opened),
        (0, 1),
        "the channel waited for the plan rather than being told to retry"
    );
    assert_eq!(
        s2.refused_unauthenticated + s2.refused_forbidden + s2.refused_unassigned,
        0
    );
    eprintln!(
        "probes {made}, buckets {}, second operator {s2:?}, agent dup acks {}",
        stored.len(),
        reporter.stats().buckets_duplicate.load(Ordering::SeqCst)
    );
}

/// A batch waiting for its durable write holds no place among the batches being read: with
/// room for one batch at a time and every acknowledgement stalled, each agent's batch is
/// still counted. (A durable store acknowledges in group commits seconds apart; batches that
/// held their places through them capped an operator at a few batches a second.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_waiting_to_be_durable_hold_up_no_other_batch() {
    let agents = ["agent-1", "agent-2", "agent-3"];
    let source = Arc::new(MemoryAssignments::new(Duration::from_secs(3_600)));
    for agent in agents {
        source
            .set(
                agent,
                AgentBinding::service_account("netslo", "agent"),
                crate::channel_common::tcp_assignment(CHECK, &["127.0.0.1:9".into()], 10_000),
            )
            .unwrap();
    }
    source.mark_ready();
    let sink = MemorySink::new();
    let stalling = Arc::new(StallingSink {
        inner: sink.clone(),
        ..StallingSink::default()
    });
    stalling.stall.store(true, Ordering::SeqCst);
    let verifier = Arc::new(
        StaticTokens::new().with(TOKEN, AgentIdentity::service_account("netslo", "agent")),
    );
    let mut cfg = ChannelConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        vec!["127.0.0.1".into()],
    );
    cfg.max_concurrent_batches = 1;
    let server = ChannelServer::start(cfg, verifier, source, stalling)
        .await
        .unwrap();
    let (addr, ca) = (server.local_addr(), server.ca_pem().to_owned());
    let auth = format!("Bearer {TOKEN}");
    let _posts: Vec<_> = agents
        .iter()
        .map(|agent| {
            let body = crate::channel_common::batch(
                agent,
                "boot-1",
                vec![crate::channel_common::bucket(1, CHECK, agent, 5)],
            );
            let (ca, auth) = (ca.clone(), auth.clone());
            tokio::spawn(async move {
                crate::channel_common::https(
                    addr,
                    &ca,
                    http::Method::POST,
                    netslo_protocol::channel::RESULTS_PATH,
                    &[("authorization", &auth)],
                    body,
                )
                .await
            })
        })
        .collect();
    wait_for(
        "every agent's batch counted",
        Duration::from_secs(10),
        || sink.buckets().len() == agents.len(),
    )
    .await;
}
