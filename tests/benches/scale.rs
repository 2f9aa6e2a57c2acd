//! The operator at cluster sizes: thousands of stand-in Nodes and agent Pods on a real control
//! plane (no kubelets), and this process playing every agent over the real channel: real TLS,
//! pod-bound service-account tokens the operator checks with TokenReview, each agent's
//! assignments and results on its one framed channel, and result batches built by the agent's own aggregator from plausible probe
//! results (mostly good; one node cut off both ways; about 1% of pairs losing a probe now and
//! then). The operator is the release binary, in a process of its own, so its memory and CPU
//! are its own.
//!
//! The checks: one mesh over every node (16 peers per round) and, per pool of 50 nodes,
//! alternately a pool mesh (4 peers) and a Service check (3 pods behind a ClusterIP Service)
//! probed from the pool's nodes.
//!
//! Prints `name: value unit` lines per size (`scale_<nodes>n_<checks>c_<figure>`), measured over
//! a steady span after every agent has its assignment and every check a status. API server
//! requests are counted from the API server's own `apiserver_request_total`, less the idle
//! rate of the same plane measured before the operator started (the reference).
//!
//! Sizes: `NETSLO_SCALE_SIZES` (default `500x100,500x1000,2000x100,2000x1000,5000x100,5000x1000`,
//! nodes x checks); steady span `NETSLO_SCALE_STEADY_SECONDS` (default 60); another operator
//! build to compare: `NETSLO_SCALE_OPERATOR_BIN`; more operator flags:
//! `NETSLO_SCALE_OPERATOR_ARGS` (`--channel-upgrade=false` measures agents on HTTP requests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark reports on stdout

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use netslo_agent::engine::{Engine, EngineConfig, Jobs};
use netslo_agent::report::{Reporter, ReporterConfig};
use netslo_agent::verdict::{FailureReason, Layer, Outcome, Phases, ProbeResult};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::cluster::{
    create_service, ensure_service_account, pod_bound_token, register_mesh_agent, register_pod,
};
use netslo_tests::control_plane::{ControlPlane, StartOptions, install_crds};
use netslo_tests::{free_port, workspace_binary};
use serde_json::json;
use tokio::sync::watch;

const SYSTEM: &str = "netslo-system";
const CHECKS: &str = "scale";
const AGENT_ACCOUNT: &str = "netslo-agent";
const POOL_LABEL: &str = "scale.netslo.io/pool";
const POOL_NODES: usize = 50;
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];
/// The agents' aggregation window and the checks' probe interval (the defaults).
const WINDOW: Duration = Duration::from_secs(10);
/// The node whose agent is cut off both ways: every probe from or to it fails.
const CUT_OFF: usize = 7;
/// The spec change whose propagation is timed: the cluster mesh's probe timeout.
const CHANGED_TIMEOUT: Duration = Duration::from_millis(1_234);
/// Requests in flight while the harness registers objects.
const SETUP_CONCURRENCY: usize = 32;

#[derive(Debug, Clone, Copy)]
struct Size {
    nodes: usize,
    checks: usize,
}

fn sizes() -> Vec<Size> {
    let spec = std::env::var("NETSLO_SCALE_SIZES")
        .unwrap_or_else(|_| "500x100,500x1000,2000x100,2000x1000,5000x100,5000x1000".into());
    spec.split(',')
        .map(|s| {
            let (nodes, checks) = s
                .trim()
                .split_once('x')
                .unwrap_or_else(|| panic!("NETSLO_SCALE_SIZES: {s:?} is not NODESxCHECKS"));
            Size {
                nodes: nodes.parse().expect("node count"),
                checks: checks.parse().expect("check count"),
            }
        })
        .collect()
}

fn steady_span() -> Duration {
    Duration::from_secs(
        std::env::var("NETSLO_SCALE_STEADY_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    )
}

fn node_name(i: usize) -> String {
    format!("node-{i:05}")
}

fn node_ip(i: usize) -> String {
    format!("10.100.{}.{}", i / 250, i % 250 + 1)
}

fn agent_name(i: usize) -> String {
    format!("agent-{i:05}")
}

fn pool_of(node: usize) -> usize {
    node / POOL_NODES
}

fn main() {
    // Every agent holds a connection to the operator (two on HTTP requests), and so does the
    // operator: both inherit this limit.
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("file limit");
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
        .expect("raise the file limit");
    let operator_bin = std::env::var_os("NETSLO_SCALE_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_binary("netslo-operator").expect("operator binary"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for size in sizes() {
        assert!(
            (hard as usize) > 3 * size.nodes + 1_000,
            "{} nodes need a file limit above {}; the hard limit is {hard}",
            size.nodes,
            3 * size.nodes + 1_000
        );
        // A plane per size: nothing of one size stays behind for the next.
        let plane = ControlPlane::start(StartOptions::default()).expect("control plane");
        install_crds(&plane).expect("CRDs");
        let figures = runtime.block_on(run(size, &plane, &operator_bin));
        let prefix = format!("scale_{}n_{}c", size.nodes, size.checks);
        for (name, value, unit) in figures {
            println!("{prefix}_{name}: {value} {unit}");
        }
        drop(plane);
    }
}

/// One figure: name, value (formatted), unit.
type Figure = (&'static str, String, &'static str);

async fn run(size: Size, plane: &ControlPlane, operator_bin: &Path) -> Vec<Figure> {
    let client = plane.client().await.unwrap();
    // Kept after the run (the operator's log, the agents' tokens) for a look at what it did.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || netslo_tests::control_plane::repo_root().join("target"),
            PathBuf::from,
        )
        .join(format!("scale/{}x{}", size.nodes, size.checks));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let setup_started = Instant::now();
    for ns in [SYSTEM, CHECKS] {
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let object = serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }
    ensure_service_account(&client, SYSTEM, AGENT_ACCOUNT)
        .await
        .unwrap();
    register_nodes(&client, size.nodes).await;
    let tokens = register_agents(&client, size.nodes, &dir).await;
    let pools = size.nodes.div_ceil(POOL_NODES);
    register_services(&client, size, pools).await;
    let setup_s = setup_started.elapsed().as_secs_f64();
    eprintln!(
        "scale {}x{}: cluster objects registered in {setup_s:.0} s",
        size.nodes, size.checks
    );

    // The reference: the plane's own request rate with nobody else talking to it, once the
    // controller manager has caught up with the registrations.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let idle = ApiCounters::read(&client).await;
    let idle_span = Duration::from_secs(20);
    tokio::time::sleep(idle_span).await;
    let idle_rate = ApiCounters::read(&client).await.since(&idle).all / idle_span.as_secs_f64();

    let channel_port = free_port();
    let mut operator = Operator::start(plane, operator_bin, channel_port, &dir);
    let ca_file = fetch_ca(&client, &dir).await;
    // What the operator holds before any agent or check: its caches of the cluster.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_idle = operator.rss_mib("VmRSS:");
    let started = Instant::now();
    let agents: Vec<Arc<SimAgent>> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, token)| SimAgent::start(i, channel_port, &ca_file, token))
        .collect();
    create_checks(&client, size, pools).await;

    // Every agent assigned, every check with a status of its spec.
    let assigned = wait_until(Duration::from_secs(600), || {
        agents.iter().all(|a| a.assigned.load(Ordering::Relaxed))
    })
    .await;
    let all_assigned_s = started.elapsed().as_secs_f64();
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), CHECKS);
    let statused = wait_for_statuses(&checks, size.checks, Duration::from_secs(600)).await;
    let all_status_s = started.elapsed().as_secs_f64();
    assert!(
        assigned && statused,
        "{}x{}: agents assigned {assigned}, checks with status {statused}; operator log:\n{}",
        size.nodes,
        size.checks,
        operator.log_tail()
    );
    // Results flowing for a while before the span (the first minute fills the windows), and
    // what the agents kept while they connected sent: a span that starts while thousands of
    // agents resend their backlog measures the catching up, not the steady state.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let drained = wait_until(Duration::from_secs(300), || {
        let pending: usize = agents.iter().map(|a| a.reporter.pending()).sum();
        let per_window: usize = agents
            .iter()
            .map(|a| a.buckets_per_window.load(Ordering::Relaxed))
            .sum();
        pending <= 2 * per_window
    })
    .await;
    assert!(
        drained,
        "the agents' backlog did not drain within 5 minutes"
    );

    let span = steady_span();
    let before = Snapshot::take(&client, &operator, &agents).await;
    tokio::time::sleep(span).await;
    let after = Snapshot::take(&client, &operator, &agents).await;
    let secs = span.as_secs_f64();
    let api = after.api.since(&before.api);
    let cpu = (after.operator_cpu_s - before.operator_cpu_s) / secs;
    let harness_cpu = (after.harness_cpu_s - before.harness_cpu_s) / secs;
    let ingested = (after.results.accepted - before.results.accepted) as f64 / secs;
    let refused = after.results.refused - before.results.refused;
    let failed_sends = after.results.failed_sends - before.results.failed_sends;

    // A spec change: how long until every agent of the cluster mesh probes with it.
    let changed_at = Instant::now();
    change_mesh_timeout(&checks).await;
    wait_until(Duration::from_secs(300), || {
        agents.iter().all(|a| a.changed_after().is_some())
    })
    .await;
    let mut propagation: Vec<f64> = agents
        .iter()
        .filter_map(|a| a.changed_after())
        .map(|t| t.saturating_duration_since(changed_at).as_secs_f64())
        .collect();
    propagation.sort_by(f64::total_cmp);
    let missing = agents.len() - propagation.len();

    let mesh = checks.get("check-0000").await.unwrap();
    let coverage = mesh.status.as_ref().and_then(|s| s.mesh.clone());
    let peak_rss = operator.peak_rss_mib();
    let exited = operator.exited();
    for agent in &agents {
        agent.stop();
    }
    operator.stop();
    assert!(exited.is_none(), "the operator exited: {exited:?}");

    let quantile = |q: f64| -> String {
        if propagation.is_empty() {
            return "none".into();
        }
        let i = ((propagation.len() as f64 - 1.0) * q).round() as usize;
        format!("{:.1}", propagation[i])
    };
    let rotation = coverage
        .as_ref()
        .map_or("none".into(), |c| c.rotation_period.clone());
    let covered = coverage
        .as_ref()
        .and_then(|c| c.pairs_covered.clone())
        .unwrap_or_else(|| "none".into());
    vec![
        ("setup", format!("{setup_s:.0}"), "s"),
        (
            "all_agents_assigned_after",
            format!("{all_assigned_s:.1}"),
            "s",
        ),
        (
            "all_checks_with_status_after",
            format!("{all_status_s:.1}"),
            "s",
        ),
        (
            "operator_rss_before_agents",
            format!("{rss_idle:.1}"),
            "MiB",
        ),
        ("operator_rss_peak", format!("{peak_rss:.1}"), "MiB"),
        (
            "operator_rss_steady",
            format!("{:.1}", after.operator_rss_mib),
            "MiB",
        ),
        ("operator_cpu", format!("{cpu:.3}"), "cores"),
        ("harness_cpu", format!("{harness_cpu:.3}"), "cores"),
        ("results_ingested", format!("{ingested:.0}"), "buckets/s"),
        ("results_refused", refused.to_string(), "buckets"),
        ("result_sends_failed", failed_sends.to_string(), "batches"),
        ("assignment_propagation_p50", quantile(0.5), "s"),
        ("assignment_propagation_p99", quantile(0.99), "s"),
        (
            "assignment_propagation_missing",
            missing.to_string(),
            "agents",
        ),
        ("api_requests", format!("{:.2}", api.all / secs), "req/s"),
        (
            "api_requests_idle_reference",
            format!("{idle_rate:.2}"),
            "req/s",
        ),
        (
            "api_requests_over_idle",
            format!("{:.2}", (api.all / secs - idle_rate).max(0.0)),
            "req/s",
        ),
        (
            "status_writes",
            format!("{:.2}", api.status_writes / secs),
            "writes/s",
        ),
        (
            "token_reviews",
            format!("{:.2}", api.token_reviews / secs),
            "req/s",
        ),
        ("mesh_rotation_period", rotation, "period"),
        ("mesh_pairs_covered", covered, "fraction"),
    ]
}

/// Nodes in three zones and pools of [`POOL_NODES`], Ready, with an InternalIP.
async fn register_nodes(client: &Client, n: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    stream::iter(0..n)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = node_name(i);
                let node = json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {
                        "kubernetes.io/hostname": name,
                        "topology.kubernetes.io/zone": ZONES[i % ZONES.len()],
                        POOL_LABEL: format!("p{}", pool_of(i)),
                    }},
                });
                let params = PatchParams::apply("netslo-scale").force();
                nodes.patch(&name, &params, &Patch::Apply(&node)).await?;
                let status = json!({
                    "apiVersion": "v1", "kind": "Node",
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": node_ip(i)}],
                        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
                    },
                });
                nodes
                    .patch_status(&name, &params, &Patch::Apply(&status))
                    .await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .for_each(|r| async move {
            r.expect("register a node");
        })
        .await;
}

/// One host-network agent pod per node, and a token bound to each (what a projected token
/// volume gives the real pod), written to `dir`.
async fn register_agents(client: &Client, n: usize, dir: &Path) -> Vec<PathBuf> {
    let mut tokens: Vec<(usize, PathBuf)> = stream::iter(0..n)
        .map(|i| {
            let client = client.clone();
            let path = dir.join(format!("{}.token", agent_name(i)));
            async move {
                let pod = register_mesh_agent(
                    &client,
                    SYSTEM,
                    &agent_name(i),
                    &node_name(i),
                    &node_ip(i),
                    AGENT_ACCOUNT,
                )
                .await
                .expect("register an agent pod");
                let token = pod_bound_token(&client, &pod, "netslo", 7_200)
                    .await
                    .expect("agent token");
                std::fs::write(&path, token).unwrap();
                (i, path)
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    tokens.sort();
    tokens.into_iter().map(|(_, path)| path).collect()
}

/// Whether check `j` is a Service check (the others are meshes).
fn is_service_check(j: usize) -> bool {
    j % 2 == 1
}

/// For each Service check, a Service selecting three Ready pods on its pool's nodes.
async fn register_services(client: &Client, size: Size, pools: usize) {
    stream::iter((1..size.checks).filter(|j| is_service_check(*j)))
        .map(|j| {
            let client = client.clone();
            async move {
                let app = format!("svc-{j:04}");
                let labels = BTreeMap::from([("app".to_string(), app.clone())]);
                create_service(&client, CHECKS, &app, &labels, "http", 80, 8080).await?;
                let pool = j % pools;
                for r in 0..3 {
                    let node = (pool * POOL_NODES + r).min(size.nodes - 1);
                    let p = j * 3 + r;
                    let ip = format!("10.240.{}.{}", p / 250, p % 250 + 1);
                    register_pod(
                        &client,
                        CHECKS,
                        &format!("{app}-{r}"),
                        &labels,
                        &node_name(node),
                        &ip,
                    )
                    .await?;
                }
                Ok::<_, netslo_tests::Error>(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .for_each(|r| async move {
            r.expect("register a Service and its pods");
        })
        .await;
}

fn check_spec(j: usize, pools: usize) -> serde_json::Value {
    let pool = json!({"matchLabels": {POOL_LABEL: format!("p{}", j % pools)}});
    let objectives =
        json!({"availability": {"target": "99"}, "latency": {"threshold": "50ms", "target": "99"}});
    if j == 0 {
        json!({"source": {"mesh": {}}, "targets": [{"name": "peers", "mesh": {}}],
               "objectives": objectives})
    } else if is_service_check(j) {
        json!({"source": {"mesh": {"nodeSelector": pool}},
               "targets": [{"name": "api", "service": {"name": format!("svc-{j:04}"), "port": 80}}],
               "objectives": objectives})
    } else {
        json!({"source": {"mesh": {"nodeSelector": pool}},
               "targets": [{"name": "peers", "mesh": {"peersPerAgent": 4, "nodeSelector": pool}}],
               "objectives": objectives})
    }
}

async fn create_checks(client: &Client, size: Size, pools: usize) {
    let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), CHECKS);
    stream::iter(0..size.checks)
        .map(|j| {
            let checks = checks.clone();
            async move {
                let check: ConnectivityCheck = serde_json::from_value(json!({
                    "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
                    "metadata": {"name": format!("check-{j:04}")},
                    "spec": check_spec(j, pools),
                }))
                .unwrap();
                checks.create(&PostParams::default(), &check).await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .for_each(|r| async move {
            r.expect("create a check");
        })
        .await;
}

async fn change_mesh_timeout(checks: &Api<ConnectivityCheck>) {
    let patch =
        json!({"spec": {"schedule": {"timeout": format!("{}ms", CHANGED_TIMEOUT.as_millis())}}});
    checks
        .patch("check-0000", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Whether `count` checks all have a status of their current generation, polled.
async fn wait_for_statuses(checks: &Api<ConnectivityCheck>, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(list) = checks.list(&ListParams::default()).await {
            let done = list
                .items
                .iter()
                .filter(|c| {
                    c.status
                        .as_ref()
                        .is_some_and(|s| s.observed_generation == c.metadata.generation)
                })
                .count();
            if done >= count {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    false
}

async fn wait_until(limit: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

async fn fetch_ca(client: &Client, dir: &Path) -> PathBuf {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(cm)) = config_maps.get_opt("netslo-operator-ca").await
            && let Some(ca) = cm.data.and_then(|d| d.get("ca.crt").cloned())
        {
            let path = dir.join("ca.crt");
            std::fs::write(&path, ca).unwrap();
            return path;
        }
        assert!(Instant::now() < deadline, "the operator published no CA");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The operator, the release binary, in a process of its own.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(plane: &ControlPlane, bin: &Path, channel_port: u16, dir: &Path) -> Self {
        let log = dir.join("operator.log");
        let child = Command::new(bin)
            .env("KUBECONFIG", plane.kubeconfig())
            // Each flush, reconcile and planning pass with its duration.
            .env(
                "RUST_LOG",
                "info,netslo_operator::persist=debug,netslo_operator::controller=debug",
            )
            .env("NO_COLOR", "1")
            // As config/default/operator.yaml runs it.
            .env("MIMALLOC_PURGE_DELAY", "0")
            .args(["--namespace", SYSTEM, "--watch-namespace", CHECKS])
            .args(["--pod-name", "netslo-operator"])
            .args(["--channel-addr", &format!("127.0.0.1:{channel_port}")])
            .args(["--channel-names", "127.0.0.1"])
            .args(["--admin-addr", &format!("127.0.0.1:{}", free_port())])
            .args(["--agent-service-account", AGENT_ACCOUNT])
            // The agents are this process's.
            .args(["--manage-mesh-agents=false"])
            .args(
                std::env::var("NETSLO_SCALE_OPERATOR_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the operator");
        Operator { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn cpu_seconds(&self) -> f64 {
        cpu_seconds(&format!("/proc/{}/stat", self.pid()))
    }

    fn rss_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }

    fn peak_rss_mib(&self) -> f64 {
        self.rss_mib("VmHWM:")
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User plus system CPU seconds of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line (12 and 13 after the name), in
    // USER_HZ, which Linux fixes at 100 for user space.
    (ticks(11) + ticks(12)) / 100.0
}

/// The API server's request counters.
#[derive(Debug, Default, Clone, Copy)]
struct ApiCounters {
    all: f64,
    status_writes: f64,
    /// The operator's checks of agent tokens.
    token_reviews: f64,
}

impl ApiCounters {
    async fn read(client: &Client) -> Self {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = client
            .request_text(request)
            .await
            .expect("API server metrics");
        let mut counters = ApiCounters::default();
        for line in text
            .lines()
            .filter(|l| l.starts_with("apiserver_request_total{"))
        {
            let Some(value) = line
                .rsplit_once(' ')
                .and_then(|(_, v)| v.parse::<f64>().ok())
            else {
                continue;
            };
            counters.all += value;
            let status_write = line.contains("resource=\"connectivitychecks\"")
                && line.contains("subresource=\"status\"")
                && ["APPLY", "PATCH", "UPDATE"]
                    .iter()
                    .any(|verb| line.contains(&format!("verb=\"{verb}\"")));
            if status_write {
                counters.status_writes += value;
            }
            if line.contains("resource=\"tokenreviews\"") {
                counters.token_reviews += value;
            }
        }
        counters
    }

    fn since(&self, earlier: &ApiCounters) -> ApiCounters {
        ApiCounters {
            all: self.all - earlier.all,
            status_writes: self.status_writes - earlier.status_writes,
            token_reviews: self.token_reviews - earlier.token_reviews,
        }
    }
}

/// What the span's figures are differences of.
struct Snapshot {
    api: ApiCounters,
    operator_cpu_s: f64,
    operator_rss_mib: f64,
    harness_cpu_s: f64,
    results: ResultCounts,
}

/// The agents' result counters, summed.
#[derive(Debug, Default, Clone, Copy)]
struct ResultCounts {
    accepted: u64,
    refused: u64,
    failed_sends: u64,
}

impl ResultCounts {
    fn of(agents: &[Arc<SimAgent>]) -> Self {
        agents.iter().fold(ResultCounts::default(), |sum, a| {
            let stats = a.reporter.stats();
            ResultCounts {
                accepted: sum.accepted + stats.buckets_accepted.load(Ordering::Relaxed),
                refused: sum.refused
                    + stats.buckets_refused.load(Ordering::Relaxed)
                    + stats.buckets_rejected.load(Ordering::Relaxed),
                failed_sends: sum.failed_sends
                    + stats.send_errors.load(Ordering::Relaxed)
                    + stats.channel_errors.load(Ordering::Relaxed),
            }
        })
    }
}

impl Snapshot {
    async fn take(client: &Client, operator: &Operator, agents: &[Arc<SimAgent>]) -> Self {
        Snapshot {
            api: ApiCounters::read(client).await,
            operator_cpu_s: operator.cpu_seconds(),
            operator_rss_mib: operator.rss_mib("VmRSS:"),
            harness_cpu_s: cpu_seconds("/proc/self/stat"),
            results: ResultCounts::of(agents),
        }
    }
}

/// One agent as the operator sees it: the real channel client and aggregator, with probe
/// results made up instead of measured.
struct SimAgent {
    index: usize,
    reporter: Arc<Reporter>,
    engine: Arc<Engine>,
    assigned: AtomicBool,
    /// Buckets it closes per window: one per job.
    buckets_per_window: AtomicUsize,
    /// When the changed spec reached this agent.
    changed: Mutex<Option<Instant>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl SimAgent {
    fn start(index: usize, channel_port: u16, ca_file: &Path, token: PathBuf) -> Arc<Self> {
        // A mesh agent's name is its node's.
        let name = node_name(index);
        let mut config = ReporterConfig::new(
            format!("https://127.0.0.1:{channel_port}").parse().unwrap(),
            ca_file.to_path_buf(),
            token,
            name.clone(),
        );
        config.poll_wait = Duration::from_secs(30);
        let reporter = Arc::new(Reporter::new(config).expect("reporter"));
        let engine = Arc::new(Engine::new(EngineConfig {
            source: node_name(index),
            window: WINDOW,
            ..EngineConfig::default()
        }));
        let agent = Arc::new(SimAgent {
            index,
            reporter,
            engine,
            assigned: AtomicBool::new(false),
            buckets_per_window: AtomicUsize::new(0),
            changed: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        let (jobs_tx, jobs_rx) = watch::channel::<Jobs>(Arc::from(Vec::new()));
        let channel = {
            let agent = agent.clone();
            tokio::spawn(async move { agent.reporter.run(&agent.engine, &jobs_tx).await })
        };
        let probe = {
            let agent = agent.clone();
            tokio::spawn(async move { agent.probe(jobs_rx).await })
        };
        *agent.tasks.lock().unwrap() = vec![channel, probe];
        agent
    }

    fn stop(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn changed_after(&self) -> Option<Instant> {
        *self.changed.lock().unwrap()
    }

    /// Once per window: a result per job and probe interval, then the window closed.
    async fn probe(&self, mut jobs: watch::Receiver<Jobs>) {
        let mut tick = tokio::time::interval(WINDOW);
        let mut window: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    window += 1;
                    let current = jobs.borrow().clone();
                    self.buckets_per_window.store(current.len(), Ordering::Relaxed);
                    let now = tokio::time::Instant::now().into_std();
                    self.engine.with_aggregator(|a| {
                        for job in current.iter() {
                            let per_window = (WINDOW.as_millis() / job.interval.as_millis().max(1)).max(1);
                            for n in 0..per_window {
                                let result = self.result(&job.key.target, window * 1_000 + n as u64);
                                a.record(&job.key, &job.thresholds_us, &result, now);
                            }
                        }
                        a.rotate(now);
                    });
                }
                changed = jobs.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let jobs = jobs.borrow_and_update().clone();
                    if !jobs.is_empty() {
                        self.assigned.store(true, Ordering::Relaxed);
                    }
                    let has_change = jobs.iter().any(|j| {
                        j.key.check.contains("check-0000") && j.timeout == CHANGED_TIMEOUT
                    });
                    let mut changed = self.changed.lock().unwrap();
                    if has_change && changed.is_none() {
                        *changed = Some(Instant::now());
                    }
                }
            }
        }
    }

    /// A made-up result for a probe of `target` (its label names the peer agent or the
    /// endpoint): the cut-off node fails everything, about 1% of pairs lose a probe now and
    /// then, the rest answer in 0.8 to 2.3 ms.
    fn result(&self, target: &str, salt: u64) -> ProbeResult {
        let hash = stable_hash(target, self.index as u64, salt);
        let cut_off = self.index == CUT_OFF || target.contains(&node_name(CUT_OFF));
        let lossy_pair = stable_hash(target, self.index as u64, 0).is_multiple_of(100);
        if cut_off || (lossy_pair && hash.is_multiple_of(10)) {
            ProbeResult {
                outcome: Outcome::Bad,
                latency_us: 0,
                lag_us: 0,
                phases: Phases::default(),
                reason: Some(FailureReason::TcpTimeout),
                layer: Some(Layer::Tcp),
                blocked_by: None,
            }
        } else {
            let latency_us = 800 + hash % 1_500;
            ProbeResult {
                outcome: Outcome::Good,
                latency_us,
                lag_us: 0,
                phases: Phases {
                    connect_us: Some(latency_us),
                    total_us: Some(latency_us),
                    ..Phases::default()
                },
                reason: None,
                layer: None,
                blocked_by: None,
            }
        }
    }
}

/// FNV-1a over a label and two numbers: deterministic made-up results.
fn stable_hash(label: &str, a: u64, b: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in label.bytes().chain(a.to_le_bytes()).chain(b.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
