//! Test support for netslo's integration and end-to-end tests: a real control plane
//! ([`control_plane`]) with a throwaway PKI ([`pki`]).

pub mod cluster;
pub mod control_plane;
pub mod pki;

use std::path::{Path, PathBuf};

/// Why the test bed could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate test certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("cannot start {component}: {source}")]
    Spawn {
        component: &'static str,
        source: std::io::Error,
    },
    #[error("control-plane binaries: {0}")]
    Build(String),
    #[error("control plane not ready: {0}")]
    NotReady(String),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("kubectl failed: {0}")]
    Kubectl(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Short CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "Io",
            Self::Pki(_) => "Pki",
            Self::Spawn { .. } => "Spawn",
            Self::Build(_) => "Build",
            Self::NotReady(_) => "NotReady",
            Self::Kubeconfig(_) => "Kubeconfig",
            Self::Kubectl(_) => "Kubectl",
            Self::Kube(_) => "Kube",
        }
    }
}

/// A TCP port free on the loopback address now; the caller binds it soon after.
pub fn free_port() -> u16 {
    free_port_on(std::net::Ipv4Addr::LOCALHOST)
}

/// A TCP port free on `ip` now; the caller binds it soon after.
#[allow(clippy::expect_used)] // test support: no port means no test
pub fn free_port_on(ip: impl Into<std::net::IpAddr>) -> u16 {
    std::net::TcpListener::bind((ip.into(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on the test address")
        .port()
}

/// Path of a binary of this workspace (`netslo-operator`, `netslo-agent`), built first if
/// needed, from the same profile and target directory as the running test.
pub fn workspace_binary(name: &str) -> Result<PathBuf, Error> {
    // Test binaries live in <target>/<profile>/deps; workspace binaries one level up.
    let exe = std::env::current_exe().map_err(|e| Error::io(Path::new("current_exe"), e))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Build("no target dir".into()))?;
    // Benchmarks run from the release profile and measure release binaries.
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--bin", name])
        .args(release.then_some("--release"))
        .current_dir(control_plane::repo_root())
        .output()
        .map_err(|source| Error::Spawn {
            component: "cargo build",
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Build(format!(
            "cargo build --bin {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(profile_dir.join(name))
}
