//! `just demo` works, and leaves nothing behind: the demo (`tests/examples/demo.rs`) runs as
//! users run it, with `--keep`, so that after the whole scenario it stays up until Ctrl-C. The
//! test asserts from its output that every sample check became Ready, that the two faults got
//! their localised verdicts (an endpoint, a zone pair) and that each recovered; then it sends
//! SIGINT and asserts that no network namespace, interface, iptables rule, `/etc/netns` entry
//! or process of the demo is left. What is the demo's is told by name (its namespaces and
//! interfaces carry its process id, its network is 10.213.0.0/24), so tests running beside it
//! may change the host's network meanwhile.
//!
//! Needs root, `ip` and `iptables`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netslo_agent::testbed;
use netslo_tests::control_plane::repo_root;

/// What of the demo with process id `pid` is in the host's network: namespaces, interfaces
/// and `/etc/netns` entries named after it (the testbed names them `nsl<pid>…`), iptables
/// rules that mention its network.
fn demo_network(pid: u32) -> Vec<String> {
    let run = |program: &str, args: &[&str]| {
        let out = Command::new(program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let own = format!("nsl{pid}");
    let netns = run("ip", &["netns", "list"])
        .lines()
        .filter(|l| l.contains(&own))
        .map(|l| format!("netns: {l}"))
        .collect::<Vec<_>>();
    let links = run("ip", &["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_owned()))
        .filter(|name| name.contains(&own))
        .map(|name| format!("link: {name}"))
        .collect::<Vec<_>>();
    let rules = run("iptables-save", &[])
        .lines()
        .filter(|l| l.contains(DEMO_NET))
        .map(|r| format!("rule: {r}"))
        .collect::<Vec<_>>();
    let etc_netns = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .filter(|n| n.contains(&own))
                .map(|n| format!("/etc/netns: {n}"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    netns
        .into_iter()
        .chain(links)
        .chain(rules)
        .chain(etc_netns)
        .collect()
}

/// The demo's network, as its addresses start.
const DEMO_NET: &str = "10.213.0.";

/// Live processes whose command line mentions `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let pid = e.ok()?.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(needle) && pid != std::process::id())
                .then(|| format!("{pid}: {cmdline}"))
        })
        .collect()
}

/// The demo, interrupted (as Ctrl-C would) and waited for when dropped: a failing test
/// leaves nothing running either.
struct Interrupted(std::process::Child);

/// How long a demo may take to remove everything once interrupted (it takes seconds).
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

impl Interrupted {
    /// Ctrl-C, and the demo's exit status; `None` if it did not end within
    /// [`CLEANUP_TIMEOUT`], and is then killed: a demo that ignores Ctrl-C fails the test
    /// rather than holding it up for ever.
    fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        while Instant::now() < deadline {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => break,
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Interrupted {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            self.interrupt();
        }
    }
}

#[test]
fn the_demo_converges_localises_both_faults_recovers_and_cleans_up() {
    testbed::require();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "netslo-tests",
            "--example",
            "demo",
        ])
        .current_dir(repo_root())
        .status()
        .unwrap();
    assert!(built.success(), "building the demo");
    let exe = std::env::current_exe().unwrap();
    let demo = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/demo");

    let mut child = Interrupted(
        Command::new(&demo)
            .arg("--keep")
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let (tx, rx) = mpsc::channel();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo| {line}");
            // Keep draining after the test stops listening: the demo must never block on
            // or fail writing its output.
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(480);
    // The last line `--keep` prints before it waits.
    while !output
        .iter()
        .any(|l: &String| l.contains("logs of the operator and agents"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => output.push(line),
            Err(_) => panic!("the demo did not reach its end:\n{}", output.join("\n")),
        }
    }
    let text = output.join("\n");
    for expected in [
        "==> all checks Ready",
        "==> Endpoint verdict: endpoint 10.213.0.5:8080 of api fails from 3/3 sources (TCPTimeout)",
        "==> recovered: the verdict on api is gone",
        "==> ZonePair verdict: zone zone-b to zone zone-a fails (TCPTimeout)",
        "==> recovered: no verdict left",
        "export KUBECONFIG=",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Every sample check was listed Ready by kubectl before the faults.
    let table_start = output
        .iter()
        .position(|l| l.contains("==> all checks Ready"))
        .unwrap();
    let ready_rows: Vec<&String> = output[table_start..]
        .iter()
        .take_while(|l| !l.contains("==> fault 1"))
        .filter(|l| l.contains("ObjectivesMet"))
        .collect();
    assert_eq!(ready_rows.len(), 6, "{ready_rows:?}");

    // Still up with --keep: Ctrl-C ends it and removes everything.
    let status = child
        .interrupt()
        .unwrap_or_else(|| panic!("the demo did not end within {CLEANUP_TIMEOUT:?} of Ctrl-C"));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l.contains("==> cleaning up")),
        "{rest:?}"
    );
    assert!(
        status.success(),
        "Ctrl-C is how a kept demo ends: {status:?}"
    );
    // Child processes are killed and reaped on the way out; give the last ones a moment.
    // Each names the demo's directory or network on its command line.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = processes_with("netslo-demo-");
        left.extend(processes_with(DEMO_NET));
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes left behind: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        demo_network(pid),
        Vec::<String>::new(),
        "the demo's network is gone"
    );
}
