//! The fault matrix: the faults networks really have, injected into real networks (network
//! namespaces, iptables; a delaying responder for latency, since this kernel has no netem)
//! under real agents and a real operator, and the verdict each one gets.
//!
//! For every fault the verdict the status settles on must name the right layer, reason and
//! place; it must be readable from the API server within two probe intervals plus 5 s of the
//! fault, and it may change at most once (the settling) while the fault holds. Every status
//! write is watched, so a verdict that flickers between polls is counted too.
//!
//! Three beds run side by side, each a mesh of stand-in nodes with an agent each and an
//! operator watching its own namespace: faults on endpoints and resolvers (one check per
//! fault, all at once), a zone partition, and a node cut off both ways. Each check meets its
//! fault steady (no status write for longer than the write floor), as faults meet clusters.
//!
//! Prints `fault_<name>_settled: <s> s` and `fault_<name>_changes: <n>` for each fault,
//! which `just bench` collects.
//!
//! Needs root, `ip` and `iptables`.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use netslo_agent::testbed::{self, DnsMode, DnsServer, Netns};
use netslo_crds::v1alpha1::{ConnectivityCheck, FailureScope, Layer, Verdict};
use netslo_tests::cluster::{
    ensure_service_account, register_mesh_agent, register_node, register_pod,
};
use netslo_tests::control_plane::{self, ControlPlane, TestNamespace};
use netslo_tests::{free_port, workspace_binary};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::netns_common::{AgentLauncher, Bed, LogsOnPanic, Process, eventually};
use crate::operator_common::grant_external;

/// Every check probes each second: the verdict must be readable within two probe intervals
/// plus 5 s of the fault.
const INTERVAL: Duration = Duration::from_secs(1);
const SETTLE_BOUND: Duration = Duration::from_secs(2 + 5);
/// How long each fault is held while its verdict is watched for changes.
const HOLD: Duration = Duration::from_secs(30);
/// A check meets its fault steady: Ready without a verdict in every status written for
/// longer than the operator's write floor (30 s per check), so no earlier transition holds
/// the early writes a verdict gets past the floor. Figures (latencies, SLIs) may move
/// meanwhile, and are written at the floor: on a busy machine they always do.
const STEADY: Duration = Duration::from_secs(31);
/// ...and its last write at least this old: the gap the operator leaves between a write and
/// an early one (a second), with room to spare.
const QUIET: Duration = Duration::from_secs(3);
const MESH_ACCOUNT: &str = "netslo-agent";

/// A verdict as a reader tells verdicts apart: its place, layer and reason. Its summary's
/// figures (the failing fraction, the source count) move as evidence arrives without
/// changing what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Said {
    scope: FailureScope,
    layer: Layer,
    reason: String,
    sources: Vec<String>,
    destinations: Vec<String>,
}

impl Said {
    fn of(v: &Verdict) -> Said {
        // Where the sources are not the place (an endpoint, a target), more sources seeing
        // the same failure is the same verdict.
        let by_source = matches!(
            v.scope,
            FailureScope::Node | FailureScope::SourceNode | FailureScope::ZonePair
        );
        Said {
            scope: v.scope,
            layer: v.layer,
            reason: v.reason.clone(),
            sources: if by_source {
                v.sources.clone()
            } else {
                Vec::new()
            },
            destinations: v.destinations.clone(),
        }
    }
}

/// One status write as the watch saw it.
#[derive(Debug, Clone)]
struct Write {
    at: Instant,
    ready: bool,
    verdict: Option<Verdict>,
    /// The whole status, to say what a write changed when a check never settles.
    status: Value,
}

/// Every status write of every check in a namespace, from a watch.
#[derive(Clone, Default)]
struct Timeline {
    writes: Arc<Mutex<BTreeMap<String, Vec<Write>>>>,
}

impl Timeline {
    /// Starts watching the checks of `namespace`; the task ends with the test's runtime.
    fn watch(client: &kube::Client, namespace: &str) -> Timeline {
        let timeline = Timeline::default();
        let checks: Api<ConnectivityCheck> = Api::namespaced(client.clone(), namespace);
        let writes = timeline.writes.clone();
        tokio::spawn(async move {
            let mut seen_versions: BTreeMap<String, String> = BTreeMap::new();
            let mut stream = watcher(checks, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(event) = stream.next().await {
                let Ok(check) = event else { continue };
                let name = check.metadata.name.clone().unwrap_or_default();
                let version = check.metadata.resource_version.clone().unwrap_or_default();
                // A re-list after a dropped watch repeats objects: count changes only.
                if seen_versions.insert(name.clone(), version.clone()) == Some(version) {
                    continue;
                }
                let Some(status) = check.status else { continue };
                let whole = serde_json::to_value(&status).unwrap_or_default();
                writes.lock().unwrap().entry(name).or_default().push(Write {
                    at: Instant::now(),
                    ready: status
                        .conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True"),
                    verdict: status.verdict,
                    status: whole,
                });
            }
        });
        timeline
    }

    fn of(&self, check: &str) -> Vec<Write> {
        self.writes
            .lock()
            .unwrap()
            .get(check)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether `check` has been Ready without a verdict for [`STEADY`] and not written for
    /// [`QUIET`]; if not, why.
    fn steady(&self, check: &str) -> Result<(), String> {
        let writes = self.of(check);
        let Some(last) = writes.last() else {
            return Err(format!("{check}: no status yet"));
        };
        // The writes of the span, and the one in force at its start.
        let span_start = writes
            .iter()
            .rposition(|w| w.at.elapsed() >= STEADY)
            .ok_or_else(|| format!("{check}: first written less than {STEADY:?} ago"))?;
        if let Some(unsteady) = writes[span_start..]
            .iter()
            .find(|w| w.verdict.is_some() || !w.ready)
        {
            return Err(match &unsteady.verdict {
                Some(v) => format!("{check}: verdict {:?}", v.summary),
                None => format!("{check}: not Ready"),
            });
        }
        if last.at.elapsed() < QUIET {
            let mut changed = Vec::new();
            if let Some(before) = writes.iter().rev().nth(1) {
                differences("status", &before.status, &last.status, &mut changed);
            }
            return Err(format!(
                "{check}: written {:?} ago, changing {changed:?}",
                last.at.elapsed(),
            ));
        }
        Ok(())
    }
}

/// The paths at which two JSON values differ, with both values.
fn differences(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                );
                differences(&format!("{path}.{key}"), va, vb, out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                differences(&format!("{path}[{i}]"), va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// What a fault's verdict must say.
struct Expected {
    scope: FailureScope,
    layer: Layer,
    reason: &'static str,
    sources: Option<Vec<String>>,
    destinations: Vec<String>,
    /// Words the summary must contain.
    summary: Vec<String>,
    /// How long after the fault the verdict may settle.
    bound: Duration,
}

/// The bound for random loss at `probability` of the probes `sources` agents send each
/// interval: [`SETTLE_BOUND`] from the moment the two failures a verdict needs have been
/// dropped, which at random takes a while at low rates. That moment is taken as the one by
/// which fewer than two drops has a chance under 1 in 10,000 (binomially: 10% of 8 probes a
/// second, 15 s; 40%, 3 s), so the bound does not fail on an unlucky but correct run.
fn random_loss_bound(probability: f64, sources: u32) -> Duration {
    let mut probes: u32 = 0;
    loop {
        probes += sources;
        let n = f64::from(probes);
        let none = (1.0 - probability).powf(n);
        let one = n * probability * (1.0 - probability).powf(n - 1.0);
        if none + one < 1e-4 {
            return SETTLE_BOUND + INTERVAL * (probes / sources);
        }
    }
}

/// Reads the writes of `check` between `from` (the injection) and `until` (the end of the
/// hold), prints the figures, and says what is wrong: the settled verdict against
/// `expected`, the time it took against its bound, and its changes (at most one).
fn judge(
    name: &str,
    writes: &[Write],
    from: Instant,
    until: Instant,
    expected: &Expected,
) -> Vec<String> {
    let during: Vec<&Write> = writes
        .iter()
        .filter(|w| w.at >= from && w.at <= until)
        .collect();
    let mut wrong = Vec::new();
    if let Some(before) = writes.iter().rev().find(|w| w.at < from)
        && let Some(v) = &before.verdict
    {
        wrong.push(format!("a verdict before the fault: {}", v.summary));
    }
    // What the status said, each time it said something else.
    let mut said: Vec<(Instant, Option<Said>, Option<&Verdict>)> = Vec::new();
    for w in &during {
        let now = w.verdict.as_ref().map(Said::of);
        if said.last().is_none_or(|(_, last, _)| *last != now) {
            said.push((w.at, now, w.verdict.as_ref()));
        } else if let Some(last) = said.last_mut() {
            // The same verdict with fresher figures: keep its latest wording.
            last.2 = w.verdict.as_ref();
        }
    }
    let history: Vec<String> = said
        .iter()
        .map(|(at, _, v)| {
            format!(
                "+{:.1}s {}",
                at.duration_since(from).as_secs_f64(),
                v.map_or("(none)".to_owned(), |v| format!(
                    "{:?} {}",
                    v.scope, v.summary
                ))
            )
        })
        .collect();
    eprintln!("{name}: {history:?}");
    let Some(appeared) = said.iter().position(|(_, s, _)| s.is_some()) else {
        wrong.push(format!("no verdict within {HOLD:?}"));
        return wrong;
    };
    let (settled_at, _, settled) = said.last().unwrap();
    let Some(settled) = settled else {
        wrong.push("the verdict cleared while the fault held".to_owned());
        return wrong;
    };
    let settled_after = settled_at.duration_since(from);
    let changes = said.len() - 1 - appeared;
    let metric = name.replace('-', "_");
    println!(
        "fault_{metric}_settled: {:.1} s",
        settled_after.as_secs_f64()
    );
    println!(
        "fault_{metric}_settled_over_bound: {:.2} x",
        settled_after.as_secs_f64() / expected.bound.as_secs_f64()
    );
    println!("fault_{metric}_changes: {changes}");
    let got = (settled.scope, settled.layer, settled.reason.as_str());
    if got != (expected.scope, expected.layer, expected.reason) {
        wrong.push(format!("settled on {got:?}"));
    }
    if settled.destinations != expected.destinations {
        wrong.push(format!("destinations {:?}", settled.destinations));
    }
    if let Some(sources) = &expected.sources
        && settled.sources != *sources
    {
        wrong.push(format!("sources {:?}", settled.sources));
    }
    for words in &expected.summary {
        if !settled.summary.contains(words.as_str()) {
            wrong.push(format!("{words:?} not in {:?}", settled.summary));
        }
    }
    if settled_after > expected.bound {
        wrong.push(format!(
            "settled {settled_after:?} after the fault (bound {:?})",
            expected.bound
        ));
    }
    if changes > 1 {
        wrong.push(format!("{changes} changes while the fault held"));
    }
    wrong
}

/// The pod address of the node at `.n` of the bed's /24: `.100+n`.
fn pod_ip_of(node_ip: Ipv4Addr) -> Ipv4Addr {
    let [a, b, c, d] = node_ip.octets();
    Ipv4Addr::new(a, b, c, 100 + d)
}

/// A stand-in node: its name, zone and namespace on the bed.
struct Node {
    name: String,
    zone: String,
    host: usize,
}

/// A mesh of stand-in nodes, each with a mesh agent that also serves echo on `ports` at the
/// node's address (the "pods" of the checks are host-network pods on those nodes: a fault on
/// a node reaches its pods), and an operator on the host watching one namespace.
struct Mesh {
    bed: Bed,
    nodes: Vec<Node>,
    /// The namespace the checks live in.
    namespace: TestNamespace,
    _system: TestNamespace,
    client: kube::Client,
    dir: tempfile::TempDir,
    operator: Mutex<Process>,
    _agents: Vec<Process>,
}

impl Mesh {
    /// `zones[i]` is node i's zone suffix; `extra_hosts` more namespaces on the bed (after
    /// the nodes) for servers of the test's own.
    async fn start(
        plane: &ControlPlane,
        prefix: &str,
        zones: &[&str],
        extra_hosts: u8,
        ports: &[u16],
    ) -> Mesh {
        let client = plane.client().await.unwrap();
        let system = TestNamespace::create(plane, &format!("{prefix}-system"))
            .await
            .unwrap();
        let namespace = TestNamespace::create(plane, prefix).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let agent_bin = workspace_binary("netslo-agent").unwrap();
        let operator_bin = workspace_binary("netslo-operator").unwrap();
        let bed = Bed::new(u8::try_from(zones.len()).unwrap() + extra_hosts);
        // Node and zone names are cluster-wide: the namespace makes them this bed's own.
        let nodes: Vec<Node> = zones
            .iter()
            .enumerate()
            .map(|(i, zone)| Node {
                name: format!("{}-n{}", namespace.name, i + 1),
                zone: format!("{}-{zone}", namespace.name),
                host: i,
            })
            .collect();
        for node in &nodes {
            let host = bed.host(node.host);
            register_node(&client, &node.name, &host.ip.to_string(), &node.zone)
                .await
                .unwrap();
            // The node's pod: an address of its own on the node's interface (a node's own
            // addresses are not probed without a grant), served by the node's agent.
            let pod_ip = pod_ip_of(host.ip);
            host.ns
                .ip(&["addr", "add", &format!("{pod_ip}/24"), "dev", "eth0"])
                .unwrap();
            let labels = BTreeMap::from([("app".to_string(), "echo".to_string())]);
            register_pod(
                &client,
                &namespace.name,
                &format!("echo-{}", node.host + 1),
                &labels,
                &node.name,
                &pod_ip.to_string(),
            )
            .await
            .unwrap();
        }

        let channel = format!("{}:{}", bed.host_ip, bed.free_port());
        let admin = format!("127.0.0.1:{}", free_port());
        let operator = Process::spawn(
            dir.path(),
            "operator",
            None,
            &operator_bin,
            [
                "--namespace",
                &system.name,
                "--watch-namespace",
                &namespace.name,
                "--pod-name",
                &format!("netslo-operator-{}", namespace.name),
                "--channel-addr",
                &channel,
                "--channel-names",
                &bed.host_ip.to_string(),
                "--admin-addr",
                &admin,
                "--agent-service-account",
                MESH_ACCOUNT,
                // The mesh agents are the test's processes (see operator_netns).
                "--manage-mesh-agents=false",
                // Scaled down with the 1 s probe interval, as in operator_netns.
                "--persist-interval-seconds",
                "1",
            ],
            &[
                ("KUBECONFIG", plane.kubeconfig().to_str().unwrap()),
                ("RUST_LOG", "info,netslo_operator=debug"),
                ("NO_COLOR", "1"),
            ],
        );
        let ca_file =
            crate::operator_common::fetch_operator_ca(&client, &system.name, dir.path()).await;
        ensure_service_account(&client, &system.name, MESH_ACCOUNT)
            .await
            .unwrap();
        let operator_url = format!("https://{channel}");
        let launcher = AgentLauncher {
            client: &client,
            dir: dir.path(),
            agent_bin: &agent_bin,
            operator_url: &operator_url,
            ca_file: &ca_file,
        };
        let mut agents = Vec::new();
        for node in &nodes {
            let host = bed.host(node.host);
            let pod = register_mesh_agent(
                &client,
                &system.name,
                &format!("netslo-agent-n{}", node.host + 1),
                &node.name,
                &host.ip.to_string(),
                MESH_ACCOUNT,
            )
            .await
            .unwrap();
            let pod_ip = pod_ip_of(host.ip);
            let echo: Vec<String> = ports.iter().map(|p| format!("{pod_ip}:{p}")).collect();
            let echo = echo.join(",");
            agents.push(
                launcher
                    .start(
                        &host.ns,
                        &pod,
                        &node.name,
                        &node.name,
                        &["--echo-listen", &echo],
                    )
                    .await
                    .unwrap(),
            );
        }
        Mesh {
            bed,
            nodes,
            namespace,
            _system: system,
            client,
            dir,
            operator: Mutex::new(operator),
            _agents: agents,
        }
    }

    fn operator_running(&self) -> bool {
        self.operator.lock().unwrap().running()
    }

    fn ns(&self, node: usize) -> &Netns {
        &self.bed.host(self.nodes[node].host).ns
    }

    /// The address of the pod on `node`.
    fn pod_ip(&self, node: usize) -> Ipv4Addr {
        pod_ip_of(self.bed.host(self.nodes[node].host).ip)
    }

    fn zones(&self) -> Vec<String> {
        let mut zones: Vec<String> = self.nodes.iter().map(|n| n.zone.clone()).collect();
        zones.sort();
        zones.dedup();
        zones
    }

    /// Creates a check probing from every node of this mesh, each second.
    async fn check(&self, name: &str, targets: Value, objectives: Value) {
        let checks: Api<ConnectivityCheck> =
            Api::namespaced(self.client.clone(), &self.namespace.name);
        let check: ConnectivityCheck = serde_json::from_value(json!({
            "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
            "metadata": {"name": name},
            "spec": {
                "source": {"mesh": {"zones": self.zones()}},
                "targets": targets,
                "schedule": {"interval": format!("{}s", INTERVAL.as_secs()), "timeout": "500ms"},
                "objectives": objectives,
            },
        }))
        .unwrap();
        checks.create(&PostParams::default(), &check).await.unwrap();
    }

    /// Waits until every agent reports for each of `checks`.
    async fn reporting(&self, checks: &[&str]) {
        let api: Api<ConnectivityCheck> =
            Api::namespaced(self.client.clone(), &self.namespace.name);
        let want = i32::try_from(self.nodes.len()).unwrap();
        for name in checks {
            eventually(
                &format!("every agent reporting for {name}"),
                Duration::from_secs(180),
                async || {
                    let check = api.get(name).await.map_err(|e| e.to_string())?;
                    let agents = check.status.as_ref().and_then(|s| s.agents);
                    if agents.is_some_and(|a| a.desired == want && a.reporting == want) {
                        Ok(())
                    } else {
                        Err(format!("{:?}", check.status))
                    }
                },
            )
            .await;
        }
    }
}

/// Objectives with one alert over 5m/1m (the standard profile's shortest window is 5 m: a
/// check is Ready once its results cover the shortest alert window).
fn objectives(latency: Option<&str>) -> Value {
    let mut objectives = json!({
        "window": "7d",
        "availability": {"target": "99"},
        "alerting": {"profile": "Custom", "minEventsToAlert": 1, "burnRateWindows": [
            {"severity": "Page", "long": "5m", "short": "1m", "budgetPercent": "0.5"},
        ]},
    });
    if let Some(threshold) = latency {
        objectives["latency"] = json!({"threshold": threshold, "target": "99"});
    }
    objectives
}

fn availability() -> Value {
    objectives(None)
}

fn pods_on(port: u16, protocol: &str) -> Value {
    json!([{"name": "pods", "pods": {"selector": {"matchLabels": {"app": "echo"}}, "port": port}, "protocol": protocol}])
}

/// Drops (or rejects) a random share of the connection attempts a node receives on `port`:
/// SYNs only, so each dropped packet is one failed probe (a dropped ACK would not be).
fn syn_loss<'a>(ns: &'a Netns, port: u16, probability: &str) -> testbed::Rule<'a> {
    ns.iptables(
        "INPUT",
        &[
            "-p",
            "tcp",
            "--dport",
            &port.to_string(),
            "--syn",
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            probability,
            "-j",
            "DROP",
        ],
    )
    .unwrap()
}

/// Serves a future inside `ns` on a thread of its own until the guard is dropped.
struct Served {
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn serve_in<F, Fut>(ns: &Netns, serve: F) -> Served
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The thread starts now; its completion is not awaited (it ends when `stop` drops).
    drop(ns.run(move || async move {
        tokio::select! {
            () = serve() => {}
            _ = stopped => {}
        }
    }));
    Served { _stop: stop }
}

/// An HTTP responder that answers each request after `delay_ms`: latency without netem.
async fn serve_delayed_http(listener: std::net::TcpListener, delay_ms: Arc<AtomicU64>) {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let delay = Duration::from_millis(delay_ms.load(Ordering::Relaxed));
        tokio::task::spawn_local(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
                if head.len() > 16 * 1024 {
                    return;
                }
            }
            tokio::time::sleep(delay).await;
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        });
    }
}

/// What holds a fault until dropped (iptables rules, or nothing for a server's setting).
trait Held {}
impl<T> Held for T {}

/// A fault, injected once its check is steady, and what the check's verdict must then say.
struct Fault<'a> {
    name: &'static str,
    check: &'static str,
    /// Injects the fault; what it returns holds the fault until dropped.
    inject: Box<dyn FnOnce() -> Box<dyn Held + 'a> + 'a>,
    expected: Expected,
}

/// Injects each fault as soon as its check is steady, holds each for [`HOLD`], and judges
/// every check's status writes over its fault's hold; asserts the bounds once all are
/// judged (so that every figure is printed).
async fn run(timeline: &Timeline, faults: Vec<Fault<'_>>) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending = faults;
    let mut held = Vec::new();
    while !pending.is_empty() {
        let (ready, waiting): (Vec<Fault>, Vec<Fault>) = pending
            .into_iter()
            .partition(|f| timeline.steady(f.check).is_ok());
        for fault in ready {
            eprintln!("{}: injected", fault.name);
            let guard = (fault.inject)();
            held.push((
                fault.name,
                fault.check,
                Instant::now(),
                fault.expected,
                guard,
            ));
        }
        pending = waiting;
        if let Some(fault) = pending.first() {
            assert!(
                Instant::now() < deadline,
                "{}: the check never became steady: {:?}",
                fault.name,
                timeline.steady(fault.check)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let last_injected = held.iter().map(|h| h.2).max().unwrap();
    tokio::time::sleep_until((last_injected + HOLD).into()).await;
    let wrong: Vec<String> = held
        .iter()
        .flat_map(|(name, check, at, expected, _)| {
            judge(name, &timeline.of(check), *at, *at + HOLD, expected)
                .into_iter()
                .map(move |w| format!("{name}: {w}"))
        })
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// Partial loss at 10% and 40%, an endpoint refusing, an endpoint answering late against a
/// latency objective, a silent resolver, a resolver with the wrong answer: one check each, on
/// endpoints of their own, all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_at_endpoints_and_resolvers_get_one_settled_verdict_each() {
    testbed::require();
    let plane = control_plane::shared(module_path!()).expect("control plane");
    const LOSS_10: u16 = 8081;
    const LOSS_40: u16 = 8082;
    const REFUSED: u16 = 8083;
    const SLOW: u16 = 8084;
    // Eight nodes, four per zone, and a resolver host after them. Partial loss is told from
    // chance by the failures it causes: at 10% and one probe a second from each node, eight
    // nodes make the two failures a verdict needs likely within the bound.
    let mesh = Mesh::start(
        plane,
        "faults",
        &["a", "a", "a", "a", "b", "b", "b", "b"],
        1,
        &[LOSS_10, LOSS_40, REFUSED],
    )
    .await;
    let _logs = LogsOnPanic {
        dir: mesh.dir.path().to_path_buf(),
    };
    // Each node answers HTTP on SLOW, after a delay of its own (none until the fault).
    let delays: Vec<Arc<AtomicU64>> = (0..mesh.nodes.len())
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut servers = Vec::new();
    for (i, delay) in delays.iter().enumerate() {
        let addr = SocketAddr::from((mesh.pod_ip(i), SLOW));
        let listener = mesh
            .ns(i)
            .enter(|| std::net::TcpListener::bind(addr))
            .unwrap();
        let delay = delay.clone();
        servers.push(serve_in(mesh.ns(i), move || async move {
            tokio::task::LocalSet::new()
                .run_until(serve_delayed_http(listener, delay))
                .await;
        }));
    }
    // Two resolvers on the resolver host, both answering until their fault.
    let resolver_host = mesh.bed.host(mesh.nodes.len());
    let resolver_ip = resolver_host.ip;
    let right = Ipv4Addr::new(10, 0, 0, 10);
    let (silent_port, wrong_port) = (5301u16, 5302u16);
    let silent = DnsServer::new(DnsMode::Answer(right));
    let wrong = DnsServer::new(DnsMode::Answer(right));
    for (server, port) in [(silent.clone(), silent_port), (wrong.clone(), wrong_port)] {
        let sock = resolver_host
            .ns
            .enter(|| std::net::UdpSocket::bind((resolver_ip, port)))
            .unwrap();
        servers.push(serve_in(&resolver_host.ns, move || async move {
            sock.set_nonblocking(true).unwrap();
            server
                .serve(tokio::net::UdpSocket::from_std(sock).unwrap())
                .await;
        }));
    }
    grant_external(
        &mesh.client,
        &mesh.namespace.name,
        &[&format!("{resolver_ip}/32")],
    )
    .await;
    let dns = |port: u16| json!([{"name": "resolve", "dns": {"name": "api.example.internal", "server": resolver_ip.to_string(), "serverPort": port, "expectedAnswers": [right.to_string()]}}]);
    let checks = [
        "loss-10",
        "loss-40",
        "refused",
        "slow",
        "silent-resolver",
        "wrong-answer",
    ];
    mesh.check("loss-10", pods_on(LOSS_10, "TCP"), availability())
        .await;
    mesh.check("loss-40", pods_on(LOSS_40, "TCP"), availability())
        .await;
    mesh.check("refused", pods_on(REFUSED, "TCP"), availability())
        .await;
    mesh.check("slow", pods_on(SLOW, "HTTP"), objectives(Some("50ms")))
        .await;
    mesh.check("silent-resolver", dns(silent_port), availability())
        .await;
    mesh.check("wrong-answer", dns(wrong_port), availability())
        .await;
    let timeline = Timeline::watch(&mesh.client, &mesh.namespace.name);
    mesh.reporting(&checks).await;

    // The faults, each on a node of its own where it is an endpoint's.
    let endpoint = |node: usize, port: u16| format!("{}:{port}", mesh.pod_ip(node));
    let endpoint_fault = |node: usize, port: u16, reason: &'static str, words: &[&str]| Expected {
        scope: FailureScope::Endpoint,
        layer: Layer::TCP,
        reason,
        sources: None,
        destinations: vec![endpoint(node, port)],
        summary: words.iter().map(|w| (*w).to_owned()).collect(),
        bound: SETTLE_BOUND,
    };
    // Every node's agent probes each endpoint.
    let sources = u32::try_from(mesh.nodes.len()).unwrap();
    let resolver = format!("the resolver {resolver_ip}");
    let dns_fault = |reason: &'static str, words: String| Expected {
        scope: FailureScope::Target,
        layer: Layer::DNS,
        reason,
        sources: None,
        destinations: vec!["resolve".into()],
        summary: vec![words],
        bound: SETTLE_BOUND,
    };
    let (delays, silent, wrong) = (&delays, &silent, &wrong);
    run(
        &timeline,
        vec![
            Fault {
                name: "loss-10",
                check: "loss-10",
                inject: Box::new(|| Box::new(syn_loss(mesh.ns(0), LOSS_10, "0.1"))),
                expected: Expected {
                    bound: random_loss_bound(0.1, sources),
                    ..endpoint_fault(0, LOSS_10, "TCPTimeout", &["% of probes"])
                },
            },
            Fault {
                name: "loss-40",
                check: "loss-40",
                inject: Box::new(|| Box::new(syn_loss(mesh.ns(1), LOSS_40, "0.4"))),
                expected: Expected {
                    bound: random_loss_bound(0.4, sources),
                    ..endpoint_fault(1, LOSS_40, "TCPTimeout", &["% of probes"])
                },
            },
            Fault {
                name: "refused",
                check: "refused",
                inject: Box::new(|| {
                    let port = REFUSED.to_string();
                    let reject = [
                        "-p",
                        "tcp",
                        "--dport",
                        &port,
                        "-j",
                        "REJECT",
                        "--reject-with",
                        "tcp-reset",
                    ];
                    Box::new(mesh.ns(3).iptables("INPUT", &reject).unwrap())
                }),
                expected: endpoint_fault(3, REFUSED, "TCPRefused", &["from 8/8 sources"]),
            },
            Fault {
                name: "slow",
                check: "slow",
                inject: Box::new(|| {
                    delays[4].store(120, Ordering::Relaxed);
                    Box::new(())
                }),
                expected: Expected {
                    scope: FailureScope::Endpoint,
                    layer: Layer::HTTP,
                    reason: "SlowerThanObjective",
                    sources: None,
                    destinations: vec![endpoint(4, SLOW)],
                    summary: vec!["answers slowly".into(), "over 50 ms".into()],
                    bound: SETTLE_BOUND,
                },
            },
            Fault {
                name: "silent-resolver",
                check: "silent-resolver",
                inject: Box::new(|| {
                    silent.set(DnsMode::Silent);
                    Box::new(())
                }),
                expected: dns_fault(
                    "DNSTimeout",
                    format!("{resolver}:{silent_port} does not answer"),
                ),
            },
            Fault {
                name: "wrong-answer",
                check: "wrong-answer",
                inject: Box::new(|| {
                    wrong.set(DnsMode::Answer(Ipv4Addr::new(10, 0, 0, 66)));
                    Box::new(())
                }),
                expected: dns_fault(
                    "DNSWrongAnswer",
                    format!("{resolver}:{wrong_port} answers, not what the check expects"),
                ),
            },
        ],
    )
    .await;
    assert!(mesh.operator_running(), "the operator ran throughout");
}

/// Zone a and zone b cannot reach each other: one verdict naming the two zones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_partition_gets_one_settled_verdict() {
    testbed::require();
    let plane = control_plane::shared(module_path!()).expect("control plane");
    const PORT: u16 = 8080;
    let mesh = Mesh::start(plane, "partition", &["a", "a", "b", "b"], 0, &[PORT]).await;
    let _logs = LogsOnPanic {
        dir: mesh.dir.path().to_path_buf(),
    };
    mesh.check("pods", pods_on(PORT, "TCP"), availability())
        .await;
    let timeline = Timeline::watch(&mesh.client, &mesh.namespace.name);
    mesh.reporting(&["pods"]).await;

    // Each node drops what it sends to the other zone's nodes and their pods.
    let partition = || -> Box<dyn Held + '_> {
        let mut rules = Vec::new();
        for (i, node) in mesh.nodes.iter().enumerate() {
            for (j, other) in mesh.nodes.iter().enumerate() {
                if node.zone == other.zone {
                    continue;
                }
                for ip in [mesh.bed.host(other.host).ip, mesh.pod_ip(j)] {
                    let ip = ip.to_string();
                    let drop = ["-d", &ip, "-p", "tcp", "-j", "DROP"];
                    rules.push(mesh.ns(i).iptables("OUTPUT", &drop).unwrap());
                }
            }
        }
        Box::new(rules)
    };
    let zones = mesh.zones();
    run(
        &timeline,
        vec![Fault {
            name: "zone-partition",
            check: "pods",
            inject: Box::new(partition),
            expected: Expected {
                scope: FailureScope::ZonePair,
                layer: Layer::TCP,
                reason: "TCPTimeout",
                sources: Some(zones.clone()),
                destinations: zones.clone(),
                summary: vec![format!(
                    "zones {} and {} cannot reach each other",
                    zones[0], zones[1]
                )],
                bound: SETTLE_BOUND,
            },
        }],
    )
    .await;
    assert!(mesh.operator_running(), "the operator ran throughout");
}

/// A node that can neither reach nor be reached (its agent's results cannot reach the
/// operator either): one Node verdict, not its halves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_both_ways_gets_one_settled_verdict() {
    testbed::require();
    let plane = control_plane::shared(module_path!()).expect("control plane");
    const PORT: u16 = 8080;
    let mesh = Mesh::start(plane, "isolated", &["a", "a", "b", "b"], 0, &[PORT]).await;
    let _logs = LogsOnPanic {
        dir: mesh.dir.path().to_path_buf(),
    };
    mesh.check("pods", pods_on(PORT, "TCP"), availability())
        .await;
    let timeline = Timeline::watch(&mesh.client, &mesh.namespace.name);
    mesh.reporting(&["pods"]).await;

    let cut = mesh.nodes.len() - 1;
    let node = mesh.nodes[cut].name.clone();
    let isolate = || -> Box<dyn Held + '_> {
        Box::new([
            mesh.ns(cut)
                .iptables("INPUT", &["-p", "tcp", "-j", "DROP"])
                .unwrap(),
            mesh.ns(cut)
                .iptables("OUTPUT", &["-p", "tcp", "-j", "DROP"])
                .unwrap(),
        ])
    };
    run(
        &timeline,
        vec![Fault {
            name: "node-isolated",
            check: "pods",
            inject: Box::new(isolate),
            expected: Expected {
                scope: FailureScope::Node,
                layer: Layer::TCP,
                reason: "TCPTimeout",
                sources: Some(vec![node.clone()]),
                destinations: vec![node.clone()],
                summary: vec![format!("node {node} is cut off")],
                bound: SETTLE_BOUND,
            },
        }],
    )
    .await;
    assert!(mesh.operator_running(), "the operator ran throughout");
}
