//! What GitOps tools conclude about a ConnectivityCheck in each state, decided by their own
//! health code (`netslo-gitops-health`, built from the Go module proxy by
//! `tests/gitops/build.sh`): kstatus (sigs.k8s.io/cli-utils, what Flux's `wait` judges with),
//! Flux's healthCheckExprs evaluator (github.com/fluxcd/pkg/runtime/cel) with the expressions
//! shipped in `config/gitops/flux/kustomization.yaml`, and the Lua VM Argo CD runs health
//! checks on (github.com/yuin/gopher-lua) with the script shipped in
//! `config/gitops/argocd/argocd-cm.yaml`. The objects are the API server's, with the statuses
//! a real operator wrote; the README's gating table must say what the tools said.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::operator_common::*;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace, repo_root};
use serde_json::{Value, json};

/// The states a check goes through, what each GitOps tool concludes, and how the README's
/// gating table names the state. A check must never read healthy before it is measured.
const EXPECTED: [(&str, &str, [&str; 3]); 9] = [
    (
        "unseen",
        "new, before the operator has seen it",
        ["InProgress", "InProgress", "Progressing"],
    ),
    (
        "unreported",
        "agents not reporting yet (`AgentsPending`)",
        ["InProgress", "InProgress", "Progressing"],
    ),
    (
        "young",
        "window still young (`Reconciling`, `WindowTooYoung`)",
        ["InProgress", "InProgress", "Progressing"],
    ),
    (
        "measured",
        "every objective met (`Ready`)",
        ["Current", "Current", "Healthy"],
    ),
    (
        "breached",
        "objective breached (`ObjectiveNotMet`)",
        ["InProgress", "Failed", "Degraded"],
    ),
    (
        "deny-violated",
        "expected-deny violated (`ExpectedDenyViolated`)",
        ["InProgress", "Failed", "Degraded"],
    ),
    (
        "not-permitted",
        "spec cannot be acted on (`Stalled`)",
        ["Failed", "Failed", "Degraded"],
    ),
    (
        "suspended",
        "suspended (`spec.suspend`)",
        ["InProgress", "Current", "Suspended"],
    ),
    (
        "edited",
        "spec edited, not yet observed",
        ["InProgress", "InProgress", "Progressing"],
    ),
];

#[tokio::test]
async fn gitops_tools_gate_on_the_statuses_the_operator_writes() {
    let evaluator = evaluator();
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    // Its checks are no operator's: they stay as the API server stores them.
    let unwatched = TestNamespace::create(plane, "elsewhere").await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let open = AcceptingServer::start().await;
    let open_port = open.port;
    let refused_port = free_port();

    let mut office = Some(
        operator_for_office(
            plane,
            &client,
            &system.name,
            Some(&shop.name),
            dir.path(),
            &[],
            &[],
        )
        .await,
    );
    grant_external(&client, &shop.name, &["127.0.0.0/8"]).await;
    let tcp = |port: u16| json!({"name": "target", "external": {"host": "127.0.0.1", "port": port}, "protocol": "TCP"});
    let office_source = json!({"external": {"agents": ["office"]}});
    let checks = [
        ("measured", office_source.clone(), tcp(open_port), false),
        ("breached", office_source.clone(), tcp(refused_port), false),
        (
            "deny-violated",
            office_source.clone(),
            json!({"name": "target", "external": {"host": "127.0.0.1", "port": open_port},
                   "protocol": "TCP", "expect": "Deny"}),
            false,
        ),
        (
            "not-permitted",
            office_source.clone(),
            json!({"name": "target", "external": {"host": "192.0.2.1", "port": 80}, "protocol": "TCP"}),
            false,
        ),
        ("suspended", office_source.clone(), tcp(open_port), true),
        (
            "unreported",
            json!({"external": {"agents": ["nowhere"]}}),
            tcp(open_port),
            false,
        ),
    ];
    for (name, source, target, suspend) in &checks {
        create_check(&client, &shop.name, name, source, target, *suspend).await;
    }
    create_check(
        &client,
        &unwatched.name,
        "unseen",
        &office_source,
        &tcp(open_port),
        false,
    )
    .await;
    let _agent = start_external_agent(
        "office",
        office.as_ref().unwrap().channel_port,
        &office.as_ref().unwrap().ca,
        &office.as_ref().unwrap().token,
        "none",
        Stdio::null(),
        &dir.path().join("agent.log"),
    );

    let resource = ApiResource::erase::<ConnectivityCheck>(&());
    let in_shop: Api<DynamicObject> = Api::namespaced_with(client.clone(), &shop.name, &resource);
    let logs = || logs(dir.path(), &["operator.log", "agent.log"]);
    // The object exactly as the API server serves it, once `state` holds.
    let snapshot = async |api: &Api<DynamicObject>, name: &str, state: &dyn Fn(&Value) -> bool| {
        eventually_every(
            name,
            Duration::from_secs(150),
            Duration::from_millis(200),
            logs,
            async || {
                let object = serde_json::to_value(api.get(name).await.ok()?).unwrap();
                state(&object).then_some(object)
            },
        )
        .await
    };
    let mut seen = Vec::new();
    let young = snapshot(&in_shop, "measured", &|o| {
        has(o, "Reconciling", "True", "WindowTooYoung")
    })
    .await;
    seen.push(("young", young));
    // Each check's state: the condition type, status and reason that say it.
    let waits = [
        ("unreported", ("Ready", "False", "AgentsPending")),
        ("measured", ("Ready", "True", "ObjectivesMet")),
        ("breached", ("Ready", "False", "ObjectiveNotMet")),
        ("deny-violated", ("Ready", "False", "ExpectedDenyViolated")),
        ("not-permitted", ("Stalled", "True", "TargetNotPermitted")),
        ("suspended", ("Ready", "False", "Suspended")),
    ];
    for (name, (type_, status, reason)) in waits {
        let object = snapshot(&in_shop, name, &|o| has(o, type_, status, reason)).await;
        seen.push((name, object));
    }

    // An edit the operator does not see (it is stopped): the status is a generation behind.
    drop(office.take());
    in_shop
        .patch(
            "measured",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"schedule": {"interval": "2s"}}})),
        )
        .await
        .unwrap();
    let edited = snapshot(&in_shop, "measured", &|o| {
        o["metadata"]["generation"] == 2 && o["status"]["observedGeneration"] == 1
    })
    .await;
    seen.push(("edited", edited));

    // Nothing has written its status: the CRD's default stands for "not observed yet".
    let in_unwatched: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &unwatched.name, &resource);
    let unseen = serde_json::to_value(in_unwatched.get("unseen").await.unwrap()).unwrap();
    assert_eq!(
        unseen["status"],
        json!({"observedGeneration": 0}),
        "{unseen}"
    );
    seen.push(("unseen", unseen));

    let verdicts = evaluate(&evaluator, seen.iter().map(|(_, object)| object));
    let said: Vec<(&str, [String; 3])> = seen
        .iter()
        .zip(verdicts)
        .map(|((state, _), verdict)| (*state, verdict))
        .collect();
    for (state, _, expected) in EXPECTED {
        let (_, verdict) = said
            .iter()
            .find(|(s, _)| *s == state)
            .unwrap_or_else(|| panic!("{state} was not evaluated"));
        assert_eq!(
            verdict.each_ref().map(String::as_str),
            expected,
            "{state}: kstatus, Flux healthCheckExprs, Argo CD (all: {said:#?})"
        );
    }
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    for (_, row, [kstatus, flux, argocd]) in EXPECTED {
        let line = format!("| {row} | {kstatus} | {flux} | {argocd} |");
        assert!(
            readme.contains(&line),
            "the README's gating table lacks the row\n{line}"
        );
    }
}

async fn create_check(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    source: &Value,
    target: &Value,
    suspend: bool,
) {
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), namespace);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": name},
        "spec": {
            "suspend": suspend,
            "source": source,
            "targets": [target],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {
                "availability": {"target": "99"},
                // A short alert window, so the window is young for a minute only.
                "alerting": {"profile": "Custom", "minEventsToAlert": 1, "burnRateWindows": [
                    {"severity": "Page", "long": "5m", "short": "1m", "budgetPercent": "2"},
                ]},
            },
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();
}

/// Whether the object's condition `type_` has this status and reason.
fn has(object: &Value, type_: &str, status: &str, reason: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == status && c["reason"] == reason)
}

/// `netslo-gitops-health`, built (once per cache) by `tests/gitops/build.sh`.
fn evaluator() -> PathBuf {
    let build = Command::new("bash")
        .arg(repo_root().join("tests/gitops/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/gitops/build.sh runs");
    assert!(build.status.success(), "tests/gitops/build.sh failed");
    let dir = String::from_utf8(build.stdout).unwrap();
    PathBuf::from(dir.lines().last().unwrap().trim()).join("netslo-gitops-health")
}

/// What kstatus, Flux (with the shipped healthCheckExprs) and Argo CD (with the shipped Lua)
/// conclude about each object, in order.
fn evaluate<'a>(evaluator: &Path, objects: impl Iterator<Item = &'a Value>) -> Vec<[String; 3]> {
    let root = repo_root();
    let mut child = Command::new(evaluator)
        .arg("--flux-kustomization")
        .arg(root.join("config/gitops/flux/kustomization.yaml"))
        .arg("--argocd-cm")
        .arg(root.join("config/gitops/argocd/argocd-cm.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for object in objects {
        writeln!(stdin, "{object}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "netslo-gitops-health failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let answer: Value = serde_json::from_str(line).unwrap();
            ["kstatus", "flux", "argocd"].map(|tool| {
                let status = answer[tool]["status"].as_str().unwrap_or_default();
                if status == "Error" {
                    format!("Error: {}", answer[tool]["message"])
                } else {
                    status.to_owned()
                }
            })
        })
        .collect()
}
