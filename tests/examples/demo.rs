//! `just demo`: the whole product on one machine, in a few minutes.
//!
//! Builds a stand-in cluster from real parts:
//! * the real control plane (etcd, kube-apiserver, kube-controller-manager);
//! * three nodes in two zones, two `api` pods behind a Service, a cluster DNS server and an
//!   "external" web server, each a network namespace on one bridge (10.213.0.0/24), joined to
//!   the host by an uplink;
//! * the real `netslo-operator` on the host and a real `netslo-agent` in each node, plus a
//!   probe sidecar agent in each `api` pod for its metrics endpoint on localhost.
//!
//! It applies the checks in `config/samples/demo/`, shows them converge to Ready, then breaks
//! things with iptables and shows what netslo says:
//! 1. `api-2` stops answering: an Endpoint verdict;
//! 2. zone-b loses zone-a: a ZonePair verdict.
//!
//! After each fault it heals and shows the recovery. Everything it created goes on exit,
//! including on Ctrl-C: processes, namespaces, interfaces, iptables rules, files.
//!
//! `--keep` leaves the cluster running after the scenario and prints how to use kubectl
//! against it, until Ctrl-C. `--no-faults` skips the faults. Needs root, `ip` and `iptables`
//! (`just deps` installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a demo's setup failing is the demo failing

// The integration suite's stand-in nodes and processes; the demo needs only some of them.
#[allow(dead_code)]
#[path = "../tests/integration/netns_common.rs"]
mod netns_common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use netslo_agent::testbed::{self, DnsMode, Host, Topology, Uplink, dns_response};
use netslo_crds::v1alpha1::{ConnectivityCheck, FailureScope};
use netslo_tests::cluster::{
    ensure_service_account, register_mesh_agent, register_node, register_pod,
};
use netslo_tests::control_plane::{ControlPlane, StartOptions, install_crds, repo_root};
use netslo_tests::{free_port, free_port_on, workspace_binary};
use serde_json::json;
use tokio::signal::unix::{Signal, SignalKind, signal};

use netns_common::{AgentLauncher, Process};

const NAMESPACE: &str = "demo";
const SYSTEM: &str = "netslo-system";
const NET: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 254);
const POD_PORT: u16 = 8080;
const ADMIN_PORT: u16 = 9090;
/// Each api pod's metrics endpoint, on 127.0.0.1 only: container to container.
const METRICS_PORT: u16 = 9091;
/// The Service's ClusterIP, fixed so that the DNS check in the samples can expect it.
const API_CLUSTER_IP: &str = "10.96.100.10";
const MESH_ACCOUNT: &str = "netslo-agent";
/// The agents' echo responder port, where mesh peers probe each other.
const ECHO_PORT: u16 = 9476;

#[derive(Parser, Debug)]
#[command(name = "demo", about = "netslo on one machine")]
struct Args {
    /// Leave everything running after the scenario (until Ctrl-C) and print how to use it.
    #[arg(long)]
    keep: bool,
    /// Converge and stop: no faults.
    #[arg(long)]
    no_faults: bool,
}

/// Prints a step with the time since the start.
struct Narrator {
    start: Instant,
}

impl Narrator {
    fn step(&self, text: &str) {
        self.show(&format!(
            "\n[{:>5.1}s] ==> {text}\n",
            self.start.elapsed().as_secs_f64()
        ));
    }
    fn info(&self, text: &str) {
        self.show(&format!("           {text}\n"));
    }
    /// Writes as is. A closed stdout (the reader went away) must not stop the cleanup.
    fn show(&self, text: &str) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if !testbed::is_root() {
        eprintln!("demo: run as root (network namespaces and iptables)");
        return std::process::ExitCode::FAILURE;
    }
    for tool in ["ip", "iptables"] {
        if std::process::Command::new(tool).arg("-V").output().is_err() {
            eprintln!("demo: `{tool}` is missing: run `just deps`");
            return std::process::ExitCode::FAILURE;
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        let narrator = Narrator {
            start: Instant::now(),
        };
        let mut interrupts = match Interrupts::listen() {
            Ok(interrupts) => interrupts,
            Err(e) => {
                eprintln!("demo: cannot listen for Ctrl-C: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let mut cluster = None;
        let outcome = tokio::select! {
            result = scenario(&args, &narrator, &mut cluster) => result,
            () = interrupts.next() => Err("interrupted".to_owned()),
        };
        let code = match &outcome {
            Ok(()) if args.keep => {
                if let Some(c) = &cluster {
                    keep_running(&narrator, c, &mut interrupts).await;
                }
                std::process::ExitCode::SUCCESS
            }
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                narrator.step(&format!("stopping: {e}"));
                if let Some(c) = &cluster {
                    narrator.show(&netns_common::logs(&c.dir, 15));
                }
                std::process::ExitCode::FAILURE
            }
        };
        narrator.step("cleaning up");
        drop(cluster);
        narrator.info("processes, namespaces, interfaces, iptables rules and files removed");
        code
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// `--keep`: everything stays up until Ctrl-C (or SIGTERM).
async fn keep_running(n: &Narrator, c: &Cluster, interrupts: &mut Interrupts) {
    n.step("left running; Ctrl-C stops and removes everything");
    n.info(&format!(
        "export KUBECONFIG={}",
        c.plane.kubeconfig().display()
    ));
    if let Ok(bin) = netslo_tests::control_plane::binaries() {
        n.info(&format!("export PATH={}:$PATH   # kubectl", bin.display()));
    }
    n.info("kubectl get connectivitychecks -n demo -o wide");
    n.info("kubectl describe connectivitycheck -n demo api");
    n.info("kubectl get events -n demo");
    n.info(&format!(
        "logs of the operator and agents: {}",
        c.dir.display()
    ));
    interrupts.next().await;
}

/// Ctrl-C (SIGINT) and SIGTERM, listened for once, before anything starts. A listener only
/// hears signals that arrive after it was made: one made afresh for `--keep`'s wait would miss
/// a Ctrl-C sent the moment the last line was printed, and the demo would never end.
struct Interrupts {
    interrupt: Signal,
    terminate: Signal,
}

impl Interrupts {
    fn listen() -> std::io::Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// The next Ctrl-C or SIGTERM, or one that arrived since the last.
    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Everything the demo runs; dropping it stops and removes all of it (fields drop in order:
/// processes first, the network last).
struct Cluster {
    processes: Vec<Process>,
    _resolv_confs: ResolvConfs,
    plane: ControlPlane,
    _uplink: Uplink,
    topology: Topology,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// `/etc/netns/<namespace>/resolv.conf`, which `ip netns exec` mounts over /etc/resolv.conf
/// for processes it starts in that namespace: the nodes' resolver is the demo's cluster DNS.
struct ResolvConfs(Vec<PathBuf>);

impl Drop for ResolvConfs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Cluster {
    fn host(&self, i: usize) -> &Host {
        &self.topology.hosts[i]
    }
}

/// Nodes: (name, zone, host index).
const NODES: [(&str, &str, usize); 3] = [
    ("node-a", "zone-a", 0),
    ("node-b", "zone-b", 1),
    ("node-c", "zone-b", 2),
];
/// Pods behind the Service: (name, node, host index).
const PODS: [(&str, &str, usize); 2] = [("api-1", "node-a", 3), ("api-2", "node-b", 4)];
const DNS_HOST: usize = 5;
const EXTERNAL_HOST: usize = 6;

async fn scenario(args: &Args, n: &Narrator, cluster: &mut Option<Cluster>) -> Result<(), String> {
    n.step("building netslo-operator and netslo-agent");
    let operator_bin = workspace_binary("netslo-operator").map_err(|e| e.to_string())?;
    let agent_bin = workspace_binary("netslo-agent").map_err(|e| e.to_string())?;

    n.step("starting the control plane (etcd, kube-apiserver, kube-controller-manager)");
    let tmp = tempfile::Builder::new()
        .prefix("netslo-demo-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let dir = tmp.path().to_path_buf();
    let plane = ControlPlane::start(StartOptions {
        dir: Some(dir.join("control-plane")),
        detach: false,
    })
    .map_err(|e| format!("control plane: {e}"))?;
    install_crds(&plane).map_err(|e| format!("CRDs: {e}"))?;
    n.info(&format!("API server {}", plane.server_url()));

    n.step("building the network: 3 nodes in 2 zones, 2 pods, DNS, an external server");
    let topology = Topology::star_in(NET, 7).map_err(|e| format!("namespaces: {e}"))?;
    let uplink = topology
        .uplink(HOST_IP)
        .map_err(|e| format!("uplink: {e}"))?;
    let mut resolv = ResolvConfs(Vec::new());
    for (_, _, i) in NODES {
        let ns_dir = Path::new("/etc/netns").join(topology.hosts[i].ns.name());
        std::fs::create_dir_all(&ns_dir).map_err(|e| e.to_string())?;
        resolv.0.push(ns_dir.clone());
        std::fs::write(
            ns_dir.join("resolv.conf"),
            format!(
                "nameserver {}\nsearch demo.svc.cluster.local svc.cluster.local cluster.local\n",
                topology.hosts[DNS_HOST].ip
            ),
        )
        .map_err(|e| e.to_string())?;
    }
    *cluster = Some(Cluster {
        processes: Vec::new(),
        _resolv_confs: resolv,
        plane,
        _uplink: uplink,
        topology,
        dir,
        _tmp: tmp,
    });
    let c = cluster.as_mut().unwrap();
    let client = c.plane.client().await.map_err(|e| e.to_string())?;
    for ns in [NAMESPACE, SYSTEM] {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let object: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| format!("namespace {ns}: {e}"))?;
    }
    for (name, zone, i) in NODES {
        register_node(&client, name, &c.host(i).ip.to_string(), zone)
            .await
            .map_err(|e| e.to_string())?;
        n.info(&format!("{name} ({zone}) at {}", c.host(i).ip));
    }

    n.step("starting the workloads");
    let labels = BTreeMap::from([("app".to_string(), "api".to_string())]);
    let mut pod_labels = labels.clone();
    pod_labels.insert("netslo.io/probe-sidecar".into(), "true".into());
    let mut api_pods = Vec::new();
    for (pod, node, i) in PODS {
        let ip = c.host(i).ip;
        let registered = register_pod(&client, NAMESPACE, pod, &pod_labels, node, &ip.to_string())
            .await
            .map_err(|e| e.to_string())?;
        api_pods.push((registered, node, i));
        // The pod's metrics container: reachable on the pod's own loopback only.
        let metrics = Process::spawn(
            &c.dir,
            &format!("{pod}-metrics"),
            Some(&c.host(i).ns),
            &agent_bin,
            [
                "echo",
                "--echo-http-listen",
                &format!("127.0.0.1:{METRICS_PORT}"),
            ],
            &[],
        );
        c.processes.push(metrics);
        let process = Process::spawn(
            &c.dir,
            pod,
            Some(&c.host(i).ns),
            &agent_bin,
            [
                "echo",
                "--echo-listen",
                &format!("{ip}:{POD_PORT},{ip}:{ADMIN_PORT}"),
            ],
            &[],
        );
        c.processes.push(process);
        // A NetworkPolicy-style rule on the pod: its admin port refuses everyone. It lives in
        // the pod's namespace and goes with it.
        c.host(i)
            .ns
            .exec(&[
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "tcp",
                "--dport",
                &ADMIN_PORT.to_string(),
                "-j",
                "REJECT",
                "--reject-with",
                "tcp-reset",
            ])
            .map_err(|e| format!("iptables in {pod}: {e}"))?;
        n.info(&format!(
            "pod {pod} on {node} at {ip}:{POD_PORT} (admin port {ADMIN_PORT} blocked, metrics on 127.0.0.1:{METRICS_PORT})"
        ));
    }
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "api"},
        "spec": {"selector": labels, "clusterIP": API_CLUSTER_IP,
                 "ports": [{"name": "http", "port": 80, "targetPort": POD_PORT, "protocol": "TCP"}]},
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &service)
        .await
        .map_err(|e| format!("Service api: {e}"))?;
    n.info(&format!(
        "Service api at {API_CLUSTER_IP}:80 (endpoints from the real kube-controller-manager)"
    ));
    let dns_ip = c.host(DNS_HOST).ip;
    let dns_socket = c
        .host(DNS_HOST)
        .ns
        .enter(|| {
            let s = std::net::UdpSocket::bind((dns_ip, 53))?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .map_err(|e| format!("DNS socket: {e}"))?;
    tokio::spawn(cluster_dns(
        tokio::net::UdpSocket::from_std(dns_socket).map_err(|e| e.to_string())?,
    ));
    n.info(&format!(
        "cluster DNS at {dns_ip}: api.demo.svc.cluster.local -> {API_CLUSTER_IP}"
    ));
    let external_ip = c.host(EXTERNAL_HOST).ip;
    let external = Process::spawn(
        &c.dir,
        "external",
        Some(&c.host(EXTERNAL_HOST).ns),
        &agent_bin,
        [
            "echo",
            "--echo-http-listen",
            &format!("{external_ip}:{POD_PORT}"),
        ],
        &[],
    );
    c.processes.push(external);
    n.info(&format!(
        "external partner API at http://{external_ip}:{POD_PORT}/"
    ));

    n.step("starting netslo-operator on the host");
    let channel = format!("{HOST_IP}:{}", free_port_on(HOST_IP));
    let admin = format!("127.0.0.1:{}", free_port());
    let kubeconfig = c.plane.kubeconfig().to_str().unwrap().to_owned();
    let operator = Process::spawn(
        &c.dir,
        "operator",
        None,
        &operator_bin,
        [
            "--namespace",
            SYSTEM,
            "--pod-name",
            "netslo-operator-demo",
            "--channel-addr",
            &channel,
            "--channel-names",
            &HOST_IP.to_string(),
            "--admin-addr",
            &admin,
            "--agent-service-account",
            MESH_ACCOUNT,
            // The node agents are this demo's processes, not a DaemonSet (no kubelet here).
            "--manage-mesh-agents=false",
            "--persist-interval-seconds",
            "1",
        ],
        &[
            ("KUBECONFIG", kubeconfig.as_str()),
            ("RUST_LOG", "info"),
            ("NO_COLOR", "1"),
        ],
    );
    c.processes.push(operator);
    let ca = operator_ca(&client).await?;
    let ca_file = c.dir.join("operator-ca.crt");
    std::fs::write(&ca_file, ca).map_err(|e| e.to_string())?;
    let operator_url = format!("https://{channel}");
    let dir = c.dir.clone();
    let agents = AgentLauncher {
        client: &client,
        dir: &dir,
        agent_bin: &agent_bin,
        operator_url: &operator_url,
        ca_file: &ca_file,
    };

    n.step("starting a netslo-agent in each node");
    ensure_service_account(&client, SYSTEM, MESH_ACCOUNT)
        .await
        .map_err(|e| e.to_string())?;
    for (name, _, i) in NODES {
        let ip = c.host(i).ip;
        let pod = register_mesh_agent(
            &client,
            SYSTEM,
            &format!("netslo-agent-{name}"),
            name,
            &ip.to_string(),
            MESH_ACCOUNT,
        )
        .await
        .map_err(|e| e.to_string())?;
        let agent = agents
            .start(
                &c.host(i).ns,
                &pod,
                name,
                name,
                &["--echo-listen", &format!("0.0.0.0:{ECHO_PORT}")],
            )
            .await?;
        c.processes.push(agent);
        n.info(&format!("agent on {name}"));
    }

    n.step("starting the probe sidecar in each api pod (container to container)");
    for (pod, node, i) in &api_pods {
        let name = pod.name_any();
        let sidecar = agents
            .start(
                &c.host(*i).ns,
                pod,
                node,
                &format!("{NAMESPACE}/{name}"),
                &[],
            )
            .await?;
        c.processes.push(sidecar);
        n.info(&format!("probe sidecar in {name}, as {NAMESPACE}/{name}"));
    }

    n.step("kubectl apply -n demo -f config/samples/demo/");
    let applied = kubectl(
        &c.plane,
        &[
            "apply",
            "-n",
            NAMESPACE,
            "-f",
            repo_root().join("config/samples/demo").to_str().unwrap(),
        ],
    )?;
    n.show(&applied);

    n.step("waiting for every check to be Ready (the shortest alert window needs data)");
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for(
        n,
        "every check Ready",
        Duration::from_secs(240),
        async || {
            let list = checks.list(&Default::default()).await.ok()?;
            let ready = list.items.iter().filter(|c| is_ready(c)).count();
            let line = list
                .items
                .iter()
                .map(|c| format!("{}={}", c.name_any(), ready_reason(c)))
                .collect::<Vec<_>>()
                .join("  ");
            Some(
                (ready == list.items.len() && !list.items.is_empty())
                    .then_some(())
                    .ok_or(line),
            )
        },
    )
    .await?;
    n.step("all checks Ready");
    n.show(&kubectl(
        &c.plane,
        &["get", "connectivitychecks", "-n", NAMESPACE],
    )?);

    if !args.no_faults {
        // Fault 1: api-2 drops what arrives on its port, as a crashed or firewalled pod would.
        n.step("fault 1: pod api-2 stops answering (iptables DROP on its port)");
        let api_2 = c.host(PODS[1].2);
        let drop_api_2 = api_2
            .ns
            .iptables(
                "INPUT",
                &["-p", "tcp", "--dport", &POD_PORT.to_string(), "-j", "DROP"],
            )
            .map_err(|e| e.to_string())?;
        let verdict = wait_for_verdict(n, &checks, "api", FailureScope::Endpoint).await?;
        n.step(&format!("Endpoint verdict: {verdict}"));
        n.show(&kubectl(
            &c.plane,
            &["get", "connectivitychecks", "-n", NAMESPACE],
        )?);
        n.show(&kubectl(
            &c.plane,
            &["describe", "connectivitycheck", "-n", NAMESPACE, "api"],
        )?);
        n.step("healing fault 1");
        drop_api_2.remove().map_err(|e| e.to_string())?;
        wait_for_no_verdict(n, &checks, "api").await?;
        n.step("recovered: the verdict on api is gone");

        // Fault 2: zone-b's nodes lose zone-a (a firewall or a broken route between zones).
        n.step("fault 2: zone-b loses reachability to zone-a (iptables DROP on zone-b's nodes)");
        let zone_a: Vec<Ipv4Addr> = [NODES[0].2, PODS[0].2]
            .iter()
            .map(|&i| c.host(i).ip)
            .collect();
        let mut rules = Vec::new();
        for (_, zone, i) in NODES {
            if zone != "zone-b" {
                continue;
            }
            for ip in &zone_a {
                rules.push(
                    c.host(i)
                        .ns
                        .iptables(
                            "OUTPUT",
                            &["-d", &ip.to_string(), "-p", "tcp", "-j", "DROP"],
                        )
                        .map_err(|e| e.to_string())?,
                );
            }
        }
        let verdict = wait_for_verdict(n, &checks, "api", FailureScope::ZonePair).await?;
        n.step(&format!("ZonePair verdict: {verdict}"));
        n.show(&kubectl(
            &c.plane,
            &["get", "connectivitychecks", "-n", NAMESPACE],
        )?);
        n.show(&kubectl(
            &c.plane,
            &[
                "get",
                "events",
                "-n",
                NAMESPACE,
                "--sort-by=.metadata.creationTimestamp",
            ],
        )?);
        n.step("healing fault 2");
        for rule in rules {
            rule.remove().map_err(|e| e.to_string())?;
        }
        wait_for_no_verdict(n, &checks, "api").await?;
        n.step("recovered: no verdict left");
        n.show(&kubectl(
            &c.plane,
            &["get", "connectivitychecks", "-n", NAMESPACE],
        )?);
        n.info("Ready turns True again once each SLI is back above its target: the faults spent");
        n.info("error budget, and SLOMet says how much is left (kubectl describe).");
    }

    Ok(())
}

/// The demo's cluster DNS: the Service's name resolves to its ClusterIP, every other name in
/// the cluster domain is NXDOMAIN.
async fn cluster_dns(socket: tokio::net::UdpSocket) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((len, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let query = &buf[..len];
        let mode = match question_name(query).as_deref() {
            Some("api.demo.svc.cluster.local") => DnsMode::Answer(API_CLUSTER_IP.parse().unwrap()),
            _ => DnsMode::NxDomain,
        };
        if let Some(response) = dns_response(query, mode) {
            let _ = socket.send_to(&response, peer).await;
        }
    }
}

/// The question's name of a DNS query, lower case, without the trailing dot.
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
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    Some(labels.join("."))
}

async fn operator_ca(client: &Client) -> Result<String, String> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(cm)) = config_maps.get_opt("netslo-operator-ca").await
            && let Some(ca) = cm.data.and_then(|d| d.get("ca.crt").cloned())
        {
            return Ok(ca);
        }
        if Instant::now() > deadline {
            return Err("the operator did not publish its CA within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn kubectl(plane: &ControlPlane, args: &[&str]) -> Result<String, String> {
    let out = plane
        .kubectl()
        .map_err(|e| e.to_string())?
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ready_reason(check: &ConnectivityCheck) -> String {
    check
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map_or_else(|| "-".into(), |c| format!("{}({})", c.status, c.reason))
}

fn is_ready(check: &ConnectivityCheck) -> bool {
    check
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Polls until `probe` gives `Ok`, printing what it sees when that changes.
async fn wait_for(
    n: &Narrator,
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<Result<(), String>>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match probe().await {
            Some(Ok(())) => return Ok(()),
            Some(Err(seen)) if seen != last => {
                n.info(&seen);
                last = seen;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn wait_for_verdict(
    n: &Narrator,
    checks: &Api<ConnectivityCheck>,
    name: &str,
    scope: FailureScope,
) -> Result<String, String> {
    let mut summary = String::new();
    wait_for(
        n,
        &format!("a {scope:?} verdict on {name}"),
        Duration::from_secs(90),
        async || {
            let check = checks.get(name).await.ok()?;
            let verdict = check.status.as_ref()?.verdict.clone();
            match verdict {
                Some(v) if v.scope == scope => {
                    summary = v.summary.clone();
                    Some(Ok(()))
                }
                Some(v) => Some(Err(format!("{name}: {}", v.summary))),
                None => Some(Err(format!("{name}: {}", ready_reason(&check)))),
            }
        },
    )
    .await?;
    Ok(summary)
}

async fn wait_for_no_verdict(
    n: &Narrator,
    checks: &Api<ConnectivityCheck>,
    name: &str,
) -> Result<(), String> {
    wait_for(
        n,
        &format!("the verdict on {name} to clear"),
        Duration::from_secs(120),
        async || {
            let check = checks.get(name).await.ok()?;
            match &check.status.as_ref()?.verdict {
                None => Some(Ok(())),
                Some(v) => Some(Err(format!("{name}: {}", v.summary))),
            }
        },
    )
    .await
}
