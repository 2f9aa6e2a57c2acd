//! `netslo-control-plane up|down|status`: a real control plane (etcd, kube-apiserver,
//! kube-controller-manager) for people and scripts, the same one the tests use.
//!
//! `up` starts it in the background with the netslo CRDs installed and prints the path of an
//! admin kubeconfig on its last line; `down` stops it and removes its files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use netslo_tests::control_plane::{self, ControlPlane, StartOptions};

#[derive(Parser, Debug)]
#[command(
    name = "netslo-control-plane",
    about = "Run a real Kubernetes control plane for netslo development"
)]
struct Args {
    /// Where the plane keeps its PKI, logs, etcd data and kubeconfig.
    #[arg(long, env = "NETSLO_CONTROL_PLANE_DIR", global = true)]
    dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start etcd, kube-apiserver and kube-controller-manager in the background, install the
    /// CRDs, and print the kubeconfig path.
    Up {
        /// Skip installing the netslo CRDs.
        #[arg(long)]
        no_crds: bool,
    },
    /// Stop the plane and remove its files.
    Down,
    /// Print the kubeconfig path if the plane is up; exit 1 otherwise.
    Status,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let dir = args.dir.unwrap_or_else(default_dir);
    let kubeconfig = dir.join("admin.kubeconfig");
    match args.command {
        Cmd::Up { no_crds } => {
            if dir.join("pids").exists() {
                eprintln!(
                    "a control plane already runs from {} (run `down` first)",
                    dir.display()
                );
                return ExitCode::FAILURE;
            }
            let plane = match ControlPlane::start(StartOptions {
                dir: Some(dir.clone()),
                detach: true,
            }) {
                Ok(plane) => plane,
                Err(err) => {
                    eprintln!("cannot start the control plane: {err}");
                    return ExitCode::FAILURE;
                }
            };
            if !no_crds && let Err(err) = control_plane::install_crds(&plane) {
                eprintln!("control plane is up, but installing the CRDs failed: {err}");
                return ExitCode::FAILURE;
            }
            eprintln!(
                "control plane up at {}; logs in {}",
                plane.server_url(),
                dir.display()
            );
            eprintln!("use it with: export KUBECONFIG={}", kubeconfig.display());
            println!("{}", kubeconfig.display());
            ExitCode::SUCCESS
        }
        Cmd::Down => match control_plane::stop_detached(&dir) {
            Ok(n) => {
                eprintln!("stopped {n} processes and removed {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("cannot stop the control plane: {err}");
                ExitCode::FAILURE
            }
        },
        Cmd::Status => {
            if dir.join("pids").exists() && kubeconfig.exists() {
                println!("{}", kubeconfig.display());
                ExitCode::SUCCESS
            } else {
                eprintln!("no control plane runs from {}", dir.display());
                ExitCode::FAILURE
            }
        }
    }
}

fn default_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| control_plane::repo_root().join("target"));
    target.join("control-plane/run")
}
