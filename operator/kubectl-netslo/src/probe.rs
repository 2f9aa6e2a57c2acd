//! `kubectl netslo probe` (pure parts): the `--from` and `--to` words read into a
//! ConnectivityProbe's spec, and its answer written out for a terminal.

use std::fmt::Write as _;

use netslo_crds::duration::GoDuration;
use netslo_crds::v1alpha1::{
    ConnectivityProbe, ConnectivityProbeSpec, ExternalTarget, PodDestination, ProbeDestination,
    ProbeOrigin, ProbePhase, Protocol, ServiceTarget,
};

/// Why the words cannot make a probe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// `node/NAME` (the node's netslo agent), `deploy/NAME` or `pod/NAME` (a short-lived probe
/// pod with that workload's labels and service account).
pub fn origin(from: &str) -> Result<ProbeOrigin, UsageError> {
    let name = |n: &str| Some(n.to_owned());
    match from.split_once('/') {
        Some(("node" | "nodes" | "no", n)) if !n.is_empty() => Ok(ProbeOrigin {
            node: name(n),
            ..ProbeOrigin::default()
        }),
        Some(("deploy" | "deployment" | "deployments", n)) if !n.is_empty() => Ok(ProbeOrigin {
            deployment: name(n),
            ..ProbeOrigin::default()
        }),
        Some(("pod" | "pods" | "po", n)) if !n.is_empty() => Ok(ProbeOrigin {
            pod: name(n),
            ..ProbeOrigin::default()
        }),
        _ => Err(UsageError(format!(
            "--from {from}: expected node/NAME, deploy/NAME or pod/NAME"
        ))),
    }
}

/// `svc/NAME:PORT`, `pod/NAME[:PORT]`, `HOST:PORT` or an `http(s)://` URL; `namespace` is where
/// a Service or pod lives when not the probe's own.
pub fn destination(to: &str, namespace: Option<&str>) -> Result<ProbeDestination, UsageError> {
    let bad = |why: &str| UsageError(format!("--to {to}: {why}"));
    if to.starts_with("http://") || to.starts_with("https://") {
        return Ok(ProbeDestination {
            external: Some(ExternalTarget {
                url: Some(to.to_owned()),
                ..ExternalTarget::default()
            }),
            ..ProbeDestination::default()
        });
    }
    let (kind, rest) = match to.split_once('/') {
        Some((kind @ ("svc" | "service" | "services" | "pod" | "pods" | "po"), rest)) => {
            (Some(kind), rest)
        }
        Some(_) => {
            return Err(bad(
                "expected svc/NAME:PORT, pod/NAME:PORT, HOST:PORT or a URL",
            ));
        }
        None => (None, to),
    };
    let (name, port) =
        split_port(rest).ok_or_else(|| bad("the port must be 1 to 65535 or a name"))?;
    if name.is_empty() {
        return Err(bad("a name is missing"));
    }
    let numeric = |p: &Port| match p {
        Port::Number(n) => Some(*n),
        Port::Name(_) => None,
    };
    Ok(match kind {
        Some("svc" | "service" | "services") => {
            let port = port.ok_or_else(|| bad("a Service needs :PORT (its number or name)"))?;
            ProbeDestination {
                service: Some(ServiceTarget {
                    name: name.to_owned(),
                    namespace: namespace.map(str::to_owned),
                    port: numeric(&port),
                    port_name: match port {
                        Port::Name(n) => Some(n),
                        Port::Number(_) => None,
                    },
                    via: Vec::new(),
                }),
                ..ProbeDestination::default()
            }
        }
        Some(_) => {
            let port = match &port {
                Some(Port::Name(_)) => return Err(bad("a pod's port must be a number")),
                Some(p) => numeric(p),
                None => None,
            };
            ProbeDestination {
                pod: Some(PodDestination {
                    name: name.to_owned(),
                    namespace: namespace.map(str::to_owned),
                    port,
                }),
                ..ProbeDestination::default()
            }
        }
        None => {
            let port = match port {
                Some(Port::Number(n)) => n,
                _ => return Err(bad("expected HOST:PORT with a numeric port")),
            };
            ProbeDestination {
                external: Some(ExternalTarget {
                    host: Some(
                        name.trim_start_matches('[')
                            .trim_end_matches(']')
                            .to_owned(),
                    ),
                    port: Some(port),
                    ..ExternalTarget::default()
                }),
                ..ProbeDestination::default()
            }
        }
    })
}

enum Port {
    Number(i32),
    Name(String),
}

/// `name[:port]`, IPv6 in brackets; `None` for a port that is neither 1–65535 nor a name.
fn split_port(s: &str) -> Option<(&str, Option<Port>)> {
    let (name, port) = match s.rsplit_once(':') {
        // A bare IPv6 address has colons but no port.
        Some((name, _)) if name.contains(':') && !name.ends_with(']') => return Some((s, None)),
        Some((name, port)) => (name, Some(port)),
        None => (s, None),
    };
    let port = match port {
        None => None,
        Some(p) => Some(match p.parse::<u32>() {
            Ok(n @ 1..=65_535) => Port::Number(i32::try_from(n).ok()?),
            Ok(_) => return None,
            Err(_)
                if !p.is_empty()
                    && p.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                Port::Name(p.to_owned())
            }
            Err(_) => return None,
        }),
    };
    Some((name, port))
}

/// The probe's spec from the command line.
pub fn spec(
    from: &str,
    to: &str,
    to_namespace: Option<&str>,
    protocol: Option<Protocol>,
    count: u8,
    timeout: Option<GoDuration>,
) -> Result<ConnectivityProbeSpec, UsageError> {
    if !(1..=10).contains(&count) {
        return Err(UsageError(format!("--count {count}: 1 to 10")));
    }
    Ok(ConnectivityProbeSpec {
        from: origin(from)?,
        to: destination(to, to_namespace)?,
        protocol,
        count: Some(i32::from(count)),
        timeout,
    })
}

/// Microseconds as a short duration: "412us", "3.1ms", "2.00s".
fn micros(us: i64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

/// A finished probe for a terminal: each attempt with its phases, the path trace, the verdict
/// and what to look at next. `paint` colours outcomes (on a terminal only).
pub fn render(probe: &ConnectivityProbe, to: &str, paint: bool) -> String {
    let mut out = String::new();
    let status = probe.status.clone().unwrap_or_default();
    let colour = |text: &str, good: bool| match (paint, good) {
        (false, _) => text.to_owned(),
        (true, true) => format!("\x1b[32m{text}\x1b[0m"),
        (true, false) => format!("\x1b[31m{text}\x1b[0m"),
    };
    let _ = writeln!(
        out,
        "probe from {} to {to}{}",
        probe.spec.from.describe(),
        status
            .agent
            .as_deref()
            .map(|a| format!(" (agent {a})"))
            .unwrap_or_default()
    );
    let width = status
        .attempts
        .iter()
        .map(|a| a.path.len())
        .max()
        .unwrap_or(0);
    for a in &status.attempts {
        let phases: Vec<String> = [
            ("dns", a.dns_micros),
            ("connect", a.connect_micros),
            ("tls", a.tls_micros),
            ("first byte", a.first_byte_micros),
            ("total", a.total_micros),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some(format!("{name} {}", micros(v?))))
        .collect();
        let failure = match (&a.reason, &a.layer) {
            (Some(r), Some(l)) => format!("  {r} at {l}"),
            (Some(r), None) => format!("  {r}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:width$}  {}  {}{failure}",
            a.path,
            colour(&format!("{:7}", a.outcome), a.outcome == "Good"),
            phases.join(", "),
        );
    }
    if let Some(trace) = &status.trace {
        let _ = writeln!(out, "path to {}: {}", trace.destination, trace.summary);
        for hop in &trace.hops {
            let _ = writeln!(
                out,
                "  {:>2}  {:15}  {}{}",
                hop.ttl,
                hop.address.as_deref().unwrap_or("*"),
                hop.answer.as_deref().unwrap_or("no answer"),
                hop.rtt_micros
                    .map(|r| format!("  {}", micros(r)))
                    .unwrap_or_default()
            );
        }
    }
    let phase = status.phase;
    let verdict = match phase {
        Some(ProbePhase::Succeeded) => colour("OK", true),
        Some(ProbePhase::Failed) => colour("FAILED", false),
        Some(ProbePhase::Refused) => colour("REFUSED", false),
        _ => "NO ANSWER".to_owned(),
    };
    let _ = writeln!(
        out,
        "{verdict}: {}",
        status.message.as_deref().unwrap_or("no answer yet")
    );
    for next in next_steps(probe) {
        let _ = writeln!(out, "next: {next}");
    }
    out
}

/// What to run next after a failed probe, with the real names.
fn next_steps(probe: &ConnectivityProbe) -> Vec<String> {
    let Some(status) = &probe.status else {
        return Vec::new();
    };
    if status.phase != Some(ProbePhase::Failed) {
        return Vec::new();
    }
    let namespace = probe.metadata.namespace.as_deref().unwrap_or("default");
    let failed_layer = status
        .attempts
        .iter()
        .find(|a| a.outcome != "Good")
        .and_then(|a| a.layer.clone());
    let mut next = Vec::new();
    match failed_layer.as_deref() {
        Some("DNS") => {
            next.push("kubectl -n kube-system logs -l k8s-app=kube-dns --tail=50".to_owned());
        }
        Some("TLS") => next.push("# the server's certificate and the SNI it expects".to_owned()),
        Some("HTTP") => next.push("# the server answered: its logs say why".to_owned()),
        _ => {
            let target_ns = probe
                .spec
                .to
                .service
                .as_ref()
                .and_then(|s| s.namespace.clone())
                .or_else(|| probe.spec.to.pod.as_ref().and_then(|p| p.namespace.clone()))
                .unwrap_or_else(|| namespace.to_owned());
            next.push(format!("kubectl get networkpolicy -n {target_ns}"));
            if let Some(svc) = &probe.spec.to.service {
                next.push(format!(
                    "kubectl get endpointslices -n {target_ns} -l kubernetes.io/service-name={}",
                    svc.name
                ));
            }
            if let Some(hop) = status.trace.as_ref().and_then(|t| {
                t.hops
                    .iter()
                    .rev()
                    .find(|h| h.answer.is_some())?
                    .address
                    .clone()
            }) {
                next.push(format!(
                    "# the hop after {hop} drops the traffic: its routes and firewall"
                ));
            }
            match (&probe.spec.from.node, probe.spec.from.describe()) {
                (Some(node), _) => next.push(format!("kubectl describe node {node}")),
                (None, workload) => next.push(format!(
                    "kubectl get networkpolicy -n {namespace}   # the policies that select {workload}'s pods (egress)"
                )),
            }
        }
    }
    next
}

/// The exit code of a finished probe: 0 succeeded, 3 an attempt failed, 5 refused.
pub fn exit_code(probe: &ConnectivityProbe) -> Option<u8> {
    match probe.status.as_ref()?.phase? {
        ProbePhase::Succeeded => Some(0),
        ProbePhase::Failed => Some(3),
        ProbePhase::Refused => Some(5),
        ProbePhase::Running => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netslo_crds::v1alpha1::{ConnectivityProbeStatus, PathTraceStatus, ProbeAttempt, TraceHop};

    #[test]
    fn destinations_read_as_kubectl_users_write_them() {
        let svc = destination("svc/payments:8080", Some("pay")).unwrap();
        let s = svc.service.unwrap();
        assert_eq!(
            (s.name.as_str(), s.namespace.as_deref(), s.port, s.port_name),
            ("payments", Some("pay"), Some(8080), None)
        );
        let named = destination("service/payments:http", None)
            .unwrap()
            .service
            .unwrap();
        assert_eq!(
            (named.port, named.port_name.as_deref()),
            (None, Some("http"))
        );
        let pod = destination("pod/api-7d9f:9000", None).unwrap().pod.unwrap();
        assert_eq!((pod.name.as_str(), pod.port), ("api-7d9f", Some(9000)));
        assert_eq!(
            destination("pod/api", None).unwrap().pod.unwrap().port,
            None
        );
        let ext = destination("db.example.com:5432", None)
            .unwrap()
            .external
            .unwrap();
        assert_eq!(
            (ext.host.as_deref(), ext.port),
            (Some("db.example.com"), Some(5432))
        );
        let v6 = destination("[2001:db8::1]:443", None)
            .unwrap()
            .external
            .unwrap();
        assert_eq!(v6.host.as_deref(), Some("2001:db8::1"));
        let url = destination("https://api.example.com/healthz", None)
            .unwrap()
            .external
            .unwrap();
        assert_eq!(url.url.as_deref(), Some("https://api.example.com/healthz"));
        for (bad, says) in [
            ("svc/payments", "needs :PORT"),
            ("svc/payments:0", "1 to 65535"),
            ("svc/payments:99999", "1 to 65535"),
            ("pod/api:http", "must be a number"),
            ("db.example.com", "numeric port"),
            ("deploy/api:80", "expected svc/"),
            ("svc/:80", "name is missing"),
        ] {
            let err = destination(bad, None).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn origins_are_nodes_deployments_or_pods() {
        assert_eq!(
            origin("node/worker-2").unwrap().node.as_deref(),
            Some("worker-2")
        );
        assert_eq!(
            origin("deploy/checkout").unwrap().deployment.as_deref(),
            Some("checkout")
        );
        assert_eq!(
            origin("pod/checkout-7d9f").unwrap().pod.as_deref(),
            Some("checkout-7d9f")
        );
        assert_eq!(
            origin("deployment/checkout").unwrap().describe(),
            "deploy/checkout"
        );
        for bad in ["worker-2", "node/", "svc/payments"] {
            let err = origin(bad).unwrap_err().to_string();
            assert!(
                err.contains("node/NAME, deploy/NAME or pod/NAME"),
                "{bad}: {err}"
            );
        }
        assert!(spec("node/a", "svc/b:80", None, None, 0, None).is_err());
        assert!(spec("node/a", "svc/b:80", None, None, 11, None).is_err());
        let s = spec("node/a", "svc/b:80", None, Some(Protocol::HTTP), 3, None).unwrap();
        assert_eq!((s.count, s.protocol), (Some(3), Some(Protocol::HTTP)));
    }

    fn failed_probe() -> ConnectivityProbe {
        let mut probe = ConnectivityProbe::new(
            "probe-x",
            spec("node/worker-2", "svc/payments:8080", None, None, 2, None).unwrap(),
        );
        probe.metadata.namespace = Some("shop".into());
        let attempt = |outcome: &str, reason: Option<&str>, connect: i64| ProbeAttempt {
            path: "ClusterIP 10.96.0.10:8080".into(),
            outcome: outcome.into(),
            reason: reason.map(str::to_owned),
            layer: reason.map(|_| "TCP".to_owned()),
            connect_micros: Some(connect),
            total_micros: Some(connect),
            ..ProbeAttempt::default()
        };
        probe.status = Some(ConnectivityProbeStatus {
            phase: Some(ProbePhase::Failed),
            message: Some(
                "1 of 2 attempts failed; first: TCPTimeout at TCP on ClusterIP 10.96.0.10:8080"
                    .into(),
            ),
            agent: Some("netslo-agent-abcde".into()),
            attempts: vec![
                attempt("Good", None, 412),
                attempt("Bad", Some("TCPTimeout"), 2_000_000),
            ],
            trace: Some(PathTraceStatus {
                destination: "10.96.0.10".into(),
                end: "Silent".into(),
                summary:
                    "silent after hop 1 (10.78.0.2): a hop past it drops the traffic to 10.96.0.10"
                        .into(),
                hops: vec![
                    TraceHop {
                        ttl: 1,
                        address: Some("10.78.0.2".into()),
                        answer: Some("TimeExceeded".into()),
                        rtt_micros: Some(310),
                    },
                    TraceHop {
                        ttl: 2,
                        ..TraceHop::default()
                    },
                ],
            }),
            completion_time: None,
        });
        probe
    }

    #[test]
    fn a_failed_probe_reads_attempt_by_attempt_with_the_path_and_what_next() {
        let probe = failed_probe();
        let text = render(&probe, "svc/payments:8080", false);
        let expected = "\
probe from node/worker-2 to svc/payments:8080 (agent netslo-agent-abcde)
  ClusterIP 10.96.0.10:8080  Good     connect 412us, total 412us
  ClusterIP 10.96.0.10:8080  Bad      connect 2.00s, total 2.00s  TCPTimeout at TCP
path to 10.96.0.10: silent after hop 1 (10.78.0.2): a hop past it drops the traffic to 10.96.0.10
   1  10.78.0.2        TimeExceeded  310us
   2  *                no answer
FAILED: 1 of 2 attempts failed; first: TCPTimeout at TCP on ClusterIP 10.96.0.10:8080
next: kubectl get networkpolicy -n shop
next: kubectl get endpointslices -n shop -l kubernetes.io/service-name=payments
next: # the hop after 10.78.0.2 drops the traffic: its routes and firewall
next: kubectl describe node worker-2
";
        assert_eq!(text, expected);
        assert_eq!(exit_code(&probe), Some(3));
        let painted = render(&probe, "svc/payments:8080", true);
        assert!(painted.contains("\x1b[31mFAILED\x1b[0m"));
    }

    #[test]
    fn exit_codes_follow_the_phase() {
        let mut probe = failed_probe();
        for (phase, code) in [
            (ProbePhase::Succeeded, Some(0)),
            (ProbePhase::Failed, Some(3)),
            (ProbePhase::Refused, Some(5)),
            (ProbePhase::Running, None),
        ] {
            probe.status.as_mut().unwrap().phase = Some(phase);
            assert_eq!(exit_code(&probe), code, "{phase:?}");
        }
        probe.status = None;
        assert_eq!(exit_code(&probe), None);
    }
}
