//! TCP connect probe: the time from `connect()` to an established connection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};

use netslo_protocol::target::HostPort;

use super::{Guard, Prober, resolve};
use crate::verdict::{
    FailureReason, Observation, Phases, classify_connect_error, classify_local_error, micros,
};
use netslo_protocol::spec::TcpSpec;

#[derive(Debug)]
pub struct TcpProbe {
    target: HostPort,
    close_with_reset: bool,
    guard: Guard,
}

impl TcpProbe {
    pub fn new(target: HostPort, spec: &TcpSpec, guard: Guard) -> Self {
        TcpProbe {
            target,
            close_with_reset: spec.close_with_reset,
            guard,
        }
    }

    /// Where the probe goes, for a path trace.
    pub(super) fn destination(&self) -> (&HostPort, &Guard) {
        (&self.target, &self.guard)
    }
}

/// Outcome of one timed connect.
#[derive(Debug)]
pub enum Connected {
    Ok(TcpStream, Duration),
    Failed(Duration, FailureReason),
}

/// Connects to `addr` before `deadline`, measuring from the `connect()` call to the
/// established connection (socket creation excluded).
pub async fn timed_connect(addr: SocketAddr, deadline: Instant) -> Connected {
    let sock = match if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    } {
        Ok(s) => s,
        Err(e) => {
            return Connected::Failed(
                Duration::ZERO,
                classify_local_error(&e).unwrap_or(FailureReason::ProberError),
            );
        }
    };
    let t0 = Instant::now();
    let res = tokio::time::timeout_at(deadline.into(), sock.connect(addr)).await;
    let took = t0.elapsed();
    match res {
        Err(_) => Connected::Failed(took, FailureReason::TcpTimeout),
        Ok(Err(e)) => Connected::Failed(took, classify_connect_error(&e)),
        Ok(Ok(s)) => Connected::Ok(s, took),
    }
}

impl Prober for TcpProbe {
    async fn probe(&self, timeout: Duration) -> Observation {
        let start = Instant::now();
        let deadline = start + timeout;
        let (addr, dns) = match resolve(&self.target, deadline, &self.guard).await {
            Ok(x) => x,
            Err(obs) => return obs,
        };
        let mut phases = Phases {
            dns_us: dns.map(micros),
            ..Phases::default()
        };
        match timed_connect(addr, deadline).await {
            Connected::Ok(stream, took) => {
                if self.close_with_reset {
                    // Abortive close: no TIME_WAIT on the agent. Errors here are irrelevant.
                    let _ = stream.set_zero_linger();
                }
                drop(stream);
                phases.connect_us = Some(micros(took));
                phases.total_us = Some(micros(start.elapsed()));
                Observation::ok(took, phases)
            }
            Connected::Failed(took, reason) => {
                phases.total_us = Some(micros(start.elapsed()));
                Observation::failed(took, phases, reason)
            }
        }
    }
}
