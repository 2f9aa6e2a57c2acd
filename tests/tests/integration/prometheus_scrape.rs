//! The Prometheus scrape endpoints (`--prometheus-addr`) scraped by a real Prometheus server
//! (built from the Go module proxy by `tests/otel/build.sh`), which evaluates the shipped
//! alerting rules (`config/alerting/netslo-rules.yaml`) on what it scraped: an operator and an
//! external agent probe an open and a closed port, and from the scraped series alone the
//! recording rules compute the error ratio (a half) and the fast-burn alert fires. Every metric name the rules and the
//! Grafana dashboard query is among the scraped series, as it is among the collector's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::operator_common::*;
use kube::api::{Api, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace, repo_root};
use serde_json::{Value, json};

fn prometheus_binary() -> PathBuf {
    let build = Command::new("bash")
        .arg(repo_root().join("tests/otel/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/otel/build.sh runs");
    assert!(build.status.success(), "tests/otel/build.sh failed");
    let dir = String::from_utf8(build.stdout).unwrap();
    Path::new(dir.lines().last().unwrap().trim()).join("prometheus")
}

/// The body of `GET path` on `addr` (HTTP/1.1, plain).
fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let response = String::from_utf8(response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// An instant query's result vector from Prometheus' HTTP API.
fn query(prometheus: &str, promql: &str) -> Vec<Value> {
    let encoded: String = promql
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let Some(body) = get(prometheus, &format!("/api/v1/query?query={encoded}")) else {
        return Vec::new();
    };
    let answer: Value = serde_json::from_str(&body).unwrap_or_default();
    answer["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn prometheus_scrapes_both_and_the_rules_fire_on_what_it_scraped() {
    let prometheus_bin = prometheus_binary();
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let open = AcceptingServer::start().await;
    let open_port = open.port;
    let operator_metrics = format!("127.0.0.1:{}", free_port());
    let agent_metrics = format!("127.0.0.1:{}", free_port());
    let office = operator_for_office(
        plane,
        &client,
        &system.name,
        Some(&shop.name),
        dir.path(),
        &["--prometheus-addr", &operator_metrics],
        &[],
    )
    .await;
    grant_external(&client, &shop.name, &["127.0.0.0/8"]).await;
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &shop.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "closed-port"},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [
                {"name": "db", "external": {"host": "127.0.0.1", "port": free_port()}, "protocol": "TCP"},
                {"name": "cache", "external": {"host": "127.0.0.1", "port": open_port}, "protocol": "TCP"},
            ],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {"availability": {"target": "99"}},
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
    agent
        .args(["--prometheus-addr", &agent_metrics])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap());
    let _agent = Process(agent.spawn().unwrap());

    let prometheus_addr = format!("127.0.0.1:{}", free_port());
    let rules = repo_root().join("config/alerting/netslo-rules.yaml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n\
             - job_name: netslo-operator\n  static_configs: [{{targets: ['{operator_metrics}']}}]\n\
             - job_name: netslo-agent\n  static_configs: [{{targets: ['{agent_metrics}']}}]\n",
            rules = rules.display()
        ),
    )
    .unwrap();
    let _prometheus = Process(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let logs = || logs(dir.path(), &["operator.log", "agent.log", "prometheus.log"]);

    // Both endpoints answer in the text format, named as a collector names OTLP metrics.
    let scraped = eventually_every(
        "bad probes on the agent's endpoint",
        Duration::from_secs(90),
        Duration::from_millis(500),
        logs,
        async || {
            let text = get(&agent_metrics, "/metrics")?;
            text.lines()
                .any(|l| {
                    l.starts_with("netslo_probes_total{") && l.contains("netslo_outcome=\"bad\"")
                })
                .then_some(text)
        },
    )
    .await;
    assert!(
        scraped.contains("# TYPE netslo_probes_total counter"),
        "{scraped}"
    );

    // From the scraped series alone, the rules' error ratio, and the fast burn firing.
    let firing = eventually_every(
        "NetsloErrorBudgetBurnFast firing in Prometheus",
        Duration::from_secs(120),
        Duration::from_secs(1),
        logs,
        async || {
            let alerts = query(
                &prometheus_addr,
                "ALERTS{alertname=\"NetsloErrorBudgetBurnFast\",alertstate=\"firing\"}",
            );
            (!alerts.is_empty()).then_some(alerts)
        },
    )
    .await;
    assert_eq!(
        firing[0]["metric"]["netslo_check_name"], "closed-port",
        "{firing:?}"
    );
    let ratio = query(
        &prometheus_addr,
        "check_objective:netslo_slo_errors:ratio_rate5m{netslo_check_name=\"closed-port\"}",
    );
    assert_eq!(ratio.len(), 1, "{ratio:?}");
    let ratio: f64 = ratio[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((0.3..0.7).contains(&ratio), "half the probes fail: {ratio}");

    // Every name the rules and the dashboard query is scraped.
    let names: Vec<String> = query(
        &prometheus_addr,
        "count by (__name__) ({__name__=~\"netslo_.+\"})",
    )
    .iter()
    .filter_map(|r| r["metric"]["__name__"].as_str().map(str::to_owned))
    .collect();
    for used in [
        "netslo_slo_events_total",
        "netslo_slo_objective_ratio",
        "netslo_slo_error_budget_remaining_ratio",
        "netslo_slo_sli_ratio",
        "netslo_slo_burn_rate_ratio",
        "netslo_check_state",
        "netslo_check_verdict",
        "netslo_probes_total",
        "netslo_probe_duration_seconds_bucket",
        "netslo_operator_results_refused_total",
    ] {
        assert!(
            names.iter().any(|n| n == used),
            "{used} not scraped; scraped: {names:?}"
        );
    }
}
