//! A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager,
//! built from the Go module proxy (`tests/control-plane/build.sh`), started on free loopback
//! ports with a throwaway PKI.
//!
//! Two ways to hold one:
//! - [`shared`]: one plane per test binary, started on first use; each test gets its own
//!   namespace and its own client (clients are bound to the test's runtime). A guardian process
//!   stops the plane and removes its files when the test binary exits, however it exits
//!   (success, panic, abort, SIGKILL).
//! - [`ControlPlane::start`] with a directory: a plane that outlives the process, for
//!   `just control-plane up` (stopped with [`stop_detached`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Error;
use crate::pki::Pki;

/// Address the API server advertises. It must not be loopback (the API server refuses it for
/// the `kubernetes` Service's endpoints), need not be reachable in tier A, and comes from
/// TEST-NET-1 so it can never route anywhere real. No host configuration is changed.
const ADVERTISE_ADDRESS: &str = "192.0.2.10";
const SERVICE_CIDR: &str = "10.96.0.0/16";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(90);

/// The directory holding the pinned control-plane binaries, building them first if needed.
/// `NETSLO_CONTROL_PLANE_BIN` overrides the build (a directory with etcd, kube-apiserver, ...).
pub fn binaries() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(dir) = std::env::var("NETSLO_CONTROL_PLANE_BIN") {
            return Ok(PathBuf::from(dir));
        }
        let script = repo_root().join("tests/control-plane/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!("{} failed ({})", script.display(), out.status));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
            .ok_or_else(|| format!("{} printed no directory", script.display()))
    })
    .clone()
    .map_err(Error::Build)
}

/// The repository root (this crate lives in `tests/`): the checkout Cargo runs the test from.
/// Not only the path built in: a shared target directory serves clones at other paths (CI's),
/// and Cargo takes a test built in one for fresh in another, which would run the scripts of a
/// checkout that may be gone.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// One process of the plane, restartable with the same arguments.
#[derive(Debug)]
struct Component {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Component {
    fn spawn(&mut self, detach: bool) -> Result<(), Error> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| Error::io(&self.log, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&self.log, e))?;
        // A detached plane must survive the session of the command that started it.
        let mut cmd = if detach && Path::new("/usr/bin/setsid").exists() {
            let mut c = Command::new("/usr/bin/setsid");
            c.arg(&self.program);
            c
        } else {
            Command::new(&self.program)
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            component: self.name,
            source,
        })?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(format!(
            "{} exited ({status}); last log lines:\n{}",
            self.name,
            tail(&self.log, 30)
        ))
    }
}

/// A running control plane.
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    remove_dir_on_drop: bool,
    detached: bool,
    kubeconfig: PathBuf,
    pki: Pki,
    apiserver_port: u16,
    components: Vec<Component>,
}

/// How to start a plane.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Keep files here instead of a fresh temporary directory (removed on drop).
    pub dir: Option<PathBuf>,
    /// Leave the processes running when this process exits (for `just control-plane up`).
    pub detach: bool,
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until they serve:
    /// API server `/readyz`, then the `default` namespace's ServiceAccount, which only the
    /// controller manager creates. Retries on a port race.
    pub fn start(options: StartOptions) -> Result<Self, Error> {
        let bin = binaries()?;
        let mut last_err = None;
        for _attempt in 0..3 {
            match Self::start_once(&bin, &options) {
                Ok(plane) => return Ok(plane),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or(Error::Build("no start attempt made".into())))
    }

    fn start_once(bin: &Path, options: &StartOptions) -> Result<Self, Error> {
        let (dir, remove_dir_on_drop) = match &options.dir {
            Some(dir) => (dir.clone(), false),
            None => (
                tempfile::Builder::new()
                    .prefix("netslo-cp-")
                    .tempdir()
                    .map_err(|e| Error::io(Path::new("/tmp"), e))?
                    .keep(),
                true,
            ),
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let pki = Pki::generate(&dir.join("pki"), &[ADVERTISE_ADDRESS])?;
        let [etcd_client, etcd_peer, apiserver_port, kcm_port] = free_ports()?;
        let kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            apiserver_port,
            &pki.ca_cert,
            &pki.admin_cert,
            &pki.admin_key,
        )?;

        let p = |path: &Path| path.display().to_string();
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let components = vec![
            Component {
                name: "etcd",
                program: bin.join("etcd"),
                args: vec![
                    "--name=netslo-test".into(),
                    format!("--data-dir={}", p(&dir.join("etcd"))),
                    format!("--listen-client-urls={etcd_url}"),
                    format!("--advertise-client-urls={etcd_url}"),
                    format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                    format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                    format!("--initial-cluster=netslo-test=http://127.0.0.1:{etcd_peer}"),
                    "--unsafe-no-fsync=true".into(),
                    "--log-level=warn".into(),
                ],
                log: dir.join("etcd.log"),
                child: None,
            },
            Component {
                name: "kube-apiserver",
                program: bin.join("kube-apiserver"),
                args: vec![
                    format!("--etcd-servers={etcd_url}"),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={apiserver_port}"),
                    format!("--advertise-address={ADVERTISE_ADDRESS}"),
                    format!("--cert-dir={}", p(&dir.join("apiserver-certs"))),
                    format!("--tls-cert-file={}", p(&pki.apiserver_cert)),
                    format!("--tls-private-key-file={}", p(&pki.apiserver_key)),
                    format!("--client-ca-file={}", p(&pki.ca_cert)),
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                    format!("--service-account-key-file={}", p(&pki.service_account_pub)),
                    format!(
                        "--service-account-signing-key-file={}",
                        p(&pki.service_account_key)
                    ),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    "--authorization-mode=RBAC".into(),
                    "--allow-privileged=true".into(),
                    "--endpoint-reconciler-type=none".into(),
                    "--event-ttl=1h".into(),
                    "--v=1".into(),
                ],
                log: dir.join("kube-apiserver.log"),
                child: None,
            },
            Component {
                name: "kube-controller-manager",
                program: bin.join("kube-controller-manager"),
                args: vec![
                    format!("--kubeconfig={}", p(&kubeconfig)),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={kcm_port}"),
                    format!("--root-ca-file={}", p(&pki.ca_cert)),
                    format!(
                        "--service-account-private-key-file={}",
                        p(&pki.service_account_key)
                    ),
                    "--use-service-account-credentials=true".into(),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                    format!("--cluster-signing-cert-file={}", p(&pki.ca_cert)),
                    format!("--cluster-signing-key-file={}", p(&pki.ca_key)),
                    // No kubelets heartbeat here: stand-in nodes must not be tainted and
                    // their pods evicted by the node lifecycle controller.
                    "--controllers=*,-node-lifecycle-controller".into(),
                    "--v=1".into(),
                ],
                log: dir.join("kube-controller-manager.log"),
                child: None,
            },
        ];
        let mut plane = Self {
            dir,
            remove_dir_on_drop,
            detached: options.detach,
            kubeconfig,
            pki,
            apiserver_port,
            components,
        };
        for c in &mut plane.components {
            c.spawn(options.detach)?;
        }
        plane.write_pids()?;
        if !options.detach {
            plane.spawn_guardian()?;
        }
        plane.wait_ready()?;
        Ok(plane)
    }

    /// Path of an admin (system:masters) kubeconfig for kubectl and clients.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The plane's working directory (PKI, logs, etcd data).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plane's PKI, e.g. to mint client certificates for other users.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// A new admin client, bound to the calling runtime.
    pub async fn client(&self) -> Result<Client, Error> {
        client_from_kubeconfig(&self.kubeconfig).await
    }

    /// `kubectl` (the pinned build) with this plane's admin kubeconfig.
    pub fn kubectl(&self) -> Result<Command, Error> {
        let mut cmd = Command::new(binaries()?.join("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        Ok(cmd)
    }

    /// Kills and restarts the API server with the same flags and port, then waits until it
    /// serves again: for tests of watches and clients that must survive an API server restart.
    pub fn restart_apiserver(&mut self) -> Result<(), Error> {
        if let Some(c) = self
            .components
            .iter_mut()
            .find(|c| c.name == "kube-apiserver")
        {
            c.kill();
            c.spawn(self.detached)?;
        }
        self.write_pids()?;
        self.wait_ready()
    }

    /// Stops every process (etcd last) and removes the plane's files if they were temporary.
    pub fn stop(&mut self) {
        for c in self.components.iter_mut().rev() {
            c.kill();
        }
        if self.remove_dir_on_drop {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    fn write_pids(&self) -> Result<(), Error> {
        let pids: String = self
            .components
            .iter()
            .filter_map(Component::pid)
            .map(|p| format!("{p}\n"))
            .collect();
        let path = self.dir.join("pids");
        fs::write(&path, pids).map_err(|e| Error::io(&path, e))
    }

    /// A shell that waits for this process to end, however it ends, then kills the plane and
    /// removes its files. Statics are never dropped, and a panicking or killed test binary
    /// runs no destructors, so cleanup cannot live in `Drop` alone.
    fn spawn_guardian(&self) -> Result<(), Error> {
        let script = r#"parent=$1; dir=$2; pids=$3
            while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
            for p in $(cat "$pids" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
            if [ "$4" = remove ]; then rm -rf "$dir"; fi"#;
        Command::new("sh")
            .args(["-c", script, "netslo-cp-guardian"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(self.dir.join("pids"))
            .arg(if self.remove_dir_on_drop {
                "remove"
            } else {
                "keep"
            })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| Error::Spawn {
                component: "guardian",
                source,
            })?;
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let kubeconfig = self.kubeconfig.clone();
        loop {
            for c in &mut self.components {
                if let Some(reason) = c.exited() {
                    return Err(Error::NotReady(reason));
                }
            }
            let probe = kubeconfig.clone();
            let ready = block_on(async move {
                let client = client_from_kubeconfig(&probe).await.ok()?;
                let readyz = http::Request::get("/readyz").body(Vec::new()).ok()?;
                let body = client.request_text(readyz).await.ok()?;
                (body.trim() == "ok").then_some(())?;
                // The controller manager's ServiceAccount controller creates this: proof that
                // it runs and that namespaces get their default ServiceAccount.
                Api::<ServiceAccount>::namespaced(client, "default")
                    .get_opt("default")
                    .await
                    .ok()??;
                Some(())
            });
            if ready.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = self
                    .components
                    .iter()
                    .map(|c| format!("--- {}:\n{}", c.name, tail(&c.log, 15)))
                    .collect();
                return Err(Error::NotReady(format!(
                    "not ready after {STARTUP_TIMEOUT:?}\n{}",
                    logs.join("\n")
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if !self.detached {
            self.stop();
        }
    }
}

/// The group of tests that only read and write the API (no operator): they can share one
/// plane, each in namespaces of its own.
pub const API_ONLY: &str = "api-only";

/// The group of tests whose operators each watch only their own test's namespace
/// (`--watch-namespace`) and live in a namespace of their own: they share one plane as
/// installations for different teams share a cluster. An operator that watches every
/// namespace reconciles every check on its plane, so it needs a plane of its own.
pub const SCOPED_OPERATORS: &str = "scoped-operators";

/// The plane shared by the tests of `group`, started (with the CRDs installed) on first use
/// and stopped when the test binary exits. An operator reconciles every check on its plane,
/// so tests that run operators share a plane only within their module (`module_path!()`),
/// as they would if the module were a test binary of its own.
pub fn shared(group: &'static str) -> Result<&'static ControlPlane, Error> {
    type Planes = Mutex<HashMap<&'static str, &'static OnceLock<Result<ControlPlane, String>>>>;
    static PLANES: OnceLock<Planes> = OnceLock::new();
    // One slot per group, created under the lock; the plane itself starts outside it, so
    // groups start their planes side by side.
    let slot = *PLANES
        .get_or_init(Planes::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(group)
        .or_insert_with(|| Box::leak(Box::new(OnceLock::new())));
    slot.get_or_init(|| {
        let plane = ControlPlane::start(StartOptions::default()).map_err(|e| e.to_string())?;
        install_crds(&plane).map_err(|e| e.to_string())?;
        Ok(plane)
    })
    .as_ref()
    .map_err(|e| Error::NotReady(e.clone()))
}

/// Applies the committed CRDs (`config/crd/`) with the real kubectl, as users do, and waits
/// until each is Established.
pub fn install_crds(plane: &ControlPlane) -> Result<(), Error> {
    let crd_file = repo_root().join("config/crd/netslo.io.yaml");
    let out = plane
        .kubectl()?
        .args([
            "apply",
            "--server-side",
            "--field-manager=netslo-tests",
            "-f",
        ])
        .arg(&crd_file)
        .output()
        .map_err(|source| Error::Spawn {
            component: "kubectl",
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Kubectl(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let kubeconfig = plane.kubeconfig.clone();
    block_on(async move {
        let client = client_from_kubeconfig(&kubeconfig).await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        for crd in netslo_crds::crds() {
            let name = crd.metadata.name.unwrap_or_default();
            let cond = kube::runtime::conditions::is_crd_established();
            tokio::time::timeout(
                Duration::from_secs(30),
                kube::runtime::wait::await_condition(crds.clone(), &name, cond),
            )
            .await
            .map_err(|_| Error::NotReady(format!("CRD {name} not Established within 30s")))?
            .map_err(|e| Error::NotReady(format!("waiting for CRD {name}: {e}")))?;
        }
        Ok(())
    })
}

/// A namespace of its own for one test, deleted (with everything in it) on drop.
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// Creates `<prefix>-<random>` on `plane` and waits for its default ServiceAccount.
    pub async fn create(plane: &ControlPlane, prefix: &str) -> Result<Self, Error> {
        let client = plane.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let mut ns = Namespace::default();
        ns.metadata.generate_name = Some(format!("{prefix}-"));
        let created = namespaces.create(&PostParams::default(), &ns).await?;
        let name = created.metadata.name.unwrap_or_default();
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while sas.get_opt("default").await?.is_none() {
            if Instant::now() > deadline {
                return Err(Error::NotReady(format!(
                    "namespace {name} got no default ServiceAccount"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            name,
            kubeconfig: plane.kubeconfig.clone(),
        })
    }
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let kubeconfig = self.kubeconfig.clone();
        let name = self.name.clone();
        // A client of its own on a runtime of its own: the test's client is bound to the test's
        // runtime, which is blocked in this drop.
        block_on(async move {
            if let Ok(client) = client_from_kubeconfig(&kubeconfig).await {
                let _ = Api::<Namespace>::all(client)
                    .delete(&name, &DeleteParams::background())
                    .await;
            }
        });
    }
}

/// Stops a plane started with `detach` from its directory: kills the processes listed in its
/// `pids` file (only those still running from that directory's binaries) and removes it.
pub fn stop_detached(dir: &Path) -> Result<usize, Error> {
    let pids_file = dir.join("pids");
    let pids = fs::read_to_string(&pids_file).unwrap_or_default();
    let bin = binaries()?;
    let mut killed = 0;
    for pid in pids.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        // Guard against a recycled PID: only kill our own control-plane binaries.
        if String::from_utf8_lossy(&cmdline).contains(&*bin.to_string_lossy()) {
            let status = Command::new("kill").args(["-9", &pid.to_string()]).status();
            if status.map(|s| s.success()).unwrap_or(false) {
                killed += 1;
                await_exit(pid);
            }
        }
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(killed)
}

/// Waits (up to 10 s) until a killed process no longer runs: a signal is delivered
/// asynchronously, and a caller that removes files or reuses ports next must not race it.
fn await_exit(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 3 is the state; gone, zombie (Z) or dead (X) all mean it no longer runs.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if !matches!(state, Some(s) if s != "Z" && s != "X") {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<Client, Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(Client::try_from(config)?)
}

/// Writes a kubeconfig for a client certificate user.
pub fn write_kubeconfig(
    path: &Path,
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), Error> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: netslo-test
  cluster:
    server: https://127.0.0.1:{port}
    certificate-authority: {ca}
users:
- name: user
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: netslo-test
  context:
    cluster: netslo-test
    user: user
current-context: netslo-test
",
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    );
    fs::write(path, yaml).map_err(|e| Error::io(path, e))
}

/// Runs a future to completion on a runtime of its own, on a thread of its own, so it works
/// both inside and outside a tokio runtime.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt {
            Ok(rt) => Ok(rt.block_on(future)),
            Err(e) => Err(e),
        }
    });
    match handle.join() {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("cannot build a tokio runtime: {e}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    // Hold every listener until all ports are chosen, so no two are the same.
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0u16; N];
    for port in &mut ports {
        let l =
            TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
        *port = l
            .local_addr()
            .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
            .port();
        listeners.push(l);
    }
    Ok(ports)
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
