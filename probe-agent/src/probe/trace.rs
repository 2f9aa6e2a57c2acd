//! Path trace without privileges, as `tracepath` does it: UDP datagrams with a rising TTL
//! (hop limit) from a socket with `IP_RECVERR`/`IPV6_RECVERR`, each ICMP answer read from the
//! socket's error queue. A router on the way answers Time Exceeded, the destination Port
//! Unreachable, a refusing router or firewall another Unreachable; a hop that drops the
//! traffic says nothing, so the last hop that answered is where the path was last seen alive.
//!
//! The datagrams go only to the address and port the probe already checked against its
//! guard (routers see them expire; nothing is addressed to them); without a port (ICMP) each
//! TTL goes to its own port above `base_port`, as traceroute does. Each datagram carries its
//! TTL, and the error queue gives the datagram back, so a late answer is never taken for the
//! next hop's. A Port Unreachable counts as reaching the destination only when the destination
//! sends it: from a router it is a firewall's `REJECT`.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};

use netslo_protocol::trace::{Hop, HopAnswer, PathTrace, TraceEnd};

use crate::verdict::micros;

/// How far and how long a trace goes.
#[derive(Debug, Clone, Copy)]
pub struct TraceSettings {
    pub max_hops: u8,
    /// How long each TTL waits for its answer.
    pub hop_timeout: Duration,
    /// Consecutive silent TTLs after which the trace stops.
    pub silent_hops: u8,
    /// The first TTL's destination port is one above this (traceroute's 33434 range).
    pub base_port: u16,
}

impl Default for TraceSettings {
    fn default() -> Self {
        TraceSettings {
            max_hops: 30,
            hop_timeout: Duration::from_secs(1),
            silent_hops: 3,
            base_port: 33_434,
        }
    }
}

/// Errors that keep a trace from running at all.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("cannot open a trace socket: {0}")]
    Socket(#[source] io::Error),
    #[error("the trace's worker thread failed")]
    Worker,
}

impl TraceError {
    pub fn reason(&self) -> &'static str {
        match self {
            TraceError::Socket(_) => "TraceSocket",
            TraceError::Worker => "TraceWorker",
        }
    }
}

/// An ICMP answer read from the error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpAnswer {
    pub answer: HopAnswer,
    /// The hop that sent it (`SO_EE_OFFENDER`).
    pub from: Option<IpAddr>,
}

const SO_EE_ORIGIN_ICMP: u8 = 2;
const SO_EE_ORIGIN_ICMP6: u8 = 3;

/// Reads one control message of the error queue (pure): `None` for anything but an ICMP
/// answer this trace understands.
pub fn icmp_answer(message: &ControlMessageOwned) -> Option<IcmpAnswer> {
    let (err, from) = match message {
        ControlMessageOwned::Ipv4RecvErr(err, from) if err.ee_origin == SO_EE_ORIGIN_ICMP => (
            err,
            from.map(|a| IpAddr::from(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)))),
        ),
        ControlMessageOwned::Ipv6RecvErr(err, from) if err.ee_origin == SO_EE_ORIGIN_ICMP6 => (
            err,
            from.map(|a| IpAddr::from(Ipv6Addr::from(a.sin6_addr.s6_addr))),
        ),
        _ => return None,
    };
    let answer = if err.ee_origin == SO_EE_ORIGIN_ICMP {
        classify_icmp(err.ee_type, err.ee_code)?
    } else {
        classify_icmp6(err.ee_type, err.ee_code)?
    };
    // The kernel leaves the offender's family unset when the ICMP message named none.
    let from = from.filter(|a| !a.is_unspecified());
    Some(IcmpAnswer { answer, from })
}

fn classify_icmp(icmp_type: u8, code: u8) -> Option<HopAnswer> {
    Some(match (icmp_type, code) {
        (11, _) => HopAnswer::TimeExceeded,
        (3, 3) => HopAnswer::Reached,
        (3, 0) => HopAnswer::NetUnreachable,
        (3, 1) => HopAnswer::HostUnreachable,
        (3, 9 | 10 | 13) => HopAnswer::Prohibited,
        (3, _) => HopAnswer::Unreachable,
        _ => return None,
    })
}

fn classify_icmp6(icmp_type: u8, code: u8) -> Option<HopAnswer> {
    Some(match (icmp_type, code) {
        (3, _) => HopAnswer::TimeExceeded,
        (1, 4) => HopAnswer::Reached,
        (1, 0) => HopAnswer::NetUnreachable,
        (1, 3) => HopAnswer::HostUnreachable,
        (1, 1 | 5 | 6) => HopAnswer::Prohibited,
        (1, _) => HopAnswer::Unreachable,
        _ => return None,
    })
}

/// Traces the path to `destination` on a blocking thread (the socket waits in `poll`).
pub async fn trace(
    destination: IpAddr,
    port: Option<u16>,
    settings: TraceSettings,
) -> Result<PathTrace, TraceError> {
    tokio::task::spawn_blocking(move || trace_blocking(destination, port, settings))
        .await
        .map_err(|_| TraceError::Worker)?
}

/// Traces the path to `destination` from the calling thread.
pub fn trace_blocking(
    destination: IpAddr,
    port: Option<u16>,
    settings: TraceSettings,
) -> Result<PathTrace, TraceError> {
    let socket = open_socket(destination).map_err(TraceError::Socket)?;
    let mut hops: Vec<Hop> = Vec::new();
    let mut sent_at: Vec<Option<Instant>> = Vec::new();
    let mut silent = 0u8;
    for ttl in 1..=settings.max_hops.max(1) {
        let mut payload = [0u8; 32];
        payload[..MAGIC.len()].copy_from_slice(MAGIC);
        payload[MAGIC.len()] = ttl;
        hops.push(Hop {
            ttl,
            address: None,
            answer: None,
            rtt_us: None,
        });
        sent_at.push(None);
        set_ttl(&socket, destination, ttl).map_err(TraceError::Socket)?;
        let to = SocketAddr::new(
            destination,
            port.unwrap_or_else(|| port_of(settings.base_port, ttl)),
        );
        match socket.send_to(&payload, &to.into()) {
            Ok(_) => sent_at[usize::from(ttl) - 1] = Some(Instant::now()),
            // The agent's host has no route (or refuses locally): nothing left the node.
            Err(e) if is_unroutable(&e) => {
                hops.pop();
                return Ok(PathTrace {
                    destination,
                    hops,
                    end: TraceEnd::NoRoute,
                });
            }
            Err(e) => return Err(TraceError::Socket(e)),
        }
        let deadline = Instant::now() + settings.hop_timeout;
        while hops[usize::from(ttl) - 1].answer.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !wait_for_error(&socket, left) {
                break;
            }
            while let Some((sent_to, sent_ttl, mut answer)) = read_error(&socket) {
                if answer.answer == HopAnswer::Reached && answer.from != Some(destination) {
                    answer.answer = HopAnswer::Prohibited;
                }
                let Some(index) = sent_ttl
                    .or_else(|| ttl_of(settings.base_port, sent_to))
                    .map(usize::from)
                    .filter(|t| (1..=hops.len()).contains(t))
                    .map(|t| t - 1)
                else {
                    continue;
                };
                let hop = &mut hops[index];
                if hop.answer.is_none() {
                    hop.answer = Some(answer.answer);
                    hop.address = answer.from;
                    hop.rtt_us = sent_at[index].map(|t| micros(t.elapsed()));
                }
            }
        }
        let hop = &hops[usize::from(ttl) - 1];
        match hop.answer {
            Some(HopAnswer::Reached) => {
                return Ok(PathTrace {
                    destination,
                    hops,
                    end: TraceEnd::Reached,
                });
            }
            Some(a) if a.ends_trace() => {
                return Ok(PathTrace {
                    destination,
                    hops,
                    end: TraceEnd::Refused,
                });
            }
            Some(_) => silent = 0,
            None => {
                silent += 1;
                if silent >= settings.silent_hops.max(1) {
                    return Ok(PathTrace {
                        destination,
                        hops,
                        end: TraceEnd::Silent,
                    });
                }
            }
        }
    }
    Ok(PathTrace {
        destination,
        hops,
        end: TraceEnd::HopLimit,
    })
}

fn port_of(base: u16, ttl: u8) -> u16 {
    base.wrapping_add(u16::from(ttl))
}

fn ttl_of(base: u16, port: u16) -> Option<u8> {
    u8::try_from(port.wrapping_sub(base)).ok()
}

fn is_unroutable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EPERM | libc::EACCES)
    )
}

fn open_socket(destination: IpAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(destination, 0)),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    match destination {
        IpAddr::V4(_) => setsockopt(&socket, sockopt::Ipv4RecvErr, &true)?,
        IpAddr::V6(_) => setsockopt(&socket, sockopt::Ipv6RecvErr, &true)?,
    }
    Ok(socket)
}

fn set_ttl(socket: &Socket, destination: IpAddr, ttl: u8) -> io::Result<()> {
    match destination {
        IpAddr::V4(_) => socket.set_ttl_v4(u32::from(ttl)),
        IpAddr::V6(_) => socket.set_unicast_hops_v6(u32::from(ttl)),
    }
}

/// Waits until the error queue has an entry (`POLLERR`), at most `timeout`.
fn wait_for_error(socket: &Socket, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::empty())];
    let ms = u16::try_from(timeout.as_millis().max(1)).unwrap_or(u16::MAX);
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
}

/// What each trace datagram starts with, before its TTL.
const MAGIC: &[u8] = b"netslo-trace";

/// The TTL a returned datagram was sent with, if it is one of ours (pure).
fn sent_ttl(payload: &[u8]) -> Option<u8> {
    payload
        .strip_prefix(MAGIC)
        .and_then(|rest| rest.first().copied())
}

/// Reads one ICMP answer from the error queue without blocking: the original datagram's
/// destination port, the TTL it carried and the answer. Entries that are no ICMP answer are
/// skipped.
fn read_error(socket: &Socket) -> Option<(u16, Option<u8>, IcmpAnswer)> {
    let mut control = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    loop {
        let mut payload = [0u8; 64];
        let (port, answer, len) = {
            let mut iov = [IoSliceMut::new(&mut payload)];
            let msg = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            )
            .ok()?;
            let port = msg.address.as_ref().and_then(|a| {
                a.as_sockaddr_in()
                    .map(|a| a.port())
                    .or_else(|| a.as_sockaddr_in6().map(|a| a.port()))
            });
            let answer = msg
                .cmsgs()
                .ok()
                .and_then(|mut c| c.find_map(|m| icmp_answer(&m)));
            (port, answer, msg.bytes)
        };
        if let (Some(port), Some(answer)) = (port, answer) {
            return Some((port, sent_ttl(&payload[..len.min(payload.len())]), answer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extended_err(origin: u8, icmp_type: u8, code: u8) -> libc::sock_extended_err {
        libc::sock_extended_err {
            ee_errno: libc::EHOSTUNREACH as u32,
            ee_origin: origin,
            ee_type: icmp_type,
            ee_code: code,
            ee_pad: 0,
            ee_info: 0,
            ee_data: 0,
        }
    }

    fn v4(origin: u8, icmp_type: u8, code: u8, from: Option<Ipv4Addr>) -> ControlMessageOwned {
        let from = from.map(|a| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(a).to_be(),
            },
            sin_zero: [0; 8],
        });
        ControlMessageOwned::Ipv4RecvErr(extended_err(origin, icmp_type, code), from)
    }

    fn v6(origin: u8, icmp_type: u8, code: u8, from: Ipv6Addr) -> ControlMessageOwned {
        let from = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: from.octets(),
            },
            sin6_scope_id: 0,
        };
        ControlMessageOwned::Ipv6RecvErr(extended_err(origin, icmp_type, code), Some(from))
    }

    #[test]
    fn icmp_answers_are_read_with_their_sender() {
        let r1 = Ipv4Addr::new(10, 78, 0, 2);
        for (t, c, want) in [
            (11, 0, HopAnswer::TimeExceeded),
            (3, 3, HopAnswer::Reached),
            (3, 0, HopAnswer::NetUnreachable),
            (3, 1, HopAnswer::HostUnreachable),
            (3, 13, HopAnswer::Prohibited),
            (3, 10, HopAnswer::Prohibited),
            (3, 4, HopAnswer::Unreachable),
        ] {
            let got = icmp_answer(&v4(SO_EE_ORIGIN_ICMP, t, c, Some(r1))).unwrap();
            let want = IcmpAnswer {
                answer: want,
                from: Some(r1.into()),
            };
            assert_eq!(got, want, "type {t} code {c}");
        }
        let r6: Ipv6Addr = "fd00:78::2".parse().unwrap();
        for (t, c, want) in [
            (3, 0, HopAnswer::TimeExceeded),
            (1, 4, HopAnswer::Reached),
            (1, 1, HopAnswer::Prohibited),
            (1, 3, HopAnswer::HostUnreachable),
        ] {
            let got = icmp_answer(&v6(SO_EE_ORIGIN_ICMP6, t, c, r6)).unwrap();
            assert_eq!((got.answer, got.from), (want, Some(r6.into())));
        }
    }

    #[test]
    fn anything_else_on_the_error_queue_is_ignored() {
        // An ICMP type that is no answer to a datagram, a local error (origin 1), a v6
        // origin under the v4 option, another control message.
        assert_eq!(icmp_answer(&v4(SO_EE_ORIGIN_ICMP, 0, 0, None)), None);
        assert_eq!(icmp_answer(&v4(1, 11, 0, None)), None);
        assert_eq!(icmp_answer(&v4(SO_EE_ORIGIN_ICMP6, 3, 0, None)), None);
        assert_eq!(icmp_answer(&ControlMessageOwned::RxqOvfl(3)), None);
        // No offender, or an unset one: the answer stands, without an address.
        let anonymous = icmp_answer(&v4(SO_EE_ORIGIN_ICMP, 11, 0, None)).unwrap();
        assert_eq!(anonymous.from, None);
        let unset = icmp_answer(&v4(SO_EE_ORIGIN_ICMP, 11, 0, Some(Ipv4Addr::UNSPECIFIED)));
        assert_eq!(unset.unwrap().from, None);
    }

    #[test]
    fn returned_datagrams_say_their_ttl_and_foreign_ones_do_not() {
        let mut ours = MAGIC.to_vec();
        ours.extend([7, 0, 0]);
        assert_eq!(sent_ttl(&ours), Some(7));
        assert_eq!(sent_ttl(MAGIC), None);
        assert_eq!(sent_ttl(b"netslo-trac"), None);
        assert_eq!(sent_ttl(b"something else entirely"), None);
    }

    #[test]
    fn ports_name_their_ttl_and_nothing_else() {
        let base = TraceSettings::default().base_port;
        for ttl in [1u8, 2, 30, 255] {
            assert_eq!(ttl_of(base, port_of(base, ttl)), Some(ttl));
        }
        assert_eq!(ttl_of(base, base - 1), None);
        assert_eq!(ttl_of(base, base + 300), None);
        assert_eq!(ttl_of(u16::MAX, port_of(u16::MAX, 3)), Some(3));
    }
}
