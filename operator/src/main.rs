//! `netslo-operator`: the only writer of ConnectivityCheck status.
//!
//! Thin on purpose: parse the configuration, set up logging and one TLS crypto provider, then
//! hand over to the library.

use std::process::ExitCode;

use clap::Parser;
use netslo_operator::config::Config;

/// mimalloc rather than the system allocator: the operator allocates per result bucket on
/// every runtime thread, and with glibc's malloc (measured at 500 nodes) allocation took a
/// third of its CPU and freed memory stayed with per-thread arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = Config::parse();
    netslo_operator::telemetry::init_logging(config.log_format);
    // kube's rustls uses ring; install it as the process default before any TLS config exists
    // so that no second provider compiled in by a dependency can make rustls panic.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        tracing::debug!("a rustls crypto provider was already installed");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("netslo-operator: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(netslo_operator::run(config));
    // Background tasks (watches, connections) are cancelled, not awaited.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(reason = err.reason(), "netslo-operator stopped: {err}");
            ExitCode::FAILURE
        }
    }
}
