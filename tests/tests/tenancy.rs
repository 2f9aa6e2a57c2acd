//! netslo is not a confused deputy: a tenant's check that targets another namespace without a
//! grant, or the cloud metadata address, is refused before any packet leaves: the check is
//! `Stalled` with reason TargetNotPermitted naming the missing grant, a `Stalled` Event says
//! so, and the agent assigned to the check never probes the target. A ConnectivityPolicy
//! granting the namespace lifts the refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

mod operator_common;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityPolicy};
use netslo_tests::control_plane::{self, TestNamespace};
use operator_common::*;
use serde_json::json;

async fn stalled_message(checks: &Api<ConnectivityCheck>, name: &str) -> Option<String> {
    let check = checks.get(name).await.ok()?;
    let status = check.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Stalled")?;
    (c.status == "True" && c.reason == "TargetNotPermitted").then(|| c.message.clone())
}

#[tokio::test]
async fn targets_outside_the_grants_are_never_probed() {
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "tenant").await.unwrap();
    let victim = TestNamespace::create(plane, "victim").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ports = OperatorPorts::free();
    let _operator = start_operator(
        plane,
        &system.name,
        &ports,
        &dir.path().join("operator.log"),
        &[],
    );
    let ca = fetch_operator_ca(&client, &system.name, dir.path()).await;
    let token = external_agent_token(&client, &system.name, "office", dir.path()).await;

    // Loopback is granted, so the agent has something to probe: the proof that it runs.
    grant_external(&client, &tenant.name, &["127.0.0.0/8"]).await;
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &tenant.name);
    let create = async |name: &str, targets: serde_json::Value| {
        let check: ConnectivityCheck = serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"name": name},
            "spec": {
                "source": {"external": {"agents": ["office"]}},
                "targets": targets,
                "schedule": {"interval": "1s", "timeout": "500ms"},
            },
        }))
        .unwrap();
        checks.create(&PostParams::default(), &check).await.unwrap();
    };
    create(
        "scan-victim",
        json!([{"name": "db", "service": {"name": "db", "namespace": victim.name, "port": 5432}}]),
    )
    .await;
    create(
        "metadata",
        json!([
            {"name": "imds", "external": {"host": "169.254.169.254", "port": 80}, "protocol": "TCP"},
            {"name": "local", "external": {"host": "127.0.0.1", "port": 9}, "protocol": "TCP"},
        ]),
    )
    .await;

    // A granted server that redirects to the metadata address.
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_port = redirector.local_addr().unwrap().port();
    let _redirecting = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = redirector.accept().await {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .await;
        }
    });
    create(
        "redirected",
        json!([{"name": "web", "external": {"url": format!("http://127.0.0.1:{redirect_port}/")},
                "protocol": "HTTP", "http": {"followRedirects": true}}]),
    )
    .await;

    // Another tenant is granted the name "localhost" but not loopback addresses: the name
    // passes the operator's check, the address it resolves to does not pass the agent's.
    let sneaky = TestNamespace::create(plane, "sneaky").await.unwrap();
    let policies: Api<ConnectivityPolicy> = Api::all(client.clone());
    let by_name: ConnectivityPolicy = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
        "metadata": {"name": format!("grant-{}", sneaky.name)},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": sneaky.name}},
            "external": {"hosts": ["localhost"]},
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &by_name)
        .await
        .unwrap();
    let loopback_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let loopback_port = loopback_server.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let _counting = {
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while loopback_server.accept().await.is_ok() {
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let sneaky_checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &sneaky.name);
    let rebound: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "by-name"},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [{"name": "lo", "external": {"host": "localhost", "port": loopback_port}, "protocol": "TCP"}],
            "schedule": {"interval": "1s", "timeout": "500ms"},
        },
    }))
    .unwrap();
    sneaky_checks
        .create(&PostParams::default(), &rebound)
        .await
        .unwrap();

    // The agent that would run these probes prints every probe it runs.
    let probes_file = dir.path().join("probes.jsonl");
    let _agent = start_external_agent(
        "office",
        ports.channel,
        &ca,
        &token,
        "raw",
        Stdio::from(std::fs::File::create(&probes_file).unwrap()),
        &dir.path().join("agent.log"),
    );

    let victim_ns = victim.name.clone();
    let message = eventually(
        "the cross-namespace check refused",
        Duration::from_secs(60),
        async || stalled_message(&checks, "scan-victim").await,
    )
    .await;
    assert!(
        message.contains(&format!("namespace {victim_ns} is not granted")),
        "{message}"
    );
    let message = eventually(
        "the metadata check refused",
        Duration::from_secs(60),
        async || stalled_message(&checks, "metadata").await,
    )
    .await;
    assert!(
        message.contains("external destination 169.254.169.254:80 is not granted"),
        "{message}"
    );

    // Both refusals are Events on their checks.
    let events: Api<Event> = Api::namespaced(client.clone(), &tenant.name);
    eventually("Stalled Events", Duration::from_secs(30), async || {
        let list = events.list(&ListParams::default()).await.ok()?;
        let stalled: Vec<&str> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("Stalled"))
            .filter_map(|e| e.regarding.as_ref()?.name.as_deref())
            .collect();
        (stalled.contains(&"scan-victim") && stalled.contains(&"metadata")).then_some(())
    })
    .await;

    // The agent probes the granted target of the same check, many times, and never the
    // refused one.
    let probes = eventually(
        "probes of the granted target",
        Duration::from_secs(60),
        async || {
            let probes = std::fs::read_to_string(&probes_file).ok()?;
            (probes
                .lines()
                .filter(|l| l.contains("\"local/External/"))
                .count()
                >= 5)
                .then_some(probes)
        },
    )
    .await;
    assert!(
        !probes.contains("169.254.169.254"),
        "a refused target was probed:\n{probes}"
    );

    // Refused by the agents, at the last moment: a granted name that resolves to loopback,
    // and a redirect to the metadata address. Both are reported like a missing grant.
    for (api, name, target) in [
        (&sneaky_checks, "by-name", "lo"),
        (&checks, "redirected", "web"),
    ] {
        let message = eventually(
            &format!("the agents' refusal of {name}"),
            Duration::from_secs(60),
            async || stalled_message(api, name).await,
        )
        .await;
        assert!(
            message.starts_with(&format!(
                "target {target}: the agents refused its destination"
            )),
            "{message}"
        );
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no connection reached the loopback server"
    );
    let sneaky_events: Api<Event> = Api::namespaced(client.clone(), &sneaky.name);
    eventually(
        "the Stalled Event of by-name",
        Duration::from_secs(30),
        async || {
            let list = sneaky_events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("Stalled"))
                .then_some(())
        },
    )
    .await;

    // The cluster admins grant the victim namespace to the tenant: the refusal lifts.
    let grant: ConnectivityPolicy = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
        "metadata": {"name": format!("victims-{}", tenant.name)},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tenant.name}},
            "targetNamespaces": {"names": [victim.name]},
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &grant)
        .await
        .unwrap();
    let lifted = eventually(
        "the grant taking effect",
        Duration::from_secs(90),
        async || {
            let check = checks.get("scan-victim").await.ok()?;
            let stalled = check
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Stalled")?
                .clone();
            (stalled.reason != "TargetNotPermitted").then_some(stalled)
        },
    )
    .await;
    // The Service does not exist: the check now waits for it instead.
    assert_eq!(lifted.reason, "TargetNotFound", "{lifted:?}");
    assert!(stalled_message(&checks, "metadata").await.is_some());
    for name in [
        format!("victims-{}", tenant.name),
        format!("grant-{}", tenant.name),
        format!("grant-{}", sneaky.name),
    ] {
        let _ = policies.delete(&name, &Default::default()).await;
    }
}
