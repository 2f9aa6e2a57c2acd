//! Verdicts: what a probe observed, and how that observation is judged.
//!
//! Everything here is pure: probes turn sockets into an [`Observation`], [`judge`] turns an
//! observation plus the check's expectation and the agent's own scheduling lag into a
//! [`ProbeResult`]. The classification helpers map `io::Error`s and TLS errors to a bounded
//! [`FailureReason`] and the [`Layer`] it failed at.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a probe counts towards an objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// The expectation was met.
    Good,
    /// The network (or the target) violated the expectation.
    Bad,
    /// The prober could not measure; never counted as a network failure.
    Invalid,
}

/// The layer a probe failed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Layer {
    #[serde(rename = "DNS")]
    Dns,
    #[serde(rename = "IP")]
    Ip,
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "TLS")]
    Tls,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "ICMP")]
    Icmp,
    #[serde(rename = "UDP")]
    Udp,
    /// An expected-deny check whose path turned out open.
    Policy,
    /// The agent itself (scheduling, resources, permissions, configuration).
    Prober,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Dns => "DNS",
            Layer::Ip => "IP",
            Layer::Tcp => "TCP",
            Layer::Tls => "TLS",
            Layer::Http => "HTTP",
            Layer::Icmp => "ICMP",
            Layer::Udp => "UDP",
            Layer::Policy => "Policy",
            Layer::Prober => "Prober",
        }
    }
}

macro_rules! reasons {
    ($( $(#[$m:meta])* $v:ident => $s:literal, $layer:ident, $invalid:literal; )*) => {
        /// Why a probe failed: one bounded set, usable as a metric label or Event reason.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum FailureReason {
            $( $(#[$m])* #[serde(rename = $s)] $v, )*
        }

        impl FailureReason {
            /// Every reason, in declaration order (index = `self as usize`).
            pub const ALL: &'static [FailureReason] = &[$(FailureReason::$v,)*];

            /// PascalCase name, e.g. `TCPTimeout`.
            pub fn as_str(self) -> &'static str {
                match self { $(FailureReason::$v => $s,)* }
            }

            /// The layer this reason belongs to.
            pub fn layer(self) -> Layer {
                match self { $(FailureReason::$v => Layer::$layer,)* }
            }

            /// True for the agent's own problems, which make a probe `Invalid`.
            pub fn is_prober_problem(self) -> bool {
                match self { $(FailureReason::$v => $invalid,)* }
            }

            /// Parses the PascalCase name.
            pub fn from_name(name: &str) -> Option<FailureReason> {
                match name { $($s => Some(FailureReason::$v),)* _ => None }
            }
        }
    };
}

reasons! {
    /// The name does not exist.
    DnsNxDomain => "DNSNXDomain", Dns, false;
    /// The server failed to answer.
    DnsServFail => "DNSServFail", Dns, false;
    /// The server refused the query.
    DnsRefused => "DNSRefused", Dns, false;
    /// No answer in time.
    DnsTimeout => "DNSTimeout", Dns, false;
    /// An answer, but not the expected one (including an unexpected rcode or no records).
    DnsWrongAnswer => "DNSWrongAnswer", Dns, false;
    /// Any other DNS failure (malformed response, transport error).
    DnsError => "DNSError", Dns, false;
    /// No route to the network.
    NetUnreachable => "NetUnreachable", Ip, false;
    /// No route to the host (or ICMP host unreachable / administratively prohibited).
    HostUnreachable => "HostUnreachable", Ip, false;
    /// The connection attempt was actively refused (RST in answer to SYN).
    TcpRefused => "TCPRefused", Tcp, false;
    /// No answer to SYN in time.
    TcpTimeout => "TCPTimeout", Tcp, false;
    /// The peer reset an established connection.
    TcpReset => "TCPReset", Tcp, false;
    /// Any other TCP-level failure (peer closed early, local policy drop).
    TcpError => "TCPError", Tcp, false;
    /// The TLS handshake failed for a reason other than the certificate.
    TlsHandshake => "TLSHandshake", Tls, false;
    /// The server's certificate is invalid, expired, or for another name.
    TlsCertificate => "TLSCertificate", Tls, false;
    /// The TLS handshake did not complete in time.
    TlsTimeout => "TLSTimeout", Tls, false;
    /// The status code was not one of the expected ones.
    HttpStatus => "HTTPStatus", Http, false;
    /// No (complete) response in time.
    HttpTimeout => "HTTPTimeout", Http, false;
    /// The response was not valid HTTP, or the connection closed mid-response.
    HttpProtocol => "HTTPProtocol", Http, false;
    /// The body did not contain the expected text.
    BodyMismatch => "BodyMismatch", Http, false;
    /// No echo reply in time.
    IcmpTimeout => "ICMPTimeout", Icmp, false;
    /// No UDP echo in time.
    UdpTimeout => "UDPTimeout", Udp, false;
    /// ICMP port unreachable in answer to a UDP datagram.
    UdpRefused => "UDPRefused", Udp, false;
    /// A UDP answer that is not the echo of what was sent.
    UdpMismatch => "UDPMismatch", Udp, false;
    /// An expected-deny path connected.
    UnexpectedlyReachable => "UnexpectedlyReachable", Policy, false;
    /// Unprivileged ICMP sockets are not permitted here (`net.ipv4.ping_group_range`).
    IcmpUnavailable => "ICMPUnavailable", Prober, true;
    /// The agent started the probe later than the allowed scheduling lag.
    ProberLate => "ProberLate", Prober, true;
    /// The agent ran out of file descriptors, ports, buffers or memory.
    ProberResources => "ProberResources", Prober, true;
    /// The probe's configuration cannot be executed (e.g. an unusable CA bundle).
    ProberConfig => "ProberConfig", Prober, true;
    /// Any other local error.
    ProberError => "ProberError", Prober, true;
    /// The agent refused to contact the destination (loopback, link-local or cloud metadata,
    /// a node's address, outside the check's grant): nothing was sent. A configuration
    /// problem, excluded from the SLI like the agent's own; see `guard`.
    DestinationRefused => "DestinationRefused", Prober, true;
}

impl FailureReason {
    /// Number of reasons (for fixed-size counters).
    pub const COUNT: usize = FailureReason::ALL.len();

    /// Index into [`FailureReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-phase timings in microseconds; `None` where the protocol has no such phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Phases {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttfb_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_us: Option<u64>,
}

/// What one probe saw, before it is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The probe's headline latency (TCP: connect; HTTP: total; DNS: lookup; ICMP/UDP: RTT).
    pub latency: Duration,
    pub phases: Phases,
    /// `None` when the path answered as the probe requires; else why not.
    pub failure: Option<FailureReason>,
}

impl Observation {
    pub fn ok(latency: Duration, phases: Phases) -> Self {
        Observation {
            latency,
            phases,
            failure: None,
        }
    }

    pub fn failed(latency: Duration, phases: Phases, reason: FailureReason) -> Self {
        Observation {
            latency,
            phases,
            failure: Some(reason),
        }
    }
}

/// How a blocked path may look for an expected-deny check to count it as blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockMode {
    /// Packets silently dropped (TCP/UDP/ICMP/HTTP/DNS timeout).
    Timeout,
    /// Actively refused (TCP RST to SYN, ICMP port unreachable for UDP).
    Refused,
    /// Reset after connecting.
    Reset,
    /// ICMP network/host unreachable or administratively prohibited.
    Unreachable,
}

impl BlockMode {
    /// The block mode a failure reason represents, if it is a "path blocked" failure at all.
    pub fn of(reason: FailureReason) -> Option<BlockMode> {
        use FailureReason as R;
        match reason {
            R::TcpTimeout
            | R::UdpTimeout
            | R::IcmpTimeout
            | R::DnsTimeout
            | R::TlsTimeout
            | R::HttpTimeout => Some(BlockMode::Timeout),
            R::TcpRefused | R::UdpRefused => Some(BlockMode::Refused),
            R::TcpReset => Some(BlockMode::Reset),
            R::NetUnreachable | R::HostUnreachable | R::TcpError => Some(BlockMode::Unreachable),
            _ => None,
        }
    }
}

/// What the check expects of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    Allow,
    /// The path must stay blocked in one of these ways.
    Deny(Vec<BlockMode>),
}

/// The judged result of one probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub outcome: Outcome,
    /// Headline latency in microseconds (meaningful for `Good` allow probes).
    pub latency_us: u64,
    /// How late the agent started the probe, in microseconds.
    pub lag_us: u64,
    pub phases: Phases,
    /// For `Bad` and `Invalid`: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<Layer>,
    /// For expected-deny probes: the failure that kept the path blocked (`Good`), or `None`
    /// when it connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<FailureReason>,
}

/// Saturating conversion of a duration to whole microseconds.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Judges an observation.
///
/// * prober problems are `Invalid`, whatever the expectation;
/// * a probe started more than `max_lag` late is `Invalid` (`ProberLate`): its latency would
///   include the agent's own delay;
/// * `Allow`: success is `Good`, any network failure `Bad`;
/// * `Deny`: a failure in one of the accepted block modes is `Good`, success is `Bad`
///   (`UnexpectedlyReachable`), any other failure is `Bad` with its own reason (the path is not
///   blocked the way the policy says it should be, e.g. refused instead of dropped).
pub fn judge(
    obs: &Observation,
    expect: &Expectation,
    lag: Duration,
    max_lag: Duration,
) -> ProbeResult {
    let base = ProbeResult {
        outcome: Outcome::Good,
        latency_us: micros(obs.latency),
        lag_us: micros(lag),
        phases: obs.phases,
        reason: None,
        layer: None,
        blocked_by: None,
    };
    let fail = |outcome, reason: FailureReason| ProbeResult {
        outcome,
        reason: Some(reason),
        layer: Some(reason.layer()),
        ..base.clone()
    };
    if let Some(r) = obs.failure.filter(|r| r.is_prober_problem()) {
        return fail(Outcome::Invalid, r);
    }
    if lag > max_lag {
        return fail(Outcome::Invalid, FailureReason::ProberLate);
    }
    match (expect, obs.failure) {
        (Expectation::Allow, None) => base,
        (Expectation::Allow, Some(r)) => fail(Outcome::Bad, r),
        (Expectation::Deny(_), None) => fail(Outcome::Bad, FailureReason::UnexpectedlyReachable),
        (Expectation::Deny(modes), Some(r)) => match BlockMode::of(r) {
            Some(m) if modes.contains(&m) => ProbeResult {
                blocked_by: Some(r),
                ..base
            },
            _ => fail(Outcome::Bad, r),
        },
    }
}

/// Classifies an error from a TCP `connect` (or from the first read/write on a fresh
/// connection, where a reset means `TCPReset`).
pub fn classify_connect_error(e: &io::Error) -> FailureReason {
    if let Some(r) = classify_local_error(e) {
        return r;
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => FailureReason::TcpRefused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            FailureReason::TcpReset
        }
        io::ErrorKind::TimedOut => FailureReason::TcpTimeout,
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::NetworkDown => {
            FailureReason::NetUnreachable
        }
        io::ErrorKind::HostUnreachable => FailureReason::HostUnreachable,
        _ => FailureReason::TcpError,
    }
}

/// Errors that are the agent's own (resources, permissions): `None` when the error is the network's.
pub fn classify_local_error(e: &io::Error) -> Option<FailureReason> {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL) => {
            Some(FailureReason::ProberResources)
        }
        Some(libc::EAFNOSUPPORT | libc::EINVAL) => Some(FailureReason::ProberError),
        _ => None,
    }
}

/// Classifies a rustls error from a handshake: certificate problems apart from the rest.
pub fn classify_tls_error(e: &rustls::Error) -> FailureReason {
    match e {
        rustls::Error::InvalidCertificate(_)
        | rustls::Error::InvalidCertRevocationList(_)
        | rustls::Error::NoCertificatesPresented => FailureReason::TlsCertificate,
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown,
        ) => FailureReason::TlsCertificate,
        _ => FailureReason::TlsHandshake,
    }
}

/// Classifies an I/O error from a TLS handshake (tokio-rustls wraps rustls errors in `io::Error`).
pub fn classify_tls_io_error(e: &io::Error) -> FailureReason {
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        return classify_tls_error(inner);
    }
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
            FailureReason::TcpReset
        }
        io::ErrorKind::UnexpectedEof => FailureReason::TlsHandshake,
        _ => classify_local_error(e).unwrap_or(FailureReason::TlsHandshake),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(failure: Option<FailureReason>) -> Observation {
        Observation {
            latency: Duration::from_micros(1234),
            phases: Phases::default(),
            failure,
        }
    }

    const LAG: Duration = Duration::from_micros(100);
    const MAX: Duration = Duration::from_millis(5);

    #[test]
    fn names_are_pascal_case_and_round_trip() {
        for r in FailureReason::ALL {
            assert_eq!(FailureReason::from_name(r.as_str()), Some(*r));
            assert!(r.as_str().chars().next().unwrap().is_ascii_uppercase());
            let json = serde_json::to_string(r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
        }
        assert_eq!(FailureReason::TcpTimeout.as_str(), "TCPTimeout");
        assert_eq!(FailureReason::DnsNxDomain.as_str(), "DNSNXDomain");
        assert_eq!(FailureReason::IcmpUnavailable.layer(), Layer::Prober);
        assert_eq!(
            FailureReason::ALL[FailureReason::BodyMismatch.index()],
            FailureReason::BodyMismatch
        );
    }

    #[test]
    fn refused_destinations_are_invalid_whatever_the_expectation() {
        let r = FailureReason::DestinationRefused;
        assert_eq!(r.as_str(), "DestinationRefused");
        assert!(r.is_prober_problem());
        assert_eq!(r.layer(), Layer::Prober);
        // Not a way of being blocked: a refused Deny target must not pass for a blocked path.
        assert_eq!(BlockMode::of(r), None);
        let deny = Expectation::Deny(vec![BlockMode::Timeout, BlockMode::Refused]);
        for expect in [Expectation::Allow, deny] {
            let j = judge(&obs(Some(r)), &expect, LAG, MAX);
            assert_eq!(j.outcome, Outcome::Invalid);
            assert_eq!((j.reason, j.layer), (Some(r), Some(Layer::Prober)));
            assert_eq!(j.blocked_by, None);
        }
    }

    #[test]
    fn allow_good_and_bad() {
        let r = judge(&obs(None), &Expectation::Allow, LAG, MAX);
        assert_eq!(r.outcome, Outcome::Good);
        assert_eq!(r.latency_us, 1234);
        assert_eq!(r.reason, None);
        let r = judge(
            &obs(Some(FailureReason::TcpTimeout)),
            &Expectation::Allow,
            LAG,
            MAX,
        );
        assert_eq!(r.outcome, Outcome::Bad);
        assert_eq!(r.reason, Some(FailureReason::TcpTimeout));
        assert_eq!(r.layer, Some(Layer::Tcp));
    }

    #[test]
    fn prober_problems_are_invalid_never_bad() {
        for e in [
            Expectation::Allow,
            Expectation::Deny(vec![BlockMode::Timeout]),
        ] {
            let r = judge(&obs(Some(FailureReason::IcmpUnavailable)), &e, LAG, MAX);
            assert_eq!(r.outcome, Outcome::Invalid);
            assert_eq!(r.layer, Some(Layer::Prober));
        }
    }

    #[test]
    fn late_probe_is_invalid() {
        let r = judge(
            &obs(None),
            &Expectation::Allow,
            Duration::from_millis(6),
            MAX,
        );
        assert_eq!(r.outcome, Outcome::Invalid);
        assert_eq!(r.reason, Some(FailureReason::ProberLate));
        assert_eq!(r.lag_us, 6000);
        // Exactly at the bound is still valid.
        assert_eq!(
            judge(&obs(None), &Expectation::Allow, MAX, MAX).outcome,
            Outcome::Good
        );
    }

    #[test]
    fn deny_semantics() {
        let deny = Expectation::Deny(vec![BlockMode::Timeout, BlockMode::Refused]);
        let r = judge(&obs(Some(FailureReason::TcpTimeout)), &deny, LAG, MAX);
        assert_eq!(r.outcome, Outcome::Good);
        assert_eq!(r.blocked_by, Some(FailureReason::TcpTimeout));
        assert_eq!(r.reason, None);
        let r = judge(&obs(Some(FailureReason::TcpRefused)), &deny, LAG, MAX);
        assert_eq!(
            (r.outcome, r.blocked_by),
            (Outcome::Good, Some(FailureReason::TcpRefused))
        );
        let r = judge(&obs(None), &deny, LAG, MAX);
        assert_eq!(r.outcome, Outcome::Bad);
        assert_eq!(r.reason, Some(FailureReason::UnexpectedlyReachable));
        assert_eq!(r.layer, Some(Layer::Policy));
        // Blocked, but not in an accepted way.
        let only_drop = Expectation::Deny(vec![BlockMode::Timeout]);
        let r = judge(&obs(Some(FailureReason::TcpRefused)), &only_drop, LAG, MAX);
        assert_eq!(
            (r.outcome, r.reason),
            (Outcome::Bad, Some(FailureReason::TcpRefused))
        );
        // A failure that is not a block at all (wrong HTTP status) is not "blocked".
        let r = judge(&obs(Some(FailureReason::HttpStatus)), &deny, LAG, MAX);
        assert_eq!(r.outcome, Outcome::Bad);
    }

    #[test]
    fn connect_errors() {
        use io::ErrorKind as K;
        let c = |k: K| classify_connect_error(&io::Error::from(k));
        assert_eq!(c(K::ConnectionRefused), FailureReason::TcpRefused);
        assert_eq!(c(K::ConnectionReset), FailureReason::TcpReset);
        assert_eq!(c(K::TimedOut), FailureReason::TcpTimeout);
        assert_eq!(c(K::NetworkUnreachable), FailureReason::NetUnreachable);
        assert_eq!(c(K::HostUnreachable), FailureReason::HostUnreachable);
        let os = |n| classify_connect_error(&io::Error::from_raw_os_error(n));
        assert_eq!(os(libc::ECONNREFUSED), FailureReason::TcpRefused);
        assert_eq!(os(libc::ENETUNREACH), FailureReason::NetUnreachable);
        assert_eq!(os(libc::EHOSTUNREACH), FailureReason::HostUnreachable);
        assert_eq!(os(libc::EMFILE), FailureReason::ProberResources);
        assert_eq!(os(libc::EADDRNOTAVAIL), FailureReason::ProberResources);
        assert!(os(libc::ENFILE).is_prober_problem());
    }

    #[test]
    fn tls_errors() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert_eq!(classify_tls_error(&cert), FailureReason::TlsCertificate);
        let io_wrapped = io::Error::new(io::ErrorKind::InvalidData, cert);
        assert_eq!(
            classify_tls_io_error(&io_wrapped),
            FailureReason::TlsCertificate
        );
        let other = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(classify_tls_error(&other), FailureReason::TlsHandshake);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify_tls_io_error(&eof), FailureReason::TlsHandshake);
    }
}
