//! Probes: each kind turns a target into an [`Observation`] within a deadline.
//!
//! [`Probe`] dispatches over the kinds; [`Probe::from_spec`] compiles a target of a check
//! (parsing addresses, URLs, CA bundles once, up front) so that running a probe does no
//! configuration work.
//!
//! Every destination passes the check's [`Guard`] before a packet is sent: names are
//! resolved, every address is checked, and the probe connects to exactly the checked
//! address, so a name rebound between the check and the connection cannot slip through.

pub mod dns;
pub mod http;
pub mod icmp;
pub mod tcp;
pub mod trace;
pub mod udp;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use netslo_protocol::guard::{AddressPolicy, Refusal};
use netslo_protocol::spec::{ProbeSpec, SpecError, TargetSpec};
use netslo_protocol::target::{Destination, HostPort};

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
    /// Compiles a target of a check. `field` names the target in errors; `policy` is what
    /// the check may contact.
    pub fn from_spec(
        spec: &ProbeSpec,
        target: &TargetSpec,
        field: &str,
        policy: &Arc<AddressPolicy>,
    ) -> Result<Probe, SpecError> {
        let guard = Guard::new(policy.clone());
        Ok(match Destination::parse(spec, target, field)? {
            Destination::Tcp(host, s) => Probe::Tcp(tcp::TcpProbe::new(host, s, guard)),
            Destination::Udp(host, s) => Probe::Udp(udp::UdpProbe::new(host, s, guard)),
            Destination::Http(t, s) => Probe::Http(http::HttpProbe::new(*t, s, field, guard)?),
            Destination::Dns(t, s) => Probe::Dns(dns::DnsProbe::new(t, s, field, guard)?),
            Destination::Icmp(ip, s) => Probe::Icmp(icmp::IcmpProbe::new(ip, s, guard)),
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

    /// Traces the path to this probe's destination, resolved and checked as the probe does it
    /// (within `timeout`); `None` when the destination does not resolve or is refused, since
    /// then no packet may go there.
    pub async fn path_trace(
        &self,
        timeout: Duration,
        settings: trace::TraceSettings,
    ) -> Option<Result<netslo_protocol::trace::PathTrace, trace::TraceError>> {
        let deadline = Instant::now() + timeout;
        async fn resolved(
            (host, guard): (&HostPort, &Guard),
            deadline: Instant,
        ) -> Option<(IpAddr, Option<u16>)> {
            let (addr, _) = resolve(host, deadline, guard).await.ok()?;
            Some((addr.ip(), Some(addr.port())))
        }
        // The trace goes to the address and port the guard allowed; ICMP has no port.
        let (ip, port) = match self {
            Probe::Tcp(p) => resolved(p.destination(), deadline).await?,
            Probe::Udp(p) => resolved(p.destination(), deadline).await?,
            Probe::Http(p) => resolved(p.destination(), deadline).await?,
            Probe::Icmp(p) => {
                let (ip, guard) = p.destination();
                guard.check_ip(ip).ok()?;
                (ip, None)
            }
            Probe::Dns(p) => match p.destination() {
                (server, Some(guard)) => {
                    guard.check(server).ok()?;
                    (server.ip(), Some(server.port()))
                }
                (server, None) => (server.ip(), Some(server.port())),
            },
        };
        Some(trace::trace(ip, port, settings).await)
    }
}

/// A check's address policy as its probes apply it.
#[derive(Debug)]
pub struct Guard {
    policy: Arc<AddressPolicy>,
    /// A refused target is refused on every probe: say so in the log once, not every interval
    /// (each probe's result carries `DestinationRefused` anyway).
    warned: AtomicBool,
}

impl Default for Guard {
    /// The safe default policy.
    fn default() -> Self {
        Guard::new(Arc::new(AddressPolicy::default()))
    }
}

impl Guard {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Guard {
            policy,
            warned: AtomicBool::new(false),
        }
    }

    /// Whether the probe may contact `addr`.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        let res = self.policy.check(addr);
        self.log(addr.ip(), res)
    }

    /// Whether the probe may contact `addr`, which the name `host` resolved to.
    pub fn check_named(&self, host: &str, addr: SocketAddr) -> Result<(), Refusal> {
        let res = self.policy.check_named(host, addr);
        self.log(addr.ip(), res)
    }

    /// Whether the probe may contact `ip`, for protocols without ports (ICMP).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        let res = self.policy.check_ip(ip);
        self.log(ip, res)
    }

    fn log(&self, ip: IpAddr, res: Result<(), Refusal>) -> Result<(), Refusal> {
        if let Err(r) = res
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(%ip, class = r.reason(), "destination refused, not probed");
        }
        res
    }
}

/// The observation of a probe whose destination was refused: nothing was sent.
pub fn refused(took: Duration, phases: Phases) -> Observation {
    Observation::failed(took, phases, FailureReason::DestinationRefused)
}

/// Most addresses of one name that are checked; a name with more is refused.
const MAX_RESOLVED: usize = 64;

/// Resolves a target address before `deadline`, timing the lookup (`None` for IP literals),
/// and checks it against `guard`: the address returned is the one to connect to, as is.
///
/// Names go through the system resolver (getaddrinfo on the blocking pool), as any client in
/// the pod would; the first address is used, but every address is checked: a name that
/// mixes refused addresses with others is refused, since which one comes first may change
/// from one lookup to the next.
pub async fn resolve(
    hp: &HostPort,
    deadline: Instant,
    guard: &Guard,
) -> Result<(SocketAddr, Option<Duration>), Observation> {
    match hp {
        HostPort::Addr(a) => match guard.check(*a) {
            Ok(()) => Ok((*a, None)),
            Err(_) => Err(refused(Duration::ZERO, Phases::default())),
        },
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
                Ok(Ok(addrs)) => {
                    let mut first = None;
                    for (i, a) in addrs.enumerate() {
                        if i == MAX_RESOLVED || guard.check_named(host, a).is_err() {
                            return Err(refused(took, phases));
                        }
                        first.get_or_insert(a);
                    }
                    match first {
                        Some(a) => Ok((a, Some(took))),
                        None => Err(Observation::failed(
                            took,
                            phases,
                            FailureReason::DnsWrongAnswer,
                        )),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn resolution_is_checked() {
        let deadline = Instant::now() + Duration::from_secs(5);
        let safe = Guard::default();
        for refused_target in ["127.0.0.1:80", "[::ffff:169.254.169.254]:80", "0x7f.1:80"] {
            let hp = HostPort::parse(refused_target, "f").unwrap();
            let obs = run(resolve(&hp, deadline, &safe)).unwrap_err();
            assert_eq!(obs.failure, Some(FailureReason::DestinationRefused));
        }
        // A name is checked after resolution: `localhost` resolves to loopback.
        let hp = HostPort::Name("localhost".into(), 80);
        let obs = run(resolve(&hp, deadline, &safe)).unwrap_err();
        assert_eq!(obs.failure, Some(FailureReason::DestinationRefused));
        assert!(obs.phases.dns_us.is_some());
        let loopback = Guard::new(Arc::new(AddressPolicy {
            allow_loopback: true,
            ..AddressPolicy::default()
        }));
        let (addr, dns) = run(resolve(&hp, deadline, &loopback)).unwrap();
        assert!(addr.ip().is_loopback() && dns.is_some());
        let hp = HostPort::parse("10.77.0.2:7000", "f").unwrap();
        assert_eq!(
            run(resolve(&hp, deadline, &safe)).unwrap(),
            ("10.77.0.2:7000".parse().unwrap(), None)
        );
    }
}
