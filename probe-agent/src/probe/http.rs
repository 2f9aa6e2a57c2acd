//! HTTP and HTTPS probe.
//!
//! Drives hyper's HTTP/1.1 client connection directly over a socket the probe opens itself,
//! so each phase is timed on its own: DNS (names only), TCP connect, TLS handshake (HTTPS),
//! time to first byte (request written → response head received) and total. Every probe is a
//! new client (new connection, no TLS session resumption) unless `reuseConnection` is set.
//! Redirects are not followed unless asked; at most `maxBodyBytes` of the body are read.
//!
//! Every hop, the first and each redirect, is resolved and checked by the check's [`Guard`]
//! and connected to at exactly the checked address; the Host header and the TLS server name
//! still come from the URL, so name-based virtual hosts and certificates work as usual.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;

use super::tcp::{Connected, timed_connect};
use netslo_protocol::spec::{HttpSpec, SpecError};
use netslo_protocol::target::{Hop, HostPort, HttpTarget};

use super::{Guard, Prober, resolve};
use crate::verdict::{
    FailureReason, Observation, Phases, classify_connect_error, classify_tls_io_error, micros,
};

/// Largest response head accepted (status line + headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Aborts the connection task when dropped.
#[derive(Debug)]
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[derive(Debug)]
struct Idle {
    sender: SendRequest<Empty<Bytes>>,
    _task: ConnTask,
}

#[derive(Debug)]
pub struct HttpProbe {
    first: Hop,
    method: Method,
    expected_status: Vec<u16>,
    body_contains: Option<Vec<u8>>,
    tls: Arc<ClientConfig>,
    follow_redirects: u8,
    reuse: bool,
    max_body: usize,
    idle: Mutex<Option<Idle>>,
    guard: Guard,
}

fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            tracing::debug!(added, "loaded system CA roots");
            Arc::new(roots)
        })
        .clone()
}

/// Builds the client TLS configuration: ring provider, the given CA certificates (read with
/// [`parse_ca_bundle`]) or the system roots, ALPN http/1.1, no session resumption (each probe
/// measures a full handshake).
pub fn tls_config(
    ca_certificates: Option<Vec<CertificateDer<'static>>>,
) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_certificates {
        Some(certificates) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates {
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate: {e}"))?;
            }
            Arc::new(roots)
        }
        None => system_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

impl HttpProbe {
    /// Where the probe's first request goes, for a path trace.
    pub(super) fn destination(&self) -> (&HostPort, &Guard) {
        (&self.first.host, &self.guard)
    }

    pub fn new(
        target: HttpTarget,
        spec: &HttpSpec,
        field: &str,
        guard: Guard,
    ) -> Result<Self, SpecError> {
        let tls = tls_config(target.ca_certificates)
            .map_err(|m| SpecError::invalid(format!("{field}: caBundle"), m))?;
        Ok(HttpProbe {
            first: target.first,
            method: target.method,
            expected_status: spec.expected_status.clone(),
            body_contains: spec.body_contains.as_ref().map(|s| s.as_bytes().to_vec()),
            tls,
            follow_redirects: spec.follow_redirects,
            reuse: spec.reuse_connection,
            max_body: spec.max_body_bytes as usize,
            idle: Mutex::new(None),
            guard,
        })
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }

    fn take_idle(&self) -> Option<Idle> {
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        guard.take().filter(|i| i.sender.is_ready())
    }

    fn put_idle(&self, idle: Idle) {
        let mut guard = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        *guard = Some(idle);
    }

    /// Opens a connection (DNS, guard, TCP, TLS) and performs the HTTP/1.1 handshake.
    async fn connect(
        &self,
        hop: &Hop,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<Idle, FailureReason> {
        // `addr` is checked; it is the address connected to, never resolved again.
        let (addr, dns) = resolve(&hop.host, deadline, &self.guard)
            .await
            .map_err(|o| {
                phases.dns_us = o.phases.dns_us;
                o.failure.unwrap_or(FailureReason::DnsError)
            })?;
        phases.dns_us = dns.map(micros);
        let stream = match timed_connect(addr, deadline).await {
            Connected::Ok(s, took) => {
                phases.connect_us = Some(micros(took));
                s
            }
            Connected::Failed(took, reason) => {
                phases.connect_us = Some(micros(took));
                return Err(reason);
            }
        };
        // Every probe connection closes abortively: the agent keeps no TIME_WAIT sockets.
        let _ = stream.set_zero_linger();
        if !hop.https {
            return handshake(stream).await;
        }
        let t = Instant::now();
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let res = tokio::time::timeout_at(
            deadline.into(),
            connector.connect(hop.server_name.clone(), stream),
        )
        .await;
        phases.tls_us = Some(micros(t.elapsed()));
        match res {
            Err(_) => Err(FailureReason::TlsTimeout),
            Ok(Err(e)) => Err(classify_tls_io_error(&e)),
            Ok(Ok(tls)) => handshake(tls).await,
        }
    }

    /// One request/response exchange; returns the status and, for redirects, the location.
    async fn exchange(
        &self,
        hop: &Hop,
        deadline: Instant,
        phases: &mut Phases,
    ) -> Result<(u16, Option<Uri>), FailureReason> {
        let fresh = self.reuse.then(|| self.take_idle()).flatten();
        let mut conn = match fresh {
            Some(idle) => idle,
            None => self.connect(hop, deadline, phases).await?,
        };
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(hop.path.clone())
            .header(header::HOST, hop.authority.clone())
            .header(header::USER_AGENT, "netslo-agent")
            .header(header::ACCEPT, "*/*");
        if !self.reuse {
            req = req.header(header::CONNECTION, "close");
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|_| FailureReason::ProberConfig)?;
        let t = Instant::now();
        let resp = tokio::time::timeout_at(deadline.into(), conn.sender.send_request(req))
            .await
            .map_err(|_| FailureReason::HttpTimeout)?
            .map_err(|e| classify_hyper_error(&e))?;
        phases.ttfb_us = Some(micros(t.elapsed()));
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<Uri>().ok());
        let (body, complete) = read_body(resp.into_body(), self.max_body, deadline).await?;
        if let Some(want) = &self.body_contains
            && self.status_ok(status)
            && !contains(&body, want)
        {
            return Err(FailureReason::BodyMismatch);
        }
        if self.reuse && complete {
            self.put_idle(conn);
        }
        Ok((status, location))
    }

    fn next_hop(&self, current: &Hop, location: &Uri) -> Option<Hop> {
        if location.scheme().is_some() {
            Hop::from_uri(location, None, None, "redirect").ok()
        } else {
            let path = location.path_and_query()?.as_str();
            if !path.starts_with('/') {
                return None;
            }
            let mut h = current.clone();
            h.path = path.parse().ok()?;
            Some(h)
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

async fn handshake<T>(io: T) -> Result<Idle, FailureReason>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(io))
        .await
        .map_err(|e| classify_hyper_error(&e))?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Idle {
        sender,
        _task: ConnTask(task),
    })
}

/// Reads at most `max` bytes of the body; `complete` is false when the limit cut it short.
async fn read_body(
    mut body: Incoming,
    max: usize,
    deadline: Instant,
) -> Result<(Vec<u8>, bool), FailureReason> {
    let mut out = Vec::new();
    loop {
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .map_err(|_| FailureReason::HttpTimeout)?;
        match frame {
            None => return Ok((out, true)),
            Some(Err(e)) => return Err(classify_hyper_error(&e)),
            Some(Ok(f)) => {
                if let Ok(data) = f.into_data() {
                    let room = max.saturating_sub(out.len());
                    out.extend_from_slice(&data[..data.len().min(room)]);
                    if data.len() >= room {
                        return Ok((out, false));
                    }
                }
            }
        }
    }
}

/// Maps a hyper error to a reason, looking for an I/O cause first.
fn classify_hyper_error(e: &hyper::Error) -> FailureReason {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match classify_connect_error(io) {
                FailureReason::TcpError => FailureReason::HttpProtocol,
                r => r,
            };
        }
        src = s.source();
    }
    if e.is_timeout() {
        FailureReason::HttpTimeout
    } else {
        FailureReason::HttpProtocol
    }
}

impl Prober for HttpProbe {
    async fn probe(&self, timeout: Duration) -> Observation {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut phases = Phases::default();
        let mut hop = self.first.clone();
        let mut redirects_left = self.follow_redirects;
        let result = loop {
            match self.exchange(&hop, deadline, &mut phases).await {
                Err(r) => break Err(r),
                Ok((status, location)) => {
                    if (300..400).contains(&status)
                        && redirects_left > 0
                        && let Some(next) = location.as_ref().and_then(|l| self.next_hop(&hop, l))
                    {
                        redirects_left -= 1;
                        hop = next;
                        continue;
                    }
                    break if self.status_ok(status) {
                        Ok(())
                    } else {
                        Err(FailureReason::HttpStatus)
                    };
                }
            }
        };
        let total = start.elapsed();
        phases.total_us = Some(micros(total));
        match result {
            Ok(()) => Observation::ok(total, phases),
            Err(r) => Observation::failed(total, phases, r),
        }
    }
}

#[cfg(test)]
mod tests {
    use netslo_protocol::target::HostPort;

    use super::*;

    fn probe(url: &str, spec: &HttpSpec) -> HttpProbe {
        let target = HttpTarget::parse(url, spec, "t").unwrap();
        HttpProbe::new(target, spec, "t", Guard::default()).unwrap()
    }

    #[test]
    fn status_and_body_matching() {
        let mut spec = HttpSpec::default();
        let p = probe("http://x.test/", &spec);
        assert!(p.status_ok(204) && !p.status_ok(301) && !p.status_ok(500));
        spec.expected_status = vec![301, 404];
        let p = probe("http://x.test/", &spec);
        assert!(p.status_ok(404) && !p.status_ok(200));
        assert!(contains(b"hello world", b"o w"));
        assert!(!contains(b"hello", b"hello!"));
    }

    #[test]
    fn redirect_targets() {
        let p = probe("http://10.0.0.1:8080/a", &HttpSpec::default());
        let h = p.next_hop(&p.first, &"/b?c".parse().unwrap()).unwrap();
        assert_eq!(
            (h.path.to_string(), h.host.clone()),
            ("/b?c".into(), p.first.host.clone())
        );
        let h = p
            .next_hop(&p.first, &"https://10.0.0.2/z".parse().unwrap())
            .unwrap();
        assert!(h.https);
        assert!(p.next_hop(&p.first, &"relative".parse().unwrap()).is_none());
        // A redirect's host is normalised like the first one's, so the guard sees the address.
        let h = p
            .next_hop(
                &p.first,
                &"http://2852039166/latest/meta-data/".parse().unwrap(),
            )
            .unwrap();
        assert_eq!(
            h.host,
            HostPort::Addr("169.254.169.254:80".parse().unwrap())
        );
    }
}
