//! UDP echo probe against netslo's echo responder (every agent serves one).
//!
//! Sends one datagram carrying a random token and waits for the same bytes back. ICMP port
//! unreachable shows up as `ECONNREFUSED` on the connected socket: `UDPRefused`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use netslo_protocol::target::HostPort;

use super::{Guard, Prober, resolve};
use crate::verdict::{FailureReason, Observation, Phases, classify_local_error, micros};
use netslo_protocol::hash::splitmix64;
use netslo_protocol::spec::UdpSpec;

/// First bytes of every probe datagram.
pub const MAGIC: &[u8; 4] = b"NSLU";

#[derive(Debug)]
pub struct UdpProbe {
    target: HostPort,
    payload: usize,
    counter: AtomicU64,
    guard: Guard,
}

/// A probe datagram of `len` bytes (at least 12) for token `t`.
pub fn datagram(t: u64, len: usize) -> Vec<u8> {
    let mut d = Vec::with_capacity(len.max(12));
    d.extend_from_slice(MAGIC);
    d.extend_from_slice(&t.to_be_bytes());
    let mut x = t;
    while d.len() < len {
        x = splitmix64(x);
        d.extend_from_slice(&x.to_le_bytes()[..(len - d.len()).min(8)]);
    }
    d
}

fn classify(e: &std::io::Error) -> FailureReason {
    if let Some(r) = classify_local_error(e) {
        return r;
    }
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => FailureReason::UdpRefused,
        std::io::ErrorKind::NetworkUnreachable => FailureReason::NetUnreachable,
        std::io::ErrorKind::HostUnreachable => FailureReason::HostUnreachable,
        _ => FailureReason::ProberError,
    }
}

impl UdpProbe {
    pub fn new(target: HostPort, spec: &UdpSpec, guard: Guard) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = splitmix64(u64::from(std::process::id()) ^ nanos);
        UdpProbe {
            target,
            payload: usize::from(spec.payload_bytes),
            counter: AtomicU64::new(seed),
            guard,
        }
    }

    /// Where the probe goes, for a path trace.
    pub(super) fn destination(&self) -> (&HostPort, &Guard) {
        (&self.target, &self.guard)
    }
}

impl Prober for UdpProbe {
    async fn probe(&self, timeout: Duration) -> Observation {
        let begin = Instant::now();
        let deadline = begin + timeout;
        let (addr, dns) = match resolve(&self.target, deadline, &self.guard).await {
            Ok(x) => x,
            Err(obs) => return obs,
        };
        let mut phases = Phases {
            dns_us: dns.map(micros),
            ..Phases::default()
        };
        let bind: std::net::SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let fail = |t: Duration, mut phases: Phases, r| {
            phases.total_us = Some(micros(begin.elapsed()));
            Observation::failed(t, phases, r)
        };
        let sock = match UdpSocket::bind(bind).await {
            Ok(s) => s,
            Err(e) => return fail(Duration::ZERO, phases, classify(&e)),
        };
        if let Err(e) = sock.connect(addr).await {
            return fail(Duration::ZERO, phases, classify(&e));
        }
        let token = splitmix64(self.counter.fetch_add(1, Ordering::Relaxed));
        let msg = datagram(token, self.payload);
        let start = Instant::now();
        if let Err(e) = sock.send(&msg).await {
            return fail(start.elapsed(), phases, classify(&e));
        }
        let mut buf = vec![0u8; msg.len() + 64];
        let mut mismatched = false;
        loop {
            match tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf)).await {
                Err(_) => {
                    let r = if mismatched {
                        FailureReason::UdpMismatch
                    } else {
                        FailureReason::UdpTimeout
                    };
                    return fail(start.elapsed(), phases, r);
                }
                Ok(Err(e)) => return fail(start.elapsed(), phases, classify(&e)),
                Ok(Ok(n)) if buf[..n] == msg[..] => {
                    let rtt = start.elapsed();
                    phases.total_us = Some(micros(begin.elapsed()));
                    return Observation::ok(rtt, phases);
                }
                Ok(Ok(_)) => mismatched = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_sized_and_distinct() {
        for len in [12usize, 16, 17, 32, 1400] {
            let d = datagram(7, len);
            assert_eq!(d.len(), len);
            assert_eq!(&d[..4], MAGIC);
        }
        assert_ne!(datagram(1, 32), datagram(2, 32));
    }
}
