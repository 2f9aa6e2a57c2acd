//! The node mesh on real networks: three stand-in nodes (network namespaces on one bridge, in
//! two zones), each with a real `netslo-agent` inside it authenticated as a mesh agent with a
//! pod-bound token; two stand-in pods (namespaces running echo servers) behind a Service; the
//! real `netslo-operator` on the host, reached by the agents over an uplink onto the bridge;
//! the real control plane, whose kube-controller-manager builds the Service's EndpointSlices.
//!
//! A check from every mesh agent to the Service's endpoints and to the pods by selector becomes
//! Ready; then faults are injected with iptables and the operator must say where they are:
//! one endpoint dropping inbound traffic is named as the endpoint that fails from every
//! source (and the healthy one is not), with an `ObjectiveBreached` Event and a burn-rate
//! alert that stops after recovery; zone b's nodes dropping traffic to zone a's pod is named
//! as the zone pair b → a.
//!
//! Needs root, `ip` and `iptables` (like the agent's netns tests).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use netslo_agent::testbed;
use netslo_crds::v1alpha1::{
    ConnectivityCheck, FailureScope, Layer, Locality, TargetSummary, Verdict,
};
use netslo_tests::cluster::{
    create_service, ensure_service_account, register_mesh_agent, register_node, register_pod,
};
use netslo_tests::control_plane::{self, TestNamespace};
use netslo_tests::{free_port, workspace_binary};
use serde_json::json;

use crate::netns_common::{AgentLauncher, Bed, LogsOnPanic, Process, eventually};

const CHECK: &str = "mesh-to-api";
/// The port the stand-in pods serve on (the Service's targetPort).
const POD_PORT: u16 = 8080;
/// The mesh agents' service account (the operator's `--agent-service-account` default).
const MESH_ACCOUNT: &str = "netslo-agent";

fn condition(check: &ConnectivityCheck, type_: &str) -> Option<(String, String)> {
    let status = check.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// What a poll saw, for the timeout message.
fn seen(check: &ConnectivityCheck) -> String {
    let Some(status) = check.status.as_ref() else {
        return "no status".into();
    };
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .map(|c| format!("{}={} ({}: {})", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "conditions {conditions:?}, agents {:?}, verdict {:?}",
        status.agents, status.verdict
    )
}

async fn events_of(events: &Api<Event>, name: &str) -> Vec<String> {
    let Ok(list) = events.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason.clone())
        .collect()
}

#[tokio::test]
async fn mesh_agents_in_namespaces_localise_an_endpoint_and_a_zone_pair() {
    testbed::require();
    let started = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1?}] {what}", started.elapsed());
    let plane = control_plane::shared(module_path!()).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let shop = TestNamespace::create(plane, "shop").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _logs = LogsOnPanic {
        dir: dir.path().to_path_buf(),
    };
    let agent_bin = workspace_binary("netslo-agent").unwrap();
    let operator_bin = workspace_binary("netslo-operator").unwrap();

    // The network: three nodes and two pods on one bridge, the host (control plane, operator)
    // on it through the uplink.
    let bed = Bed::new(5);
    // Node names are cluster-wide: the test's namespace makes them unique on a shared plane.
    let node = |suffix: &str| format!("{}-{suffix}", shop.name);
    let nodes = [
        (node("node-a"), "zone-a", bed.host(0)),
        (node("node-b"), "zone-b", bed.host(1)),
        (node("node-c"), "zone-b", bed.host(2)),
    ];
    let (api_1, api_2) = (bed.host(3), bed.host(4));
    let endpoint_1 = format!("{}:{POD_PORT}", api_1.ip);
    let endpoint_2 = format!("{}:{POD_PORT}", api_2.ip);

    for (name, zone, host) in &nodes {
        register_node(&client, name, &host.ip.to_string(), zone)
            .await
            .unwrap();
    }

    // The workload: api-1 on node-a (zone-a), api-2 on node-b (zone-b), each an echo server in
    // its own namespace at its pod IP, behind the Service `api`.
    let labels = BTreeMap::from([("app".to_string(), "api".to_string())]);
    let mut processes = Vec::new();
    for (pod, node_name, host) in [("api-1", &nodes[0].0, api_1), ("api-2", &nodes[1].0, api_2)] {
        register_pod(
            &client,
            &shop.name,
            pod,
            &labels,
            node_name,
            &host.ip.to_string(),
        )
        .await
        .unwrap();
        let listen = format!("{}:{POD_PORT}", host.ip);
        processes.push(Process::spawn(
            dir.path(),
            pod,
            Some(&host.ns),
            &agent_bin,
            ["echo", "--echo-listen", &listen],
            &[],
        ));
    }
    create_service(
        &client,
        &shop.name,
        "api",
        &labels,
        "tcp",
        80,
        i32::from(POD_PORT),
    )
    .await
    .unwrap();

    // The operator on the host: the API server on loopback, its channel on the bridge.
    let channel = format!("{}:{}", bed.host_ip, bed.free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    let mut operator = Process::spawn(
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
            "--agent-service-account",
            MESH_ACCOUNT,
            // The mesh agents are the test's processes, registered as stand-in pods; a
            // DaemonSet would have the controller manager adopt and replace them.
            "--manage-mesh-agents=false",
            // An agent sends its next batch once the previous one is acknowledged, which is
            // once it is persisted: the persist interval adds to the detection delay, so it
            // is scaled down with the 1 s probe interval (the default 5 s suits 10 s).
            "--persist-interval-seconds",
            "1",
        ],
        &[
            ("KUBECONFIG", plane.kubeconfig().to_str().unwrap()),
            ("RUST_LOG", "info,netslo_operator=debug"),
            // Plain text in the log files printed on failure.
            ("NO_COLOR", "1"),
        ],
    );
    let ca_file =
        crate::operator_common::fetch_operator_ca(&client, &system.name, dir.path()).await;

    // One mesh agent per node, inside the node's namespace, as the operator expects them: a
    // mesh-agent pod in its namespace on that node, and a token bound to that pod (so it
    // carries the node's name: one node's agent cannot report as another's).
    ensure_service_account(&client, &system.name, MESH_ACCOUNT)
        .await
        .unwrap();
    let operator_url = format!("https://{channel}");
    let agents = AgentLauncher {
        client: &client,
        dir: dir.path(),
        agent_bin: &agent_bin,
        operator_url: &operator_url,
        ca_file: &ca_file,
    };
    for (name, _, host) in &nodes {
        let pod = register_mesh_agent(
            &client,
            &system.name,
            &format!("netslo-agent-{}", name.rsplit('-').next().unwrap()),
            name,
            &host.ip.to_string(),
            MESH_ACCOUNT,
        )
        .await
        .unwrap();
        processes.push(agents.start(&host.ns, &pod, name, name, &[]).await.unwrap());
    }

    // The check: every mesh agent probes each endpoint of the Service (ClusterIP VIPs do not
    // route here: there is no kube-proxy) and the pods by selector, every second. 99% over
    // 7 days; one page alert over 5m/1m at 0.5% of the budget (burn factor 10.08): one of two
    // endpoints failing burns at 50x, so it fires within a minute, and the short window lets
    // it stop a minute after recovery.
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &shop.name);
    let check: ConnectivityCheck = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": CHECK},
        "spec": {
            "source": {"mesh": {}},
            "targets": [
                {"name": "api", "service": {"name": "api", "portName": "tcp", "via": ["Endpoints"]}, "protocol": "TCP"},
                {"name": "api-pods", "pods": {"selector": {"matchLabels": {"app": "api"}}, "port": POD_PORT}, "protocol": "TCP"},
            ],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {
                "window": "7d",
                "availability": {"target": "99"},
                "alerting": {"profile": "Custom", "minEventsToAlert": 1, "burnRateWindows": [
                    {"severity": "Page", "long": "5m", "short": "1m", "budgetPercent": "0.5"},
                ]},
            },
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();
    phase("check created, agents started");
    let get = async || -> Result<ConnectivityCheck, String> {
        checks.get(CHECK).await.map_err(|e| e.to_string())
    };

    // Healthy: all three agents report, every probe succeeds, Ready once the shortest alert
    // window has data.
    let ready = eventually("Ready=True", Duration::from_secs(180), async || {
        let check = get().await?;
        let agents = check.status.as_ref().and_then(|s| s.agents);
        if condition(&check, "Ready") == Some(("True".into(), "ObjectivesMet".into()))
            && agents.is_some_and(|a| a.desired == 3 && a.reporting == 3)
        {
            Ok(check)
        } else {
            Err(seen(&check))
        }
    })
    .await;
    phase("Ready");
    assert!(operator.running(), "the operator is still running");
    let status = ready.status.as_ref().unwrap();
    assert_eq!(condition(&ready, "SLOMet").unwrap().0, "True");
    assert_eq!(condition(&ready, "NoData").unwrap().0, "False");
    assert_eq!(condition(&ready, "BudgetBurning").unwrap().0, "False");
    let objective = &status.slo.as_ref().unwrap().objectives[0];
    assert_eq!(objective.sli.as_deref(), Some("1"), "{objective:?}");
    assert!(status.verdict.is_none(), "{:?}", status.verdict);
    // One summary per (target, endpoint, locality): two endpoints of the Service, two pods,
    // each probed from its own node (api-1 on node-a, api-2 on node-b) and from the others.
    let mut summarised: Vec<(String, Option<String>, Option<Locality>)> = status
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.endpoint.clone(), t.locality))
        .collect();
    summarised.sort();
    let mut want = Vec::new();
    for target in ["api", "api-pods"] {
        for endpoint in [&endpoint_1, &endpoint_2] {
            for locality in [Locality::SameNode, Locality::CrossNode] {
                want.push((target.to_string(), Some(endpoint.clone()), Some(locality)));
            }
        }
    }
    want.sort();
    assert_eq!(summarised, want, "{:?}", status.targets);
    for t in &status.targets {
        assert_eq!(t.success_ratio.as_deref(), Some("1"), "{t:?}");
        let latency = t.latency.as_ref().expect("latency figures");
        assert!(!latency.p50.is_empty() && !latency.p99.is_empty(), "{t:?}");
        assert!(t.last_failure.is_none(), "{t:?}");
    }

    // Steady state: a healthy check whose figures do not move is not written at all. Once
    // its last write is older than the per-check pacing period (30 s), a fault is written
    // as soon as the agents report it.
    let mut version = ready.metadata.resource_version.clone();
    let mut unchanged_since = std::time::Instant::now();
    // On two shared cores the figures can take a few write floors to settle after warm-up
    // (91 s once in a full suite run), so the deadline leaves room for several.
    let steady_deadline = std::time::Instant::now() + Duration::from_secs(240);
    while unchanged_since.elapsed() < Duration::from_secs(31) {
        assert!(
            std::time::Instant::now() < steady_deadline,
            "the status of a healthy check kept being rewritten"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now_version = get().await.ok().and_then(|c| c.metadata.resource_version);
        if now_version != version {
            version = now_version;
            unchanged_since = std::time::Instant::now();
        }
    }
    phase("steady: no status write for 31 s");

    // Fault 1: api-2 drops everything that arrives on its port (a host firewall on that
    // pod). Every source times out on that endpoint, on both targets; api-1 still answers.
    let drop_inbound = api_2
        .ns
        .iptables(
            "INPUT",
            &["-p", "tcp", "--dport", &POD_PORT.to_string(), "-j", "DROP"],
        )
        .unwrap();
    phase("fault 1: api-2 drops inbound");
    let fault_at = std::time::Instant::now();
    // Right after the fault the newest buckets of some sources may still be good, so an
    // earlier write can carry a partial picture: wait for the settled verdict, the endpoint
    // failing from every source.
    eventually(
        "the settled Endpoint verdict",
        Duration::from_secs(90),
        async || {
            let check = get().await?;
            let verdict = check.status.as_ref().and_then(|s| s.verdict.as_ref());
            if verdict.is_some_and(|v| {
                v.scope == FailureScope::Endpoint
                    && v.sources.len() == nodes.len()
                    && v.destinations == [endpoint_2.clone()]
            }) {
                Ok(())
            } else {
                Err(seen(&check))
            }
        },
    )
    .await;
    let detected = fault_at.elapsed();
    phase(&format!("Endpoint verdict {detected:?} after the fault"));
    // The bound: two probe intervals (1 s) plus 5 s, from the first dropped packet
    // to the localised verdict readable from the API server.
    assert!(
        detected <= Duration::from_secs(2 + 5),
        "the fault took {detected:?} to reach the status"
    );
    // The breach follows as the budget drains; its write may wait out the write floor that
    // the verdict's writes started (at most two writes per check per 30 s).
    let broken = eventually(
        "Ready=False with the Endpoint verdict",
        Duration::from_secs(90),
        async || {
            let check = get().await?;
            let scope = check
                .status
                .as_ref()
                .and_then(|s| s.verdict.as_ref())
                .map(|v| v.scope);
            if condition(&check, "Ready").is_some_and(|c| c.0 == "False")
                && scope == Some(FailureScope::Endpoint)
            {
                Ok(check)
            } else {
                Err(seen(&check))
            }
        },
    )
    .await;
    phase(&format!(
        "Ready=False {:?} after the fault",
        fault_at.elapsed()
    ));
    let status = broken.status.as_ref().unwrap();
    assert_eq!(
        condition(&broken, "SLOMet").unwrap(),
        ("False".into(), "BudgetExhausted".into()),
        "{status:?}"
    );
    assert_eq!(
        condition(&broken, "Ready").unwrap().1,
        "ObjectiveNotMet",
        "{status:?}"
    );
    let verdict: &Verdict = status.verdict.as_ref().unwrap();
    assert_eq!(verdict.layer, Layer::TCP, "{verdict:?}");
    assert_eq!(verdict.reason, "TCPTimeout", "{verdict:?}");
    assert_eq!(
        verdict.destinations,
        vec![endpoint_2.clone()],
        "the dropping endpoint, and only it: {verdict:?}"
    );
    let mut all_nodes: Vec<String> = nodes.iter().map(|(n, _, _)| n.clone()).collect();
    all_nodes.sort();
    assert_eq!(verdict.sources, all_nodes, "from every source: {verdict:?}");
    assert!(
        verdict
            .summary
            .starts_with(&format!("endpoint {endpoint_2} of api")),
        "{verdict:?}"
    );
    assert!(
        verdict.summary.contains("fails from 3/3 sources"),
        "{verdict:?}"
    );
    assert!(
        !verdict.summary.contains(&api_1.ip.to_string()),
        "the healthy endpoint is not blamed: {verdict:?}"
    );
    // Per endpoint over the last hour: the dropping one shows timeouts, the healthy one stays
    // clean (a bound rather than exactly 1: a starved prober on two shared cores may time out
    // once, and that is not what this asserts).
    let ratio = |t: &TargetSummary| -> f64 { t.success_ratio.as_deref().unwrap().parse().unwrap() };
    for t in &status.targets {
        if t.endpoint.as_deref() == Some(endpoint_2.as_str()) {
            let failure = t
                .last_failure
                .as_ref()
                .expect("api-2's failures are listed");
            assert_eq!(failure.reason, "TCPTimeout", "{t:?}");
            assert!(ratio(t) < 0.99, "{t:?}");
        } else {
            assert!(ratio(t) >= 0.99, "api-1 answers: {t:?}");
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), &shop.name);
    eventually(
        "an ObjectiveBreached Event",
        Duration::from_secs(30),
        async || {
            let reasons = events_of(&events, CHECK).await;
            if reasons.iter().any(|r| r == "ObjectiveBreached") {
                Ok(())
            } else {
                Err(format!("{reasons:?}"))
            }
        },
    )
    .await;
    // Half the probes failing burns the budget at 50x: the page alert fires.
    eventually("BudgetBurning=True", Duration::from_secs(120), async || {
        let check = get().await?;
        if condition(&check, "BudgetBurning") == Some(("True".into(), "PageFastBurn".into())) {
            Ok(())
        } else {
            Err(seen(&check))
        }
    })
    .await;

    // Recovery. The SLI over the 7-day window keeps the outage (SLOMet stays False until
    // enough good probes outweigh it, which is the point of an SLO); what recovers is the
    // verdict (held until its place has been clean for its hold span: 30 s at 1 s probes)
    // and, once the short window is clean, the alert.
    phase("alert firing; fault 1 removed");
    drop_inbound.remove().unwrap();
    let recovered = eventually(
        "the verdict clears and the alert stops",
        Duration::from_secs(180),
        async || {
            let check = get().await?;
            let verdict = check.status.as_ref().and_then(|s| s.verdict.as_ref());
            if verdict.is_none()
                && condition(&check, "BudgetBurning").is_some_and(|c| c.0 == "False")
            {
                Ok(check)
            } else {
                Err(seen(&check))
            }
        },
    )
    .await;
    phase("verdict cleared, alert stopped");
    assert_eq!(
        condition(&recovered, "SLOMet").unwrap().0,
        "False",
        "the outage is still in the window"
    );
    eventually(
        "a BudgetBurnStopped Event",
        Duration::from_secs(30),
        async || {
            let reasons = events_of(&events, CHECK).await;
            if reasons.iter().any(|r| r == "BudgetBurnStopped") {
                Ok(())
            } else {
                Err(format!("{reasons:?}"))
            }
        },
    )
    .await;

    // Fault 2: zone-b's nodes drop what they send to zone-a's pod (api-1), as a firewall on
    // those nodes would. api-1 still answers node-a, and zone-b still reaches api-2.
    let zone_drops: Vec<_> = nodes
        .iter()
        .filter(|(_, zone, _)| *zone == "zone-b")
        .map(|(_, _, host)| {
            host.ns
                .iptables(
                    "OUTPUT",
                    &[
                        "-d",
                        &api_1.ip.to_string(),
                        "-p",
                        "tcp",
                        "--dport",
                        &POD_PORT.to_string(),
                        "-j",
                        "DROP",
                    ],
                )
                .unwrap()
        })
        .collect();
    phase("fault 2: zone-b drops traffic to zone-a's pod");
    let zoned = eventually("a ZonePair verdict", Duration::from_secs(90), async || {
        let check = get().await?;
        match check.status.as_ref().and_then(|s| s.verdict.clone()) {
            Some(v) if v.scope == FailureScope::ZonePair => Ok(v),
            _ => Err(seen(&check)),
        }
    })
    .await;
    assert_eq!(zoned.sources, vec!["zone-b".to_string()], "{zoned:?}");
    assert_eq!(zoned.destinations, vec!["zone-a".to_string()], "{zoned:?}");
    assert_eq!(zoned.reason, "TCPTimeout", "{zoned:?}");
    assert_eq!(zoned.layer, Layer::TCP, "{zoned:?}");
    assert!(
        zoned
            .summary
            .starts_with("zone zone-b to zone zone-a fails"),
        "{zoned:?}"
    );
    // a→a, a→b and b→b answer: zone-b still reaches api-2, and node-a still reaches api-1.
    assert!(
        zoned.summary.ends_with("while 3 other zone pairs answer"),
        "{zoned:?}"
    );

    phase("ZonePair verdict; fault 2 removed");
    for rule in zone_drops {
        rule.remove().unwrap();
    }
    eventually(
        "the zone verdict clears",
        Duration::from_secs(90),
        async || {
            let check = get().await?;
            if check.status.as_ref().is_some_and(|s| s.verdict.is_none()) {
                Ok(())
            } else {
                Err(seen(&check))
            }
        },
    )
    .await;
    phase("zone verdict cleared");
    // Each verdict was an Event naming its place, layer and reason, and so was its clearing.
    let notes = |reason: &'static str| {
        let events = events.clone();
        async move {
            let list = events.list(&ListParams::default()).await.unwrap();
            list.items
                .into_iter()
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(CHECK))
                .filter(|e| e.reason.as_deref() == Some(reason))
                .filter_map(|e| e.note)
                .collect::<Vec<_>>()
        }
    };
    // A verdict is named, or the place settles from an interim one (one change is allowed):
    // either way an Event names it.
    let mut named = notes("VerdictNamed").await;
    named.extend(notes("VerdictChanged").await);
    let endpoint_place =
        format!("Endpoint {endpoint_2}, TCP TCPTimeout: endpoint {endpoint_2} of api");
    let zone_place = "ZonePair from zone-b to zone-a, TCP TCPTimeout: zone zone-b to zone zone-a";
    for place in [endpoint_place.as_str(), zone_place] {
        assert!(
            named.iter().any(|n| n.starts_with(place)),
            "{place:?} in {named:?}"
        );
    }
    let cleared = notes("VerdictCleared").await;
    assert!(
        cleared
            .iter()
            .any(|n| n.ends_with("(was ZonePair from zone-b to zone-a, TCP TCPTimeout)")),
        "{cleared:?}"
    );
    assert!(operator.running(), "the operator ran throughout");
}
