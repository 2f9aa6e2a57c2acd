//! Shared helpers of the integration tests: assignments from JSON, test servers with
//! scripted (and hostile) replies, a test CA.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use netslo_agent::engine::{Engine, EngineConfig, Jobs, compile, trace_failure};
use netslo_agent::probe::trace::TraceSettings;
use netslo_protocol::spec::Assignment;
use netslo_protocol::trace::PathTrace;
use netslo_protocol::verdict::ProbeResult;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Compiles `{"checks":[check]}`.
pub fn jobs(check: Value) -> Jobs {
    let doc = json!({ "source": "test", "checks": [check] });
    let a = Assignment::from_json(doc.to_string().as_bytes()).expect("valid assignment");
    compile(&a, "test").expect("compiles")
}

/// Probes every target of a check once, in order, on the current runtime.
pub async fn probe_all(check: Value) -> Vec<ProbeResult> {
    probe_all_of(&jobs(check)).await
}

async fn probe_all_of(jobs: &Jobs) -> Vec<ProbeResult> {
    // A generous lag bound: these tests judge the network, not the machine's load.
    let engine = Engine::new(EngineConfig {
        max_lag: Duration::from_secs(1),
        ..EngineConfig::default()
    });
    let mut out = Vec::new();
    for j in jobs.iter() {
        out.push(engine.probe_once(j).await);
    }
    out
}

/// Probes the first target of a check once and traces its path if it failed on the way.
pub async fn probe_and_trace(
    check: Value,
) -> (
    ProbeResult,
    Option<Result<PathTrace, netslo_agent::probe::trace::TraceError>>,
) {
    let jobs = jobs(check);
    let job = &jobs[0];
    let result = probe_all_of(&jobs).await.remove(0);
    let trace = trace_failure(job, &result, TraceSettings::default()).await;
    (result, trace)
}

/// Probes every target of a check once.
pub async fn probe_one(check: Value) -> ProbeResult {
    probe_all(check).await.remove(0)
}

/// What a scripted server does after reading a request head.
#[derive(Clone, Debug)]
pub enum Then {
    Close,
    /// Keep the connection open without writing.
    Hold,
    /// Write this chunk again and again until the peer goes away.
    Repeat(&'static [u8]),
}

#[derive(Clone, Debug)]
pub struct Reply {
    pub delay: Duration,
    pub bytes: Vec<u8>,
    pub then: Then,
}

impl Reply {
    pub fn status(code: u16, body: &str) -> Reply {
        let bytes = format!(
            "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Reply {
            delay: Duration::ZERO,
            bytes,
            then: Then::Close,
        }
    }

    pub fn ok() -> Reply {
        Reply::status(200, "ok\n")
    }

    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn raw(bytes: &[u8], then: Then) -> Reply {
        Reply {
            delay: Duration::ZERO,
            bytes: bytes.to_vec(),
            then,
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, reply: &Reply) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    tokio::time::sleep(reply.delay).await;
    if s.write_all(&reply.bytes).await.is_err() {
        return;
    }
    match reply.then {
        Then::Close => {
            let _ = s.shutdown().await;
        }
        Then::Hold => tokio::time::sleep(Duration::from_secs(3600)).await,
        Then::Repeat(c) => while s.write_all(c).await.is_ok() {},
    }
}

/// Serves `reply` to every connection (TLS when `tls` is given) until the task is dropped.
pub async fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, reply: Reply) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let reply = reply.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => handle(stream, &reply).await,
                Some(a) => {
                    if let Ok(s) = a.accept(stream).await {
                        handle(s, &reply).await;
                    }
                }
            }
        });
    }
}

/// A test CA and a server certificate it signed.
pub struct TestPki {
    pub ca_pem: String,
    pub server: Arc<rustls::ServerConfig>,
}

/// A CA, and a server certificate for `names` (DNS names or IP addresses).
pub fn test_pki(names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone(), ca_cert.der().clone()], key_der)
        .unwrap();
    TestPki {
        ca_pem: ca_cert.pem(),
        server: Arc::new(server),
    }
}

/// A loopback TCP port with nothing listening.
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
