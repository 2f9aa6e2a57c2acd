//! What a probe's result says, as the agent reports it and the operator reads it: the
//! outcome, the failure reason and the layer it belongs to, how a blocked path may look, and
//! the per-phase timings. One bounded set of names, usable as metric labels and Event reasons.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
