//! `kubectl netslo` (the `kubectl-netslo` binary) against a real control plane, on statuses a
//! real operator wrote from a real agent's results: `get` as a table, JSON and YAML, `explain`
//! on a breach, and `wait` with each of its exit codes (met, failed at once on a breach and on
//! a stall, timed out, not found).

use std::process::{Output, Stdio};

use crate::operator_common::*;
use kube::api::{Api, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::{self, TestNamespace};
use netslo_tests::workspace_binary;
use serde_json::{Value, json};

async fn plugin(kubeconfig: &std::path::Path, args: &[&str]) -> Output {
    tokio::process::Command::new(workspace_binary("kubectl-netslo").unwrap())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn get_and_wait_on_what_the_operator_wrote() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let unwatched = TestNamespace::create(plane, "elsewhere").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = plane.kubeconfig().to_path_buf();

    let open = AcceptingServer::start().await;
    let open_port = open.port;
    let office = operator_for_office(
        plane,
        &client,
        &system.name,
        Some(&shop.name),
        dir.path(),
        &[],
        &[],
    )
    .await;
    grant_external(&client, &shop.name, &["127.0.0.0/8"]).await;
    let target = |host: &str, port: u16| json!({"name": "target", "external": {"host": host, "port": port}, "protocol": "TCP"});
    for (namespace, name, target) in [
        (&shop.name, "measured", target("127.0.0.1", open_port)),
        (&shop.name, "breached", target("127.0.0.1", free_port())),
        (&shop.name, "not-permitted", target("192.0.2.1", 80)),
        (&unwatched.name, "unseen", target("127.0.0.1", open_port)),
    ] {
        let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), namespace);
        let check = serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"name": name},
            "spec": {
                "source": {"external": {"agents": ["office"]}},
                "targets": [target],
                "schedule": {"interval": "1s", "timeout": "500ms"},
                "objectives": {
                    "availability": {"target": "99"},
                    "alerting": {"profile": "Custom", "minEventsToAlert": 1, "burnRateWindows": [
                        {"severity": "Page", "long": "5m", "short": "1m", "budgetPercent": "2"},
                    ]},
                },
            },
        }))
        .unwrap();
        checks.create(&PostParams::default(), &check).await.unwrap();
    }
    let _agent = start_external_agent(
        "office",
        office.channel_port,
        &office.ca,
        &office.token,
        "none",
        Stdio::null(),
        &dir.path().join("agent.log"),
    );
    let logs = || logs(dir.path(), &["operator.log", "agent.log"]);

    // wait: met (0), breached at once once judged (3), stalled (3), not found (1), timed
    // out (4). The met and breached waits run side by side: both need the short window.
    let ns = shop.name.as_str();
    let wait_met = [
        "-n",
        ns,
        "wait",
        "measured",
        "--for",
        "ready",
        "--timeout",
        "150s",
    ];
    let wait_breached = ["-n", ns, "wait", "breached", "--timeout", "150s"];
    let (met, breached) = tokio::join!(
        plugin(&kubeconfig, &wait_met),
        plugin(&kubeconfig, &wait_breached),
    );
    assert_eq!(
        met.status.code(),
        Some(0),
        "{}\n{}",
        text(&met.stderr),
        logs()
    );
    assert_eq!(
        text(&met.stdout),
        "connectivitycheck/measured condition met\n"
    );
    assert_eq!(
        breached.status.code(),
        Some(3),
        "{}\n{}",
        text(&breached.stderr),
        logs()
    );
    assert!(
        text(&breached.stderr).contains("ObjectiveNotMet"),
        "{}",
        text(&breached.stderr)
    );
    let stalled = plugin(
        &kubeconfig,
        &["-n", ns, "wait", "not-permitted", "--timeout", "60s"],
    )
    .await;
    assert_eq!(stalled.status.code(), Some(3), "{}", text(&stalled.stderr));
    assert!(
        text(&stalled.stderr).contains("stalled, TargetNotPermitted"),
        "{}",
        text(&stalled.stderr)
    );
    let slo = plugin(
        &kubeconfig,
        &[
            "-n",
            ns,
            "wait",
            "measured",
            "--for",
            "slo-met",
            "--timeout",
            "30s",
        ],
    )
    .await;
    assert_eq!(slo.status.code(), Some(0), "{}", text(&slo.stderr));
    let missing = plugin(
        &kubeconfig,
        &["-n", ns, "wait", "nowhere", "--timeout", "5s"],
    )
    .await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains(&format!("connectivitycheck {ns}/nowhere not found")));
    let timed_out = plugin(
        &kubeconfig,
        &["-n", &unwatched.name, "wait", "unseen", "--timeout", "2s"],
    )
    .await;
    assert_eq!(
        timed_out.status.code(),
        Some(4),
        "{}",
        text(&timed_out.stderr)
    );
    assert!(
        text(&timed_out.stderr).contains("has not observed generation 1"),
        "{}",
        text(&timed_out.stderr)
    );

    // get: a table (no colour into a pipe), one line per check.
    let table = plugin(&kubeconfig, &["-n", ns, "get"]).await;
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    assert!(!table.contains('\x1b'), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("VERDICT"),
        "{table}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no {name} in\n{table}"))
    };
    assert_eq!(row("measured")[1..3], ["True", "ObjectivesMet"], "{table}");
    assert_eq!(
        row("breached")[1..3],
        ["False", "ObjectiveNotMet"],
        "{table}"
    );
    assert_eq!(
        row("not-permitted")[1..3],
        ["False", "TargetNotPermitted"],
        "{table}"
    );
    assert!(
        lines.iter().any(|l| l.contains("fails")),
        "the breach's verdict: {table}"
    );

    // explain: the verdict, the evidence and what to run next, with the real names.
    let explained = plugin(&kubeconfig, &["-n", ns, "explain", "breached"]).await;
    assert!(explained.status.success(), "{}", text(&explained.stderr));
    let explained = text(&explained.stdout);
    for said in [
        "Ready=False ObjectiveNotMet",
        "verdict: TCPRefused at the TCP layer",
        "last failure TCPRefused from office",
        &format!("kubectl describe connectivitycheck -n {ns} breached"),
    ] {
        assert!(explained.contains(said), "no {said:?} in\n{explained}");
    }

    // -o json for one check is the object as the API serves it; -A -o yaml a List.
    let one = plugin(&kubeconfig, &["-n", ns, "get", "measured", "-o", "json"]).await;
    let object: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(object["metadata"]["name"], "measured");
    assert_eq!(object["kind"], "ConnectivityCheck");
    let all = plugin(&kubeconfig, &["get", "-A", "-o", "yaml"]).await;
    assert!(all.status.success(), "{}", text(&all.stderr));
    let list: Value = serde_saphyr::from_str(&text(&all.stdout)).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    for name in ["measured", "breached", "not-permitted", "unseen"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
}
