//! What users see of the API through the real kubectl against a real API server: samples apply
//! and read back unchanged, printer columns, short names and the category, `kubectl explain`,
//! strict field validation, and status written through the status subresource only.

use std::path::PathBuf;
use std::process::Output;

use kube::api::{Api, Patch, PatchParams};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityCheckStatus};
use netslo_tests::control_plane::{self, ControlPlane, TestNamespace, repo_root};
use serde_json::{Value, json};

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Output {
    plane
        .kubectl()
        .unwrap()
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn kubectl_ok(plane: &ControlPlane, args: &[&str]) -> String {
    let out = kubectl(plane, args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn samples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("config/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn every_sample_applies_with_kubectl_and_reads_back_unchanged() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let ns = TestNamespace::create(plane, "samples").await.unwrap();
    let files = samples();
    assert!(files.len() >= 7, "samples cover every area: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let sample: Value = serde_saphyr::from_str(&text).unwrap();
        let kind = sample["kind"].as_str().unwrap().to_lowercase();
        let name = sample["metadata"]["name"].as_str().unwrap();
        let path = file.to_str().unwrap();
        let namespaced = kind == "connectivitycheck";
        let mut apply = vec!["apply", "-f", path];
        let mut get = vec!["get", kind.as_str(), name, "-o", "json"];
        if namespaced {
            apply.extend(["-n", &ns.name]);
            get.extend(["-n", &ns.name]);
        }
        kubectl_ok(plane, &apply);
        let stored: Value = serde_json::from_str(&kubectl_ok(plane, &get)).unwrap();
        assert_eq!(
            stored["spec"],
            sample["spec"],
            "{}: the API server changed or pruned the spec",
            file.display()
        );
        // The operator's types read every sample as users wrote it.
        if namespaced {
            let typed: ConnectivityCheck = serde_json::from_value(stored).unwrap();
            assert_eq!(
                serde_json::to_value(&typed.spec).unwrap(),
                sample["spec"],
                "{}",
                file.display()
            );
        } else {
            kubectl_ok(plane, &["delete", kind.as_str(), name]);
        }
    }
    // The samples also work as one kustomization, as the README suggests.
    kubectl_ok(
        plane,
        &[
            "apply",
            "--dry-run=server",
            "-n",
            &ns.name,
            "-k",
            repo_root().join("config/samples").to_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn kubectl_rejects_unknown_fields() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let ns = TestNamespace::create(plane, "strict").await.unwrap();
    let manifest = repo_root().join("config/samples/pods-by-selector.yaml");
    let typo = std::fs::read_to_string(manifest)
        .unwrap()
        .replace("port: 5432", "portt: 5432");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), typo).unwrap();
    let out = kubectl(
        plane,
        &["apply", "-n", &ns.name, "-f", file.path().to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a misspelt field must not be dropped silently"
    );
    assert!(
        stderr.contains("unknown field") && stderr.contains("portt"),
        "{stderr}"
    );
}

#[tokio::test]
async fn kubectl_get_shows_printer_columns_short_names_and_category() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let ns = TestNamespace::create(plane, "columns").await.unwrap();
    let sample = repo_root().join("config/samples/service-from-workload.yaml");
    kubectl_ok(
        plane,
        &["apply", "-n", &ns.name, "-f", sample.to_str().unwrap()],
    );

    let client = plane.client().await.unwrap();
    let checks: Api<ConnectivityCheck> = Api::namespaced(client, &ns.name);
    let status = json!({
        "apiVersion": "netslo.io/v1alpha1",
        "kind": "ConnectivityCheck",
        "status": {
            "observedGeneration": 1,
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "ObjectiveNotMet",
                "message": "availability 99.52% is below 99.9%",
                "lastTransitionTime": "2026-11-24T12:00:00Z", "observedGeneration": 1,
            }],
            "slo": {"window": "28d", "coverage": "0.5", "objectives": [
                {"name": "Availability", "target": "0.999", "sli": "0.99521", "errorBudgetRemaining": "-3.79"},
            ]},
            "verdict": {
                "layer": "TCP", "scope": "Endpoint", "reason": "TCPTimeout",
                "summary": "endpoint 10.0.1.7:8080 fails from 3/3 sources (TCPTimeout)",
            },
        },
    });
    checks
        .patch_status(
            "web-to-api",
            &PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force(),
            &Patch::Apply(status),
        )
        .await
        .unwrap();

    let table = kubectl_ok(plane, &["get", "connectivitychecks", "-n", &ns.name]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "SLI", "BUDGET", "REASON", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..5],
        ["web-to-api", "False", "0.99521", "-3.79", "ObjectiveNotMet"],
        "{table}"
    );

    let wide = kubectl_ok(plane, &["get", "ncc", "-n", &ns.name, "-o", "wide"]);
    assert!(wide.lines().next().unwrap().contains("VERDICT"), "{wide}");
    assert!(
        wide.contains("endpoint 10.0.1.7:8080 fails from 3/3 sources"),
        "{wide}"
    );

    for alias in ["conncheck", "ncc", "netslo"] {
        let listed = kubectl_ok(plane, &["get", alias, "-n", &ns.name, "-o", "name"]);
        assert!(
            listed.contains("connectivitycheck.netslo.io/web-to-api"),
            "kubectl get {alias}: {listed}"
        );
    }
}

#[tokio::test]
async fn kubectl_explain_documents_the_fields() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    // The API server publishes a new CRD's OpenAPI schema a few seconds after it is
    // Established; kubectl explain reads that schema.
    let mut attempts = 0;
    while !kubectl(plane, &["explain", "connectivitycheck"])
        .status
        .success()
        && attempts < 60
    {
        attempts += 1;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let targets = kubectl_ok(plane, &["explain", "connectivitycheck.spec.targets"]);
    for doc in [
        "What to probe: 1 to 64 targets",
        "Pods chosen by label selector",
        "probed through its ClusterIP, its DNS name, each ready endpoint",
        "must stay blocked",
    ] {
        assert!(targets.contains(doc), "explain lacks {doc:?}:\n{targets}");
    }
    let latency = kubectl_ok(
        plane,
        &["explain", "connectivitycheck.spec.objectives.latency"],
    );
    assert!(latency.contains("threshold"), "{latency}");
    assert!(
        latency.contains("Percent of probes that must be at or below the threshold"),
        "{latency}"
    );
    let policy = kubectl_ok(plane, &["explain", "connectivitypolicy.spec.external"]);
    assert!(policy.contains("suffix wildcard"), "{policy}");
}

#[tokio::test]
async fn status_is_written_through_the_status_subresource_only() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let ns = TestNamespace::create(plane, "status").await.unwrap();
    let sample = repo_root().join("config/samples/pods-by-selector.yaml");
    kubectl_ok(
        plane,
        &["apply", "-n", &ns.name, "-f", sample.to_str().unwrap()],
    );
    let client = plane.client().await.unwrap();
    let checks: Api<ConnectivityCheck> = Api::namespaced(client, &ns.name);
    let name = "nodes-to-postgres";
    let status = |reason: &str| {
        json!({
            "apiVersion": "netslo.io/v1alpha1",
            "kind": "ConnectivityCheck",
            "status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": reason, "message": "all objectives met",
                "lastTransitionTime": "2026-11-24T12:00:00Z",
            }]},
        })
    };

    // Before the operator writes a status, the CRD's default says nothing was observed yet:
    // GitOps health checks read that as in progress (an absent status reads as healthy).
    let before = checks.get(name).await.unwrap();
    let unobserved = ConnectivityCheckStatus {
        observed_generation: Some(0),
        ..ConnectivityCheckStatus::default()
    };
    assert_eq!(before.status.as_ref(), Some(&unobserved));

    // Through the main resource, status is ignored (and so is the generation).
    let patched = checks
        .patch(
            name,
            &PatchParams::apply("netslo-tests").force(),
            &Patch::Apply(status("ThroughMainResource")),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status,
        Some(unobserved),
        "status was written through the main resource"
    );
    assert_eq!(patched.metadata.generation, before.metadata.generation);

    // Through /status it is stored, and the spec cannot be changed there.
    let mut with_spec = status("ObjectivesMet");
    with_spec["spec"] = json!({"suspend": true});
    let written = checks
        .patch_status(
            name,
            &PatchParams::apply(netslo_crds::OPERATOR_FIELD_MANAGER).force(),
            &Patch::Apply(with_spec),
        )
        .await
        .unwrap();
    let conditions = written.status.unwrap().conditions;
    assert_eq!(conditions.len(), 1);
    assert_eq!(conditions[0].reason, "ObjectivesMet");
    assert_eq!(written.spec.suspend, None, "spec changed through /status");
    assert_eq!(written.metadata.generation, before.metadata.generation);
}
