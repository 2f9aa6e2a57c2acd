//! netslo is not a confused deputy: a tenant's check that targets another namespace without a
//! grant, or the cloud metadata address, is refused before any packet leaves: the check is
//! `Stalled` with reason TargetNotPermitted naming the missing grant, a `Stalled` Event says
//! so, and the agent assigned to the check never probes the target. A ConnectivityPolicy
//! granting the namespace lifts the refusal.
//!
//! The same holds on a real network for the cluster's own addresses (a pod, a ClusterIP,
//! another node), reached through a granted name, a rebinding name, a redirect, a forged
//! EndpointSlice, an ExternalName Service, a numeric URL or a CIDR: the agent runs in a network
//! namespace, the victims are counting servers at real addresses, and none counts a connection
//! (`cluster_addresses_are_refused_before_a_connection_arrives`). Needs root, `ip`, `iptables`.

use std::process::Stdio;
use std::time::Duration;

use crate::operator_common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityPolicy};
use netslo_tests::control_plane::{self, TestNamespace};
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
    let plane = control_plane::shared("tenancy").expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "tenant").await.unwrap();
    let victim = TestNamespace::create(plane, "victim").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office =
        operator_for_office(plane, &client, &system.name, None, dir.path(), &[], &[]).await;

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
    let plane = control_plane::shared("tenancy").expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "rebinder").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office =
        operator_for_office(plane, &client, &system.name, None, dir.path(), &[], &[]).await;

    // Both names are granted, and the one address the name should resolve to; loopback is not.
    // (The CRD may refuse a numeric host name in a grant: then the hex spelling is granted
    // nothing, and is refused all the same.)
    let policies: Api<ConnectivityPolicy> = Api::all(client.clone());
    let policy_name = format!("grant-{}", tenant.name);
    let policy = |hosts: &[&str]| -> ConnectivityPolicy {
        serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
            "metadata": {"name": policy_name},
            "spec": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": tenant.name}},
                "external": {"hosts": hosts, "cidrs": [format!("{granted}/32")]},
            },
        }))
        .unwrap()
    };
    if let Err(e) = policies
        .create(
            &PostParams::default(),
            &policy(&["rebind.netslo.test", "0x7f000001"]),
        )
        .await
    {
        eprintln!("the numeric host grant was refused ({e}); granting the name only");
        policies
            .create(&PostParams::default(), &policy(&["rebind.netslo.test"]))
            .await
            .unwrap();
    }

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
    // The CRD may refuse a numeric host in a URL at apply time, naming the field: that is a
    // refusal too, before any probe.
    let mut refused_at_create = Vec::new();
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
        match checks.create(&PostParams::default(), &check).await {
            Ok(_) => {}
            Err(e) if name == "hex" => {
                let e = e.to_string();
                assert!(e.contains("spec.targets[0].external"), "{e}");
                refused_at_create.push(name);
            }
            Err(e) => panic!("{name}: {e}"),
        }
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
        if refused_at_create.contains(&name) {
            continue;
        }
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
            ["rebinding", "hex"]
                .iter()
                .all(|name| refused_at_create.contains(name) || stalled.contains(name))
                .then_some(())
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

    let plane = control_plane::shared("tenancy").expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let tenant = TestNamespace::create(plane, "reader").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let office =
        operator_for_office(plane, &client, &system.name, None, dir.path(), &[], &[]).await;
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

// ---------------------------------------------------------------------------------------------
// Attacks on the cluster's own addresses, on a real network.
//
// The victim is real and listening: a pod IP, a ClusterIP, a pod outside every Node's
// podCIDRs and another node's InternalIP, each an address in a network namespace with a
// counting server on it, registered as Pod, Service and Node objects. The tenant's agent runs
// in a network namespace of its own, routed to them, with its own resolver. Every attack is
// granted something that leads there (a name, a redirect, an EndpointSlice, an ExternalName, a
// numeric spelling, a CIDR): each must be refused before a connection arrives (the victim's
// counter stays 0) while a granted target of the same check is probed meanwhile, reported as
// `Stalled`/TargetNotPermitted with a `Stalled` Event; the matching grant lifts it.
// ---------------------------------------------------------------------------------------------

mod cluster_addresses {
    use super::*;

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use k8s_openapi::api::core::v1::{Node, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Patch, PatchParams};
    use netslo_agent::testbed::{self, DnsMode, Netns, dns_response};

    /// The victim pod's IP, inside node-a's podCIDR (10.231.0.0/24; node-b has 10.231.1.0/24).
    const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 5);
    /// A victim pod whose IP is outside every Node's podCIDRs (hostNetwork-like, or a CNI with
    /// its own IPAM): the operator learns it from the Pod.
    const STRAY_POD_IP: Ipv4Addr = Ipv4Addr::new(10, 232, 0, 7);
    /// The victim Service's ClusterIP, in the API server's service range (10.96.0.0/16, the
    /// `kubernetes` ServiceCIDR).
    const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 231, 5);
    const REBIND_NAME: &str = "rebind.netslo.test";
    const GRANTED_NAME: &str = "granted.netslo.test";
    const EXTERNAL_NAME: &str = "ext.netslo.test";

    type Counter = Arc<AtomicU64>;

    fn count(c: &Counter) -> u64 {
        c.load(Ordering::SeqCst)
    }

    /// A TCP/HTTP server on `addr` inside `ns` that counts the connections it accepts and answers
    /// each with `reply` (an HTTP response; a TCP probe just connects).
    fn serve(ns: &Netns, addr: SocketAddr, reply: &str) -> Counter {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = ns
            .enter(move || {
                let l = std::net::TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", ns.name()));
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let accepted = Counter::default();
        let counted = accepted.clone();
        let reply: Arc<[u8]> = reply.as_bytes().into();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 2048];
                    let _ =
                        tokio::time::timeout(Duration::from_millis(300), socket.read(&mut request))
                            .await;
                    let _ = socket.write_all(&reply).await;
                });
            }
        });
        accepted
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

    /// The queried name of a DNS query, lower-case, without the trailing dot.
    fn question_name(query: &[u8]) -> Option<String> {
        let mut labels = Vec::new();
        let mut i = 12;
        loop {
            let len = usize::from(*query.get(i)?);
            if len == 0 {
                break;
            }
            if len & 0xc0 != 0 {
                return None;
            }
            labels.push(
                std::str::from_utf8(query.get(i + 1..i + 1 + len)?)
                    .ok()?
                    .to_ascii_lowercase(),
            );
            i += 1 + len;
        }
        Some(labels.join("."))
    }

    /// The tenant's resolver, on the agent namespace's loopback: the rebinding name alternates its
    /// A answers between `outside` and the victim pod; the granted name and the ExternalName's
    /// name answer the victim pod; anything else is NXDOMAIN. Returns the rebinding name's count
    /// of A answers.
    fn serve_dns(ns: &Netns, outside: Ipv4Addr) -> Counter {
        let socket = ns
            .enter(|| {
                let s = std::net::UdpSocket::bind("127.0.0.1:53")?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .expect("the tenant's DNS server");
        let socket = tokio::net::UdpSocket::from_std(socket).unwrap();
        let rebound = Counter::default();
        let counted = rebound.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            let mut answers = [outside, POD_IP].into_iter().cycle();
            let mut next = answers.next().unwrap();
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let query = &buf[..n];
                let response = match question_name(query).as_deref() {
                    Some(REBIND_NAME) => {
                        let response = dns_response(query, DnsMode::Answer(next));
                        // The answer count's low byte: 1 for an A answer, 0 for AAAA.
                        if response.as_ref().is_some_and(|r| r[7] == 1) {
                            counted.fetch_add(1, Ordering::SeqCst);
                            next = answers.next().unwrap();
                        }
                        response
                    }
                    Some(GRANTED_NAME | EXTERNAL_NAME) => {
                        dns_response(query, DnsMode::Answer(POD_IP))
                    }
                    _ => dns_response(query, DnsMode::NxDomain),
                };
                if let Some(response) = response {
                    let _ = socket.send_to(&response, peer).await;
                }
            }
        });
        rebound
    }

    /// A stand-in Node with an InternalIP and `spec.podCIDRs`, Ready.
    async fn stand_in_node(client: &kube::Client, name: &str, ip: Ipv4Addr, pod_cidr: &str) {
        let nodes: Api<Node> = Api::all(client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": "zone-a",
            }},
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let status = json!({"status": {
            "addresses": [{"type": "InternalIP", "address": ip.to_string()}, {"type": "Hostname", "address": name}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "stand-in node"}],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
    }

    /// Deletes the cluster-scoped objects a test created (Nodes, ConnectivityPolicies) when it
    /// ends, however it ends.
    struct ClusterScoped {
        kubeconfig: std::path::PathBuf,
        nodes: Vec<String>,
        policies: Vec<String>,
    }

    impl Drop for ClusterScoped {
        fn drop(&mut self) {
            let kubeconfig = self.kubeconfig.clone();
            let nodes = std::mem::take(&mut self.nodes);
            let policies = std::mem::take(&mut self.policies);
            control_plane::block_on(async move {
                let Ok(client) = control_plane::client_from_kubeconfig(&kubeconfig).await else {
                    return;
                };
                let node_api: Api<Node> = Api::all(client.clone());
                for name in nodes {
                    let _ = node_api.delete(&name, &Default::default()).await;
                }
                let policy_api: Api<ConnectivityPolicy> = Api::all(client);
                for name in policies {
                    let _ = policy_api.delete(&name, &Default::default()).await;
                }
            });
        }
    }

    /// How an attack's refusal must read.
    enum Refused {
        /// By the agents, at the last moment: "target T: the agents refused its destination...".
        ByAgents,
        /// `Stalled`/TargetNotPermitted with a message containing this.
        Naming(String),
        /// `Stalled`/TargetNotPermitted, by the operator or the agents.
        Either,
    }

    struct Attack {
        /// What is tried, for the report.
        what: String,
        namespace: String,
        check: String,
        target: &'static str,
        /// Where the attack leads: must count no connection.
        victim: Counter,
        victim_addr: String,
        /// The check's granted target: must be probed meanwhile.
        control: Counter,
        refused: Refused,
        /// The API server refused the check itself (a numeric host at apply time).
        refused_at_create: Option<String>,
        message: Option<String>,
    }

    /// The conditions of a check, for a failure message.
    async fn conditions_of(checks: &Api<ConnectivityCheck>, name: &str) -> String {
        match checks.get(name).await {
            Ok(check) => match check.status {
                Some(status) => status
                    .conditions
                    .iter()
                    .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                None => "no status".into(),
            },
            Err(e) => format!("cannot read: {e}"),
        }
    }

    /// The attacks of issue 20 item 4, each in a tenant namespace of its own (so that one's grant
    /// cannot lift another), all at once against one operator and one agent:
    ///
    /// 1. a granted name rebinding between an outside address (probed: its counter grows) and the
    ///    victim pod;
    /// 2. a granted name resolving to the victim pod; `allowClusterAddresses: true` lifts it;
    /// 3. a granted server redirecting (followRedirects) to the victim pod;
    /// 4. forged EndpointSlices of the tenant's selector-less Services pointing at the victim pod,
    ///    one carrying the EndpointSlice controller's managed-by label, one without;
    /// 5. an ExternalName Service whose name resolves to the victim pod; granting the name (with
    ///    `allowClusterAddresses`) lifts it;
    /// 6. numeric URL spellings (hex, short, octal, decimal) of the victim pod and the ClusterIP,
    ///    each granted by that spelling;
    /// 7. a CIDR grant covering the victim ClusterIP, and one covering a pod outside the podCIDRs;
    ///    `allowClusterAddresses: true` lifts both;
    /// 8. a CIDR grant covering another node's InternalIP; `allowNodeAddresses` lifts it.
    #[tokio::test]
    async fn cluster_addresses_are_refused_before_a_connection_arrives() {
        let _serial = SERIAL.lock().await;
        testbed::require();
        let plane = control_plane::shared("tenancy").expect("control plane");
        let client = plane.client().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let _logs = crate::netns_common::LogsOnPanic {
            dir: dir.path().to_path_buf(),
        };
        let agent_bin = netslo_tests::workspace_binary("netslo-agent").unwrap();
        let operator_bin = netslo_tests::workspace_binary("netslo-operator").unwrap();
        // From here on: the plane is up and the binaries are built.
        let started = std::time::Instant::now();
        let phase = |what: &str| eprintln!("[{:>6.1?}] {what}", started.elapsed());

        // The network: the agent, node-a (the victim pod and the ClusterIP on its loopback),
        // node-b (its InternalIP serves; a stray pod's IP on its loopback), and an outside host.
        let bed = crate::netns_common::Bed::new(4);
        let (agent_host, node_a, node_b, outside) =
            (bed.host(0), bed.host(1), bed.host(2), bed.host(3));
        for (host, ip) in [
            (node_a, POD_IP),
            (node_a, CLUSTER_IP),
            (node_b, STRAY_POD_IP),
        ] {
            host.ns
                .ip(&["addr", "add", &format!("{ip}/32"), "dev", "lo"])
                .unwrap();
        }
        for (net, via) in [
            ("10.231.0.0/16", node_a.ip),
            ("10.96.0.0/16", node_a.ip),
            ("10.232.0.0/16", node_b.ip),
        ] {
            agent_host
                .ns
                .ip(&["route", "add", net, "via", &via.to_string()])
                .unwrap();
        }
        let outside_ip = outside.ip;
        let rebound_answers = serve_dns(&agent_host.ns, outside_ip);
        let at = |ip: Ipv4Addr, port: u16| SocketAddr::new(IpAddr::V4(ip), port);

        // The cluster: two stand-in nodes with podCIDRs, the victim pods, the victim Service with
        // a ClusterIP.
        let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
        let victim = TestNamespace::create(plane, "victim").await.unwrap();
        let mut cleanup = ClusterScoped {
            kubeconfig: plane.kubeconfig().to_path_buf(),
            nodes: Vec::new(),
            policies: Vec::new(),
        };
        let node_a_name = format!("{}-node-a", victim.name);
        let node_b_name = format!("{}-node-b", victim.name);
        cleanup.nodes = vec![node_a_name.clone(), node_b_name.clone()];
        stand_in_node(&client, &node_a_name, node_a.ip, "10.231.0.0/24").await;
        stand_in_node(&client, &node_b_name, node_b.ip, "10.231.1.0/24").await;
        for (pod, app, node, ip) in [
            ("db-0", "db", &node_a_name, POD_IP),
            ("stray-0", "stray", &node_b_name, STRAY_POD_IP),
        ] {
            let labels = std::collections::BTreeMap::from([("app".to_string(), app.to_string())]);
            netslo_tests::cluster::register_pod(
                &client,
                &victim.name,
                pod,
                &labels,
                node,
                &ip.to_string(),
            )
            .await
            .unwrap();
        }

        // Ports: one per attack on the victim's addresses, so each counter tells one attack.
        const REBIND: u16 = 18101;
        const BY_NAME: u16 = 18102;
        const REDIRECTED: u16 = 18103;
        const REDIRECTOR: u16 = 18203;
        const FORGED: u16 = 18104;
        const UNLABELLED: u16 = 18105;
        const EXTERNAL: u16 = 18106;
        const NUMERIC: u16 = 18110;
        const VIP: u16 = 18121;
        const STRAY: u16 = 18122;
        const NODE: u16 = 18131;
        let services: Api<Service> = Api::namespaced(client.clone(), &victim.name);
        let service: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db"},
        "spec": {
            "selector": {"app": "db"},
            "clusterIP": CLUSTER_IP.to_string(),
            "ports": [
                {"name": "vip", "port": VIP, "targetPort": VIP, "protocol": "TCP"},
                {"name": "numeric", "port": NUMERIC + 4, "targetPort": NUMERIC + 4, "protocol": "TCP"},
            ],
        },
    }))
    .unwrap();
        services
            .create(&PostParams::default(), &service)
            .await
            .unwrap();

        let policies: Api<ConnectivityPolicy> = Api::all(client.clone());
        let mut attacks: Vec<Attack> = Vec::new();
        let mut namespaces: Vec<TestNamespace> = Vec::new();
        let mut next_control = 19000u16;
        let outside_cidr = format!("{outside_ip}/32");

        // Creates the attack's check: its target plus a granted control target on the outside
        // host; returns the API server's refusal, if any.
        let create_check = async |namespace: &str,
                                  name: &str,
                                  target: serde_json::Value,
                                  control: u16| {
            let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), namespace);
            let check: ConnectivityCheck = serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"name": name},
            "spec": {
                "source": {"external": {"agents": ["office"]}},
                "targets": [
                    target,
                    {"name": "control", "external": {"host": outside_ip.to_string(), "port": control}, "protocol": "TCP"},
                ],
                "schedule": {"interval": "1s", "timeout": "500ms"},
            },
        }))
        .unwrap();
            checks
                .create(&PostParams::default(), &check)
                .await
                .err()
                .map(|e| e.to_string())
        };
        // Grants the namespace `external` (and `sensitive`), named `grant-<namespace>`.
        let grant = async |namespace: &str,
                           external: serde_json::Value,
                           sensitive: Option<serde_json::Value>|
               -> Result<String, kube::Error> {
            let name = format!("grant-{namespace}");
            let mut spec = json!({
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "external": external,
            });
            if let Some(sensitive) = sensitive {
                spec["sensitiveDestinations"] = sensitive;
            }
            let policy: ConnectivityPolicy = serde_json::from_value(json!({
                "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap();
            policies.create(&PostParams::default(), &policy).await?;
            Ok(name)
        };

        // 1. Rebinding: the name is granted; its answers alternate between the outside host
        //    (allowed, and counted there) and the victim pod.
        let rebind_outside = serve(&outside.ns, at(outside_ip, REBIND), OK);
        {
            let ns = TestNamespace::create(plane, "t-rebind").await.unwrap();
            cleanup.policies.push(
                grant(
                    &ns.name,
                    json!({"hosts": [REBIND_NAME], "cidrs": [outside_cidr]}),
                    None,
                )
                .await
                .unwrap(),
            );
            let control = serve(&outside.ns, at(outside_ip, next_control), OK);
            let refused = create_check(
            &ns.name,
            "rebinding",
            json!({"name": "rebind", "external": {"host": REBIND_NAME, "port": REBIND}, "protocol": "TCP"}),
            next_control,
        )
        .await;
            assert_eq!(refused, None, "the rebinding check is valid");
            next_control += 1;
            attacks.push(Attack {
                what: format!("a granted name rebinding between {outside_ip} and the victim pod"),
                namespace: ns.name.clone(),
                check: "rebinding".into(),
                target: "rebind",
                victim: serve(&node_a.ns, at(POD_IP, REBIND), OK),
                victim_addr: format!("{POD_IP}:{REBIND}"),
                control,
                refused: Refused::ByAgents,
                refused_at_create: None,
                message: None,
            });
            namespaces.push(ns);
        }

        // 2. A granted name resolving to the victim pod.
        let by_name_policy;
        {
            let ns = TestNamespace::create(plane, "t-name").await.unwrap();
            by_name_policy = grant(
                &ns.name,
                json!({"hosts": [GRANTED_NAME], "cidrs": [outside_cidr]}),
                None,
            )
            .await
            .unwrap();
            cleanup.policies.push(by_name_policy.clone());
            let control = serve(&outside.ns, at(outside_ip, next_control), OK);
            let refused = create_check(
            &ns.name,
            "granted-name",
            json!({"name": "db", "external": {"host": GRANTED_NAME, "port": BY_NAME}, "protocol": "TCP"}),
            next_control,
        )
        .await;
            assert_eq!(refused, None, "the granted-name check is valid");
            next_control += 1;
            attacks.push(Attack {
                what: format!("a granted name ({GRANTED_NAME}) resolving to the victim pod"),
                namespace: ns.name.clone(),
                check: "granted-name".into(),
                target: "db",
                victim: serve(&node_a.ns, at(POD_IP, BY_NAME), OK),
                victim_addr: format!("{POD_IP}:{BY_NAME}"),
                control,
                refused: Refused::ByAgents,
                refused_at_create: None,
                message: None,
            });
            namespaces.push(ns);
        }

        // 3. A granted server that redirects to the victim pod.
        let redirects = serve(
            &outside.ns,
            at(outside_ip, REDIRECTOR),
            &format!(
                "HTTP/1.1 302 Found\r\nLocation: http://{POD_IP}:{REDIRECTED}/\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        );
        {
            let ns = TestNamespace::create(plane, "t-redirect").await.unwrap();
            cleanup.policies.push(
                grant(&ns.name, json!({"cidrs": [outside_cidr]}), None)
                    .await
                    .unwrap(),
            );
            let control = serve(&outside.ns, at(outside_ip, next_control), OK);
            let refused = create_check(
            &ns.name,
            "redirected",
            json!({"name": "web", "external": {"url": format!("http://{outside_ip}:{REDIRECTOR}/")},
                   "protocol": "HTTP", "http": {"followRedirects": true}}),
            next_control,
        )
        .await;
            assert_eq!(refused, None, "the redirected check is valid");
            next_control += 1;
            attacks.push(Attack {
                what: format!("a granted server redirecting to http://{POD_IP}:{REDIRECTED}/"),
                namespace: ns.name.clone(),
                check: "redirected".into(),
                target: "web",
                victim: serve(&node_a.ns, at(POD_IP, REDIRECTED), OK),
                victim_addr: format!("{POD_IP}:{REDIRECTED}"),
                control,
                refused: Refused::ByAgents,
                refused_at_create: None,
                message: None,
            });
            namespaces.push(ns);
        }

        // 4. Forged EndpointSlices: the tenant's own selector-less Services, with slices it wrote
        //    itself pointing at the victim pod (kube-controller-manager manages slices of
        //    Services with selectors only, so it leaves these alone).
        {
            let ns = TestNamespace::create(plane, "t-slice").await.unwrap();
            cleanup.policies.push(
                grant(&ns.name, json!({"cidrs": [outside_cidr]}), None)
                    .await
                    .unwrap(),
            );
            let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
            let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.name);
            for (service, slice, port, managed_by) in [
                (
                    "db",
                    "db-forged",
                    FORGED,
                    Some("endpointslice-controller.k8s.io"),
                ),
                ("cache", "cache-forged", UNLABELLED, None),
            ] {
                let svc: Service = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": service},
                "spec": {"ports": [{"name": "tcp", "port": 80, "targetPort": port, "protocol": "TCP"}]},
            }))
            .unwrap();
                services.create(&PostParams::default(), &svc).await.unwrap();
                let mut labels = json!({"kubernetes.io/service-name": service});
                if let Some(managed_by) = managed_by {
                    labels["endpointslice.kubernetes.io/managed-by"] = json!(managed_by);
                }
                let forged: EndpointSlice = serde_json::from_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice, "labels": labels},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [POD_IP.to_string()], "conditions": {"ready": true}, "nodeName": node_a_name}],
                "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
            }))
            .unwrap();
                slices
                    .create(&PostParams::default(), &forged)
                    .await
                    .unwrap();
                let control = serve(&outside.ns, at(outside_ip, next_control), OK);
                let check = format!("{service}-slice");
                let refused = create_check(
                &ns.name,
                &check,
                json!({"name": service, "service": {"name": service, "port": 80, "via": ["Endpoints"]}, "protocol": "TCP"}),
                next_control,
            )
            .await;
                assert_eq!(refused, None, "the {check} check is valid");
                next_control += 1;
                attacks.push(Attack {
                    what: format!(
                        "a forged EndpointSlice {slice} ({}) pointing at the victim pod",
                        if managed_by.is_some() {
                            "with the controller's managed-by label"
                        } else {
                            "without a managed-by label"
                        }
                    ),
                    namespace: ns.name.clone(),
                    check,
                    target: service,
                    victim: serve(&node_a.ns, at(POD_IP, port), OK),
                    victim_addr: format!("{POD_IP}:{port}"),
                    control,
                    refused: Refused::Naming(format!("EndpointSlice {}/{slice}", ns.name)),
                    refused_at_create: None,
                    message: None,
                });
            }
            namespaces.push(ns);
        }

        // 5. An ExternalName Service whose name resolves to the victim pod, with no grant for it.
        let external_name_policy;
        {
            let ns = TestNamespace::create(plane, "t-extname").await.unwrap();
            external_name_policy = grant(&ns.name, json!({"cidrs": [outside_cidr]}), None)
                .await
                .unwrap();
            cleanup.policies.push(external_name_policy.clone());
            let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
            let svc: Service = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "ext"},
                "spec": {"type": "ExternalName", "externalName": EXTERNAL_NAME,
                         "ports": [{"name": "tcp", "port": EXTERNAL, "protocol": "TCP"}]},
            }))
            .unwrap();
            services.create(&PostParams::default(), &svc).await.unwrap();
            let control = serve(&outside.ns, at(outside_ip, next_control), OK);
            let refused = create_check(
            &ns.name,
            "external-name",
            json!({"name": "ext", "service": {"name": "ext", "port": EXTERNAL}, "protocol": "TCP"}),
            next_control,
        )
        .await;
            assert_eq!(refused, None, "the external-name check is valid");
            next_control += 1;
            attacks.push(Attack {
                what: format!(
                    "an ExternalName Service ({EXTERNAL_NAME}, resolving to the victim pod)"
                ),
                namespace: ns.name.clone(),
                check: "external-name".into(),
                target: "ext",
                victim: serve(&node_a.ns, at(POD_IP, EXTERNAL), OK),
                victim_addr: format!("{POD_IP}:{EXTERNAL}"),
                control,
                refused: Refused::Naming(format!(
                    "external destination {EXTERNAL_NAME}:{EXTERNAL} is not granted"
                )),
                refused_at_create: None,
                message: None,
            });
            namespaces.push(ns);
        }

        // 6. Numeric spellings of the victim pod's IP and of the ClusterIP, each granted by that
        //    very spelling (as a host name: none of them is a canonical IP).
        {
            let ns = TestNamespace::create(plane, "t-numeric").await.unwrap();
            let spell = |ip: Ipv4Addr| {
                let o = ip.octets();
                let n = u32::from(ip);
                [
                    ("hex", format!("0x{n:08x}")),
                    (
                        "short",
                        format!("{}.{}.{}", o[0], o[1], u16::from_be_bytes([o[2], o[3]])),
                    ),
                    (
                        "octal",
                        format!("0{:o}.0{:o}.0{:o}.0{:o}", o[0], o[1], o[2], o[3]),
                    ),
                    ("decimal", format!("{n}")),
                ]
            };
            let mut cases: Vec<(String, Ipv4Addr, String)> = spell(POD_IP)
                .into_iter()
                .map(|(how, host)| (format!("pod-{how}"), POD_IP, host))
                .collect();
            let [(how, vip_hex), ..] = spell(CLUSTER_IP);
            cases.push((format!("vip-{how}"), CLUSTER_IP, vip_hex));
            let hosts: Vec<&str> = cases.iter().map(|(_, _, host)| host.as_str()).collect();
            let policy = match grant(
                &ns.name,
                json!({"hosts": hosts, "cidrs": [outside_cidr]}),
                None,
            )
            .await
            {
                Ok(name) => name,
                Err(e) => {
                    // The CRD may refuse numeric host names in grants too: then they are granted
                    // nothing by name, and must be refused all the same.
                    eprintln!(
                        "the numeric host grants were refused ({e}); granting the outside host only"
                    );
                    grant(&ns.name, json!({"cidrs": [outside_cidr]}), None)
                        .await
                        .unwrap()
                }
            };
            cleanup.policies.push(policy);
            for (i, (check, ip, host)) in cases.into_iter().enumerate() {
                let port = NUMERIC + u16::try_from(i).unwrap();
                let url = format!("http://{host}:{port}/");
                let control = serve(&outside.ns, at(outside_ip, next_control), OK);
                let refused = create_check(
                    &ns.name,
                    &check,
                    json!({"name": "numeric", "external": {"url": url}, "protocol": "HTTP"}),
                    next_control,
                )
                .await;
                next_control += 1;
                attacks.push(Attack {
                    what: format!("the URL {url} ({ip})"),
                    namespace: ns.name.clone(),
                    check,
                    target: "numeric",
                    victim: serve(&node_a.ns, at(ip, port), OK),
                    victim_addr: format!("{ip}:{port}"),
                    control,
                    refused: Refused::Either,
                    refused_at_create: refused,
                    message: None,
                });
            }
            namespaces.push(ns);
        }

        // 7. CIDR grants covering the victim ClusterIP and the stray pod, without
        //    allowClusterAddresses.
        let cidr_policy;
        {
            let ns = TestNamespace::create(plane, "t-cidr").await.unwrap();
            cidr_policy = grant(
                &ns.name,
                json!({"cidrs": ["10.96.0.0/16", "10.232.0.0/16", outside_cidr]}),
                None,
            )
            .await
            .unwrap();
            cleanup.policies.push(cidr_policy.clone());
            for (check, host, ip, port, what) in [
                (
                    "cluster-ip",
                    &node_a.ns,
                    CLUSTER_IP,
                    VIP,
                    "the victim Service's ClusterIP",
                ),
                (
                    "stray-pod",
                    &node_b.ns,
                    STRAY_POD_IP,
                    STRAY,
                    "a victim pod outside every podCIDR",
                ),
            ] {
                let control = serve(&outside.ns, at(outside_ip, next_control), OK);
                let refused = create_check(
                &ns.name,
                check,
                json!({"name": "inside", "external": {"host": ip.to_string(), "port": port}, "protocol": "TCP"}),
                next_control,
            )
            .await;
                assert_eq!(refused, None, "the {check} check is valid");
                next_control += 1;
                attacks.push(Attack {
                    what: format!("a CIDR grant covering {what} ({ip})"),
                    namespace: ns.name.clone(),
                    check: check.into(),
                    target: "inside",
                    victim: serve(host, at(ip, port), OK),
                    victim_addr: format!("{ip}:{port}"),
                    control,
                    refused: Refused::Either,
                    refused_at_create: None,
                    message: None,
                });
            }
            namespaces.push(ns);
        }

        // 8. A CIDR grant covering another node's InternalIP, with no allowNodeAddresses.
        let node_policy;
        {
            let ns = TestNamespace::create(plane, "t-node").await.unwrap();
            node_policy = grant(
                &ns.name,
                json!({"cidrs": [format!("{}/32", node_b.ip), outside_cidr]}),
                None,
            )
            .await
            .unwrap();
            cleanup.policies.push(node_policy.clone());
            let control = serve(&outside.ns, at(outside_ip, next_control), OK);
            let refused = create_check(
            &ns.name,
            "node",
            json!({"name": "kubelet", "external": {"host": node_b.ip.to_string(), "port": NODE}, "protocol": "TCP"}),
            next_control,
        )
        .await;
            assert_eq!(refused, None, "the node check is valid");
            attacks.push(Attack {
                what: format!("a CIDR grant covering node-b's InternalIP {}", node_b.ip),
                namespace: ns.name.clone(),
                check: "node".into(),
                target: "kubelet",
                victim: serve(&node_b.ns, at(node_b.ip, NODE), OK),
                victim_addr: format!("{}:{NODE}", node_b.ip),
                control,
                refused: Refused::Either,
                refused_at_create: None,
                message: None,
            });
            namespaces.push(ns);
        }
        phase("network, cluster objects, grants and checks in place");

        // The operator on the host, its channel on the bridge; the agent `office` inside its
        // namespace, resolving through the tenant's DNS server (a private mount namespace gives
        // it its own /etc/resolv.conf).
        let channel = format!("{}:{}", bed.host_ip, bed.free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let _operator = crate::netns_common::Process::spawn(
            dir.path(),
            "operator",
            None,
            &operator_bin,
            [
                "--namespace",
                &system.name,
                "--pod-name",
                "netslo-operator-test",
                "--channel-addr",
                &channel,
                "--channel-names",
                &bed.host_ip.to_string(),
                "--admin-addr",
                &admin,
                "--manage-mesh-agents=false",
                "--persist-interval-seconds",
                "1",
            ],
            &[
                ("KUBECONFIG", plane.kubeconfig().to_str().unwrap()),
                ("RUST_LOG", "info,netslo_operator=debug"),
                ("NO_COLOR", "1"),
            ],
        );
        let ca = fetch_operator_ca(&client, &system.name, dir.path()).await;
        let token = external_agent_token(&client, &system.name, "office", dir.path()).await;
        let resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv_conf,
            "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n",
        )
        .unwrap();
        let probes_file = dir.path().join("probes.jsonl");
        let _agent = Process(
            std::process::Command::new("ip")
                .args(["netns", "exec", agent_host.ns.name()])
                .args([
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "sh",
                    "-c",
                ])
                .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
                .arg(&resolv_conf)
                .arg(&agent_bin)
                .args(["--node-name", "office", "run"])
                .args(["--operator-url", &format!("https://{channel}")])
                .arg("--operator-ca")
                .arg(&ca)
                .arg("--token-file")
                .arg(&token)
                .args(["--agent-name", "office", "--window-seconds", "1"])
                .args(["--max-lag-ms", "200", "--output", "raw"])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&probes_file).unwrap())
                .stderr(std::fs::File::create(dir.path().join("agent.log")).unwrap())
                .spawn()
                .unwrap(),
        );
        phase("operator and agent started");

        let mut failures: Vec<String> = Vec::new();
        let api = |namespace: &str| -> Api<ConnectivityCheck> {
            Api::namespaced(client.clone(), namespace)
        };

        // Every attack is refused: Stalled with TargetNotPermitted.
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            let mut waiting = 0;
            for a in attacks
                .iter_mut()
                .filter(|a| a.refused_at_create.is_none() && a.message.is_none())
            {
                a.message = stalled_message(&api(&a.namespace), &a.check).await;
                match &a.message {
                    Some(message) => {
                        phase(&format!("{}/{} refused: {message}", a.namespace, a.check))
                    }
                    None => waiting += 1,
                }
            }
            if waiting == 0 || std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        phase("refusals awaited");
        for a in &attacks {
            if let Some(error) = &a.refused_at_create {
                phase(&format!(
                    "{}/{} refused at create: {error}",
                    a.namespace, a.check
                ));
                if !error.contains("spec.targets[0].external") {
                    failures.push(format!(
                    "{} ({}/{}): the API server refused the check without naming the field: {error}",
                    a.what, a.namespace, a.check
                ));
                }
                continue;
            }
            let Some(message) = &a.message else {
                failures.push(format!(
                    "{} ({}/{}): never Stalled/TargetNotPermitted; conditions: {}",
                    a.what,
                    a.namespace,
                    a.check,
                    conditions_of(&api(&a.namespace), &a.check).await
                ));
                continue;
            };
            let ok = match &a.refused {
                Refused::ByAgents => message.starts_with(&format!(
                    "target {}: the agents refused its destination",
                    a.target
                )),
                Refused::Naming(fragment) => message.contains(fragment.as_str()),
                Refused::Either => true,
            };
            if !ok {
                failures.push(format!(
                    "{} ({}/{}): Stalled, but the message does not say how: {message}",
                    a.what, a.namespace, a.check
                ));
            }
        }

        // Several probe intervals more, during which every check's granted target is probed: a
        // dead agent, or an unassigned check, cannot pass for a refusal. Meanwhile the victims
        // count nothing.
        let before: Vec<u64> = attacks.iter().map(|a| count(&a.control)).collect();
        let probed = async || {
            let ok = attacks
                .iter()
                .zip(&before)
                .all(|(a, b)| a.refused_at_create.is_some() || count(&a.control) >= b + 5);
            ok.then_some(())
        };
        let grace = std::time::Instant::now() + Duration::from_secs(30);
        while probed().await.is_none() && std::time::Instant::now() < grace {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        phase("controls probed");
        let probes = std::fs::read_to_string(&probes_file).unwrap_or_default();
        for (a, b) in attacks.iter().zip(&before) {
            if a.refused_at_create.is_none() && count(&a.control) < b + 5 {
                failures.push(format!(
                "{} ({}/{}): its granted control target was probed {} times in 30 s after the refusals (wanted 5): the check did not run",
                a.what,
                a.namespace,
                a.check,
                count(&a.control) - b
            ));
            }
            let reached = count(&a.victim);
            if reached > 0 {
                let last = probes
                    .lines()
                    .rfind(|l| {
                        l.contains(&format!("\"check\":\"{}/{}/", a.namespace, a.check))
                            && l.contains(&format!("\"target\":\"{}/", a.target))
                    })
                    .unwrap_or("no probe record");
                failures.push(format!(
                    "{} ({}/{}): {reached} connections reached {}; last probe: {}",
                    a.what,
                    a.namespace,
                    a.check,
                    a.victim_addr,
                    last.chars().take(400).collect::<String>()
                ));
            }
        }
        // The allowed half of each trick was probed: the rebinding name's outside answers and the
        // redirecting server.
        if count(&rebind_outside) == 0 {
            failures.push(format!(
            "the rebinding name's outside answers ({outside_ip}:{REBIND}) were never probed ({} A answers given)",
            count(&rebound_answers)
        ));
        }
        if count(&redirects) == 0 {
            failures.push("the redirecting server was never probed".into());
        }

        // Each refusal is an Event on its check.
        let stalled_checks = |a: &Attack| a.refused_at_create.is_none() && a.message.is_some();
        let event_deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut without_event: Vec<&Attack> =
            attacks.iter().filter(|a| stalled_checks(a)).collect();
        while !without_event.is_empty() {
            let mut still = Vec::new();
            for a in without_event {
                let events: Api<Event> = Api::namespaced(client.clone(), &a.namespace);
                let found = events.list(&ListParams::default()).await.is_ok_and(|l| {
                    l.items.iter().any(|e| {
                        e.reason.as_deref() == Some("Stalled")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                                == Some(a.check.as_str())
                    })
                });
                if !found {
                    still.push(a);
                }
            }
            without_event = still;
            if std::time::Instant::now() > event_deadline {
                for a in &without_event {
                    failures.push(format!(
                        "{} ({}/{}): Stalled, but no Stalled Event on the check",
                        a.what, a.namespace, a.check
                    ));
                }
                break;
            }
            if !without_event.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        phase("Events checked");

        // The matching grant lifts the refusal: the victim gets probes.
        let find = |check: &str| attacks.iter().find(|a| a.check == check).unwrap();
        let lifts: Vec<(&str, serde_json::Value, Vec<&Attack>)> = vec![
            (
                by_name_policy.as_str(),
                json!({"spec": {"external": {"allowClusterAddresses": true}}}),
                vec![find("granted-name")],
            ),
            (
                external_name_policy.as_str(),
                json!({"spec": {"external": {"hosts": [EXTERNAL_NAME], "allowClusterAddresses": true}}}),
                vec![find("external-name")],
            ),
            (
                cidr_policy.as_str(),
                json!({"spec": {"external": {"allowClusterAddresses": true}}}),
                vec![find("cluster-ip"), find("stray-pod")],
            ),
            (
                node_policy.as_str(),
                json!({"spec": {"sensitiveDestinations": {"allowNodeAddresses": true}}}),
                vec![find("node")],
            ),
        ];
        let mut lifted: Vec<(&Attack, u64)> = Vec::new();
        for (policy, patch, lifted_attacks) in lifts {
            policies
                .patch(policy, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
            lifted.extend(lifted_attacks.into_iter().map(|a| (a, count(&a.victim))));
        }
        let lift_deadline = std::time::Instant::now() + Duration::from_secs(60);
        while lifted.iter().any(|(a, b)| count(&a.victim) < b + 3)
            && std::time::Instant::now() < lift_deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for (a, b) in &lifted {
            if count(&a.victim) < b + 3 {
                failures.push(format!(
                "{} ({}/{}): the matching grant did not lift the refusal: {} connections to {} in 60 s; conditions: {}",
                a.what,
                a.namespace,
                a.check,
                count(&a.victim) - b,
                a.victim_addr,
                conditions_of(&api(&a.namespace), &a.check).await
            ));
            }
        }
        phase("lifts checked");

        assert!(
            failures.is_empty(),
            "{} assertions failed over {} attacks:\n- {}",
            failures.len(),
            attacks.len(),
            failures.join("\n- ")
        );
        drop(namespaces);
    }
}
