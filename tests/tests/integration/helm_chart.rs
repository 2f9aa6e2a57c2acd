//! The Helm chart in `config/helm/netslo`, run through Helm itself (helm.sh/helm/v4, built from
//! the Go module proxy by `tests/helm/build.sh`): it lints strictly; with its defaults it
//! renders exactly the objects `kubectl kustomize config/default` does, CRDs included; its
//! values reach the operator as settings the real binary reads; and a combination that would
//! run two active operators is refused with a message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use netslo_tests::control_plane::{self, repo_root};
use netslo_tests::workspace_binary;
use serde_json::{Value, json};

const CHART: &str = "config/helm/netslo";

/// Helm, built (once per cache) by `tests/helm/build.sh`.
fn helm_binary() -> PathBuf {
    let build = Command::new("bash")
        .arg(repo_root().join("tests/helm/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/helm/build.sh runs");
    assert!(build.status.success(), "tests/helm/build.sh failed");
    let dir = String::from_utf8(build.stdout).unwrap();
    PathBuf::from(dir.lines().last().unwrap().trim()).join("helm")
}

/// Runs Helm with its caches and configuration in `home`; its stdout, or its stderr as the
/// error.
fn helm(home: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm_binary())
        .args(args)
        .current_dir(repo_root())
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

type ObjectKey = (String, String, String, String);

/// Objects of a multi-document YAML stream by apiVersion, kind, namespace and name.
fn objects(yaml: &str) -> BTreeMap<ObjectKey, Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap();
    documents
        .into_iter()
        .filter(|d| !d.is_null())
        .map(|d| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            let key = (
                text(&d["apiVersion"]),
                text(&d["kind"]),
                text(&d["metadata"]["namespace"]),
                text(&d["metadata"]["name"]),
            );
            (key, d)
        })
        .collect()
}

/// Where two JSON values first differ (a JSON pointer and both sides), if they do.
fn first_difference(chart: &Value, kustomize: &Value, at: String) -> Option<String> {
    match (chart, kustomize) {
        (Value::Object(a), Value::Object(b)) => a.keys().chain(b.keys()).find_map(|k| {
            first_difference(
                &a.get(k).cloned().unwrap_or(Value::Null),
                &b.get(k).cloned().unwrap_or(Value::Null),
                format!("{at}/{k}"),
            )
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            // Lists of named items (env, ports) are merged by name: kustomize's patches put
            // theirs first, the chart's templates last.
            let by_name = |list: &[Value]| {
                let mut sorted = list.to_vec();
                if sorted.iter().all(|v| v["name"].is_string()) {
                    sorted.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
                }
                sorted
            };
            let (a, b) = (by_name(a), by_name(b));
            a.iter()
                .zip(&b)
                .enumerate()
                .find_map(|(i, (x, y))| first_difference(x, y, format!("{at}/{i}")))
        }
        // kustomize writes 1000.0 as 1000: the same number.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => None,
        _ => (chart != kustomize).then(|| format!("{at}: chart {chart}, kustomize {kustomize}")),
    }
}

fn render(home: &Path, values: &[&str]) -> Result<BTreeMap<ObjectKey, Value>, String> {
    let mut args = vec![
        "template",
        "netslo",
        CHART,
        "--namespace",
        "netslo-system",
        "--include-crds",
    ];
    args.extend(values);
    helm(home, &args).map(|yaml| objects(&yaml))
}

#[test]
fn the_chart_lints_and_renders_what_kustomize_installs() {
    let home = tempfile::tempdir().unwrap();
    let lint = helm(home.path(), &["lint", "--strict", CHART]).unwrap();
    assert!(lint.contains("0 chart(s) failed"), "{lint}");

    let kubectl = control_plane::binaries().unwrap().join("kubectl");
    let kustomized = Command::new(kubectl)
        .args(["kustomize", "config/default"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        kustomized.status.success(),
        "kubectl kustomize config/default"
    );
    let kustomize = objects(&String::from_utf8(kustomized.stdout).unwrap());
    assert!(kustomize.len() >= 10, "{:?}", kustomize.keys());

    let chart = render(home.path(), &["--set", "createNamespace=true"]).unwrap();
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>()
    );
    for (key, object) in &kustomize {
        if let Some(at) = first_difference(&chart[key], object, String::new()) {
            panic!("{key:?} differs from config/default at {at}");
        }
    }
    // Without createNamespace (the default: `helm install --create-namespace`, or a namespace
    // that exists), everything but the Namespace.
    let without_namespace = render(home.path(), &[]).unwrap();
    let mut expected = kustomize.clone();
    expected.retain(|(_, kind, _, _), _| kind != "Namespace");
    assert_eq!(
        without_namespace.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
}

/// `kubectl kustomize` of an overlay of `resources` and `components` (paths from the checkout).
fn kustomize(resources: &str, components: &str) -> BTreeMap<ObjectKey, Value> {
    let root = repo_root();
    // kustomize takes bases by relative path only: the overlay lives in the checkout meanwhile.
    let overlay = tempfile::Builder::new()
        .prefix(".test-overlay-")
        .tempdir_in(&root)
        .unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!("resources: [{resources}]\ncomponents: [{components}]\n"),
    )
    .unwrap();
    let kubectl = control_plane::binaries().unwrap().join("kubectl");
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(overlay.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    objects(&String::from_utf8(out.stdout).unwrap())
}

#[test]
fn prometheus_values_render_what_the_prometheus_component_adds() {
    let home = tempfile::tempdir().unwrap();
    let chart = render(
        home.path(),
        &[
            "--set",
            "createNamespace=true",
            "--set",
            "prometheus.enabled=true",
            "--set",
            "prometheus.monitors=true",
        ],
    )
    .unwrap();
    let composed = kustomize("../config/default", "../config/prometheus");
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        composed.keys().collect::<Vec<_>>()
    );
    for (key, object) in &composed {
        if let Some(at) = first_difference(&chart[key], object, String::new()) {
            panic!("{key:?} differs from config/default with config/prometheus at {at}");
        }
    }
    let error = render(home.path(), &["--set", "prometheus.monitors=true"]).unwrap_err();
    assert!(
        error.contains("prometheus.monitors needs prometheus.enabled"),
        "{error}"
    );
}

#[test]
fn chart_values_reach_the_operator_as_settings_it_reads() {
    let home = tempfile::tempdir().unwrap();
    let values = home.path().join("values.yaml");
    let edge =
        json!([{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}]);
    std::fs::write(
        &values,
        json!({
            "image": {"repository": "registry.example/netslo", "tag": "9.9.9"},
            "operator": {
                "replicas": 2,
                "watchNamespace": "payments",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                "priorityClassName": "system-cluster-critical",
            },
            "agent": {
                "env": {"NETSLO_METRICS_PER_ENDPOINT": "true"},
                "tolerations": edge,
                "priorityClassName": "netslo-agents",
            },
            "otel": {
                "endpoint": "http://otel-collector.monitoring:4317",
                "protocol": "grpc",
                "resourceAttributes": "k8s.cluster.name=prod",
            },
        })
        .to_string(),
    )
    .unwrap();
    let chart = render(home.path(), &["--values", values.to_str().unwrap()]).unwrap();
    let deployment = chart
        .iter()
        .find(|((_, kind, _, _), _)| kind == "Deployment")
        .map(|(_, d)| d)
        .unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/netslo:9.9.9");
    assert_eq!(container["args"], json!(["--leader-elect"]));
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    let value = |name: &str| {
        env.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {env:?}"))
    };
    assert_eq!(value("NETSLO_AGENT_IMAGE"), "registry.example/netslo:9.9.9");
    assert_eq!(
        value("NETSLO_AGENT_ENV"),
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector.monitoring:4317;\
         OTEL_EXPORTER_OTLP_PROTOCOL=grpc;OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=prod;\
         NETSLO_METRICS_PER_ENDPOINT=true"
    );

    // The real operator reads those settings: it logs what it parsed, then stops for want of
    // a cluster (a setting it refused would stop it earlier, naming the setting).
    let out = Command::new(workspace_binary("netslo-operator").unwrap())
        .env_clear()
        .envs(env.iter().map(|(n, v)| (n.as_str(), v.as_str())))
        .env("NETSLO_LOG_FORMAT", "text")
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .args([
            "--admin-addr",
            "127.0.0.1:0",
            "--channel-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("no Kubernetes client configuration"),
        "the operator refused the chart's settings:\n{log}"
    );
    for parsed in [
        r#"watch_namespace: Some("payments")"#,
        r#"agent_image: "registry.example/netslo:9.9.9""#,
        r#"("NETSLO_METRICS_PER_ENDPOINT", "true")"#,
        r#"agent_priority_class: Some("netslo-agents")"#,
        r#"key: Some("dedicated")"#,
        r#"value: Some("edge")"#,
    ] {
        assert!(log.contains(parsed), "{parsed} not in\n{log}");
    }
}

#[test]
fn two_replicas_without_leader_election_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let error = render(
        home.path(),
        &[
            "--set",
            "operator.replicas=2",
            "--set",
            "operator.leaderElection=false",
        ],
    )
    .unwrap_err();
    assert!(
        error.contains("operator.replicas above 1 needs operator.leaderElection"),
        "{error}"
    );
}
