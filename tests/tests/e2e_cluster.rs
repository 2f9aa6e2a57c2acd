//! netslo on a real node, installed as users install it (`kubectl apply -k config/default`),
//! proving every connectivity area with real pods: pod to pod, pod to Service (ClusterIP, DNS
//! name, each endpoint, NodePort), cluster DNS and the API server, a host outside the cluster
//! network, container to container over localhost (probe sidecar), an expected-deny enforced
//! by a real firewall rule, and a workload identity. Then faults: an endpoint blackholed and
//! healed, an agent pod killed, the operator pod killed; and clean removal. Then the same
//! install from the Helm chart: `helm install --wait`, a check measured, `helm uninstall`
//! and clean removal again.
//!
//! Runs only through `just e2e`, which brings up the node (`tests/cluster/cluster.sh`) and
//! passes its kubeconfig in `NETSLO_E2E_KUBECONFIG`. Needs root (iptables on the node).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed step is a failed test

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use netslo_crds::v1alpha1::{ConnectivityCheck, FailureScope};
use netslo_operator::check_key::CheckKey;
use netslo_operator::persist::stored_windows;
use netslo_tests::control_plane::{self, client_from_kubeconfig, repo_root};

const NAMESPACE: &str = "e2e";
const SYSTEM: &str = "netslo-system";
const CHECKS: [&str; 7] = [
    "pod-to-pod",
    "web-service",
    "dns-and-api",
    "egress",
    "admin-port-denied",
    "checkout-localhost",
    "from-web-client",
];
/// Marks every firewall rule this suite adds, so `cluster.sh down` removes leftovers too.
const RULE_COMMENT: &str = "netslo-e2e";

struct Node {
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    client: Client,
    started: Instant,
}

impl Node {
    async fn connect() -> Self {
        let kubeconfig = PathBuf::from(std::env::var("NETSLO_E2E_KUBECONFIG").expect(
            "NETSLO_E2E_KUBECONFIG is not set: run the suite with `just e2e`, which brings up the node",
        ));
        let kubectl = control_plane::binaries().unwrap().join("kubectl");
        let client = client_from_kubeconfig(&kubeconfig).await.unwrap();
        Node {
            kubeconfig,
            kubectl,
            client,
            started: Instant::now(),
        }
    }

    fn step(&self, what: &str) {
        eprintln!("[{:>4} s] {what}", self.started.elapsed().as_secs());
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .unwrap()
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until a Deployment has rolled out.
    fn rolled_out(&self, namespace: &str, deployment: &str) {
        self.kubectl_ok(&[
            "-n",
            namespace,
            "rollout",
            "status",
            &format!("deployment/{deployment}"),
            "--timeout=180s",
        ]);
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn checks(&self) -> Api<ConnectivityCheck> {
        self.api(NAMESPACE)
    }

    /// Polls every second until `probe` returns `Some`; on timeout, fails with what the
    /// cluster shows.
    async fn until<T, F, Fut>(&self, what: &str, timeout: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            if Instant::now() > deadline {
                let checks = self.kubectl(&["get", "connectivitychecks", "-A", "-o", "wide"]);
                let pods = self.kubectl(&["get", "pods", "-A", "-o", "wide"]);
                panic!(
                    "{what}: not within {timeout:?}\n{}\n{}",
                    String::from_utf8_lossy(&checks.stdout),
                    String::from_utf8_lossy(&pods.stdout)
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn check(&self, name: &str) -> ConnectivityCheck {
        self.checks().get(name).await.unwrap()
    }

    async fn events_for(&self, check: &str) -> Vec<Event> {
        let events: Api<Event> = self.api(NAMESPACE);
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(check))
            .collect()
    }

    async fn pods(&self, namespace: &str, selector: &str) -> Vec<Pod> {
        let pods: Api<Pod> = self.api(namespace);
        pods.list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
    }

    /// Probes counted in the check's stored window over the last hour (all of this test).
    async fn stored_probes(&self, check: &str) -> Option<u64> {
        let windows: Api<ConfigMap> = self.api(SYSTEM);
        let stored = stored_windows(&windows)
            .await
            .ok()?
            .remove(&CheckKey::new(NAMESPACE, check))?;
        let now = netslo_operator::slo::now_ms();
        Some(stored.history.window(now, 3_600_000).counts.total)
    }
}

fn condition(check: &ConnectivityCheck, type_: &str) -> Option<(String, String, String)> {
    check
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is_ready(check: &ConnectivityCheck) -> bool {
    condition(check, "Ready").is_some_and(|(status, ..)| status == "True")
}

fn reasons(events: &[Event]) -> Vec<String> {
    events.iter().filter_map(|e| e.reason.clone()).collect()
}

/// An iptables rule on the node, removed when dropped (also when the test fails).
struct FirewallRule(Vec<String>);

impl FirewallRule {
    fn insert(chain: &str, rule: &[&str]) -> Self {
        let mut spec: Vec<String> = vec![chain.into()];
        spec.extend(rule.iter().map(|s| s.to_string()));
        spec.extend(["-m", "comment", "--comment", RULE_COMMENT].map(String::from));
        let status = Command::new("iptables")
            .arg("-I")
            .args(&spec)
            .status()
            .unwrap();
        assert!(status.success(), "iptables -I {spec:?}");
        FirewallRule(spec)
    }
}

impl Drop for FirewallRule {
    fn drop(&mut self) {
        let _ = Command::new("iptables").arg("-D").args(&self.0).status();
    }
}

fn manifest(name: &str) -> PathBuf {
    repo_root().join("tests/e2e").join(name)
}

#[tokio::test]
#[ignore = "needs a real node: run with `just e2e`"]
async fn netslo_on_a_real_node() {
    let node = Node::connect().await;
    install(&node).await;

    node.step("workloads: web (2 replicas, NodePort Service), checkout with probe sidecars, the web-client identity");
    node.kubectl_ok(&["apply", "-f", manifest("workloads.yaml").to_str().unwrap()]);
    // The sidecar sample as the README shows it, in the suite's namespace.
    let sidecar_sample = repo_root().join("config/samples/sidecar/checkout.yaml");
    node.kubectl_ok(&[
        "apply",
        "-n",
        NAMESPACE,
        "-f",
        sidecar_sample.to_str().unwrap(),
    ]);
    for deployment in ["web", "checkout"] {
        node.rolled_out(NAMESPACE, deployment);
    }
    // The contract the expected-deny check verifies: the node's firewall refuses the admin
    // port on every pod (a real rule in the forwarding path between pods on the bridge).
    let _admin_port_closed = FirewallRule::insert(
        "FORWARD",
        &[
            "-p",
            "tcp",
            "--dport",
            "9090",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    );

    node.step("checks: every area, until all are Ready");
    node.kubectl_ok(&["apply", "-f", manifest("checks.yaml").to_str().unwrap()]);
    // The operator starts the mesh agents when the first check needs them.
    let daemonsets: Api<DaemonSet> = node.api(SYSTEM);
    node.until(
        "the mesh agent DaemonSet ready",
        Duration::from_secs(180),
        || async {
            let status = daemonsets.get_opt("netslo-agent").await.ok()??.status?;
            (status.desired_number_scheduled == 1 && status.number_ready == 1).then_some(())
        },
    )
    .await;
    node.until("every check Ready", Duration::from_secs(300), || async {
        let checks = node.checks().list(&ListParams::default()).await.ok()?;
        (checks.items.len() == CHECKS.len() && checks.items.iter().all(is_ready)).then_some(())
    })
    .await;
    eprintln!(
        "{}",
        node.kubectl_ok(&["get", "connectivitychecks", "-n", NAMESPACE])
    );
    every_area_is_proven(&node).await;

    endpoint_fault_is_localised_and_heals(&node).await;
    agent_pod_killed(&node).await;
    operator_pod_killed(&node).await;
    removal_leaves_nothing(&node).await;
    the_helm_chart_installs_measures_and_uninstalls(&node).await;
}

async fn install(node: &Node) {
    node.step("install: kubectl apply -k config/default");
    node.kubectl_ok(&[
        "apply",
        "-k",
        repo_root().join("config/default").to_str().unwrap(),
    ]);

    // Pod Security `restricted` is enforced in netslo's namespace: the API server refuses a
    // privileged pod there, so the operator and agents running there comply.
    let refused = node.kubectl(&[
        "-n",
        SYSTEM,
        "run",
        "privileged",
        "--image=ghcr.io/netslo/netslo:0.1.0",
        "--image-pull-policy=Never",
        "--privileged",
        "--restart=Never",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("violates PodSecurity \"restricted:latest\""),
        "a privileged pod in {SYSTEM} must be refused: {stderr}"
    );

    node.rolled_out(SYSTEM, "netslo-operator");
}

async fn every_area_is_proven(node: &Node) {
    // Pod to Service by every path, one summary per path and per endpoint.
    let web = node.check("web-service").await;
    let paths: Vec<String> = web
        .status
        .as_ref()
        .unwrap()
        .targets
        .iter()
        .filter_map(|t| t.via.as_ref().map(|v| format!("{v:?}")))
        .collect();
    for via in ["ClusterIP", "DNSName", "Endpoints", "NodePort"] {
        assert!(
            paths.iter().any(|p| p == via),
            "web-service probes {via}: {paths:?}"
        );
    }
    assert_eq!(
        paths.iter().filter(|p| *p == "Endpoints").count(),
        2,
        "one Endpoints series per web pod: {paths:?}"
    );

    // Container to container: one probe sidecar per checkout pod reports. The sidecars start
    // apart (each waits for kubelet to deliver the channel CA), and a new reporting count alone
    // is written at most every 30 s, so the check may be Ready with one of them counted.
    node.until(
        "both checkout pods' sidecars report",
        Duration::from_secs(90),
        async || {
            let localhost = node.check("checkout-localhost").await;
            let agents = localhost.status?.agents?;
            ((agents.desired, agents.reporting) == (2, 2)).then_some(())
        },
    )
    .await;

    // The workload identity: probe pods run as web-client, with its labels.
    let probes = node.pods(NAMESPACE, "app=web-client").await;
    assert!(!probes.is_empty(), "probe pods carry the workload's labels");
    for pod in &probes {
        assert_eq!(
            pod.spec.as_ref().unwrap().service_account_name.as_deref(),
            Some("web-client"),
            "{} runs as the workload's service account",
            pod.name_any()
        );
    }

    // Nothing was ever wrong: no check reported a breach or missing agents on the way up.
    for check in CHECKS {
        let events = reasons(&node.events_for(check).await);
        for bad in [
            "ObjectiveBreached",
            "BudgetBurning",
            "AgentsMissing",
            "Stalled",
        ] {
            assert!(
                !events.iter().any(|r| r == bad),
                "{check}: unexpected {bad} while converging: {events:?}"
            );
        }
    }
}

async fn endpoint_fault_is_localised_and_heals(node: &Node) {
    let pods = node.pods(NAMESPACE, "app=web").await;
    let ip_of = |pod: &Pod| pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let (broken, healthy) = (ip_of(&pods[0]), ip_of(&pods[1]));
    node.step(&format!(
        "fault: pod {} ({broken}) stops answering on 8080",
        pods[0].name_any()
    ));
    let blackhole = FirewallRule::insert(
        "FORWARD",
        &["-d", &broken, "-p", "tcp", "--dport", "8080", "-j", "DROP"],
    );
    let verdict = node
        .until(
            "a verdict naming the broken endpoint",
            Duration::from_secs(180),
            || async {
                let check = node.check("web-service").await;
                let verdict = check.status?.verdict?;
                (verdict.scope == FailureScope::Endpoint).then_some(verdict)
            },
        )
        .await;
    // The broken endpoint leads; load-balanced paths through it (the NodePort, the
    // ClusterIP) may follow, since some of their probes land on it. The healthy one never.
    assert_eq!(
        verdict.destinations.first(),
        Some(&format!("{broken}:8080")),
        "the broken endpoint is named first: {verdict:?}"
    );
    assert!(
        verdict
            .summary
            .starts_with(&format!("endpoint {broken}:8080 of web fails")),
        "{verdict:?}"
    );
    assert!(
        !verdict.destinations.iter().any(|d| d.contains(&healthy)),
        "the healthy endpoint {healthy} is not blamed: {verdict:?}"
    );
    eprintln!(
        "verdict: {:?} {:?}: {}",
        verdict.layer, verdict.scope, verdict.summary
    );
    node.until("a breach Event", Duration::from_secs(180), || async {
        let events = reasons(&node.events_for("web-service").await);
        events
            .iter()
            .any(|r| r == "ObjectiveBreached" || r == "BudgetBurning")
            .then_some(())
    })
    .await;
    eprintln!(
        "{}",
        node.kubectl_ok(&[
            "describe",
            "connectivitycheck",
            "-n",
            NAMESPACE,
            "web-service"
        ])
    );

    node.step("heal: the endpoint answers again");
    drop(blackhole);
    node.until(
        "the verdict cleared and the burn stopped",
        Duration::from_secs(240),
        || async {
            let check = node.check("web-service").await;
            let burning = condition(&check, "BudgetBurning")?;
            (check.status?.verdict.is_none() && burning.0 == "False").then_some(())
        },
    )
    .await;
}

async fn agent_pod_killed(node: &Node) {
    let selector = "app.kubernetes.io/component=mesh-agent";
    let killed = node.pods(SYSTEM, selector).await[0].name_any();
    let since = k8s_openapi::jiff::Timestamp::now();
    node.step(&format!("fault: mesh agent pod {killed} killed"));
    node.kubectl_ok(&[
        "-n",
        SYSTEM,
        "delete",
        "pod",
        &killed,
        "--force",
        "--grace-period=0",
    ]);
    let replaced = Instant::now();
    node.until(
        "a replacement agent running",
        Duration::from_secs(120),
        || async {
            node.pods(SYSTEM, selector)
                .await
                .iter()
                .any(|p| {
                    p.name_any() != killed
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .then_some(())
        },
    )
    .await;
    eprintln!("replaced after {} s", replaced.elapsed().as_secs());

    // A minute of watching: the gap is short against noDataAfter and the objectives; checks
    // stay Ready and nothing is reported as breached.
    for _ in 0..60 {
        for name in ["dns-and-api", "egress"] {
            let check = node.check(name).await;
            assert!(
                is_ready(&check),
                "{name} stays Ready while its agent is replaced: {:?}",
                check.status.map(|s| s.conditions)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for check in CHECKS {
        let late_breach = node.events_for(check).await.into_iter().any(|e| {
            matches!(
                e.reason.as_deref(),
                Some("ObjectiveBreached" | "BudgetBurning")
            ) && e.event_time.as_ref().is_some_and(|t| t.0 > since)
        });
        assert!(
            !late_breach,
            "{check}: a breach reported for a replaced agent"
        );
    }
    let egress = node.check("egress").await;
    let agents = egress.status.as_ref().unwrap().agents.unwrap();
    assert_eq!(
        (agents.desired, agents.reporting),
        (1, 1),
        "the new agent reports"
    );
    let no_data = condition(&egress, "NoData").unwrap();
    assert_eq!(no_data.0, "False", "results are fresh again: {no_data:?}");
}

async fn operator_pod_killed(node: &Node) {
    let before = node
        .until("the egress window stored", Duration::from_secs(60), || {
            node.stored_probes("egress")
        })
        .await;
    // The endpoint fault spent the budget of the checks through the web Service: they stay
    // ObjectiveNotMet until good probes outweigh it. The others must come back Ready.
    let ready_before: Vec<String> = node
        .checks()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| is_ready(c))
        .map(ResourceExt::name_any)
        .collect();
    assert!(
        ready_before.iter().any(|n| n == "egress"),
        "{ready_before:?}"
    );
    let outage_started = Instant::now();
    node.step("fault: operator scaled to zero and its pod force-deleted for 60 s");
    node.kubectl_ok(&[
        "-n",
        SYSTEM,
        "scale",
        "deployment/netslo-operator",
        "--replicas=0",
    ]);
    node.kubectl_ok(&[
        "-n",
        SYSTEM,
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/component=operator",
        "--force",
        "--grace-period=0",
    ]);
    tokio::time::sleep(Duration::from_secs(60)).await;
    node.kubectl_ok(&[
        "-n",
        SYSTEM,
        "scale",
        "deployment/netslo-operator",
        "--replicas=1",
    ]);
    node.rolled_out(SYSTEM, "netslo-operator");
    let back = Instant::now();
    node.step("operator back: the agents' buffered results must fill the gap");

    // One agent probes `egress` once a second: what it probed during the outage arrives
    // once it reconnects, so the stored window holds (nearly) one probe per second since.
    let (counted, expected) = node
        .until(
            "the stored window caught up",
            Duration::from_secs(120),
            || async {
                let counted = node.stored_probes("egress").await?.saturating_sub(before);
                let expected = outage_started.elapsed().as_secs();
                (counted * 10 >= expected * 8).then_some((counted, expected))
            },
        )
        .await;
    eprintln!(
        "caught up {} s after the operator returned: {counted} of {expected} seconds probed",
        back.elapsed().as_secs()
    );
    node.until(
        "the checks Ready before the outage Ready again",
        Duration::from_secs(120),
        || async {
            let checks = node.checks().list(&ListParams::default()).await.ok()?;
            checks
                .items
                .iter()
                .filter(|c| ready_before.contains(&c.name_any()))
                .all(is_ready)
                .then_some(())
        },
    )
    .await;
}

async fn removal_leaves_nothing(node: &Node) {
    node.step("delete a check: its stored window goes with it");
    let window = CheckKey::new(NAMESPACE, "egress");
    node.kubectl_ok(&[
        "-n",
        NAMESPACE,
        "delete",
        "connectivitycheck",
        "egress",
        "--wait",
    ]);
    let windows: Api<ConfigMap> = node.api(SYSTEM);
    node.until(
        "the egress window gone from the stored windows",
        Duration::from_secs(60),
        || async {
            let stored = stored_windows(&windows).await.ok()?;
            (!stored.contains_key(&window)).then_some(())
        },
    )
    .await;

    node.step("uninstall: checks, workloads, then kubectl delete -k config/default");
    node.kubectl_ok(&[
        "-n",
        NAMESPACE,
        "delete",
        "connectivitychecks",
        "--all",
        "--wait",
    ]);
    node.kubectl_ok(&[
        "delete",
        "-f",
        manifest("workloads.yaml").to_str().unwrap(),
        "--wait",
    ]);
    node.kubectl_ok(&[
        "delete",
        "-k",
        repo_root().join("config/default").to_str().unwrap(),
        "--wait",
    ]);
    let left = node
        .until(
            "nothing of netslo left",
            Duration::from_secs(180),
            || async {
                let left = leftovers(&node.client).await;
                left.is_empty().then_some(left)
            },
        )
        .await;
    assert!(left.is_empty());
}

/// The same install from the Helm chart, as Helm users run it: `helm install --wait` (Helm 4
/// waits with kstatus), a check of the API server from the mesh gets results, and after
/// `helm uninstall` (which keeps CRDs, as Helm does) and removing the CRDs and the namespace,
/// nothing of netslo is left.
async fn the_helm_chart_installs_measures_and_uninstalls(node: &Node) {
    node.step("install with Helm: helm install netslo config/helm/netslo --wait");
    let helm_home = tempfile::tempdir().unwrap();
    let helm = |args: &[&str]| {
        let built = Command::new("bash")
            .arg(repo_root().join("tests/helm/build.sh"))
            .output()
            .unwrap();
        assert!(built.status.success(), "tests/helm/build.sh");
        let dir = String::from_utf8(built.stdout).unwrap();
        let out = Command::new(PathBuf::from(dir.lines().last().unwrap().trim()).join("helm"))
            .arg("--kubeconfig")
            .arg(&node.kubeconfig)
            .args(args)
            .env("HELM_CACHE_HOME", helm_home.path().join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.path().join("config"))
            .env("HELM_DATA_HOME", helm_home.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let chart = repo_root().join("config/helm/netslo");
    helm(&[
        "install",
        "netslo",
        chart.to_str().unwrap(),
        "--namespace",
        SYSTEM,
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ]);
    let check = "helm-installed";
    let manifest = serde_json::json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityCheck",
        "metadata": {"name": check, "namespace": "default"},
        "spec": {
            "source": {"mesh": {}},
            "targets": [{"name": "api-server", "apiServer": {}}],
            "schedule": {"interval": "1s", "timeout": "900ms"},
        },
    });
    let file = helm_home.path().join("check.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    node.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let checks: Api<ConnectivityCheck> = node.api("default");
    node.until(
        "results of a check under the Helm install",
        Duration::from_secs(180),
        || async {
            let status = checks.get(check).await.ok()?.status?;
            (status.agents?.reporting >= 1).then_some(())
        },
    )
    .await;

    node.step("uninstall: the check, helm uninstall, the CRDs Helm keeps, the namespace");
    node.kubectl_ok(&["delete", "-f", file.to_str().unwrap(), "--wait"]);
    helm(&["uninstall", "netslo", "--namespace", SYSTEM, "--wait"]);
    node.kubectl_ok(&[
        "delete",
        "-f",
        repo_root()
            .join("config/crd/netslo.io.yaml")
            .to_str()
            .unwrap(),
        "--wait",
    ]);
    node.kubectl_ok(&["delete", "namespace", SYSTEM, "--wait"]);
    let left = node
        .until(
            "nothing of the Helm install left",
            Duration::from_secs(180),
            || async {
                let left = leftovers(&node.client).await;
                left.is_empty().then_some(left)
            },
        )
        .await;
    assert!(left.is_empty());
}

/// The names of every object of kind `K` that `params` selects, in all namespaces.
async fn listed<K>(client: &Client, params: &ListParams) -> Vec<String>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .list(params)
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

/// Everything netslo created or was installed with that still exists.
async fn leftovers(client: &Client) -> BTreeMap<&'static str, Vec<String>> {
    let all = ListParams::default();
    let netslo = |names: Vec<String>| {
        names
            .into_iter()
            .filter(|n| n.contains("netslo"))
            .collect::<Vec<_>>()
    };
    let mut left = BTreeMap::from([
        (
            "CustomResourceDefinitions",
            netslo(listed::<CustomResourceDefinition>(client, &all).await),
        ),
        (
            "Namespaces",
            listed::<Namespace>(client, &all)
                .await
                .into_iter()
                .filter(|n| n == SYSTEM || n == NAMESPACE)
                .collect(),
        ),
        (
            "ClusterRoles",
            netslo(listed::<ClusterRole>(client, &all).await),
        ),
        (
            "ClusterRoleBindings",
            netslo(listed::<ClusterRoleBinding>(client, &all).await),
        ),
        (
            "Deployments",
            listed::<Deployment>(
                client,
                &ListParams::default().labels("app.kubernetes.io/managed-by=netslo-operator"),
            )
            .await,
        ),
        (
            "ConfigMaps",
            netslo(listed::<ConfigMap>(client, &all).await),
        ),
        (
            "Pods",
            listed::<Pod>(
                client,
                &ListParams::default().fields(&format!("metadata.namespace={SYSTEM}")),
            )
            .await,
        ),
    ]);
    left.retain(|_, v| !v.is_empty());
    left
}
