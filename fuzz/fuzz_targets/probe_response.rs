//! Probe response handling: what a probed server answers is untrusted. The first byte picks
//! the protocol; the rest is the server's answer:
//! * HTTP: served as is from a loopback socket to the real HTTP probe (head and body limits,
//!   chunked framing, redirects followed back to the same server);
//! * DNS: decoded as a response message and judged by the DNS probe's own answer handling.
//!
//! Whatever arrives, the probe ends in an observation without panicking.
#![no_main]

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use hickory_resolver::proto::op::Message;
use hickory_resolver::proto::rr::RecordType;
use libfuzzer_sys::fuzz_target;
use netslo_agent::probe::dns::{answers_of, judge_response};
use netslo_agent::probe::http::HttpProbe;
use netslo_agent::probe::{Guard, Prober};
use netslo_protocol::guard::AddressPolicy;
use netslo_protocol::spec::{HttpSpec, Rcode};
use netslo_protocol::target::HttpTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A loopback HTTP "server" that answers every connection with the current input, and the
/// probe pointed at it.
struct Http {
    runtime: tokio::runtime::Runtime,
    reply: Arc<Mutex<Vec<u8>>>,
    probe: HttpProbe,
}

static HTTP: LazyLock<Http> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let reply: Arc<Mutex<Vec<u8>>> = Arc::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("loopback listener");
    let port = listener.local_addr().expect("port").port();
    let serving = reply.clone();
    runtime.spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let reply = serving.lock().unwrap_or_else(|p| p.into_inner()).clone();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(&reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    let spec = HttpSpec {
        body_contains: Some("ok".into()),
        follow_redirects: 2,
        max_body_bytes: 256,
        ..HttpSpec::default()
    };
    // Loopback is this harness's server; nothing else is allowed.
    let guard = Guard::new(Arc::new(AddressPolicy {
        allow_loopback: true,
        ..AddressPolicy::default()
    }));
    let target =
        HttpTarget::parse(&format!("http://127.0.0.1:{port}/"), &spec, "fuzz").expect("target");
    let probe = HttpProbe::new(target, &spec, "fuzz", guard).expect("probe");
    Http {
        runtime,
        reply,
        probe,
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, answer)) = data.split_first() else {
        return;
    };
    if selector < 0xc0 {
        let http = &*HTTP;
        *http.reply.lock().unwrap_or_else(|p| p.into_inner()) = answer.to_vec();
        let _ = http
            .runtime
            .block_on(http.probe.probe(Duration::from_millis(500)));
    } else if let Ok(message) = Message::from_vec(answer) {
        let record_type = match selector & 3 {
            0 => RecordType::A,
            1 => RecordType::AAAA,
            2 => RecordType::SRV,
            _ => RecordType::CNAME,
        };
        let answers = answers_of(&message.answers, record_type);
        let _ = judge_response(
            message.metadata.response_code,
            &answers,
            Rcode::NoError,
            &["10.0.0.1".to_owned()],
        );
    }
});
