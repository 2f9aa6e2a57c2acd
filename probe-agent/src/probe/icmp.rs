//! ICMP echo through unprivileged datagram ("ping") sockets: no `NET_RAW` needed.
//!
//! The kernel allows them only to groups in `net.ipv4.ping_group_range` (default `1 0`: none).
//! When it refuses, the probe is `Invalid` with `ICMPUnavailable`: the prober cannot measure,
//! the network did not fail.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::{Guard, Prober};
use crate::verdict::{FailureReason, Observation, Phases, classify_local_error, micros};
use netslo_protocol::hash::splitmix64;
use netslo_protocol::spec::IcmpSpec;

#[derive(Debug)]
pub struct IcmpProbe {
    ip: IpAddr,
    payload: usize,
    seq: AtomicU16,
    guard: Guard,
}

/// Maps an error from creating a ping socket.
pub fn classify_socket_error(e: &std::io::Error) -> FailureReason {
    match e.raw_os_error() {
        Some(
            libc::EACCES
            | libc::EPERM
            | libc::EPROTONOSUPPORT
            | libc::EAFNOSUPPORT
            | libc::ESOCKTNOSUPPORT,
        ) => FailureReason::IcmpUnavailable,
        _ => classify_local_error(e).unwrap_or(FailureReason::ProberError),
    }
}

/// Maps an error from sending or receiving on a connected ping socket.
pub fn classify_io_error(e: &std::io::Error) -> FailureReason {
    if let Some(r) = classify_local_error(e) {
        return r;
    }
    match e.kind() {
        std::io::ErrorKind::NetworkUnreachable => FailureReason::NetUnreachable,
        std::io::ErrorKind::HostUnreachable => FailureReason::HostUnreachable,
        std::io::ErrorKind::PermissionDenied => FailureReason::IcmpUnavailable,
        _ => FailureReason::ProberError,
    }
}

/// An echo request (the kernel fills in the identifier and checksum for ping sockets).
pub fn echo_request(v6: bool, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.push(if v6 { 128 } else { 8 });
    p.extend_from_slice(&[0, 0, 0, 0, 0]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Whether `reply` is the echo reply to `seq` carrying `payload`.
pub fn is_reply(v6: bool, reply: &[u8], seq: u16, payload: &[u8]) -> bool {
    reply.len() >= 8
        && reply[0] == if v6 { 129 } else { 0 }
        && reply[6..8] == seq.to_be_bytes()
        && reply[8..] == *payload
}

impl IcmpProbe {
    pub fn new(ip: IpAddr, spec: &IcmpSpec, guard: Guard) -> Self {
        let seed = splitmix64(u64::from(std::process::id()) ^ ip_bits(ip));
        IcmpProbe {
            ip,
            payload: usize::from(spec.payload_bytes),
            seq: AtomicU16::new(seed as u16),
            guard,
        }
    }

    /// Where the probe goes, for a path trace.
    pub(super) fn destination(&self) -> (IpAddr, &Guard) {
        (self.ip, &self.guard)
    }

    async fn run(&self, timeout: Duration) -> Result<Duration, (Duration, FailureReason)> {
        // Before the socket exists: a refused destination gets no packet.
        self.guard
            .check_ip(self.ip)
            .map_err(|_| (Duration::ZERO, FailureReason::DestinationRefused))?;
        let v6 = self.ip.is_ipv6();
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let sock = Socket::new(domain, Type::DGRAM, Some(proto))
            .map_err(|e| (Duration::ZERO, classify_socket_error(&e)))?;
        let local = |e: std::io::Error| {
            (
                Duration::ZERO,
                classify_local_error(&e).unwrap_or(FailureReason::ProberError),
            )
        };
        sock.set_nonblocking(true).map_err(local)?;
        let udp =
            tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock)).map_err(local)?;
        udp.connect(SocketAddr::new(self.ip, 0))
            .await
            .map_err(|e| (Duration::ZERO, classify_io_error(&e)))?;

        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let nonce = splitmix64(u64::from(seq) ^ 0x6e65_7473_6c6f).to_be_bytes();
        let payload: Vec<u8> = (0..self.payload)
            .map(|i| nonce[i % 8] ^ (i / 8) as u8)
            .collect();
        let packet = echo_request(v6, seq, &payload);
        let start = Instant::now();
        let deadline = start + timeout;
        udp.send(&packet)
            .await
            .map_err(|e| (start.elapsed(), classify_io_error(&e)))?;
        let mut buf = vec![0u8; 8 + self.payload + 64];
        loop {
            match tokio::time::timeout_at(deadline.into(), udp.recv(&mut buf)).await {
                Err(_) => return Err((start.elapsed(), FailureReason::IcmpTimeout)),
                Ok(Err(e)) => return Err((start.elapsed(), classify_io_error(&e))),
                Ok(Ok(n)) if is_reply(v6, &buf[..n], seq, &payload) => return Ok(start.elapsed()),
                Ok(Ok(_)) => continue,
            }
        }
    }
}

fn ip_bits(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u64::from(u32::from(a)),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            (b as u64) ^ ((b >> 64) as u64)
        }
    }
}

impl Prober for IcmpProbe {
    async fn probe(&self, timeout: Duration) -> Observation {
        match self.run(timeout).await {
            Ok(rtt) => Observation::ok(
                rtt,
                Phases {
                    total_us: Some(micros(rtt)),
                    ..Phases::default()
                },
            ),
            Err((t, reason)) => Observation::failed(
                t,
                Phases {
                    total_us: Some(micros(t)),
                    ..Phases::default()
                },
                reason,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets() {
        let p = echo_request(false, 0x0102, b"abc");
        assert_eq!(p, vec![8, 0, 0, 0, 0, 0, 1, 2, b'a', b'b', b'c']);
        let mut reply = p.clone();
        reply[0] = 0;
        reply[4] = 0x77; // the kernel's identifier
        assert!(is_reply(false, &reply, 0x0102, b"abc"));
        assert!(!is_reply(false, &reply, 0x0103, b"abc"));
        assert!(!is_reply(false, &reply, 0x0102, b"abd"));
        assert!(
            !is_reply(false, &p, 0x0102, b"abc"),
            "a request is not a reply"
        );
        assert!(!is_reply(false, &[0, 0], 0, b""));
        assert_eq!(echo_request(true, 1, b"")[0], 128);
    }

    #[test]
    fn permission_errors_mean_unavailable() {
        for errno in [libc::EACCES, libc::EPERM, libc::EPROTONOSUPPORT] {
            let e = std::io::Error::from_raw_os_error(errno);
            assert_eq!(classify_socket_error(&e), FailureReason::IcmpUnavailable);
        }
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(classify_socket_error(&e), FailureReason::ProberResources);
    }
}
