//! Shared by the tests that run the real operator and agent binaries: processes that die with
//! the test, the operator's command line, an external agent's identity, polling.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use netslo_crds::v1alpha1::ConnectivityCheck;
use netslo_tests::control_plane::ControlPlane;
use netslo_tests::workspace_binary;
use serde_json::json;

/// Kills a child process when the test ends, however it ends.
pub struct Process(pub Child);

impl Process {
    /// Asks the process to stop (SIGTERM) and waits up to `timeout` for it to exit.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub use netslo_tests::free_port;

/// A TCP server on 127.0.0.1 that accepts every connection and closes it: a target that
/// answers. Its port refuses once it is stopped or dropped.
pub struct AcceptingServer {
    pub port: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AcceptingServer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                if let Ok((socket, _)) = listener.accept().await {
                    drop(socket);
                }
            }
        });
        AcceptingServer {
            port,
            task: Some(task),
        }
    }

    /// Stops serving and returns once the listener is closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for AcceptingServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls `probe` every half second until it yields a value or `timeout` passes.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    eventually_every(
        what,
        timeout,
        Duration::from_millis(500),
        String::new,
        probe,
    )
    .await
}

/// Polls `probe` every `poll` until it yields a value or `timeout` passes, then fails with
/// `logs()` in the message.
pub async fn eventually_every<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    logs: impl Fn() -> String,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            logs()
        );
        tokio::time::sleep(poll).await;
    }
}

/// The status code of `GET path` on a plain-HTTP endpoint (the admin port), if it answers.
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}

/// A condition's status and reason.
pub fn condition(check: &ConnectivityCheck, type_: &str) -> Option<(String, String)> {
    let status = check.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone()))
}

/// Where an operator process listens.
#[derive(Debug, Clone)]
pub struct OperatorPorts {
    pub channel: u16,
    pub admin: u16,
}

impl OperatorPorts {
    pub fn free() -> Self {
        OperatorPorts {
            channel: free_port(),
            admin: free_port(),
        }
    }
}

/// Starts `netslo-operator` in `namespace` with its channel on loopback, logging to `log`
/// (appended, so a restarted operator's log follows the first one's). It acts on the checks
/// of `watch` only (`--watch-namespace`), or of every namespace if `None`, which only a test
/// with a plane of its own may ask for. Its Events name it `netslo-operator-<namespace>`.
pub fn start_operator(
    plane: &ControlPlane,
    namespace: &str,
    watch: Option<&str>,
    ports: &OperatorPorts,
    log: &Path,
    extra_args: &[&str],
) -> Process {
    start_operator_with_env(plane, namespace, watch, ports, log, extra_args, &[])
}

/// [`start_operator`] with extra environment variables.
pub fn start_operator_with_env(
    plane: &ControlPlane,
    namespace: &str,
    watch: Option<&str>,
    ports: &OperatorPorts,
    log: &Path,
    extra_args: &[&str],
    env: &[(&str, String)],
) -> Process {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Process(
        Command::new(workspace_binary("netslo-operator").unwrap())
            .env("KUBECONFIG", plane.kubeconfig())
            .env("RUST_LOG", "info,netslo_operator=debug")
            .args([
                "--namespace",
                namespace,
                "--pod-name",
                &format!("netslo-operator-{namespace}"),
            ])
            .args(watch.iter().flat_map(|ns| ["--watch-namespace", ns]))
            .args([
                "--channel-addr",
                &format!("127.0.0.1:{}", ports.channel),
                "--channel-names",
                "127.0.0.1",
            ])
            .args(["--admin-addr", &format!("127.0.0.1:{}", ports.admin)])
            .args(extra_args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

/// A running operator and what an external agent named `office` needs to report to it: the
/// channel's port, its CA and a token, all in `dir`.
pub struct OperatorForOffice {
    /// Held for its drop, which stops the operator.
    pub _operator: Process,
    pub channel_port: u16,
    pub ca: PathBuf,
    pub token: PathBuf,
}

/// Starts the operator in `system` for the checks of `watch` (see [`start_operator`]; logging
/// to `dir/operator.log`, with `extra_args` and `env`) and registers the external agent
/// `office` with it.
pub async fn operator_for_office(
    plane: &ControlPlane,
    client: &Client,
    system: &str,
    watch: Option<&str>,
    dir: &Path,
    extra_args: &[&str],
    env: &[(&str, String)],
) -> OperatorForOffice {
    let ports = OperatorPorts::free();
    let operator = start_operator_with_env(
        plane,
        system,
        watch,
        &ports,
        &dir.join("operator.log"),
        extra_args,
        env,
    );
    let ca = fetch_operator_ca(client, system, dir).await;
    let token = external_agent_token(client, system, "office", dir).await;
    OperatorForOffice {
        _operator: operator,
        channel_port: ports.channel,
        ca,
        token,
    }
}

/// Waits for the operator's channel CA and writes it to `dir/ca.crt`.
pub async fn fetch_operator_ca(client: &Client, namespace: &str, dir: &Path) -> PathBuf {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let ca = eventually(
        "the operator's CA ConfigMap",
        Duration::from_secs(60),
        async || {
            config_maps
                .get_opt("netslo-operator-ca")
                .await
                .ok()??
                .data?
                .get("ca.crt")
                .cloned()
        },
    )
    .await;
    let path = dir.join("ca.crt");
    std::fs::write(&path, ca).unwrap();
    path
}

/// Creates the service account of external agent `name` in the operator's namespace and
/// writes a token for the netslo audience to `dir/<name>.token`.
pub async fn external_agent_token(
    client: &Client,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> PathBuf {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    let request: TokenRequest = serde_json::from_value(
        json!({"spec": {"audiences": ["netslo"], "expirationSeconds": 3600}}),
    )
    .unwrap();
    let token = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap();
    let path = dir.join(format!("{name}.token"));
    std::fs::write(&path, token.status.unwrap().token).unwrap();
    path
}

/// Starts `netslo-agent` as external agent `name` reporting to the operator on `channel_port`,
/// with 1 s windows; `output` is the agent's `--output` and its stdout goes to `stdout`.
pub fn start_external_agent(
    name: &str,
    channel_port: u16,
    ca: &Path,
    token: &Path,
    output: &str,
    stdout: Stdio,
    log: &Path,
) -> Process {
    Process(
        external_agent_command(name, channel_port, ca, token, output)
            .stdout(stdout)
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The command line of [`start_external_agent`], for tests that run the agent differently.
pub fn external_agent_command(
    name: &str,
    channel_port: u16,
    ca: &Path,
    token: &Path,
    output: &str,
) -> Command {
    let mut command = Command::new(workspace_binary("netslo-agent").unwrap());
    command
        .args(["--node-name", name, "run"])
        .args([
            "--operator-url",
            &format!("https://127.0.0.1:{channel_port}"),
        ])
        .arg("--operator-ca")
        .arg(ca)
        .arg("--token-file")
        .arg(token)
        .args(["--agent-name", name, "--window-seconds", "1"])
        .args(["--output", output]);
    command
}

/// The operator's and agents' logs, for failure messages.
pub fn logs(dir: &Path, files: &[&str]) -> String {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            format!("--- {f}\n{text}\n")
        })
        .collect()
}

/// Grants checks in `namespace` the external destinations `cidrs` with a ConnectivityPolicy
/// (cluster-scoped, named after the namespace): without one, checks may probe only their own
/// namespace and the cluster's services. Loopback is granted too (the agents refuse it
/// otherwise, whatever the CIDRs say): the tests' servers listen there.
pub async fn grant_external(client: &Client, namespace: &str, cidrs: &[&str]) {
    let policies: Api<netslo_crds::v1alpha1::ConnectivityPolicy> = Api::all(client.clone());
    let policy = serde_json::from_value(json!({
        "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
        "metadata": {"name": format!("grant-{namespace}")},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "external": {"cidrs": cidrs},
            "sensitiveDestinations": {"allowLoopback": true},
        },
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}
