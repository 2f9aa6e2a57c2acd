//! Probes: each kind turns a target into an [`Observation`] within a deadline.
//!
//! [`Probe`] dispatches over the kinds; [`Probe::from_spec`] compiles a target of a check
//! (parsing addresses, URLs, CA bundles once, up front) so that running a probe does no
//! configuration work.

pub mod dns;
pub mod http;
pub mod icmp;
pub mod tcp;
pub mod udp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::spec::{ProbeSpec, SpecError, TargetSpec};
use crate::verdict::{FailureReason, Observation, Phases, micros};

/// One kind of probe.
pub trait Prober: Send + Sync {
    /// Probes once; must return by `timeout` (plus scheduling noise) whatever the network does.
    fn probe(&self, timeout: Duration) -> impl Future<Output = Observation> + Send;
}

/// A compiled probe of one target.
#[derive(Debug)]
pub enum Probe {
    Tcp(tcp::TcpProbe),
    Http(http::HttpProbe),
    Dns(dns::DnsProbe),
    Icmp(icmp::IcmpProbe),
    Udp(udp::UdpProbe),
}

impl Probe {
    /// Compiles a target of a check. `field` names the target in errors.
    pub fn from_spec(
        spec: &ProbeSpec,
        target: &TargetSpec,
        field: &str,
    ) -> Result<Probe, SpecError> {
        let addr = &target.address;
        Ok(match spec {
            ProbeSpec::Tcp(s) => Probe::Tcp(tcp::TcpProbe::new(HostPort::parse(addr, field)?, s)),
            ProbeSpec::Http(s) => Probe::Http(http::HttpProbe::new(addr, s, field)?),
            ProbeSpec::Dns(s) => Probe::Dns(dns::DnsProbe::new(addr, s, field)?),
            ProbeSpec::Icmp(s) => {
                let ip: IpAddr = addr.parse().map_err(|_| {
                    SpecError::invalid(field, format!("{addr:?} is not an IP address"))
                })?;
                Probe::Icmp(icmp::IcmpProbe::new(ip, s))
            }
            ProbeSpec::Udp(s) => Probe::Udp(udp::UdpProbe::new(HostPort::parse(addr, field)?, s)),
        })
    }

    pub async fn run(&self, timeout: Duration) -> Observation {
        match self {
            Probe::Tcp(p) => p.probe(timeout).await,
            Probe::Http(p) => p.probe(timeout).await,
            Probe::Dns(p) => p.probe(timeout).await,
            Probe::Icmp(p) => p.probe(timeout).await,
            Probe::Udp(p) => p.probe(timeout).await,
        }
    }
}

/// `host:port` where host is an IP literal (`[v6]:port` for IPv6) or a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPort {
    Addr(SocketAddr),
    Name(String, u16),
}

impl HostPort {
    pub fn parse(s: &str, field: &str) -> Result<HostPort, SpecError> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(HostPort::Addr(a));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| SpecError::invalid(field, format!("{s:?} is not host:port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| SpecError::invalid(field, format!("{s:?} has an invalid port")))?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !valid || port == 0 {
            return Err(SpecError::invalid(field, format!("{s:?} is not host:port")));
        }
        Ok(HostPort::Name(host.to_owned(), port))
    }
}

/// Resolves a target address before `deadline`, timing the lookup (`None` for IP literals).
///
/// Names go through the system resolver (getaddrinfo on the blocking pool), as any client in
/// the pod would; the first address is used.
pub async fn resolve(
    hp: &HostPort,
    deadline: Instant,
) -> Result<(SocketAddr, Option<Duration>), Observation> {
    match hp {
        HostPort::Addr(a) => Ok((*a, None)),
        HostPort::Name(host, port) => {
            let t0 = Instant::now();
            let lookup = tokio::net::lookup_host((host.as_str(), *port));
            let res = tokio::time::timeout_at(deadline.into(), lookup).await;
            let took = t0.elapsed();
            let phases = Phases {
                dns_us: Some(micros(took)),
                ..Phases::default()
            };
            match res {
                Err(_) => Err(Observation::failed(took, phases, FailureReason::DnsTimeout)),
                Ok(Err(e)) => {
                    // getaddrinfo does not say NXDOMAIN vs SERVFAIL portably; EAI_NONAME is
                    // "not found". Anything else is reported as a generic DNS error.
                    let msg = e.to_string();
                    let reason = if msg.contains("not known") || msg.contains("No address") {
                        FailureReason::DnsNxDomain
                    } else if msg.contains("Temporary failure") {
                        FailureReason::DnsTimeout
                    } else {
                        FailureReason::DnsError
                    };
                    Err(Observation::failed(took, phases, reason))
                }
                Ok(Ok(mut addrs)) => match addrs.next() {
                    Some(a) => Ok((a, Some(took))),
                    None => Err(Observation::failed(
                        took,
                        phases,
                        FailureReason::DnsWrongAnswer,
                    )),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            HostPort::parse("10.0.0.1:80", "f").unwrap(),
            HostPort::Addr("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            HostPort::parse("[::1]:53", "f").unwrap(),
            HostPort::Addr("[::1]:53".parse().unwrap())
        );
        assert_eq!(
            HostPort::parse("web.default.svc.cluster.local.:8080", "f").unwrap(),
            HostPort::Name("web.default.svc.cluster.local.".into(), 8080)
        );
        for bad in [
            "", "nohost", "a:b", "a:0", ":80", "a b:80", "::1:80x", "x:70000",
        ] {
            assert!(HostPort::parse(bad, "f").is_err(), "{bad}");
        }
    }
}
