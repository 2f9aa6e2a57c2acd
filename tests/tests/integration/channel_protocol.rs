//! The channel's protocol edges, against a real server over TLS (no control plane needed):
//! request limits and strict parsing, de-duplication, acknowledgement only after the store
//! said "durable", "retry later" before the first plan, the assignment long-poll, and node
//! addresses sent only to agents that do not hold them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::channel_common::{batch, bucket, https};
use http::{Method, StatusCode};
use netslo_agent::report::{Reporter, ReporterConfig};
use netslo_operator::channel::{
    AgentBinding, AgentIdentity, ChannelConfig, ChannelServer, MemoryAssignments, MemorySink,
    StaticTokens,
};
use netslo_protocol::channel::{
    ASSIGNMENT_PATH, AssignmentEnvelope, BatchAck, ErrorBody, MAX_BATCH_BYTES,
    NODE_ADDRESSES_HEADER, RESULTS_PATH, node_addresses_digest,
};

const AGENT: &str = "node-a";
const CHECK: &str = "team/web";
const AUTH: &str = "Bearer t0ken";

struct Fixture {
    server: ChannelServer,
    source: Arc<MemoryAssignments>,
    sink: Arc<MemorySink>,
}

async fn fixture(ready: bool) -> Fixture {
    let source = Arc::new(MemoryAssignments::new(Duration::from_secs(3_600)));
    source
        .set(
            AGENT,
            AgentBinding::service_account("netslo", "agent"),
            crate::channel_common::tcp_assignment(CHECK, &["127.0.0.1:9".into()], 10_000),
        )
        .unwrap();
    if ready {
        source.mark_ready();
    }
    let sink = MemorySink::new();
    let verifier = Arc::new(
        StaticTokens::new().with("t0ken", AgentIdentity::service_account("netslo", "agent")),
    );
    let server = ChannelServer::start(
        ChannelConfig::new("127.0.0.1:0".parse().unwrap(), vec!["127.0.0.1".into()]),
        verifier,
        source.clone(),
        sink.clone(),
    )
    .await
    .unwrap();
    Fixture {
        server,
        source,
        sink,
    }
}

impl Fixture {
    async fn post(&self, body: Vec<u8>) -> (StatusCode, String) {
        let (s, b) = https(
            self.server.local_addr(),
            self.server.ca_pem(),
            Method::POST,
            RESULTS_PATH,
            &[("authorization", AUTH)],
            body,
        )
        .await;
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    async fn get(&self, headers: &[(&str, &str)]) -> (StatusCode, hyper::body::Bytes) {
        let mut h = vec![("authorization", AUTH), ("x-netslo-agent", AGENT)];
        h.extend_from_slice(headers);
        https(
            self.server.local_addr(),
            self.server.ca_pem(),
            Method::GET,
            ASSIGNMENT_PATH,
            &h,
            vec![],
        )
        .await
    }
}

fn reason(body: &str) -> String {
    serde_json::from_str::<ErrorBody>(body)
        .map(|e| e.reason)
        .unwrap_or_else(|_| body.to_owned())
}

#[tokio::test]
async fn requests_are_bounded_and_strictly_parsed() {
    let f = fixture(true).await;
    let good = batch(AGENT, "boot", vec![bucket(1, CHECK, AGENT, 1)]);
    let mut unknown_field: serde_json::Value = serde_json::from_slice(&good).unwrap();
    unknown_field["extra"] = serde_json::json!(true);
    let mut inconsistent: serde_json::Value = serde_json::from_slice(&good).unwrap();
    inconsistent["buckets"][0]["total"] = serde_json::json!(99);
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "not json",
            b"{nope".to_vec(),
            StatusCode::BAD_REQUEST,
            "BatchMalformed",
        ),
        (
            "unknown field",
            serde_json::to_vec(&unknown_field).unwrap(),
            StatusCode::BAD_REQUEST,
            "BatchMalformed",
        ),
        (
            "inconsistent counts",
            serde_json::to_vec(&inconsistent).unwrap(),
            StatusCode::BAD_REQUEST,
            "BatchInvalid",
        ),
        (
            "empty batch",
            batch(AGENT, "boot", vec![]),
            StatusCode::BAD_REQUEST,
            "BatchInvalid",
        ),
        (
            "bad boot id",
            batch(AGENT, "no spaces", vec![bucket(1, CHECK, AGENT, 1)]),
            StatusCode::BAD_REQUEST,
            "BatchInvalid",
        ),
        (
            "too large",
            vec![b' '; MAX_BATCH_BYTES + 1],
            StatusCode::PAYLOAD_TOO_LARGE,
            "BatchTooLarge",
        ),
    ];
    let n = cases.len() as u64;
    for (name, body, status, want) in cases {
        let (s, b) = f.post(body).await;
        assert_eq!((s, reason(&b).as_str()), (status, want), "{name}: {b}");
    }
    let s = f.server.stats().snapshot();
    assert_eq!(s.refused_malformed, n);
    assert_eq!(s.accepted, 0);

    // Other malformed requests.
    let addr = f.server.local_addr();
    let ca = f.server.ca_pem();
    let (s, _) = https(
        addr,
        ca,
        Method::PUT,
        RESULTS_PATH,
        &[("authorization", AUTH)],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, _) = https(
        addr,
        ca,
        Method::GET,
        "/v1/secrets",
        &[("authorization", AUTH)],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = https(
        addr,
        ca,
        Method::GET,
        ASSIGNMENT_PATH,
        &[("authorization", AUTH)],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no agent header: {b:?}");
    let (s, _) = f.get(&[("x-netslo-wait-seconds", "soon")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // A wrong scheme is not a token.
    let (s, b) = https(
        addr,
        ca,
        Method::GET,
        ASSIGNMENT_PATH,
        &[("authorization", "Basic dTpw"), ("x-netslo-agent", AGENT)],
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(reason(&String::from_utf8_lossy(&b)), "TokenMalformed");

    // And a good batch still goes through.
    let (s, b) = f.post(good).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_count_once_and_acks_wait_for_the_store() {
    let f = fixture(true).await;
    let b1 = batch(
        AGENT,
        "boot-1",
        vec![bucket(1, CHECK, AGENT, 5), bucket(2, CHECK, AGENT, 5)],
    );

    // The store is down: no ack, nothing marked as seen.
    f.sink.set_failing(true);
    let (s, b) = f.post(b1.clone()).await;
    assert_eq!(
        (s, reason(&b).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "ResultStoreUnavailable")
    );
    f.sink.set_failing(false);

    // Retried: stored once; resent: duplicates, stored nothing more.
    let (s, b) = f.post(b1.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let ack: BatchAck = serde_json::from_str(&b).unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (2, 0));
    for _ in 0..3 {
        let (_, b) = f.post(b1.clone()).await;
        let ack: BatchAck = serde_json::from_str(&b).unwrap();
        assert_eq!((ack.accepted, ack.duplicates), (0, 2));
    }
    // Overlapping batch: only the new bucket counts. Same seq, new boot: a new bucket.
    let (_, b) = f
        .post(batch(
            AGENT,
            "boot-1",
            vec![bucket(2, CHECK, AGENT, 5), bucket(3, CHECK, AGENT, 5)],
        ))
        .await;
    let ack: BatchAck = serde_json::from_str(&b).unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (1, 1));
    let (_, b) = f
        .post(batch(AGENT, "boot-2", vec![bucket(1, CHECK, AGENT, 5)]))
        .await;
    let ack: BatchAck = serde_json::from_str(&b).unwrap();
    assert_eq!((ack.accepted, ack.duplicates), (1, 0));

    // Concurrent resends of one batch: stored once.
    let b4 = batch(AGENT, "boot-2", vec![bucket(2, CHECK, AGENT, 5)]);
    let (addr, ca) = (f.server.local_addr(), f.server.ca_pem().to_owned());
    let posts: Vec<_> = (0..8)
        .map(|_| {
            let (ca, body) = (ca.clone(), b4.clone());
            tokio::spawn(async move {
                https(
                    addr,
                    &ca,
                    Method::POST,
                    RESULTS_PATH,
                    &[("authorization", AUTH)],
                    body,
                )
                .await
            })
        })
        .collect();
    let mut accepted = 0;
    for p in posts {
        let (s, b) = p.await.unwrap();
        assert_eq!(s, StatusCode::OK);
        accepted += serde_json::from_slice::<BatchAck>(&b).unwrap().accepted;
    }
    assert_eq!(accepted, 1);

    let stored = f.sink.buckets();
    assert_eq!(stored.len(), 5);
    let s = f.server.stats().snapshot();
    assert_eq!(s.accepted, 5);
    assert_eq!(s.duplicates, 2 * 3 + 1 + 7);
    assert_eq!(s.sink_errors, 1);
}

#[tokio::test]
async fn before_the_first_plan_agents_are_told_to_retry() {
    let f = fixture(false).await;
    let (s, b) = f
        .post(batch(AGENT, "boot", vec![bucket(1, CHECK, AGENT, 1)]))
        .await;
    assert_eq!(
        (s, reason(&b).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "NotReady")
    );
    let (s, _) = f.get(&[]).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // A long-poll started before the plan is answered as soon as it is in.
    let source = f.source.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        source.mark_ready();
    });
    let (s, _) = f.get(&[("x-netslo-wait-seconds", "10")]).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = f
        .post(batch(AGENT, "boot", vec![bucket(1, CHECK, AGENT, 1)]))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn assignment_long_poll_answers_changes_at_once() {
    let f = fixture(true).await;
    let (s, b) = f.get(&[]).await;
    assert_eq!(s, StatusCode::OK);
    let env: AssignmentEnvelope = serde_json::from_slice(&b).unwrap();
    let etag = format!("\"{}\"", env.version);

    // Unchanged: 304 once the wait is over.
    let (s, _) = f
        .get(&[("if-none-match", &etag), ("x-netslo-wait-seconds", "1")])
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);

    // Changed during the wait: answered well before the wait ends.
    let source = f.source.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        source
            .set(
                AGENT,
                AgentBinding::service_account("netslo", "agent"),
                crate::channel_common::tcp_assignment("team/new", &["127.0.0.1:9".into()], 10_000),
            )
            .unwrap();
    });
    let t = Instant::now();
    let (s, b) = f
        .get(&[("if-none-match", &etag), ("x-netslo-wait-seconds", "30")])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(20));
    let env2: AssignmentEnvelope = serde_json::from_slice(&b).unwrap();
    assert_ne!(env2.version, env.version);
    assert_eq!(env2.assignment.checks[0].name, "team/new");

    // A new node's agent polls before it is planned: answered as soon as it is; one that is
    // never planned is refused when the wait ends.
    let source = f.source.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        source
            .set(
                "node-new",
                AgentBinding::service_account("netslo", "agent"),
                crate::channel_common::tcp_assignment(CHECK, &["127.0.0.1:9".into()], 10_000),
            )
            .unwrap();
    });
    let poll = async |agent: &str, wait: &str| {
        let headers = [
            ("authorization", AUTH),
            ("x-netslo-agent", agent),
            ("x-netslo-wait-seconds", wait),
        ];
        let (addr, ca) = (f.server.local_addr(), f.server.ca_pem());
        https(addr, ca, Method::GET, ASSIGNMENT_PATH, &headers, vec![]).await
    };
    let (s, _) = poll("node-new", "10").await;
    assert_eq!(s, StatusCode::OK);
    let forbidden = f.server.stats().snapshot().refused_forbidden;
    let (s, _) = poll("node-never", "1").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(f.server.stats().snapshot().refused_forbidden, forbidden + 1);

    // Results for the check it no longer has are still accepted within the grace period;
    // a check it never had is not.
    let (s, b) = f
        .post(batch(
            AGENT,
            "boot",
            vec![
                bucket(1, CHECK, AGENT, 1),
                bucket(2, "team/never", AGENT, 1),
            ],
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    let ack: BatchAck = serde_json::from_str(&b).unwrap();
    assert_eq!(ack.accepted, 1);
    assert_eq!(ack.refused.len(), 1);
}

#[tokio::test]
async fn node_addresses_travel_only_when_they_change() {
    let f = fixture(true).await;
    let with_addresses = |check: &str, addresses: &[&str]| {
        let mut a = crate::channel_common::tcp_assignment(check, &["127.0.0.1:9".into()], 10_000);
        a.node_addresses = addresses.iter().map(|ip| ip.parse().unwrap()).collect();
        a
    };
    let binding = AgentBinding::service_account("netslo", "agent");
    f.source
        .set(
            AGENT,
            binding.clone(),
            with_addresses(CHECK, &["10.0.0.1", "10.0.0.2"]),
        )
        .unwrap();

    // The agent's own client: the first answer carries the addresses and their digest.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), f.server.ca_pem()).unwrap();
    std::fs::write(dir.path().join("token"), "t0ken\n").unwrap();
    let reporter = Reporter::new(ReporterConfig::new(
        format!("https://{}", f.server.local_addr())
            .parse()
            .unwrap(),
        dir.path().join("ca.crt"),
        dir.path().join("token"),
        AGENT.into(),
    ))
    .unwrap();
    let first = reporter
        .fetch_assignment(None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.assignment.node_addresses.len(), 2);
    let digest = first.node_addresses_digest.clone();
    assert_eq!(
        digest,
        node_addresses_digest(&first.assignment.node_addresses)
    );

    // On the wire: left out for an agent that holds them, sent to one that holds others, and
    // always to an agent that does not speak of them.
    let wire = async |headers: &[(&str, &str)]| -> serde_json::Value {
        let (s, b) = f.get(headers).await;
        assert_eq!(s, StatusCode::OK);
        serde_json::from_slice(&b).unwrap()
    };
    let held = wire(&[(NODE_ADDRESSES_HEADER, &digest)]).await;
    assert_eq!(held["nodeAddressesHeld"], true);
    assert!(held["assignment"].get("nodeAddresses").is_none(), "{held}");
    let stale = wire(&[(NODE_ADDRESSES_HEADER, "0123456789abcdef")]).await;
    assert_eq!(
        stale["assignment"]["nodeAddresses"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let unspoken = wire(&[]).await;
    assert_eq!(
        unspoken["assignment"]["nodeAddresses"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(unspoken.get("nodeAddressesDigest").is_none(), "{unspoken}");

    // A new round's checks with the same addresses: the agent fills them in from its own.
    f.source
        .set(
            AGENT,
            binding.clone(),
            with_addresses("team/next", &["10.0.0.1", "10.0.0.2"]),
        )
        .unwrap();
    let next = reporter
        .fetch_assignment(Some(&first.version), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(next.version, first.version);
    assert_eq!(next.assignment.checks[0].name, "team/next");
    assert_eq!(
        next.assignment.node_addresses,
        first.assignment.node_addresses
    );

    // A node joins: the new list comes whole.
    f.source
        .set(
            AGENT,
            binding,
            with_addresses("team/next", &["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
        )
        .unwrap();
    let joined = reporter
        .fetch_assignment(Some(&next.version), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(joined.assignment.node_addresses.len(), 3);
    assert_ne!(joined.node_addresses_digest, digest);
}
