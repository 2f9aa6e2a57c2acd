//! What the plugin reads out of a check (pure): its one-line summary for `get`, and whether a
//! `wait` is over.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use netslo_crds::v1alpha1::conditions::{reasons, types};
use netslo_crds::v1alpha1::{ConnectivityCheck, ObjectiveName};

/// One row of `kubectl netslo get`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub namespace: String,
    pub name: String,
    /// `Ready`'s status: True, False, Unknown, or `-` before the operator judged the check.
    pub ready: String,
    pub reason: String,
    pub sli: String,
    pub budget: String,
    pub verdict: String,
}

const NONE: &str = "-";

impl Row {
    pub fn of(check: &ConnectivityCheck) -> Row {
        let status = check.status.as_ref();
        let ready = status.and_then(|s| condition(&s.conditions, types::READY));
        let availability = status.and_then(|s| s.slo.as_ref()).and_then(|slo| {
            slo.objectives
                .iter()
                .find(|o| o.name == ObjectiveName::Availability)
                .or(slo.objectives.first())
        });
        let text = |value: Option<&str>| value.filter(|v| !v.is_empty()).unwrap_or(NONE).to_owned();
        Row {
            namespace: check.metadata.namespace.clone().unwrap_or_default(),
            name: check.metadata.name.clone().unwrap_or_default(),
            ready: text(ready.map(|c| c.status.as_str())),
            reason: text(ready.map(|c| c.reason.as_str())),
            sli: text(availability.and_then(|o| o.sli.as_deref())),
            budget: text(availability.and_then(|o| o.error_budget_remaining.as_deref())),
            verdict: text(
                status
                    .and_then(|s| s.verdict.as_ref())
                    .map(|v| v.summary.as_str()),
            ),
        }
    }
}

/// Rows as an aligned table; `paint` colours the READY column (on a terminal only).
pub fn table(rows: &[Row], all_namespaces: bool, paint: bool) -> String {
    let header = Row {
        namespace: "NAMESPACE".into(),
        name: "NAME".into(),
        ready: "READY".into(),
        reason: "REASON".into(),
        sli: "SLI".into(),
        budget: "BUDGET".into(),
        verdict: "VERDICT".into(),
    };
    let cells = |r: &Row| -> Vec<String> {
        let mut cells = Vec::with_capacity(7);
        if all_namespaces {
            cells.push(r.namespace.clone());
        }
        cells.extend([
            r.name.clone(),
            r.ready.clone(),
            r.reason.clone(),
            r.sli.clone(),
            r.budget.clone(),
            r.verdict.clone(),
        ]);
        cells
    };
    let lines: Vec<Vec<String>> = std::iter::once(&header).chain(rows).map(cells).collect();
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let ready_column = usize::from(all_namespaces) + 1;
    let mut out = String::new();
    for (n, line) in lines.iter().enumerate() {
        for (i, cell) in line.iter().enumerate() {
            let last = i + 1 == columns;
            let pad = if last {
                String::new()
            } else {
                " ".repeat(widths[i] - cell.chars().count() + 3)
            };
            let colour = match cell.as_str() {
                _ if !paint || n == 0 || i != ready_column => None,
                "True" => Some("32"),
                "False" => Some("31"),
                _ => Some("33"),
            };
            match colour {
                Some(code) => out.push_str(&format!("\x1b[{code}m{cell}\x1b[0m{pad}")),
                None => out.push_str(&format!("{cell}{pad}")),
            }
        }
        out.push('\n');
    }
    out
}

/// What `kubectl netslo wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    /// `Ready=True`: measured, and every objective met.
    Ready,
    /// `SLOMet=True`: every objective met over the SLO window.
    SloMet,
}

/// Where a wait stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    Met,
    /// Not yet: why (the operator has not judged the latest spec, agents starting, ...).
    Pending(String),
    /// It will not get there without a change: stalled, breached, a deny violated.
    Failed(String),
}

/// Whether the check has reached `what` (pure). Fails fast as the shipped Flux
/// `healthCheckExprs` do: a stall, a breached objective, a violated expected-deny.
pub fn judge(check: &ConnectivityCheck, what: WaitFor) -> Judgement {
    let Some(status) = check.status.as_ref() else {
        return Judgement::Pending("the operator has not seen the check yet".into());
    };
    let generation = check.metadata.generation;
    if generation.is_some() && status.observed_generation != generation {
        return Judgement::Pending(format!(
            "the operator has not observed generation {} yet",
            generation.unwrap_or_default()
        ));
    }
    let said = |c: &Condition| format!("{}: {}", c.reason, c.message);
    let conditions = &status.conditions;
    if let Some(stalled) = condition(conditions, types::STALLED).filter(|c| c.status == "True") {
        return Judgement::Failed(format!("stalled, {}", said(stalled)));
    }
    let ready = condition(conditions, types::READY);
    if let Some(violated) =
        ready.filter(|c| c.status == "False" && c.reason == reasons::EXPECTED_DENY_VIOLATED)
    {
        return Judgement::Failed(said(violated));
    }
    match what {
        WaitFor::Ready => match ready {
            Some(c) if c.status == "True" => Judgement::Met,
            Some(c) if c.reason == reasons::OBJECTIVE_NOT_MET => Judgement::Failed(said(c)),
            Some(c) => Judgement::Pending(said(c)),
            None => Judgement::Pending("not judged yet".into()),
        },
        WaitFor::SloMet => match condition(conditions, types::SLO_MET) {
            Some(c) if c.status == "True" => Judgement::Met,
            Some(c) if c.status == "False" => Judgement::Failed(said(c)),
            Some(c) => Judgement::Pending(said(c)),
            None => Judgement::Pending(ready.map_or("not judged yet".into(), said)),
        },
    }
}

/// `kubectl netslo explain`: the check's state, the verdict and the evidence behind it, and
/// the commands to run next with the real names filled in (pure).
pub fn explain(check: &ConnectivityCheck) -> String {
    let namespace = check.metadata.namespace.as_deref().unwrap_or("default");
    let name = check.metadata.name.as_deref().unwrap_or_default();
    let mut out = format!("connectivitycheck {namespace}/{name}\n");
    let Some(status) = check.status.as_ref().filter(|s| !s.conditions.is_empty()) else {
        out.push_str("  not judged yet: the operator has not written a status for it.\n");
        out.push_str("\nnext:\n  kubectl get pods -A -l app.kubernetes.io/name=netslo -o wide   # is the operator running?\n");
        return out;
    };
    let ready = condition(&status.conditions, types::READY);
    if let Some(c) = ready {
        out.push_str(&format!(
            "  Ready={} {}: {}\n",
            c.status, c.reason, c.message
        ));
    }
    let mut next: Vec<String> = Vec::new();
    match &status.verdict {
        Some(v) => {
            out.push_str(&format!(
                "\nverdict: {} at the {} layer ({:?})\n  {}\n",
                v.reason,
                layer_name(v),
                v.scope,
                v.summary
            ));
            if let Some(since) = &v.since {
                out.push_str(&format!("  since {}\n", since.0));
            }
            if !v.sources.is_empty() {
                out.push_str(&format!("  from: {}\n", v.sources.join(", ")));
            }
            if !v.destinations.is_empty() {
                out.push_str(&format!("  to: {}\n", v.destinations.join(", ")));
            }
            next.extend(next_for_verdict(check, v));
        }
        None => {
            if let Some(c) = ready.filter(|c| c.status != "True") {
                next.extend(next_for_reason(namespace, name, &c.reason));
            }
        }
    }
    let failing: Vec<_> = status
        .targets
        .iter()
        .filter(|t| t.last_failure.is_some() || t.success_ratio.as_deref() != Some("1"))
        .collect();
    if !failing.is_empty() {
        out.push_str("\nevidence (last hour, worst first):\n");
        for t in failing {
            let mut line = format!("  {}", t.name);
            if let Some(via) = &t.via {
                line.push_str(&format!(" via {via:?}"));
            }
            if let Some(endpoint) = &t.endpoint {
                line.push_str(&format!(" endpoint {endpoint}"));
            }
            if let Some(locality) = &t.locality {
                line.push_str(&format!(" ({locality:?})"));
            }
            line.push_str(&format!(
                ": success {}",
                t.success_ratio.as_deref().unwrap_or(NONE)
            ));
            if let Some(latency) = &t.latency {
                line.push_str(&format!(", p99 {}", latency.p99));
            }
            if let Some(f) = &t.last_failure {
                line.push_str(&format!(", last failure {} from {}", f.reason, f.source));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    next.push(format!(
        "kubectl describe connectivitycheck -n {namespace} {name}"
    ));
    next.push(format!(
        "kubectl events -n {namespace} --for connectivitycheck/{name}"
    ));
    out.push_str("\nnext:\n");
    for command in next {
        out.push_str(&format!("  {command}\n"));
    }
    out
}

fn layer_name(v: &netslo_crds::v1alpha1::Verdict) -> String {
    serde_json::to_value(v.layer)
        .ok()
        .and_then(|l| l.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What to look at for each place a verdict names (the README's table, with names).
fn next_for_verdict(check: &ConnectivityCheck, v: &netslo_crds::v1alpha1::Verdict) -> Vec<String> {
    use netslo_crds::v1alpha1::FailureScope;
    let namespace = check.metadata.namespace.as_deref().unwrap_or("default");
    let host = |destination: &str| {
        destination
            .rsplit_once(':')
            .map_or(destination, |(host, _)| host)
            .trim_matches(['[', ']'])
            .to_owned()
    };
    let service = check.spec.targets.iter().find_map(|t| {
        let s = t.service.as_ref()?;
        Some((
            s.namespace.clone().unwrap_or_else(|| namespace.to_owned()),
            s.name.clone(),
        ))
    });
    match v.scope {
        FailureScope::Endpoint => v
            .destinations
            .iter()
            .map(|d| format!("kubectl get pods -A -o wide --field-selector status.podIP={}", host(d)))
            .chain(std::iter::once("kubectl get networkpolicy -A".to_owned()))
            .collect(),
        FailureScope::ServiceRouting => {
            let mut next = vec!["kubectl -n kube-system get pods -o wide   # kube-proxy or the CNI's service proxy on the source nodes".to_owned()];
            if let Some((ns, svc)) = service {
                next.push(format!(
                    "kubectl get endpointslices -n {ns} -l kubernetes.io/service-name={svc}"
                ));
            }
            next
        }
        FailureScope::DNS => vec![
            "kubectl -n kube-system logs -l k8s-app=kube-dns --tail=50".to_owned(),
            "kubectl -n kube-system get endpointslices -l kubernetes.io/service-name=kube-dns".to_owned(),
        ],
        FailureScope::Node | FailureScope::SourceNode => v
            .sources
            .iter()
            .chain(if v.scope == FailureScope::Node { &v.destinations } else { &v.sources })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .flat_map(|node| {
                [
                    format!("kubectl describe node {node}"),
                    format!("kubectl get pods -A -o wide --field-selector spec.nodeName={node}"),
                ]
            })
            .collect(),
        FailureScope::CrossNode => vec![
            "kubectl get nodes -o wide   # the overlay between nodes: routes, MTU, VXLAN/Geneve ports, node firewalls".to_owned(),
        ],
        FailureScope::ZonePair => vec![format!(
            "kubectl get nodes -L topology.kubernetes.io/zone   # the network between zones {} and {}",
            v.sources.join(","),
            v.destinations.join(",")
        )],
        FailureScope::Target => match service {
            Some((ns, svc)) => vec![format!("kubectl get service,endpointslices -n {ns} -l kubernetes.io/service-name={svc}")],
            None => v
                .destinations
                .iter()
                .map(|d| format!("# the target itself: {d}"))
                .collect(),
        },
        FailureScope::PolicyViolation => vec![
            format!("kubectl get networkpolicy -n {namespace}"),
            "# is the CNI enforcing NetworkPolicy at all?".to_owned(),
        ],
    }
}

/// What to look at when Ready is False without a verdict.
fn next_for_reason(namespace: &str, name: &str, reason: &str) -> Vec<String> {
    match reason {
        reasons::AGENTS_PENDING => vec![
            "kubectl get pods -A -l app.kubernetes.io/managed-by=netslo-operator -o wide"
                .to_owned(),
            format!(
                "kubectl get connectivitycheck -n {namespace} {name} -o jsonpath='{{.status.agents}}'"
            ),
        ],
        reasons::AWAITING_DATA => vec![
            "# the shortest alert window needs results first: wait, or `kubectl netslo wait`"
                .to_owned(),
        ],
        reasons::TARGET_NOT_PERMITTED => vec![
            "kubectl get connectivitypolicies   # which grants cover this namespace".to_owned(),
        ],
        _ => Vec::new(),
    }
}

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(status: serde_json::Value) -> ConnectivityCheck {
        serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"name": "checkout-to-payments", "namespace": "shop", "generation": 2},
            "spec": {"source": {"mesh": {}}, "targets": [{"name": "api", "apiServer": {}}]},
            "status": status,
        }))
        .unwrap()
    }

    fn condition(type_: &str, status: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": status, "reason": reason, "message": "m",
               "lastTransitionTime": "2026-12-07T10:00:00Z"})
    }

    #[test]
    fn a_row_says_ready_sli_budget_and_verdict() {
        let breached = check(json!({
            "observedGeneration": 2,
            "conditions": [condition("Ready", "False", "ObjectiveNotMet")],
            "slo": {"window": "28d", "coverage": "1", "objectives": [
                {"name": "Latency", "target": "0.99", "sli": "0.98"},
                {"name": "Availability", "target": "0.999", "sli": "0.9871", "errorBudgetRemaining": "-1"},
            ]},
            "verdict": {"layer": "TCP", "scope": "Endpoint", "reason": "TCPTimeout",
                        "summary": "endpoint 10.0.1.7:8080 fails from 3/3 sources (TCPTimeout)"},
        }));
        let row = Row::of(&breached);
        assert_eq!(
            (
                row.ready.as_str(),
                row.reason.as_str(),
                row.sli.as_str(),
                row.budget.as_str()
            ),
            ("False", "ObjectiveNotMet", "0.9871", "-1")
        );
        assert!(row.verdict.starts_with("endpoint 10.0.1.7:8080"));
        let unseen = Row::of(&check(json!({"observedGeneration": 0})));
        assert_eq!(
            [
                unseen.ready,
                unseen.reason,
                unseen.sli,
                unseen.budget,
                unseen.verdict
            ],
            ["-", "-", "-", "-", "-"].map(String::from)
        );

        let text = table(std::slice::from_ref(&row), true, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        assert!(
            lines[1].starts_with("shop        checkout-to-payments   False"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
        let painted = table(&[row], false, true);
        assert!(painted.contains("\x1b[31mFalse\x1b[0m"), "{painted}");
        assert!(painted.starts_with("NAME "), "{painted}");
    }

    #[test]
    fn explain_names_the_place_the_evidence_and_the_next_commands() {
        let endpoint = check(json!({
            "observedGeneration": 2,
            "conditions": [condition("Ready", "False", "ObjectiveNotMet")],
            "verdict": {"layer": "TCP", "scope": "Endpoint", "reason": "TCPTimeout",
                        "summary": "endpoint 10.0.1.7:8080 of web fails from 3/3 sources (TCPTimeout)",
                        "sources": ["node-a", "node-b"], "destinations": ["10.0.1.7:8080"]},
            "targets": [{"name": "web", "via": "Endpoints", "endpoint": "10.0.1.7:8080",
                         "protocol": "TCP", "successRatio": "0.0000",
                         "lastFailure": {"layer": "TCP", "reason": "TCPTimeout", "source": "node-a"}},
                        {"name": "web", "via": "ClusterIP", "protocol": "TCP", "successRatio": "1"}],
        }));
        let text = explain(&endpoint);
        for said in [
            "connectivitycheck shop/checkout-to-payments",
            "Ready=False ObjectiveNotMet: m",
            "verdict: TCPTimeout at the TCP layer (Endpoint)",
            "from: node-a, node-b",
            "to: 10.0.1.7:8080",
            "web via Endpoints endpoint 10.0.1.7:8080: success 0.0000, last failure TCPTimeout from node-a",
            "kubectl get pods -A -o wide --field-selector status.podIP=10.0.1.7",
            "kubectl describe connectivitycheck -n shop checkout-to-payments",
        ] {
            assert!(text.contains(said), "no {said:?} in\n{text}");
        }
        assert!(
            !text.contains("via ClusterIP"),
            "healthy paths are not evidence:\n{text}"
        );

        let cut_off = check(json!({
            "observedGeneration": 2,
            "conditions": [condition("Ready", "False", "ObjectiveNotMet")],
            "verdict": {"layer": "TCP", "scope": "Node", "reason": "TCPTimeout", "summary": "s",
                        "sources": ["node-c"], "destinations": ["node-c"]},
        }));
        let text = explain(&cut_off);
        assert_eq!(
            text.matches("kubectl describe node node-c").count(),
            1,
            "{text}"
        );
        let pending = explain(&check(json!({"observedGeneration": 2,
            "conditions": [condition("Ready", "False", "AgentsPending")]})));
        assert!(
            pending.contains("app.kubernetes.io/managed-by=netslo-operator"),
            "{pending}"
        );
        assert!(explain(&check(json!({"observedGeneration": 0}))).contains("not judged yet"));
    }

    #[test]
    fn waits_end_when_met_and_fail_fast_on_what_will_not_heal_alone() {
        let ready = |status: &str, reason: &str| {
            check(
                json!({"observedGeneration": 2, "conditions": [condition("Ready", status, reason)]}),
            )
        };
        assert_eq!(
            judge(&ready("True", "ObjectivesMet"), WaitFor::Ready),
            Judgement::Met
        );
        for pending in ["AgentsPending", "AwaitingData", "Suspended"] {
            assert!(
                matches!(judge(&ready("False", pending), WaitFor::Ready), Judgement::Pending(p) if p.starts_with(pending)),
                "{pending}"
            );
        }
        for failed in ["ObjectiveNotMet", "ExpectedDenyViolated"] {
            assert!(
                matches!(judge(&ready("False", failed), WaitFor::Ready), Judgement::Failed(f) if f.starts_with(failed)),
                "{failed}"
            );
        }
        let stalled = check(json!({"observedGeneration": 2, "conditions": [
            condition("Ready", "False", "TargetNotFound"), condition("Stalled", "True", "TargetNotFound")]}));
        assert!(
            matches!(judge(&stalled, WaitFor::SloMet), Judgement::Failed(f) if f.contains("TargetNotFound"))
        );
        // An edit the operator has not seen yet: whatever the old status said.
        let stale = check(
            json!({"observedGeneration": 1, "conditions": [condition("Ready", "True", "ObjectivesMet")]}),
        );
        assert!(
            matches!(judge(&stale, WaitFor::Ready), Judgement::Pending(p) if p.contains("generation 2"))
        );
        assert!(matches!(
            judge(&check(json!(null)), WaitFor::Ready),
            Judgement::Pending(_)
        ));

        let slo = |status: &str| {
            check(json!({"observedGeneration": 2, "conditions": [
                condition("Ready", "False", "AwaitingData"), condition("SLOMet", status, "x")]}))
        };
        assert_eq!(judge(&slo("True"), WaitFor::SloMet), Judgement::Met);
        assert!(matches!(
            judge(&slo("False"), WaitFor::SloMet),
            Judgement::Failed(_)
        ));
        assert!(matches!(
            judge(&slo("Unknown"), WaitFor::SloMet),
            Judgement::Pending(_)
        ));
    }
}
