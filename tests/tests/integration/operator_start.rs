//! `netslo-operator` starts against a real API server, becomes ready once the netslo CRDs are
//! served and its agent channel listens, and stops cleanly on SIGTERM.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netslo_tests::control_plane::TestNamespace;
use netslo_tests::{control_plane, workspace_binary};

fn get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn help_lists_real_flags() {
    let out = Command::new(workspace_binary("netslo-operator").unwrap())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    for flag in [
        "--admin-addr",
        "NETSLO_ADMIN_ADDR",
        "--log-format",
        "--crd-wait-seconds",
        "--watch-namespace",
        "NETSLO_WATCH_NAMESPACE",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn starts_becomes_ready_and_stops_on_sigterm() {
    let plane = control_plane::shared(control_plane::SCOPED_OPERATORS).expect("control plane");
    let namespace = TestNamespace::create(plane, "netslo-system").await.unwrap();
    let free_port = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let addr = format!("127.0.0.1:{}", free_port());
    let mut operator = Command::new(workspace_binary("netslo-operator").unwrap())
        .env("KUBECONFIG", plane.kubeconfig())
        .args(["--admin-addr", &addr, "--namespace", &namespace.name])
        // On a shared plane: act on no other test's checks.
        .args(["--watch-namespace", &namespace.name])
        .args(["--channel-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        if let Some(response) = get(&addr, "/readyz")
            && response.starts_with("HTTP/1.1 200")
        {
            break true;
        }
        if Instant::now() > deadline || operator.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if !ready {
        let _ = operator.kill();
        let mut stderr = String::new();
        operator
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        panic!("operator never became ready:\n{stderr}");
    }
    assert!(get(&addr, "/livez").unwrap().starts_with("HTTP/1.1 200"));

    let status = Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = operator.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "operator did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
}
