//! OpenTelemetry export, end to end: a real OpenTelemetry Collector (built from the Go module
//! proxy by `tests/otel/build.sh`: OTLP receiver, file exporter) receives the agent's metrics
//! and traces over OTLP/HTTP and the operator's over OTLP/gRPC. The agent probes a real
//! server in a network namespace; then iptables drops its traffic. From the collector's
//! output alone: metric names, units and kinds; resource and data point attributes; good
//! and bad counts; the duration histogram; the SLO counters and the burn rate past the page
//! threshold; a span of a failed probe with its phases, and reconcile spans.
//!
//! Needs root, `ip` and `iptables`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::operator_common::*;
use kube::api::{Api, PostParams};
use netslo_agent::testbed;
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::{Value, json};

/// One data point of one metric, flattened from the collector's OTLP JSON.
#[derive(Debug, Clone)]
struct Point {
    metric: String,
    unit: String,
    /// `sum`, `gauge`, `histogram` or `exponentialHistogram`.
    kind: String,
    monotonic: bool,
    resource: BTreeMap<String, String>,
    attributes: BTreeMap<String, String>,
    /// The value (sums and gauges) or the count (histograms).
    value: f64,
    raw: Value,
}

fn attributes(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| {
            let v = &kv["value"];
            let text = v["stringValue"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| v["intValue"].as_str().map(str::to_owned))
                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
                .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
                .or_else(|| v["doubleValue"].as_f64().map(|d| d.to_string()))?;
            Some((kv["key"].as_str()?.to_owned(), text))
        })
        .collect()
}

fn number(v: &Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// Every data point in the collector's output file (one export request per line).
fn points(file: &Path) -> Vec<Point> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(request) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rm in request["resourceMetrics"].as_array().into_iter().flatten() {
            let resource = attributes(&rm["resource"]["attributes"]);
            for sm in rm["scopeMetrics"].as_array().into_iter().flatten() {
                for m in sm["metrics"].as_array().into_iter().flatten() {
                    for kind in ["sum", "gauge", "histogram", "exponentialHistogram"] {
                        let data = &m[kind];
                        for dp in data["dataPoints"].as_array().into_iter().flatten() {
                            let value = if kind.ends_with("istogram") {
                                number(&dp["count"])
                            } else if dp.get("asDouble").is_some() {
                                number(&dp["asDouble"])
                            } else {
                                number(&dp["asInt"])
                            };
                            out.push(Point {
                                metric: m["name"].as_str().unwrap_or_default().to_owned(),
                                unit: m["unit"].as_str().unwrap_or_default().to_owned(),
                                kind: kind.to_owned(),
                                monotonic: data["isMonotonic"].as_bool().unwrap_or(false),
                                resource: resource.clone(),
                                attributes: attributes(&dp["attributes"]),
                                value,
                                raw: dp.clone(),
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// Every span in the collector's output: (resource attributes, span).
fn spans(file: &Path) -> Vec<(BTreeMap<String, String>, Value)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(request) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            let resource = attributes(&rs["resource"]["attributes"]);
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((resource.clone(), span.clone()));
                }
            }
        }
    }
    out
}

/// The latest value of a cumulative series: the largest seen (they only grow).
fn latest(points: &[Point], metric: &str, filter: &[(&str, &str)]) -> Option<f64> {
    points
        .iter()
        .filter(|p| p.metric == metric)
        .filter(|p| {
            filter
                .iter()
                .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
        .reduce(f64::max)
}

/// The newest value of a gauge series (last in the file).
fn last(points: &[Point], metric: &str, filter: &[(&str, &str)]) -> Option<f64> {
    points
        .iter()
        .rev()
        .filter(|p| p.metric == metric)
        .find(|p| {
            filter
                .iter()
                .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|p| p.value)
}

struct Collector {
    _process: Process,
    output: PathBuf,
    grpc: u16,
    http: u16,
}

fn start_collector(dir: &Path) -> Collector {
    let root = control_plane::repo_root();
    let build = Command::new("bash")
        .arg(root.join("tests/otel/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/otel/build.sh runs");
    assert!(build.status.success(), "tests/otel/build.sh failed");
    let bin_dir = String::from_utf8(build.stdout).unwrap();
    let bin = Path::new(bin_dir.lines().last().unwrap().trim()).join("otelcol-netslo");
    let (grpc, http) = (free_port(), free_port());
    let output = dir.join("otel.jsonl");
    let process = Process(
        Command::new(bin)
            .arg("--config")
            .arg(root.join("tests/otel/collector.yaml"))
            .env("NETSLO_OTELCOL_GRPC_PORT", grpc.to_string())
            .env("NETSLO_OTELCOL_HTTP_PORT", http.to_string())
            .env("NETSLO_OTELCOL_OUTPUT", &output)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("collector.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    Collector {
        _process: process,
        output,
        grpc,
        http,
    }
}

#[tokio::test]
async fn metrics_and_traces_reach_a_real_collector() {
    testbed::require();
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "otel").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(dir.path());
    eventually(
        "the collector listening",
        Duration::from_secs(30),
        async || {
            tokio::net::TcpStream::connect(("127.0.0.1", collector.http))
                .await
                .ok()
        },
    )
    .await;

    // A server in its own network namespace, reached over an uplink from the host.
    let bed = crate::netns_common::Bed::new(1);
    let server_host = bed.host(0);
    let server_ip = server_host.ip;
    let [a, b, c, _] = server_ip.octets();
    let server_net = format!("{a}.{b}.{c}.0/24");
    let listener = server_host
        .ns
        .enter(|| {
            let l = std::net::TcpListener::bind((server_ip, 8080))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let _serving = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });

    let otel_env = |endpoint: String, protocol: &str| {
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000".to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "500".to_owned()),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.cluster.name=otel-test".to_owned(),
            ),
        ]
    };
    let office = operator_for_office(
        plane,
        &client,
        &system.name,
        Some(&tenant.name),
        dir.path(),
        &["--persist-interval-seconds", "1"],
        &otel_env(format!("http://127.0.0.1:{}", collector.grpc), "grpc"),
    )
    .await;
    grant_external(&client, &tenant.name, &[&server_net]).await;
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &tenant.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "shop"},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [{"name": "db", "external": {"host": server_ip.to_string(), "port": 8080}, "protocol": "TCP"}],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {
                "window": "7d",
                "availability": {"target": "99.9"},
                "alerting": {"profile": "Custom", "minEventsToAlert": 1, "burnRateWindows": [
                    {"severity": "Page", "long": "5m", "short": "1m", "budgetPercent": "2"},
                ]},
            },
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();
    let mut agent = external_agent_command(
        "office",
        office.channel_port,
        &office.ca,
        &office.token,
        "none",
    );
    for (k, v) in otel_env(
        format!("http://127.0.0.1:{}", collector.http),
        "http/protobuf",
    ) {
        agent.env(k, v);
    }
    let _agent = Process(
        agent
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let failed = |what: &str| {
        format!(
            "{what}\n{}",
            logs(dir.path(), &["collector.log", "operator.log", "agent.log"])
        )
    };
    let check_attrs = [
        ("netslo.check.namespace", tenant.name.as_str()),
        ("netslo.check.name", "shop"),
    ];

    // Healthy: good probes counted by the agent, good events by the operator.
    let healthy = eventually(
        "good probes and good SLO events exported",
        Duration::from_secs(90),
        async || {
            let p = points(&collector.output);
            let probes = latest(&p, "netslo.probes", &[("netslo.outcome", "good")])?;
            let events = latest(
                &p,
                "netslo.slo.events",
                &[
                    ("netslo.outcome", "good"),
                    ("netslo.objective", "availability"),
                ],
            )?;
            (probes >= 5.0 && events >= 5.0).then_some(p)
        },
    )
    .await;
    // A good probe's point: a probe that timed out on a loaded machine has a point of its own,
    // with its failure reason.
    let probe = healthy
        .iter()
        .find(|p| {
            p.metric == "netslo.probes"
                && p.attributes.get("netslo.outcome").map(String::as_str) == Some("good")
        })
        .expect("netslo.probes");
    assert_eq!(probe.unit, "{probe}");
    assert_eq!((probe.kind.as_str(), probe.monotonic), ("sum", true));
    for (k, v) in [
        ("service.name", "netslo-agent"),
        ("k8s.node.name", "office"),
        ("k8s.cluster.name", "otel-test"),
    ] {
        assert_eq!(
            probe.resource.get(k).map(String::as_str),
            Some(v),
            "{probe:?}"
        );
    }
    for (k, v) in check_attrs.iter().chain(&[("netslo.target", "db")]) {
        assert_eq!(
            probe.attributes.get(*k).map(String::as_str),
            Some(*v),
            "{probe:?}"
        );
    }
    // Bounded by design: no per-probe or per-endpoint attribute.
    let keys: Vec<&str> = probe.attributes.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "netslo.check.name",
            "netslo.check.namespace",
            "netslo.outcome",
            "netslo.target",
            "netslo.target.path"
        ],
        "{probe:?}"
    );
    let duration = healthy
        .iter()
        .find(|p| p.metric == "netslo.probe.duration")
        .unwrap_or_else(|| panic!("{}", failed("no netslo.probe.duration")));
    assert_eq!(
        (duration.kind.as_str(), duration.unit.as_str()),
        ("exponentialHistogram", "s")
    );
    let max = number(&duration.raw["max"]);
    assert!(
        max > 0.0 && max < 0.5,
        "connect times in seconds, under the timeout: {:?}",
        duration.raw
    );
    let objective = last(
        &healthy,
        "netslo.slo.objective",
        &[("netslo.objective", "availability")],
    );
    assert_eq!(objective, Some(0.999));
    let events = healthy
        .iter()
        .find(|p| p.metric == "netslo.slo.events")
        .unwrap();
    assert_eq!(
        (events.unit.as_str(), events.kind.as_str(), events.monotonic),
        ("{event}", "sum", true)
    );
    assert_eq!(
        events.resource.get("service.name").map(String::as_str),
        Some("netslo-operator")
    );
    for (k, v) in check_attrs {
        assert_eq!(
            events.attributes.get(k).map(String::as_str),
            Some(v),
            "{events:?}"
        );
    }

    // The server's host drops everything: bad probes, bad events, the burn rate past the
    // page threshold (14.4), and a span of a failed probe.
    let _drop = server_host
        .ns
        .iptables("INPUT", &["-p", "tcp", "--dport", "8080", "-j", "DROP"])
        .unwrap();
    let broken = eventually(
        "bad probes, bad events and a page-level burn rate",
        Duration::from_secs(120),
        async || {
            let p = points(&collector.output);
            let bad = latest(
                &p,
                "netslo.probes",
                &[
                    ("netslo.outcome", "bad"),
                    ("netslo.failure.reason", "TCPTimeout"),
                ],
            )?;
            let burn = last(
                &p,
                "netslo.slo.burn_rate",
                &[
                    ("netslo.objective", "availability"),
                    ("netslo.slo.window", "1m"),
                ],
            )?;
            (bad >= 3.0 && burn >= 14.4).then_some(p)
        },
    )
    .await;
    let good = latest(
        &broken,
        "netslo.slo.events",
        &[
            ("netslo.outcome", "good"),
            ("netslo.objective", "availability"),
        ],
    )
    .unwrap();
    let bad = latest(
        &broken,
        "netslo.slo.events",
        &[
            ("netslo.outcome", "bad"),
            ("netslo.objective", "availability"),
        ],
    )
    .unwrap_or(0.0);
    // What the alert rules compute from the counters alone: error ratio over budget.
    let burn_from_counters = bad / (good + bad) / (1.0 - 0.999);
    assert!(
        burn_from_counters >= 14.4,
        "good {good}, bad {bad}: burn {burn_from_counters}"
    );
    let budget = last(
        &broken,
        "netslo.slo.error_budget.remaining",
        &[("netslo.objective", "availability")],
    )
    .unwrap();
    assert!(budget < 1.0, "budget remaining {budget}");
    let sli = last(
        &broken,
        "netslo.slo.sli",
        &[("netslo.objective", "availability")],
    )
    .unwrap();
    assert!(sli < 0.999, "SLI {sli}");

    let traced = eventually(
        "a failed probe's span",
        Duration::from_secs(30),
        async || {
            let spans = spans(&collector.output);
            spans
                .iter()
                .any(|(_, s)| s["name"] == "netslo.probe")
                .then_some(spans)
        },
    )
    .await;
    let (resource, probe_span) = traced
        .iter()
        .find(|(_, s)| s["name"] == "netslo.probe")
        .unwrap();
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("netslo-agent")
    );
    assert_eq!(
        probe_span["status"]["code"], 2,
        "error status: {probe_span}"
    );
    assert_eq!(
        attributes(&probe_span["attributes"])
            .get("netslo.failure.reason")
            .map(String::as_str),
        Some("TCPTimeout")
    );
    let connect = traced
        .iter()
        .find(|(_, s)| s["name"] == "connect" && s["parentSpanId"] == probe_span["spanId"]);
    assert!(connect.is_some(), "the connect phase is a child span");
    assert!(
        traced.iter().any(|(r, s)| s["name"] == "reconcile"
            && r.get("service.name").map(String::as_str) == Some("netslo-operator")),
        "reconcile spans from the operator"
    );
    // Operator health arrives too.
    assert!(latest(&broken, "netslo.operator.results.ingested", &[]).unwrap_or(0.0) > 0.0);
    assert!(
        latest(&broken, "netslo.operator.agents.connected", &[]).unwrap_or(0.0) >= 1.0,
        "the agent holds its channel"
    );
    assert!(
        latest(
            &broken,
            "netslo.operator.reconciles",
            &[("netslo.result", "ok")]
        )
        .is_some()
    );
    // The check's state and, once localised, its verdict: one series each, the failing
    // places as attributes (what the dashboard's tables list).
    let verdict_filter = [
        ("netslo.failure.reason", "TCPTimeout"),
        ("netslo.failure.layer", "TCP"),
    ];
    let localised = eventually(
        "the verdict as a series",
        Duration::from_secs(60),
        async || {
            let p = points(&collector.output);
            (last(&p, "netslo.check.verdict", &verdict_filter)? == 1.0).then_some(p)
        },
    )
    .await;
    let verdict = localised
        .iter()
        .rev()
        .find(|p| p.metric == "netslo.check.verdict")
        .unwrap();
    assert_eq!(verdict.unit, "{verdict}");
    for key in ["netslo.failure.scope", "netslo.failure.destinations"] {
        assert!(
            !verdict.attributes.get(key).is_none_or(String::is_empty),
            "{key} in {verdict:?}"
        );
    }
    let state = localised
        .iter()
        .rev()
        .find(|p| p.metric == "netslo.check.state")
        .expect("netslo.check.state");
    assert_eq!((state.unit.as_str(), state.value), ("{check}", 1.0));
    assert!(state.attributes.contains_key("netslo.state"), "{state:?}");
    shipped_queries_use_exported_names(&localised);
    let age = last(&broken, "netslo.agent.assignment.age", &[]).unwrap();
    assert!((0.0..60.0).contains(&age), "assignment age {age} s");
}

/// The Prometheus name an OpenTelemetry Collector gives an OTLP metric (the default
/// `UnderscoreEscapingWithSuffixes` translation): dots become underscores, the unit becomes a
/// suffix (`s`: `_seconds`; `1` on a gauge: `_ratio`; annotations like `{probe}`: none) and a
/// monotonic sum ends in `_total`.
fn prometheus_name(p: &Point) -> String {
    let mut name = p.metric.replace('.', "_");
    match (p.unit.as_str(), p.kind.as_str()) {
        ("s", _) => name.push_str("_seconds"),
        ("1", "gauge") => name.push_str("_ratio"),
        _ => {}
    }
    if p.kind == "sum" && p.monotonic {
        name.push_str("_total");
    }
    name
}

/// Every `netslo_…` metric or label name in the shipped alerting rules and Grafana dashboard
/// is one this export produces, as a collector translates it: they query what arrives.
fn shipped_queries_use_exported_names(points: &[Point]) {
    let mut exported: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for p in points {
        exported.insert(prometheus_name(p));
        for key in p.attributes.keys().chain(p.resource.keys()) {
            exported.insert(key.replace('.', "_"));
        }
    }
    let root = control_plane::repo_root();
    for (file, must_use) in [
        (
            "config/alerting/netslo-rules.yaml",
            &["netslo_slo_events_total", "netslo_slo_objective_ratio"][..],
        ),
        (
            "config/grafana/netslo-dashboard.json",
            &[
                "netslo_check_state",
                "netslo_check_verdict",
                "netslo_slo_burn_rate_ratio",
            ][..],
        ),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let used = netslo_names(&text);
        let unknown: Vec<&String> = used.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses {unknown:?}, which nothing exported is called; exported: {exported:?}"
        );
        for name in must_use {
            assert!(used.contains(*name), "{file} does not use {name}");
        }
    }
}

/// The `netslo_…` names in a rules file or dashboard, outside comments and recording rules'
/// `level:metric:operations` names.
fn netslo_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut used = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(at) = line[i..].find("netslo_") {
            let start = i + at;
            let preceded =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b':');
            let end = line[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(line.len(), |n| start + n);
            if !preceded && line.as_bytes().get(end) != Some(&b':') {
                used.insert(line[start..end].to_owned());
            }
            i = end;
        }
    }
    used
}
