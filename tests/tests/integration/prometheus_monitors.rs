//! `config/prometheus`, the kustomize component for clusters that run the Prometheus
//! Operator: added to `config/default`, the operator serves `/metrics` on a named port its
//! Service exposes and passes the setting to its agents; the ServiceMonitor and PodMonitor it
//! adds pass the Prometheus Operator's own CRD schemas (v0.85.0, from the Go module proxy by
//! `tests/prometheus-operator/crds.sh`) on a real API server, and select what the install
//! labels.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use netslo_tests::control_plane::{self, TestNamespace, repo_root};
use serde_json::Value;

fn operator_crds() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("tests/prometheus-operator/crds.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/prometheus-operator/crds.sh runs");
    assert!(
        out.status.success(),
        "tests/prometheus-operator/crds.sh failed"
    );
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
}

fn kubectl(plane: &control_plane::ControlPlane, args: &[&str]) -> String {
    let out = plane.kubectl().unwrap().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[tokio::test]
async fn the_component_adds_scraping_that_the_operators_crds_accept() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let namespace = TestNamespace::create(plane, "monitors").await.unwrap();
    // The install as users compose it: config/default with the component (kustomize takes
    // bases by relative path only, so the overlay lives in the checkout while the test runs).
    let root = repo_root();
    let overlay = tempfile::Builder::new()
        .prefix(".test-overlay-")
        .tempdir_in(&root)
        .unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        "resources: [../config/default]\ncomponents: [../config/prometheus]\n",
    )
    .unwrap();
    let rendered = kubectl(plane, &["kustomize", overlay.path().to_str().unwrap()]);
    let objects: Vec<Value> = serde_saphyr::from_multiple(&rendered).unwrap();

    let deployment = find(&objects, "Deployment", "netslo-operator");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap_or_else(|| panic!("no {name} in {container}"))
            .to_owned()
    };
    assert_eq!(env("NETSLO_PROMETHEUS_ADDR"), "0.0.0.0:9464");
    assert_eq!(
        env("NETSLO_AGENT_ENV"),
        "NETSLO_PROMETHEUS_ADDR=0.0.0.0:9464"
    );
    // config/default's own settings survive the patch.
    assert_eq!(env("NETSLO_LOG_FORMAT"), "json");
    let mut ports: Vec<&str> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, ["admin", "channel", "metrics"]);
    let service = find(&objects, "Service", "netslo-operator");
    let mut service_ports: Vec<&str> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    service_ports.sort_unstable();
    assert_eq!(service_ports, ["channel", "metrics"]);

    // The ServiceMonitor selects the operator's Service by its labels and scrapes its port.
    let service_monitor = find(&objects, "ServiceMonitor", "netslo-operator");
    for (key, value) in service_monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "metrics");
    let pod_monitor = find(&objects, "PodMonitor", "netslo-agents");
    assert_eq!(
        pod_monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"],
        "netslo-operator"
    );

    // The real schemas accept both monitors.
    let crds = operator_crds();
    for crd in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_podmonitors.yaml",
    ] {
        kubectl(
            plane,
            &[
                "apply",
                "--server-side",
                "--field-manager=netslo-tests",
                "-f",
                crds.join(crd).to_str().unwrap(),
            ],
        );
    }
    kubectl(
        plane,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/podmonitors.monitoring.coreos.com",
        ],
    );
    // In a namespace of the test's own (the API server checks that it exists).
    let monitors = std::fs::read_to_string(root.join("config/prometheus/monitors.yaml"))
        .unwrap()
        .replace(
            "namespace: netslo-system",
            &format!("namespace: {}", namespace.name),
        );
    let in_test_namespace = overlay.path().join("monitors.yaml");
    std::fs::write(&in_test_namespace, &monitors).unwrap();
    let applied = kubectl(
        plane,
        &[
            "apply",
            "--dry-run=server",
            "--validate=strict",
            "-f",
            in_test_namespace.to_str().unwrap(),
        ],
    );
    assert!(
        applied.contains("servicemonitor.monitoring.coreos.com/netslo-operator"),
        "{applied}"
    );
    assert!(
        applied.contains("podmonitor.monitoring.coreos.com/netslo-agents"),
        "{applied}"
    );
    // Strict validation is real: a field the schema lacks is refused, naming it.
    let broken = overlay.path().join("broken.yaml");
    std::fs::write(
        &broken,
        monitors.replace(
            "portNumber: 9464",
            "portNumber: 9464\n      scrapePort: 9464",
        ),
    )
    .unwrap();
    let refused = plane
        .kubectl()
        .unwrap()
        .args(["apply", "--dry-run=server", "--validate=strict", "-f"])
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("scrapePort"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
