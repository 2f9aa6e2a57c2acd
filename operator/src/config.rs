//! Operator configuration: flags, each with an environment variable for Deployments.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// netslo operator: turns ConnectivityChecks into measured connectivity and SLO status.
#[derive(Debug, Clone, Parser)]
#[command(name = "netslo-operator", version)]
pub struct Config {
    /// Address of the admin endpoint serving /livez and /readyz.
    #[arg(long, env = "NETSLO_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log format on stderr.
    #[arg(long, env = "NETSLO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long to wait for the netslo CRDs to be served before giving up at start.
    #[arg(long, env = "NETSLO_CRD_WAIT_SECONDS", default_value_t = 60)]
    pub crd_wait_seconds: u64,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}
