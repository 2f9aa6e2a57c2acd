//! Leader election between real `netslo-operator` processes (`--leader-elect`) on a real API
//! server: exactly one is ready and named by the Lease; SIGTERM hands over at once (the leader
//! releases the Lease); SIGKILL hands over only after the Lease expires; a leader whose Lease
//! was taken stops with an error.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::operator_common::{eventually_every, free_port, http_status};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use netslo_tests::control_plane::{self, ControlPlane, TestNamespace};
use netslo_tests::workspace_binary;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How often waits poll: handovers are timed to within a poll.
const POLL: Duration = Duration::from_millis(200);

const LEASE: &str = "netslo-operator";
/// The operator's default lease duration.
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// One operator process, killed when the test ends however it ends.
struct Operator {
    pod: &'static str,
    child: Child,
    admin: String,
    log: PathBuf,
}

impl Operator {
    fn start(plane: &ControlPlane, namespace: &str, pod: &'static str, dir: &Path) -> Self {
        let admin = format!("127.0.0.1:{}", free_port());
        let log = dir.join(format!("{pod}.log"));
        // Built once, before the first start, so that operators start close together.
        static BINARY: OnceLock<PathBuf> = OnceLock::new();
        let binary = BINARY.get_or_init(|| workspace_binary("netslo-operator").unwrap());
        let child = Command::new(binary)
            .env("KUBECONFIG", plane.kubeconfig())
            .env("RUST_LOG", "info")
            .args([
                "--leader-elect",
                "--namespace",
                namespace,
                "--pod-name",
                pod,
            ])
            // On a shared plane: act on no other test's checks.
            .args(["--watch-namespace", namespace])
            .args(["--admin-addr", &admin])
            .args(["--channel-addr", &format!("127.0.0.1:{}", free_port())])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            pod,
            child,
            admin,
            log,
        }
    }

    fn ready(&self) -> bool {
        http_status(&self.admin, "/readyz") == Some(200)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).unwrap();
        kill(Pid::from_raw(pid), signal).unwrap();
    }

    /// Waits for the process to exit.
    fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}\n{}",
                self.pod,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the Lease names this process (`<pod name>_<random>`).
    fn holds(&self, lease: &Lease) -> bool {
        holder(lease).starts_with(&format!("{}_", self.pod))
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn holder(lease: &Lease) -> String {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default()
}

fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

fn renew_time(lease: &Lease) -> Timestamp {
    lease.spec.as_ref().unwrap().renew_time.clone().unwrap().0
}

fn acquire_time(lease: &Lease) -> Timestamp {
    lease.spec.as_ref().unwrap().acquire_time.clone().unwrap().0
}

#[tokio::test]
async fn one_leader_hands_over_on_sigterm_at_once_and_after_sigkill_on_expiry() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let client = plane.client().await.unwrap();
    let system = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client, &system.name);
    let dir = tempfile::tempdir().unwrap();

    let mut operators = vec![
        Operator::start(plane, &system.name, "op-a", dir.path()),
        Operator::start(plane, &system.name, "op-b", dir.path()),
    ];
    let logs = |ops: &[Operator]| {
        ops.iter()
            .map(|o| format!("--- {}\n{}", o.pod, o.log()))
            .collect::<String>()
    };

    // Exactly one becomes ready, and the Lease names it.
    let started = Instant::now();
    let leader = eventually_every(
        "one ready operator",
        Duration::from_secs(90),
        POLL,
        || logs(&operators),
        async || {
            let ready: Vec<usize> = (0..operators.len())
                .filter(|&i| operators[i].ready())
                .collect();
            assert!(ready.len() <= 1, "two leaders\n{}", logs(&operators));
            ready.first().copied()
        },
    )
    .await;
    println!("first leader ready after {:?}", started.elapsed());
    let follower = 1 - leader;
    let lease = leases.get(LEASE).await.unwrap();
    assert!(operators[leader].holds(&lease), "{lease:?}");
    assert_eq!(transitions(&lease), 0, "created, not taken over");
    eventually_every(
        "the candidate live",
        Duration::from_secs(30),
        POLL,
        || logs(&operators),
        async || (http_status(&operators[follower].admin, "/livez") == Some(200)).then_some(()),
    )
    .await;
    // It contends: it has seen the Lease held by the leader.
    eventually_every(
        "the candidate waiting for the Lease",
        Duration::from_secs(30),
        POLL,
        || logs(&operators),
        async || {
            operators[follower]
                .log()
                .contains("the Lease is held by another replica")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        http_status(&operators[follower].admin, "/readyz"),
        Some(503),
        "a waiting candidate is not ready"
    );

    // The leader renews: renewTime moves, the holder does not.
    let first_renewal = renew_time(&lease);
    let renewed = eventually_every(
        "a renewal",
        Duration::from_secs(30),
        POLL,
        || logs(&operators),
        async || {
            let lease = leases.get(LEASE).await.ok()?;
            (renew_time(&lease) > first_renewal).then_some(lease)
        },
    )
    .await;
    assert!(operators[leader].holds(&renewed), "{renewed:?}");
    assert!(!operators[follower].ready(), "still one leader");

    // SIGTERM: the leader releases the Lease as it stops, so the follower takes over at its
    // next attempt, long before the old term would have expired.
    let before = leases.get(LEASE).await.unwrap();
    operators[leader].signal(Signal::SIGTERM);
    let status = operators[leader].exit(Duration::from_secs(20));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    assert!(
        operators[leader].log().contains("released the Lease"),
        "{}",
        operators[leader].log()
    );
    let handed_over = Instant::now();
    eventually_every(
        "the follower ready",
        Duration::from_secs(60),
        POLL,
        || logs(&operators),
        async || operators[follower].ready().then_some(()),
    )
    .await;
    println!("handover after SIGTERM: {:?}", handed_over.elapsed());
    let lease = leases.get(LEASE).await.unwrap();
    assert!(operators[follower].holds(&lease), "{lease:?}");
    assert_eq!(transitions(&lease), 1, "{lease:?}");
    let since_last_renewal = acquire_time(&lease).duration_since(renew_time(&before));
    assert!(
        since_last_renewal < LEASE_DURATION.try_into().unwrap(),
        "taken over {since_last_renewal:?} after the last renewal: the release did not work"
    );

    // SIGKILL the new leader: nothing is released. A newcomer must wait for the term to
    // expire, counted from when it first saw the last renewal.
    operators[follower].child.kill().unwrap();
    operators[follower].exit(Duration::from_secs(10));
    let orphaned = leases.get(LEASE).await.unwrap();
    assert!(operators[follower].holds(&orphaned), "{orphaned:?}");
    operators.push(Operator::start(plane, &system.name, "op-c", dir.path()));
    let newcomer = operators.len() - 1;
    let killed = Instant::now();
    eventually_every(
        "the newcomer ready",
        Duration::from_secs(90),
        POLL,
        || logs(&operators),
        async || operators[newcomer].ready().then_some(()),
    )
    .await;
    println!("handover after SIGKILL: {:?}", killed.elapsed());
    let lease = leases.get(LEASE).await.unwrap();
    assert!(operators[newcomer].holds(&lease), "{lease:?}");
    assert_eq!(transitions(&lease), 2, "{lease:?}");
    // Wall clocks of one host; a margin of a second for the clocks' granularity.
    let waited = acquire_time(&lease).duration_since(renew_time(&orphaned));
    assert!(
        waited
            >= (LEASE_DURATION - Duration::from_secs(1))
                .try_into()
                .unwrap(),
        "took over {waited:?} after the last renewal, before the term of {LEASE_DURATION:?} expired"
    );

    // Someone else writes the Lease (as a faster candidate would after a partition): the
    // leader finds out at its next renewal, stops, and exits non-zero to be restarted.
    let mut taken = lease.clone();
    let spec = taken.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        Timestamp::now(),
    ));
    leases
        .replace(LEASE, &PostParams::default(), &taken)
        .await
        .unwrap();
    let status = operators[newcomer].exit(Duration::from_secs(30));
    assert!(!status.success(), "losing the Lease is an error exit");
    let log = operators[newcomer].log();
    assert!(log.contains("LeadershipLost"), "{log}");
    assert_eq!(holder(&leases.get(LEASE).await.unwrap()), "intruder");
}
