//! A cluster's network on this machine: stand-in nodes and pods as network namespaces on one
//! bridge, joined to the host (where the control plane and the operator run) by an uplink,
//! and the processes inside them, killed when the test ends however it ends.

use std::ffi::OsStr;
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use netslo_agent::testbed::{Host, Netns, Topology, Uplink};

/// Namespaces on a bridge plus the host's uplink onto it.
#[derive(Debug)]
pub struct Bed {
    // Held for its drop, and first: it is the host's interface, the namespaces are the test's.
    pub _uplink: Uplink,
    pub topology: Topology,
    /// The host's address on the bridge: where the operator's channel listens.
    pub host_ip: Ipv4Addr,
}

impl Bed {
    /// `hosts` namespaces at .1 … .n of a /24 of this bed's own, the host at .254. The uplink
    /// routes the /24 in the host's namespace, so no two beds may share one: not two in this
    /// process (a counter picks the second octet), nor two test processes (the process id
    /// picks the third).
    pub fn new(hosts: u8) -> Bed {
        static BEDS: AtomicU8 = AtomicU8::new(0);
        let second = 78 + BEDS.fetch_add(1, Ordering::Relaxed) % 100;
        let third = u8::try_from(std::process::id() % 256).unwrap();
        let net = Ipv4Addr::new(10, second, third, 0);
        let topology = Topology::star_in(net, hosts).expect("namespaces on a bridge");
        let host_ip = Ipv4Addr::new(10, second, third, 254);
        let uplink = topology.uplink(host_ip).expect("uplink from the host");
        Bed {
            _uplink: uplink,
            topology,
            host_ip,
        }
    }

    pub fn host(&self, i: usize) -> &Host {
        &self.topology.hosts[i]
    }

    /// A free TCP port on the host's bridge address.
    pub fn free_port(&self) -> u16 {
        netslo_tests::free_port_on(self.host_ip)
    }
}

/// A child process with its stderr in `<dir>/<name>.log`, killed on drop.
#[derive(Debug)]
pub struct Process {
    child: Child,
}

impl Process {
    /// Starts `program args…` on the host, or inside `netns` (`ip netns exec` execs the
    /// program itself, so the child is the program and killing it kills the program).
    pub fn spawn<I, S>(
        dir: &Path,
        name: &str,
        netns: Option<&Netns>,
        program: &Path,
        args: I,
        env: &[(&str, &str)],
    ) -> Process
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.join(format!("{name}.log"))).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Process { child }
    }

    /// Whether it is still running (a dead operator or agent explains a timeout).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the tail of every `*.log` in a directory if the test panics while it is alive:
/// the operator's and agents' own words next to the failed assertion.
#[derive(Debug)]
pub struct LogsOnPanic {
    pub dir: PathBuf,
}

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", logs(&self.dir, 120));
        }
    }
}

/// The last `lines` lines of each `*.log` in `dir`.
pub fn logs(dir: &Path, lines: usize) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    let mut out = String::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let tail = &all[all.len().saturating_sub(lines)..];
        out.push_str(&format!(
            "----- {} (last {} of {} lines)\n{}\n",
            f.display(),
            tail.len(),
            all.len(),
            tail.join("\n")
        ));
    }
    out
}

/// Polls `probe` every 500 ms until it returns `Ok`; on timeout fails with what it last saw.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What every agent started in a stand-in node or pod shares: its binary, the directory for
/// logs and tokens, and the operator's channel.
#[derive(Clone, Copy)]
pub struct AgentLauncher<'a> {
    pub client: &'a kube::Client,
    pub dir: &'a Path,
    pub agent_bin: &'a Path,
    pub operator_url: &'a str,
    pub ca_file: &'a Path,
}

impl AgentLauncher<'_> {
    /// Starts `netslo-agent run` inside `netns` as the agent `agent_name` on `node`, with a
    /// token bound to `pod`: what a projected token gives a real pod (its service account, and
    /// the pod and node the API server records in the token). One-second windows; `extra`
    /// arguments are appended.
    pub async fn start(
        &self,
        netns: &Netns,
        pod: &k8s_openapi::api::core::v1::Pod,
        node: &str,
        agent_name: &str,
        extra: &[&str],
    ) -> Result<Process, String> {
        let token = netslo_tests::cluster::pod_bound_token(self.client, pod, "netslo", 3600)
            .await
            .map_err(|e| format!("token for agent {agent_name}: {e}"))?;
        let file_name = agent_name.replace('/', "-");
        let token_file = self.dir.join(format!("{file_name}.token"));
        std::fs::write(&token_file, token).map_err(|e| e.to_string())?;
        let mut args = vec![
            "--node-name",
            node,
            "run",
            "--operator-url",
            self.operator_url,
            "--operator-ca",
            self.ca_file.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--agent-name",
            agent_name,
            "--window-seconds",
            "1",
            // Two cores shared with the control plane: a probe a little late is still a
            // measurement, not a prober fault.
            "--max-lag-ms",
            "200",
            "--output",
            "none",
        ];
        args.extend_from_slice(extra);
        Ok(Process::spawn(
            self.dir,
            &format!("agent-{file_name}"),
            Some(netns),
            self.agent_bin,
            args,
            &[("RUST_LOG", "info"), ("NO_COLOR", "1")],
        ))
    }
}
