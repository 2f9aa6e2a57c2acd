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

/// One test at a time: each runs an operator, and an operator reconciles every check on the
/// shared control plane, assigning each to its own agent named `office`. Two at once would
/// write each other's checks' status.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn stalled_message(checks: &Api<ConnectivityCheck>, name: &str) -> Option<String> {
    let check = checks.get(name).await.ok()?;
    let status = check.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Stalled")?;
    (c.status == "True" && c.reason == "TargetNotPermitted").then(|| c.message.clone())
}

#[tokio::test]
async fn targets_outside_the_grants_are_never_probed() {
    let _serial = SERIAL.lock().await;
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "tenant").await.unwrap();
    let victim = TestNamespace::create(plane, "victim").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office = operator_for_office(plane, &client, &system.name, dir.path(), &[], &[]).await;

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
        office.channel_port,
        &office.ca,
        &office.token,
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

/// Two tricks that pass the operator's name-based grant and must still be refused by the
/// agent: a name whose DNS answers alternate between a granted address and loopback (DNS
/// rebinding: checked once, connected to again after a second lookup), and an IP written in
/// hex inside a URL (`http://0x7f000001/`, which connects to 127.0.0.1). One server listens
/// on every address and records which one each connection reached: the granted address gets
/// probes, loopback gets none.
#[tokio::test]
async fn rebinding_names_and_hex_addresses_are_refused_by_the_agent() {
    let _serial = SERIAL.lock().await;
    use netslo_agent::testbed::{DnsMode, dns_response};
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::{Arc, Mutex};

    let granted: Ipv4Addr = host_address().expect("a global IPv4 address on this host");
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "rebinder").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office = operator_for_office(plane, &client, &system.name, dir.path(), &[], &[]).await;

    // Both names are granted, and the one address the name should resolve to; loopback is not.
    let policies: Api<ConnectivityPolicy> = Api::all(client.clone());
    let policy_name = format!("grant-{}", tenant.name);
    let policy: ConnectivityPolicy = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
        "metadata": {"name": policy_name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tenant.name}},
            "external": {"hosts": ["rebind.netslo.test", "0x7f000001"], "cidrs": [format!("{granted}/32")]},
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    // Every connection, by the local address it reached.
    let server = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = server.local_addr().unwrap().port();
    let reached: Arc<Mutex<Vec<IpAddr>>> = Arc::default();
    let _serving = {
        let reached = reached.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = server.accept().await {
                reached
                    .lock()
                    .unwrap()
                    .push(socket.local_addr().unwrap().ip());
            }
        })
    };

    // The rebinding DNS server: each A answer alternates between the granted address and
    // loopback (TTL aside, getaddrinfo asks again for every probe).
    let dns = tokio::net::UdpSocket::bind("127.0.0.1:53").await.unwrap();
    let dns_queries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = dns_queries.clone();
    let _rebinding = tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        let mut answers = [granted, Ipv4Addr::LOCALHOST].into_iter().cycle();
        let mut next = answers.next().unwrap();
        while let Ok((n, peer)) = dns.recv_from(&mut buf).await {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(response) = dns_response(&buf[..n], DnsMode::Answer(next)) {
                // The answer count's low byte: 1 for an A answer, 0 for AAAA.
                if response[7] == 1 {
                    next = answers.next().unwrap();
                }
                let _ = dns.send_to(&response, peer).await;
            }
        }
    });

    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &tenant.name);
    for (name, target) in [
        (
            "rebinding",
            json!({"name": "rebind", "external": {"host": "rebind.netslo.test", "port": port}, "protocol": "TCP"}),
        ),
        (
            "hex",
            json!({"name": "hex", "external": {"url": format!("http://0x7f000001:{port}/")}, "protocol": "HTTP"}),
        ),
    ] {
        let check: ConnectivityCheck = serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"name": name},
            "spec": {
                "source": {"external": {"agents": ["office"]}},
                "targets": [target],
                "schedule": {"interval": "1s", "timeout": "500ms"},
            },
        }))
        .unwrap();
        checks.create(&PostParams::default(), &check).await.unwrap();
    }

    // The agent resolves through the rebinding server: a private mount namespace gives it
    // its own /etc/resolv.conf.
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n",
    )
    .unwrap();
    let agent = external_agent_command(
        "office",
        office.channel_port,
        &office.ca,
        &office.token,
        "summary",
    );
    let _agent = Process(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(&resolv_conf)
            .arg(agent.get_program())
            .args(agent.get_args())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    for (name, target) in [("rebinding", "rebind"), ("hex", "hex")] {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let message = loop {
            if let Some(message) = stalled_message(&checks, name).await {
                break message;
            }
            if std::time::Instant::now() > deadline {
                let status = checks.get(name).await.ok().and_then(|c| c.status);
                panic!(
                    "no refusal of {name} in 120 s; status {status:#?}\nrebinding DNS answered {} queries\n{}",
                    dns_queries.load(std::sync::atomic::Ordering::Relaxed),
                    logs(dir.path(), &["agent.log", "operator.log"])
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(
            message.starts_with(&format!(
                "target {target}: the agents refused its destination"
            )),
            "{message}"
        );
    }
    // The granted answers were probed, at exactly the address that was checked.
    eventually(
        "probes of the granted address",
        Duration::from_secs(30),
        async || {
            let reached = reached.lock().unwrap();
            (reached
                .iter()
                .filter(|ip| **ip == IpAddr::V4(granted))
                .count()
                >= 3)
                .then_some(())
        },
    )
    .await;
    let reached = reached.lock().unwrap().clone();
    assert!(
        reached.iter().all(|ip| *ip == IpAddr::V4(granted)),
        "a connection reached a refused address: {reached:?}\n{}",
        logs(dir.path(), &["agent.log", "operator.log"])
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &tenant.name);
    eventually(
        "Stalled Events for both",
        Duration::from_secs(30),
        async || {
            let list = events.list(&ListParams::default()).await.ok()?;
            let stalled: Vec<&str> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("Stalled"))
                .filter_map(|e| e.regarding.as_ref()?.name.as_deref())
                .collect();
            (stalled.contains(&"rebinding") && stalled.contains(&"hex")).then_some(())
        },
    )
    .await;
    let _ = policies.delete(&policy_name, &Default::default()).await;
}

/// The first global IPv4 address of this host (`ip -4 -o addr show scope global`).
fn host_address() -> Option<std::net::Ipv4Addr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// What a check's author may read back is outcomes, timings and reason codes, never what the
/// probed servers sent: a tenant could otherwise read a service's responses through netslo.
/// Servers put a canary in a response body, a header, a TCP banner and a certificate's
/// names; once every failure is reported, the canary is in no check object and no Event.
#[tokio::test]
async fn status_and_events_never_carry_what_servers_send() {
    let _serial = SERIAL.lock().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const CANARY: &str = "netslo-canary-7d1f";

    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "reader").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office = operator_for_office(plane, &client, &system.name, dir.path(), &[], &[]).await;
    grant_external(&client, &tenant.name, &["127.0.0.0/8"]).await;

    // Each server answers every connection with the same bytes, then closes.
    let serve = async |reply: String| {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 2048];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), socket.read(&mut request))
                            .await;
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        port
    };
    let http = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nX-Secret: {CANARY}-header\r\nServer: {CANARY}-server\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let failing = serve(http("503 Service Unavailable", &format!("{CANARY}-body"))).await;
    let mismatching = serve(http("200 OK", &format!("{CANARY}-body"))).await;
    let banner = serve(format!("220 {CANARY}-banner ESMTP\r\n")).await;

    // A TLS server whose certificate names and organisation carry the canary, so a
    // certificate error that quoted the certificate would leak it.
    let tls_port = {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![format!("{CANARY}.example")]).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, format!("{CANARY}-org"));
        let cert = params.self_signed(&key).unwrap();
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(socket).await;
                });
            }
        });
        port
    };

    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &tenant.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "leaks"},
        "spec": {
            "source": {"external": {"agents": ["office"]}},
            "targets": [
                {"name": "status", "external": {"url": format!("http://127.0.0.1:{failing}/")}, "protocol": "HTTP"},
                {"name": "body", "external": {"url": format!("http://127.0.0.1:{mismatching}/")}, "protocol": "HTTP",
                 "http": {"bodyContains": "expected text"}},
                {"name": "banner", "external": {"host": "127.0.0.1", "port": banner}, "protocol": "TCP"},
                {"name": "cert", "external": {"url": format!("https://127.0.0.1:{tls_port}/")}, "protocol": "HTTPS"},
            ],
            "schedule": {"interval": "1s", "timeout": "500ms"},
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();
    let _agent = start_external_agent(
        "office",
        office.channel_port,
        &office.ca,
        &office.token,
        "summary",
        Stdio::null(),
        &dir.path().join("agent.log"),
    );

    // Every server was probed and every failure is in the status, by its reason code.
    let expected = [
        ("status", Some("HTTPStatus")),
        ("body", Some("BodyMismatch")),
        ("banner", None),
        ("cert", Some("TLSCertificate")),
    ];
    let reported = eventually(
        "every target's outcome in the status",
        Duration::from_secs(90),
        async || {
            let check = checks.get("leaks").await.ok()?;
            let targets = &check.status.as_ref()?.targets;
            expected
                .iter()
                .all(|(name, reason)| {
                    targets.iter().any(|t| {
                        t.name == *name
                            && t.success_ratio.is_some()
                            && t.last_failure.as_ref().map(|f| f.reason.as_str()) == *reason
                    })
                })
                .then_some(check)
        },
    )
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), &tenant.name);
    let events = eventually("the check's Events", Duration::from_secs(30), async || {
        let list = events.list(&ListParams::default()).await.ok()?;
        (!list.items.is_empty()).then_some(list)
    })
    .await;
    for (what, text) in [
        (
            "the check",
            serde_json::to_string_pretty(&reported).unwrap(),
        ),
        ("the Events", serde_json::to_string_pretty(&events).unwrap()),
    ] {
        assert!(
            !text.to_ascii_lowercase().contains(CANARY),
            "{what} carry what a server sent:\n{text}"
        );
    }
    let policies: Api<ConnectivityPolicy> = Api::all(client.clone());
    let _ = policies
        .delete(&format!("grant-{}", tenant.name), &Default::default())
        .await;
}
