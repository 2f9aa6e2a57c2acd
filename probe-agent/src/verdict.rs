//! Judging what a probe observed.
//!
//! Everything here is pure: probes turn sockets into an [`Observation`], [`judge`] turns an
//! observation plus the check's expectation and the agent's own scheduling lag into a
//! [`ProbeResult`]. The classification helpers map `io::Error`s and TLS errors to a bounded
//! [`FailureReason`] and the [`Layer`] it failed at.

use std::io;
use std::time::Duration;

pub use netslo_protocol::verdict::{BlockMode, FailureReason, Layer, Outcome, Phases, ProbeResult};

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

/// What the check expects of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    Allow,
    /// The path must stay blocked in one of these ways.
    Deny(Vec<BlockMode>),
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
