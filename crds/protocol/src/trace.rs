//! A path trace: the hops on the way to a destination and which of them answered, as the
//! agent reports it when a probe fails at the IP or TCP layer.
//!
//! The trace sends datagrams with a rising TTL (hop limit) and reads the ICMP answers the way
//! `tracepath` does, without privileges; see the agent's `probe::trace`. These types are only
//! what it found.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::verdict::{FailureReason, Layer};

/// What one hop said about a datagram with its TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HopAnswer {
    /// A router on the way: the TTL ran out there (ICMP Time Exceeded).
    TimeExceeded,
    /// The destination itself: no one listens on the trace's port (ICMP Port Unreachable).
    Reached,
    /// A router has no route to the destination's network.
    NetUnreachable,
    /// The last router cannot deliver to the destination host (no ARP/ND answer).
    HostUnreachable,
    /// A firewall refused the datagram (ICMP administratively prohibited, as iptables'
    /// `REJECT --reject-with icmp-admin-prohibited` sends).
    Prohibited,
    /// Another ICMP unreachable code.
    Unreachable,
}

impl HopAnswer {
    /// Whether a trace ends at this answer (it went no further, or got there).
    pub fn ends_trace(self) -> bool {
        self != HopAnswer::TimeExceeded
    }
}

/// One TTL of a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    /// The datagram's TTL: 1 is the first router.
    pub ttl: u8,
    /// Who answered; `None` when nothing came back within the hop's wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<HopAnswer>,
    /// From sending the datagram to reading the answer, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<u64>,
}

/// How a trace ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TraceEnd {
    /// The destination answered: the path is open to it at the IP layer.
    Reached,
    /// A hop answered that it would not forward (unreachable or prohibited).
    Refused,
    /// Answers stopped: a hop after the last one that answered drops the traffic.
    Silent,
    /// The hop limit ran out before any of the above.
    HopLimit,
    /// The agent's own host has no route to the destination: nothing was sent.
    NoRoute,
}

/// A finished trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathTrace {
    pub destination: IpAddr,
    pub hops: Vec<Hop>,
    pub end: TraceEnd,
}

impl PathTrace {
    /// The last hop that answered anything: where a silent path was last seen alive.
    pub fn last_answered(&self) -> Option<&Hop> {
        self.hops.iter().rev().find(|h| h.answer.is_some())
    }

    /// One line for a terminal, e.g. "reached 10.0.3.2 in 3 hops" or "silent after hop 2
    /// (10.0.1.2): the next hop drops the traffic".
    pub fn summary(&self) -> String {
        let last = self.last_answered();
        let at = |h: &Hop| match h.address {
            Some(a) => format!("hop {} ({a})", h.ttl),
            None => format!("hop {}", h.ttl),
        };
        match (self.end, last) {
            (TraceEnd::Reached, Some(h)) => {
                format!("reached {} in {} hops", self.destination, h.ttl)
            }
            (TraceEnd::Refused, Some(h)) => format!(
                "{} refused the traffic ({})",
                at(h),
                h.answer.map(|a| format!("{a:?}")).unwrap_or_default()
            ),
            (TraceEnd::Silent | TraceEnd::HopLimit, Some(h)) => format!(
                "silent after {}: a hop past it drops the traffic to {}",
                at(h),
                self.destination
            ),
            (TraceEnd::NoRoute, _) => {
                format!("this host has no route to {}", self.destination)
            }
            (_, None) => format!(
                "no hop answered: the traffic to {} is dropped before the first router",
                self.destination
            ),
        }
    }
}

impl FailureReason {
    /// Whether a probe that failed for this reason is worth a path trace: the path, not the
    /// server, may be what failed (silence or an ICMP error on the way).
    pub fn warrants_path_trace(self) -> bool {
        matches!(self.layer(), Layer::Ip | Layer::Tcp)
            && !matches!(self, FailureReason::TcpRefused | FailureReason::TcpReset)
            || matches!(self, FailureReason::IcmpTimeout | FailureReason::UdpTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(ttl: u8, address: Option<&str>, answer: Option<HopAnswer>) -> Hop {
        Hop {
            ttl,
            address: address.map(|a| a.parse().unwrap()),
            answer,
            rtt_us: answer.map(|_| 120),
        }
    }

    #[test]
    fn the_last_answering_hop_locates_a_silent_path() {
        let trace = PathTrace {
            destination: "10.78.3.2".parse().unwrap(),
            hops: vec![
                hop(1, Some("10.78.0.2"), Some(HopAnswer::TimeExceeded)),
                hop(2, Some("10.78.1.2"), Some(HopAnswer::TimeExceeded)),
                hop(3, None, None),
                hop(4, None, None),
            ],
            end: TraceEnd::Silent,
        };
        assert_eq!(trace.last_answered().unwrap().ttl, 2);
        assert_eq!(
            trace.summary(),
            "silent after hop 2 (10.78.1.2): a hop past it drops the traffic to 10.78.3.2"
        );
        let json = serde_json::to_value(&trace).unwrap();
        assert_eq!(json["hops"][0]["answer"], "TimeExceeded");
        assert_eq!(json["hops"][0]["rttUs"], 120);
        assert!(json["hops"][2].get("address").is_none());
        assert_eq!(serde_json::from_value::<PathTrace>(json).unwrap(), trace);
    }

    #[test]
    fn summaries_say_how_the_trace_ended() {
        let mut trace = PathTrace {
            destination: "10.78.3.2".parse().unwrap(),
            hops: vec![
                hop(1, Some("10.78.0.2"), Some(HopAnswer::TimeExceeded)),
                hop(2, Some("10.78.3.2"), Some(HopAnswer::Reached)),
            ],
            end: TraceEnd::Reached,
        };
        assert_eq!(trace.summary(), "reached 10.78.3.2 in 2 hops");
        trace.hops[1] = hop(2, Some("10.78.1.2"), Some(HopAnswer::Prohibited));
        trace.end = TraceEnd::Refused;
        assert_eq!(
            trace.summary(),
            "hop 2 (10.78.1.2) refused the traffic (Prohibited)"
        );
        trace.hops = vec![hop(1, None, None)];
        trace.end = TraceEnd::Silent;
        assert!(trace.summary().starts_with("no hop answered"));
        trace.end = TraceEnd::NoRoute;
        assert_eq!(trace.summary(), "this host has no route to 10.78.3.2");
        assert!(!HopAnswer::TimeExceeded.ends_trace());
        assert!(HopAnswer::Reached.ends_trace() && HopAnswer::Prohibited.ends_trace());
    }

    #[test]
    fn path_failures_warrant_a_trace_and_answers_from_the_server_do_not() {
        use FailureReason as R;
        for r in [
            R::TcpTimeout,
            R::NetUnreachable,
            R::HostUnreachable,
            R::TcpError,
            R::IcmpTimeout,
            R::UdpTimeout,
        ] {
            assert!(r.warrants_path_trace(), "{r}");
        }
        for r in [
            R::TcpRefused,
            R::TcpReset,
            R::DnsNxDomain,
            R::TlsHandshake,
            R::HttpStatus,
            R::DestinationRefused,
            R::UnexpectedlyReachable,
        ] {
            assert!(!r.warrants_path_trace(), "{r}");
        }
    }
}
