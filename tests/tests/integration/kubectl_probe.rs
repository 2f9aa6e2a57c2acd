//! `kubectl netslo probe` end to end: the plugin creates a ConnectivityProbe, the real operator
//! grants and assigns it to the real mesh agent on the named node (a network namespace), the
//! agent probes and traces, and the plugin prints the answer and exits with its code.
//!
//! The network: node-a and a router on one bridge with the host (control plane, operator); the
//! pod `api-1` behind the router, in a network of its own. The router dropping what it forwards
//! to the pod makes the probe fail with TCPTimeout and the trace end silent after the router.
//! A caller without RBAC on connectivityprobes is refused by the API server; a destination the
//! namespace is not granted is refused by the operator; a node with no agent likewise. A check
//! from both nodes' agents to the pod gives `kubectl netslo matrix` its grid: node-a's cell
//! failing while the router drops, the router's own cell not. A probe from a Deployment runs
//! from a probe pod with the Deployment's labels (the test plays the kubelet for it).
//!
//! Needs root, `ip` and `iptables`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use netslo_agent::testbed::{self, Netns};
use netslo_crds::v1alpha1::{ConnectivityCheck, ConnectivityMatrix, ConnectivityProbe};
use netslo_tests::cluster::{
    ensure_service_account, register_mesh_agent, register_node, register_pod, set_pod_ready,
};
use netslo_tests::control_plane::{self, TestNamespace};
use netslo_tests::{free_port, workspace_binary};

use crate::netns_common::{AgentLauncher, Bed, LogsOnPanic, Process, eventually};

const POD_PORT: u16 = 8080;
const MESH_ACCOUNT: &str = "netslo-agent";

async fn plugin(kubeconfig: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(workspace_binary("kubectl-netslo").unwrap())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .output()
        .await
        .unwrap()
}

fn said(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A network of its own behind `router` (a host on the bed), with one namespace in it at
/// `.2`: the router forwards between the bridge and it, and `via` routes to it through the
/// router. Returns the namespace and its address.
fn behind(router: &Netns, router_ip: &str, via: &Netns, net: &str) -> (Netns, String) {
    let pod = Netns::new("pod").unwrap();
    router
        .ip(&[
            "link",
            "add",
            "inner",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ])
        .unwrap();
    router
        .ip(&["addr", "add", &format!("{net}.1/24"), "dev", "inner"])
        .unwrap();
    router.ip(&["link", "set", "inner", "up"]).unwrap();
    router
        .exec(&["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
        .unwrap();
    pod.ip(&["addr", "add", &format!("{net}.2/24"), "dev", "eth0"])
        .unwrap();
    pod.ip(&["link", "set", "eth0", "up"]).unwrap();
    pod.ip(&["route", "add", "default", "via", &format!("{net}.1")])
        .unwrap();
    via.ip(&["route", "add", &format!("{net}.0/24"), "via", router_ip])
        .unwrap();
    (pod, format!("{net}.2"))
}

#[tokio::test]
async fn a_probe_from_a_node_names_the_failing_layer_and_the_last_hop() {
    testbed::require();
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
    let kubeconfig = plane.kubeconfig().to_path_buf();

    let bed = Bed::new(3);
    let (node_host, router, probe_pod_host) = (bed.host(0), bed.host(1), bed.host(2));
    let node_a = format!("{}-node-a", shop.name);
    let node_r = format!("{}-node-r", shop.name);
    let second = router.ip.octets()[1];
    let (pod_ns, pod_ip) = behind(
        &router.ns,
        &router.ip.to_string(),
        &node_host.ns,
        &format!("10.{second}.250"),
    );
    // The stand-in for a workload's probe pod reaches the pod network through the router too.
    probe_pod_host
        .ns
        .ip(&[
            "route",
            "add",
            &format!("10.{second}.250.0/24"),
            "via",
            &router.ip.to_string(),
        ])
        .unwrap();
    register_node(&client, &node_a, &node_host.ip.to_string(), "zone-a")
        .await
        .unwrap();
    register_node(&client, &node_r, &router.ip.to_string(), "zone-a")
        .await
        .unwrap();
    // A node without an agent.
    let node_x = format!("{}-node-x", shop.name);
    register_node(&client, &node_x, "192.0.2.10", "zone-a")
        .await
        .unwrap();
    let labels = BTreeMap::from([("app".to_string(), "api".to_string())]);
    register_pod(&client, &shop.name, "api-1", &labels, &node_r, &pod_ip)
        .await
        .unwrap();
    let mut processes = vec![Process::spawn(
        dir.path(),
        "api-1",
        Some(&pod_ns),
        &agent_bin,
        ["echo", "--echo-listen", &format!("{pod_ip}:{POD_PORT}")],
        &[],
    )];

    let channel = format!("{}:{}", bed.host_ip, bed.free_port());
    let admin = format!("127.0.0.1:{}", free_port());
    processes.push(Process::spawn(
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
            "--manage-mesh-agents=false",
        ],
        &[
            ("KUBECONFIG", kubeconfig.to_str().unwrap()),
            ("RUST_LOG", "info,netslo_operator=debug"),
            ("NO_COLOR", "1"),
        ],
    ));
    let ca_file =
        crate::operator_common::fetch_operator_ca(&client, &system.name, dir.path()).await;
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
    let agent_pod = register_mesh_agent(
        &client,
        &system.name,
        "netslo-agent-a",
        &node_a,
        &node_host.ip.to_string(),
        MESH_ACCOUNT,
    )
    .await
    .unwrap();
    processes.push(
        agents
            .start(&node_host.ns, &agent_pod, &node_a, &node_a, &[])
            .await
            .unwrap(),
    );
    let router_agent_pod = register_mesh_agent(
        &client,
        &system.name,
        "netslo-agent-r",
        &node_r,
        &router.ip.to_string(),
        MESH_ACCOUNT,
    )
    .await
    .unwrap();
    processes.push(
        agents
            .start(&router.ns, &router_agent_pod, &node_r, &node_r, &[])
            .await
            .unwrap(),
    );
    // A check from both nodes' agents to the pod, every second, for `matrix`.
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), &shop.name);
    let check: ConnectivityCheck = serde_json::from_value(serde_json::json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": "nodes-to-api"},
        "spec": {
            "source": {"mesh": {}},
            "targets": [{"name": "api", "pods": {"selector": {"matchLabels": {"app": "api"}}, "port": POD_PORT}, "protocol": "TCP"}],
            "schedule": {"interval": "1s", "timeout": "500ms"},
            "objectives": {"availability": {"target": "99"}},
        },
    }))
    .unwrap();
    checks.create(&PostParams::default(), &check).await.unwrap();

    let ns = shop.name.as_str();
    let from = format!("node/{node_a}");
    let to = format!("pod/api-1:{POD_PORT}");
    let probe = |extra: &'static [&'static str]| {
        let mut args = vec![
            "-n",
            ns,
            "probe",
            "--from",
            &from,
            "--to",
            &to,
            "--count",
            "2",
            "--attempt-timeout",
            "500ms",
            "--timeout",
            "90s",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = async |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        plugin(&kubeconfig, &args).await
    };

    // Open: both attempts connect; exit 0, each phase timed. (The first probe may come before
    // the agent has its first assignment: the operator plans it all the same.)
    let open = run(probe(&[])).await;
    assert_eq!(open.status.code(), Some(0), "{}", said(&open));
    let text = String::from_utf8_lossy(&open.stdout);
    assert!(
        text.contains(&format!("Pod {pod_ip}:{POD_PORT}")),
        "{}",
        said(&open)
    );
    assert!(text.contains("connect "), "{}", said(&open));
    assert!(
        text.contains("OK: 2 of 2 attempts succeeded"),
        "{}",
        said(&open)
    );

    // The router drops what it forwards to the pod: TCP times out, and the trace says the
    // router (the first hop) was the last to answer.
    let dropping = router
        .ns
        .iptables("FORWARD", &["-d", &pod_ip, "-j", "DROP"])
        .unwrap();
    let dropped = run(probe(&[])).await;
    assert_eq!(dropped.status.code(), Some(3), "{}", said(&dropped));
    let text = String::from_utf8_lossy(&dropped.stdout);
    for expected in [
        "TCPTimeout at TCP".to_owned(),
        format!(
            "path to {pod_ip}: silent after hop 1 ({}): a hop past it drops the traffic to {pod_ip}",
            router.ip
        ),
        "FAILED: 2 of 2 attempts failed".to_owned(),
        format!("next: kubectl get networkpolicy -n {ns}"),
        format!("next: # the hop after {} drops the traffic", router.ip),
    ] {
        assert!(
            text.contains(&expected),
            "{expected:?} missing:\n{}",
            said(&dropped)
        );
    }
    // The same answer as data, and the probe object deleted after (no --keep).
    let json_out = run(probe(&["-o", "json"])).await;
    assert_eq!(json_out.status.code(), Some(3), "{}", said(&json_out));
    let object: ConnectivityProbe = serde_json::from_slice(&json_out.stdout).unwrap();
    let status = object.status.unwrap();
    assert_eq!(status.attempts.len(), 2);
    assert_eq!(status.attempts[0].reason.as_deref(), Some("TCPTimeout"));
    let trace = status.trace.unwrap();
    assert_eq!(trace.end, "Silent");
    assert_eq!(
        trace.hops[0].address.as_deref(),
        Some(router.ip.to_string().as_str())
    );
    // matrix: node-a's cell to the pod fails (through the router), the router's own does
    // not (its traffic to the pod is not forwarded); exit 3 while a cell fails.
    let matrix_args = ["-n", ns, "matrix", "nodes-to-api"];
    let column = format!("[1] api Pod {pod_ip}:{POD_PORT}");
    let grid = eventually(
        "a grid with node-a failing",
        Duration::from_secs(90),
        async || {
            let out = plugin(&kubeconfig, &matrix_args).await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let row = |node: &str| {
                text.lines()
                    .find(|l| l.starts_with(&format!("{node} ")))
                    .map(str::to_owned)
            };
            match (out.status.code(), row(&node_a), row(&node_r)) {
                (Some(3), Some(a), Some(r)) if a.ends_with('✗') && !r.contains('✗') => Ok(text),
                _ => Err(said(&out)),
            }
        },
    )
    .await;
    assert!(grid.contains(&column), "{grid}");
    assert!(grid.contains("SOURCE NODE"), "{grid}");
    drop(dropping);
    let matrices: Api<ConnectivityMatrix> = Api::namespaced(client.clone(), ns);
    assert!(
        matrices
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the plugin deletes its matrix requests"
    );
    let probes: Api<ConnectivityProbe> = Api::namespaced(client.clone(), ns);
    assert!(
        probes
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the plugin deletes its probes"
    );

    // A caller who may not create ConnectivityProbes is refused by the API server (5); once
    // granted (a Role on connectivityprobes), the same caller's probe runs.
    let dev = "dev";
    ensure_service_account(&client, ns, dev).await.unwrap();
    let as_dev = format!("system:serviceaccount:{ns}:{dev}");
    let mut as_dev_args = probe(&[]);
    as_dev_args.extend(["--as".to_owned(), as_dev.clone()]);
    let denied = run(as_dev_args.clone()).await;
    assert_eq!(denied.status.code(), Some(5), "{}", said(&denied));
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("not allowed") && stderr.contains("connectivityprobes"),
        "{}",
        said(&denied)
    );
    grant_probes(&client, ns, dev).await;
    eventually(
        "the granted caller's probe",
        Duration::from_secs(30),
        async || {
            let out = run(as_dev_args.clone()).await;
            (out.status.code() == Some(0))
                .then_some(())
                .ok_or_else(|| said(&out))
        },
    )
    .await;

    // The operator refuses what the namespace is not granted (an external address without a
    // ConnectivityPolicy) and a node without an agent, without running anything.
    let ungranted = run(vec![
        "-n".into(),
        ns.into(),
        "probe".into(),
        "--from".into(),
        from.clone(),
        "--to".into(),
        "192.0.2.1:80".into(),
    ])
    .await;
    assert_eq!(ungranted.status.code(), Some(5), "{}", said(&ungranted));
    assert!(
        String::from_utf8_lossy(&ungranted.stdout).contains("ConnectivityPolicy"),
        "{}",
        said(&ungranted)
    );
    let nowhere = run(vec![
        "-n".into(),
        ns.into(),
        "probe".into(),
        "--from".into(),
        format!("node/{node_x}"),
        "--to".into(),
        to.clone(),
    ])
    .await;
    assert_eq!(nowhere.status.code(), Some(5), "{}", said(&nowhere));
    assert!(
        String::from_utf8_lossy(&nowhere.stdout)
            .contains(&format!("no netslo agent runs on node {node_x}")),
        "{}",
        said(&nowhere)
    );
    // From a workload's identity: a short-lived probe pod with the Deployment's labels and
    // service account. Nothing runs pods here, so the test plays the kubelet for the pod the
    // Deployment's ReplicaSet creates: it gives it an address and runs its agent.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let checkout: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "checkout"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "checkout"}},
            "template": {
                "metadata": {"labels": {"app": "checkout", "tier": "web"}},
                "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10.1"}]},
            },
        },
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &checkout)
        .await
        .unwrap();
    let from_workload = [
        "-n",
        ns,
        "probe",
        "--from",
        "deploy/checkout",
        "--to",
        &to,
        "--count",
        "1",
        "--attempt-timeout",
        "500ms",
        "--timeout",
        "150s",
    ];
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let play_the_kubelet = async {
        let pod = eventually("the probe pod", Duration::from_secs(60), async || {
            let listed = pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=workload-agent"))
                .await
                .map_err(|e| e.to_string())?;
            listed
                .items
                .into_iter()
                .next()
                .ok_or_else(|| "no probe pod yet".to_string())
        })
        .await;
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("checkout"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("web"));
        let name = pod.metadata.name.clone().unwrap();
        let pod = set_pod_ready(&client, ns, &name, &probe_pod_host.ip.to_string(), true)
            .await
            .unwrap();
        agents
            .start(&probe_pod_host.ns, &pod, &node_a, &name, &[])
            .await
            .unwrap()
    };
    let (as_workload, probe_pod_agent) =
        tokio::join!(plugin(&kubeconfig, &from_workload), play_the_kubelet);
    processes.push(probe_pod_agent);
    assert_eq!(as_workload.status.code(), Some(0), "{}", said(&as_workload));
    let text = String::from_utf8_lossy(&as_workload.stdout);
    assert!(
        text.starts_with(&format!(
            "probe from deploy/checkout to {to} (agent netslo-probe."
        )),
        "{}",
        said(&as_workload)
    );
    assert!(
        text.contains("OK: 1 of 1 attempts succeeded"),
        "{}",
        said(&as_workload)
    );
    // Its probe pods go with it.
    eventually("the probe pods gone", Duration::from_secs(60), async || {
        let left = deployments
            .list(&ListParams::default().labels("netslo.io/check"))
            .await
            .map_err(|e| e.to_string())?;
        left.items
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("{} probe Deployments left", left.items.len()))
    })
    .await;
    let missing = run(vec![
        "-n".into(),
        ns.into(),
        "probe".into(),
        "--from".into(),
        "deploy/nowhere".into(),
        "--to".into(),
        to.clone(),
    ])
    .await;
    assert_eq!(missing.status.code(), Some(5), "{}", said(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stdout)
            .contains(&format!("deployment nowhere not found in namespace {ns}")),
        "{}",
        said(&missing)
    );

    for p in &mut processes {
        assert!(
            p.running(),
            "a process died:\n{}",
            crate::netns_common::logs(dir.path(), 60)
        );
    }
}

/// A Role that lets `account` ask for probes in `namespace`, bound to it.
async fn grant_probes(client: &kube::Client, namespace: &str, account: &str) {
    let roles: Api<Role> = Api::namespaced(client.clone(), namespace);
    let meta = ObjectMeta {
        name: Some("netslo-prober".into()),
        ..ObjectMeta::default()
    };
    roles
        .create(
            &PostParams::default(),
            &Role {
                metadata: meta.clone(),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["netslo.io".into()]),
                    resources: Some(vec!["connectivityprobes".into()]),
                    verbs: vec!["create".into(), "get".into(), "delete".into()],
                    ..PolicyRule::default()
                }]),
            },
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    bindings
        .create(
            &PostParams::default(),
            &RoleBinding {
                metadata: meta,
                role_ref: RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "Role".into(),
                    name: "netslo-prober".into(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: account.into(),
                    namespace: Some(namespace.into()),
                    ..Subject::default()
                }]),
            },
        )
        .await
        .unwrap();
}
