//! Shared by the channel tests: a bare HTTPS client (to send what a real agent never would)
//! and batch builders.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use netslo_protocol::bucket::{Bucket, BucketReport};
use netslo_protocol::channel::ResultBatch;
use rustls::pki_types::ServerName;

/// One request over a fresh TLS connection; the server's certificate is checked against
/// `ca_pem`.
pub async fn https(
    addr: SocketAddr,
    ca_pem: &str,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, Bytes) {
    let certificates = netslo_protocol::target::parse_ca_bundle(ca_pem).unwrap();
    let tls = netslo_agent::probe::http::tls_config(Some(certificates)).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, bytes)
}

/// A consistent bucket of `total` good probes.
pub fn bucket(seq: u64, check: &str, source: &str, total: u64) -> BucketReport {
    let mut b = Bucket::new(Arc::from(Vec::<u64>::new()));
    b.total = total;
    b.good = total;
    for _ in 0..total {
        b.latency.record(100);
    }
    BucketReport {
        seq,
        check: check.into(),
        target: "t".into(),
        source: source.into(),
        start_unix_ms: 1_700_000_000_000,
        duration_ms: 10_000,
        bucket: b,
        p50_us: None,
        p90_us: None,
        p99_us: None,
    }
}

pub fn batch(agent: &str, boot: &str, buckets: Vec<BucketReport>) -> Vec<u8> {
    let batch = ResultBatch {
        agent_name: agent.into(),
        boot_id: boot.into(),
        seq_from: buckets.first().map_or(0, |b| b.seq),
        seq_to: buckets.last().map_or(0, |b| b.seq),
        dropped_buckets: 0,
        buckets,
    };
    serde_json::to_vec(&batch).unwrap()
}

/// A one-check TCP assignment.
pub fn tcp_assignment(
    check: &str,
    targets: &[String],
    interval_ms: u64,
) -> netslo_protocol::spec::Assignment {
    let targets: Vec<serde_json::Value> = targets
        .iter()
        .map(|t| serde_json::json!({"address": t}))
        .collect();
    let doc = serde_json::json!({
        "checks": [{
            "name": check,
            "intervalMs": interval_ms,
            "timeoutMs": interval_ms.min(1_000),
            "jitter": 0.0,
            "probe": {"tcp": {}},
            "targets": targets,
            // The tests' echo responders listen on loopback.
            "addressPolicy": {"allowLoopback": true},
        }]
    });
    netslo_protocol::spec::Assignment::from_json(&serde_json::to_vec(&doc).unwrap()).unwrap()
}
