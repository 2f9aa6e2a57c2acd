//! The echo responder every agent serves, so agents can probe each other: UDP echo, TCP echo
//! and a minimal HTTP endpoint. Everything is bounded: datagram size, bytes echoed per TCP
//! connection, idle time, concurrent connections, request head size.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

/// Largest datagram echoed.
pub const MAX_DATAGRAM: usize = 2_048;
/// Most bytes echoed on one TCP connection before it is closed.
pub const MAX_TCP_ECHO_BYTES: usize = 64 * 1024;
/// A connection idle for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent TCP and HTTP connections (each).
pub const MAX_CONNECTIONS: usize = 1_024;

/// Errors starting the responder.
#[derive(Debug, thiserror::Error)]
pub enum EchoError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl EchoError {
    pub fn reason(&self) -> &'static str {
        match self {
            EchoError::Bind { .. } => "EchoBindFailed",
        }
    }
}

/// Serves UDP echo on a socket until the task is dropped.
pub async fn serve_udp(sock: UdpSocket) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let _ = sock.send_to(&buf[..n], peer).await;
            }
            Err(e) => {
                // ICMP errors from earlier replies surface here; keep serving.
                tracing::trace!(error = %e, "udp echo receive error");
            }
        }
    }
}

/// Serves TCP echo on a listener until the task is dropped.
pub async fn serve_tcp(listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = [0u8; 4096];
            let mut echoed = 0usize;
            while echoed < MAX_TCP_ECHO_BYTES {
                let n = match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                let n = n.min(MAX_TCP_ECHO_BYTES - echoed);
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                echoed += n;
            }
        });
    }
}

/// Serves the HTTP endpoint: `GET /` (and any path) answers 200 `ok` with the node name in
/// `x-netslo-node`. The body of a request is never read.
pub async fn serve_http(listener: TcpListener, node: Arc<str>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(respond(&req, &node)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(IDLE_TIMEOUT * 6, conn).await;
        });
    }
}

fn respond(req: &Request<Incoming>, node: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok\n")));
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    if let Ok(v) = header::HeaderValue::from_str(node) {
        resp.headers_mut().insert("x-netslo-node", v);
    }
    resp
}

/// Listen backlog: peers probing in bursts must not overflow the accept queue (an overflow
/// drops SYNs, which a prober would report as loss).
pub const BACKLOG: u32 = 4_096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(BACKLOG)
}

/// Bound sockets of a responder.
#[derive(Debug)]
pub struct Echo {
    pub udp: Vec<UdpSocket>,
    pub tcp: Vec<TcpListener>,
    pub http: Vec<TcpListener>,
    pub node: Arc<str>,
}

impl Echo {
    /// Binds UDP and TCP echo on each of `echo` and HTTP on each of `http`.
    pub async fn bind(
        echo: &[SocketAddr],
        http: &[SocketAddr],
        node: &str,
    ) -> Result<Echo, EchoError> {
        let mut out = Echo {
            udp: Vec::new(),
            tcp: Vec::new(),
            http: Vec::new(),
            node: Arc::from(node),
        };
        for &addr in echo {
            let err = |source| EchoError::Bind { addr, source };
            let tcp = listen(addr).map_err(err)?;
            // Same port for UDP when the TCP port was chosen by the kernel.
            let udp_addr = tcp.local_addr().map_err(err)?;
            out.udp.push(UdpSocket::bind(udp_addr).await.map_err(err)?);
            out.tcp.push(tcp);
        }
        for &addr in http {
            out.http.push(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| EchoError::Bind { addr, source })?,
            );
        }
        Ok(out)
    }

    /// Addresses actually bound: (echo, http).
    pub fn local_addrs(&self) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
        (
            self.tcp
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect(),
            self.http
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect(),
        )
    }

    /// Serves forever (until dropped or aborted).
    pub async fn serve(self) {
        let mut set = tokio::task::JoinSet::new();
        for s in self.udp {
            set.spawn(serve_udp(s));
        }
        for l in self.tcp {
            set.spawn(serve_tcp(l));
        }
        for l in self.http {
            set.spawn(serve_http(l, self.node.clone()));
        }
        while set.join_next().await.is_some() {}
        std::future::pending::<()>().await;
    }
}
