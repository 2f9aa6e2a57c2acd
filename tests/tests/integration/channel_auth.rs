//! The agent channel authenticates with real service-account tokens checked by a real API
//! server (TokenReview, audience `netslo`): a token minted for the agent's ServiceAccount is
//! accepted; a token for another audience, garbage, a forged JWT, an expired JWT and no token
//! are refused and counted; a valid token of a ServiceAccount not bound to the agent is
//! refused; results for a check or source the agent was not assigned are refused and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{Method, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use netslo_agent::report::{Reporter, ReporterConfig};
use netslo_operator::channel::{
    AgentBinding, CA_CONFIGMAP_KEY, CachingVerifier, ChannelConfig, ChannelServer,
    MemoryAssignments, MemorySink, TokenReviewVerifier, TokenVerifier, publish_ca,
};
use netslo_protocol::channel::{
    ASSIGNMENT_PATH, AssignmentEnvelope, BatchAck, ErrorBody, RESULTS_PATH,
};
use netslo_tests::control_plane::{self, TestNamespace};

const AGENT: &str = "agent-1";

async fn mint(sas: &Api<ServiceAccount>, name: &str, audience: &str) -> String {
    let req = TokenRequest {
        metadata: ObjectMeta::default(),
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            bound_object_ref: None,
        },
        status: None,
    };
    let out: TokenRequest = sas
        .create_subresource("token", name, &PostParams::default(), &req)
        .await
        .unwrap();
    out.status.unwrap().token
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A JWT that looks like a service-account token but is signed by nobody.
fn forged(namespace: &str, exp: u64) -> String {
    let payload = serde_json::json!({
        "aud": ["netslo"],
        "exp": exp,
        "iat": exp.saturating_sub(600),
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": format!("system:serviceaccount:{namespace}:agent"),
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": "agent", "uid": "x"}},
    });
    format!(
        "{}.{}.{}",
        b64(r#"{"alg":"RS256","kid":"forged"}"#),
        b64(&payload.to_string()),
        b64("not a signature")
    )
}

struct Server {
    addr: SocketAddr,
    ca: String,
}

impl Server {
    async fn get(&self, token: Option<&str>) -> (StatusCode, hyper::body::Bytes) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("x-netslo-agent", AGENT)];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        crate::channel_common::https(
            self.addr,
            &self.ca,
            Method::GET,
            ASSIGNMENT_PATH,
            &headers,
            vec![],
        )
        .await
    }

    async fn post(&self, token: &str, body: Vec<u8>) -> (StatusCode, hyper::body::Bytes) {
        let auth = format!("Bearer {token}");
        crate::channel_common::https(
            self.addr,
            &self.ca,
            Method::POST,
            RESULTS_PATH,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body,
        )
        .await
    }
}

fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<ErrorBody>(body)
        .map(|e| e.reason)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

#[tokio::test]
async fn tokens_are_verified_with_token_review_and_results_authorised() {
    let plane = control_plane::shared(control_plane::API_ONLY).unwrap();
    let ns = TestNamespace::create(plane, "channel-auth").await.unwrap();
    let client = plane.client().await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    for name in ["agent", "other"] {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        sas.create(&PostParams::default(), &sa).await.unwrap();
    }
    let good = mint(&sas, "agent", "netslo").await;
    let wrong_audience = mint(&sas, "agent", "not-netslo").await;
    let other_sa = mint(&sas, "other", "netslo").await;

    let allowed = format!("{}/allowed", ns.name);
    let source = Arc::new(MemoryAssignments::new(Duration::from_secs(3_600)));
    source
        .set(
            AGENT,
            AgentBinding::service_account(&ns.name, "agent"),
            crate::channel_common::tcp_assignment(&allowed, &["127.0.0.1:9".into()], 10_000),
        )
        .unwrap();
    source.mark_ready();
    let sink = MemorySink::new();
    let verifier = Arc::new(CachingVerifier::new(TokenReviewVerifier::new(
        client.clone(),
    )));
    let server = ChannelServer::start(
        ChannelConfig::new("127.0.0.1:0".parse().unwrap(), vec!["127.0.0.1".into()]),
        verifier.clone() as Arc<dyn TokenVerifier>,
        source.clone(),
        sink.clone(),
    )
    .await
    .unwrap();
    let s = Server {
        addr: server.local_addr(),
        ca: server.ca_pem().to_owned(),
    };
    let stats = server.stats().clone();

    // The real token is accepted, for the assignment and for results, many times over with
    // one TokenReview.
    let (status, body) = s.get(Some(&good)).await;
    assert_eq!(status, StatusCode::OK, "{}", reason(&body));
    let env: AssignmentEnvelope = serde_json::from_slice(&body).unwrap();
    assert_eq!(env.assignment.checks[0].name, allowed);
    for i in 1..=5u64 {
        let b = crate::channel_common::batch(
            AGENT,
            "boot-1",
            vec![crate::channel_common::bucket(i, &allowed, AGENT, 3)],
        );
        let (status, body) = s.post(&good, b).await;
        assert_eq!(status, StatusCode::OK, "{}", reason(&body));
        let ack: BatchAck = serde_json::from_slice(&body).unwrap();
        assert_eq!((ack.accepted, ack.duplicates), (1, 0));
    }
    assert_eq!(verifier.reviews(), 1, "positive verdict cached");

    // The agent's own client, reading the token from a file as in a pod.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), &s.ca).unwrap();
    std::fs::write(dir.path().join("token"), format!("{good}\n")).unwrap();
    let reporter = Reporter::new(ReporterConfig::new(
        format!("https://{}", s.addr).parse().unwrap(),
        dir.path().join("ca.crt"),
        dir.path().join("token"),
        AGENT.into(),
    ))
    .unwrap();
    let env2 = reporter
        .fetch_assignment(None, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(env2.version, env.version);
    assert!(
        reporter
            .fetch_assignment(Some(&env.version), Duration::from_secs(1))
            .await
            .unwrap()
            .is_none(),
        "unchanged: 304 after the wait"
    );

    // Refused and counted as unauthenticated.
    let before = stats.snapshot();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cases: Vec<(&str, Option<String>, &[&str])> = vec![
        ("no token", None, &["TokenMissing"]),
        ("garbage", Some("garbage".into()), &["TokenMalformed"]),
        (
            "wrong audience",
            Some(wrong_audience.clone()),
            &["TokenWrongAudience", "TokenRejected"],
        ),
        (
            "forged",
            Some(forged(&ns.name, now + 600)),
            &["TokenRejected"],
        ),
        ("expired", Some(forged(&ns.name, 1_000)), &["TokenExpired"]),
    ];
    let n = cases.len() as u64;
    for (name, token, reasons) in cases {
        let (status, body) = s.get(token.as_deref()).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            reason(&body)
        );
        assert!(
            reasons.contains(&reason(&body).as_str()),
            "{name}: {}",
            reason(&body)
        );
        if let Some(t) = &token {
            let b = crate::channel_common::batch(
                AGENT,
                "boot-x",
                vec![crate::channel_common::bucket(100, &allowed, AGENT, 1)],
            );
            let (status, body) = s.post(t, b).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{name}: {}",
                reason(&body)
            );
        }
    }
    let after = stats.snapshot();
    assert_eq!(
        after.refused_unauthenticated - before.refused_unauthenticated,
        2 * n - 1
    );

    // A valid token of a ServiceAccount the agent is not bound to.
    let (status, body) = s.get(Some(&other_sa)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{}", reason(&body));
    let b = crate::channel_common::batch(
        AGENT,
        "boot-2",
        vec![crate::channel_common::bucket(1, &allowed, AGENT, 1)],
    );
    let (status, _) = s.post(&other_sa, b).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(stats.snapshot().refused_forbidden, 2);

    // The right identity, but results for a check and a source it was not assigned.
    let b = crate::channel_common::batch(
        AGENT,
        "boot-1",
        vec![
            crate::channel_common::bucket(6, &format!("{}/not-assigned", ns.name), AGENT, 7),
            crate::channel_common::bucket(7, &allowed, "someone-else", 7),
            crate::channel_common::bucket(8, &allowed, AGENT, 2),
        ],
    );
    let (status, body) = s.post(&good, b).await;
    assert_eq!(status, StatusCode::OK, "{}", reason(&body));
    let ack: BatchAck = serde_json::from_slice(&body).unwrap();
    assert_eq!(ack.accepted, 1);
    assert_eq!(
        ack.refused.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![6, 7]
    );
    assert!(ack.refused.iter().all(|r| r.reason == "Unassigned"));

    let end = stats.snapshot();
    assert_eq!(end.refused_unassigned, 2);
    assert_eq!(end.accepted, 6);
    let stored = sink.buckets();
    assert_eq!(stored.len(), 6, "only what was authenticated and assigned");
    assert!(
        stored
            .iter()
            .all(|b| *b.report.check == *allowed && &*b.report.source == AGENT)
    );
    assert_eq!(
        stored[0].service_account,
        format!("system:serviceaccount:{}:agent", ns.name)
    );
    // The CA agents need is published in a ConfigMap (server-side apply, idempotent).
    for _ in 0..2 {
        publish_ca(client.clone(), &ns.name, "netslo-channel-ca", &s.ca)
            .await
            .unwrap();
    }
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("netslo-channel-ca")
        .await
        .unwrap();
    assert_eq!(
        cm.data.unwrap().get(CA_CONFIGMAP_KEY).map(String::as_str),
        Some(s.ca.as_str())
    );

    // TokenReview calls: the good token once, the wrong-audience, forged and other-SA
    // tokens once each (refusals are cached too); garbage and expired never reach it.
    assert!(verifier.reviews() <= 4, "{} reviews", verifier.reviews());
}
