//! DNS probe: one query of a fully qualified name against one server, timed.
//!
//! hickory-resolver is configured to measure, not to help: one server, one attempt, no
//! cache, no hosts file, no search list (names are made fully qualified). The response code
//! and answers are judged against the expectation.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, Record, RecordType};

use netslo_protocol::spec::{DnsSpec, Rcode, RecordKind, SpecError};
use netslo_protocol::target::DnsTarget;

use super::{Guard, Prober, refused};
use crate::verdict::{FailureReason, Observation, Phases, micros};

#[derive(Debug)]
pub struct DnsProbe {
    name: Name,
    record_type: RecordType,
    server: SocketAddr,
    expected_answers: Vec<String>,
    expected_rcode: Rcode,
    resolver: std::sync::Mutex<Option<(Duration, TokioResolver)>>,
    /// Checks a server the check names; `None` for the pod's own nameserver (resolv.conf),
    /// which is the agent's configuration, not the tenant's (and may well be link-local,
    /// e.g. NodeLocal DNSCache on 169.254.20.10).
    guard: Option<Guard>,
}

/// The first `nameserver` of a resolv.conf text.
pub fn parse_resolv_conf(text: &str) -> Option<IpAddr> {
    text.lines()
        .map(|l| l.split(['#', ';']).next().unwrap_or("").trim())
        .filter_map(|l| l.strip_prefix("nameserver"))
        .find_map(|rest| rest.trim().split('%').next().and_then(|ip| ip.parse().ok()))
}

/// Normalises an answer for comparison: canonical IPs, lower case, no trailing dot.
pub fn normalize_answer(s: &str) -> String {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return ip.to_string();
    }
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// The answers of the probed type, as text (pure). The server's records are untrusted: the
/// text is compared with the expected answers, never reported.
pub fn answers_of(records: &[Record], record_type: RecordType) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.record_type() == record_type)
        .map(|r| r.data.to_string())
        .collect()
}

/// What the rcode and answers mean for the expectation (pure).
pub fn judge_response(
    rcode: ResponseCode,
    answers: &[String],
    expected_rcode: Rcode,
    expected_answers: &[String],
) -> Option<FailureReason> {
    let got = match rcode {
        ResponseCode::NoError => Rcode::NoError,
        ResponseCode::NXDomain => Rcode::NxDomain,
        ResponseCode::ServFail => Rcode::ServFail,
        ResponseCode::Refused => Rcode::Refused,
        _ => return Some(FailureReason::DnsError),
    };
    if got != expected_rcode {
        return Some(match got {
            Rcode::NxDomain => FailureReason::DnsNxDomain,
            Rcode::ServFail => FailureReason::DnsServFail,
            Rcode::Refused => FailureReason::DnsRefused,
            Rcode::NoError => FailureReason::DnsWrongAnswer,
        });
    }
    if got == Rcode::NoError {
        if answers.is_empty() {
            return Some(FailureReason::DnsWrongAnswer);
        }
        let have: Vec<String> = answers.iter().map(|a| normalize_answer(a)).collect();
        if expected_answers
            .iter()
            .any(|e| !have.contains(&normalize_answer(e)))
        {
            return Some(FailureReason::DnsWrongAnswer);
        }
    }
    None
}

impl DnsProbe {
    /// The server the query goes to, for a path trace; `None` for the agent's own nameserver
    /// (it is not the check's destination, so the check's guard does not apply).
    pub(super) fn destination(&self) -> (SocketAddr, Option<&Guard>) {
        (self.server, self.guard.as_ref())
    }

    pub fn new(
        target: DnsTarget,
        spec: &DnsSpec,
        field: &str,
        guard: Guard,
    ) -> Result<Self, SpecError> {
        let name = Name::from_ascii(&target.fqdn)
            .map_err(|e| SpecError::invalid(field, format!("{:?}: {e}", target.fqdn)))?;
        let server = match target.server {
            Some(server) => server,
            None => {
                let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
                let ip = parse_resolv_conf(&text).ok_or_else(|| {
                    SpecError::invalid(
                        field,
                        "no server given and no nameserver in /etc/resolv.conf",
                    )
                })?;
                SocketAddr::new(ip, 53)
            }
        };
        let record_type = match spec.record_type {
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
            RecordKind::Srv => RecordType::SRV,
            RecordKind::Cname => RecordType::CNAME,
        };
        Ok(DnsProbe {
            name,
            record_type,
            server,
            expected_answers: spec.expected_answers.clone(),
            expected_rcode: spec.expected_rcode,
            resolver: std::sync::Mutex::new(None),
            guard: spec.server.is_some().then_some(guard),
        })
    }

    fn build_resolver(&self, timeout: Duration) -> Result<TokioResolver, NetError> {
        let mut conn = ConnectionConfig::udp();
        conn.port = self.server.port();
        let ns = NameServerConfig::new(self.server.ip(), true, vec![conn]);
        let config = ResolverConfig::from_name_servers(vec![ns]);
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.ndots = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = false;
        opts.try_tcp_on_error = false;
        let mut b = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        *b.options_mut() = opts;
        b.build()
    }

    /// The resolver for this timeout (rebuilt only when the timeout changes).
    fn resolver(&self, timeout: Duration) -> Result<TokioResolver, NetError> {
        let mut guard = self.resolver.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, r)) = guard.as_ref()
            && *t == timeout
        {
            return Ok(r.clone());
        }
        let r = self.build_resolver(timeout)?;
        *guard = Some((timeout, r.clone()));
        Ok(r)
    }
}

impl Prober for DnsProbe {
    async fn probe(&self, timeout: Duration) -> Observation {
        if let Some(g) = &self.guard
            && g.check(self.server).is_err()
        {
            return refused(Duration::ZERO, Phases::default());
        }
        let resolver = match self.resolver(timeout) {
            Ok(r) => r,
            Err(_) => {
                return Observation::failed(
                    Duration::ZERO,
                    Phases::default(),
                    FailureReason::ProberConfig,
                );
            }
        };
        let start = Instant::now();
        // The resolver enforces `timeout`; the outer bound only guards against a stuck task.
        let res = tokio::time::timeout(
            timeout + Duration::from_millis(50),
            resolver.lookup(self.name.clone(), self.record_type),
        )
        .await;
        let took = start.elapsed();
        let phases = Phases {
            dns_us: Some(micros(took)),
            total_us: Some(micros(took)),
            ..Phases::default()
        };
        let failure = match res {
            Err(_) => Some(FailureReason::DnsTimeout),
            Ok(Ok(lookup)) => judge_response(
                ResponseCode::NoError,
                &answers_of(lookup.answers(), self.record_type),
                self.expected_rcode,
                &self.expected_answers,
            ),
            Ok(Err(e)) => classify_net_error(&e, self.expected_rcode, &self.expected_answers),
        };
        Observation {
            latency: took,
            phases,
            failure,
        }
    }
}

fn classify_net_error(
    e: &NetError,
    expected_rcode: Rcode,
    expected_answers: &[String],
) -> Option<FailureReason> {
    match e {
        NetError::Timeout => Some(FailureReason::DnsTimeout),
        NetError::Dns(DnsError::ResponseCode(code)) => {
            judge_response(*code, &[], expected_rcode, expected_answers)
        }
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            judge_response(nr.response_code, &[], expected_rcode, expected_answers)
        }
        NetError::Io(io) => Some(match io.kind() {
            std::io::ErrorKind::ConnectionRefused => FailureReason::DnsError,
            _ => crate::verdict::classify_local_error(io).unwrap_or(FailureReason::DnsError),
        }),
        _ => Some(FailureReason::DnsError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let t = "# comment\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10 # kube-dns\nnameserver 8.8.8.8\noptions ndots:5\n";
        assert_eq!(parse_resolv_conf(t), Some("10.96.0.10".parse().unwrap()));
        assert_eq!(
            parse_resolv_conf("nameserver fe80::1%eth0\n"),
            Some("fe80::1".parse().unwrap())
        );
        assert_eq!(parse_resolv_conf("search x\n"), None);
    }

    #[test]
    fn judging_rcodes_and_answers() {
        use FailureReason as F;
        let ans = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            judge_response(
                ResponseCode::NoError,
                &ans(&["10.0.0.1"]),
                Rcode::NoError,
                &[]
            ),
            None
        );
        assert_eq!(
            judge_response(ResponseCode::NoError, &[], Rcode::NoError, &[]),
            Some(F::DnsWrongAnswer)
        );
        assert_eq!(
            judge_response(ResponseCode::NXDomain, &[], Rcode::NoError, &[]),
            Some(F::DnsNxDomain)
        );
        assert_eq!(
            judge_response(ResponseCode::ServFail, &[], Rcode::NoError, &[]),
            Some(F::DnsServFail)
        );
        assert_eq!(
            judge_response(ResponseCode::Refused, &[], Rcode::NoError, &[]),
            Some(F::DnsRefused)
        );
        assert_eq!(
            judge_response(ResponseCode::NXDomain, &[], Rcode::NxDomain, &[]),
            None
        );
        assert_eq!(
            judge_response(
                ResponseCode::NoError,
                &ans(&["1.2.3.4"]),
                Rcode::NxDomain,
                &[]
            ),
            Some(F::DnsWrongAnswer)
        );
        assert_eq!(
            judge_response(ResponseCode::FormErr, &[], Rcode::NoError, &[]),
            Some(F::DnsError)
        );
        let want = ans(&["10.0.0.2", "web.example."]);
        assert_eq!(
            judge_response(
                ResponseCode::NoError,
                &ans(&["10.0.0.2", "WEB.example"]),
                Rcode::NoError,
                &want
            ),
            None
        );
        assert_eq!(
            judge_response(
                ResponseCode::NoError,
                &ans(&["10.0.0.3"]),
                Rcode::NoError,
                &want
            ),
            Some(F::DnsWrongAnswer)
        );
        assert_eq!(normalize_answer("0:0:0:0:0:0:0:1"), "::1");
    }

    #[test]
    fn names_become_fully_qualified() {
        let spec = DnsSpec {
            server: Some("10.0.0.53".into()),
            ..DnsSpec::default()
        };
        let target = DnsTarget::parse("web.default.svc.cluster.local", &spec, "t").unwrap();
        let p = DnsProbe::new(target, &spec, "t", Guard::default()).unwrap();
        assert!(p.name.is_fqdn());
        assert_eq!(p.server, "10.0.0.53:53".parse().unwrap());
    }
}
