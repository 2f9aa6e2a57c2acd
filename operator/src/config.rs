//! Operator configuration: flags, each with an environment variable for Deployments.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};
use k8s_openapi::api::core::v1::Toleration;

/// netslo operator: turns ConnectivityChecks into measured connectivity and SLO status.
#[derive(Debug, Clone, Parser)]
#[command(name = "netslo-operator", version)]
pub struct Config {
    /// Address of the admin endpoint serving /livez and /readyz.
    #[arg(long, env = "NETSLO_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Address of a Prometheus scrape endpoint (`/metrics`) for the same metrics the OTLP
    /// export carries, named as a collector's Prometheus exporter names them. Off unless set.
    #[arg(long, env = "NETSLO_PROMETHEUS_ADDR")]
    pub prometheus_addr: Option<SocketAddr>,

    /// Log format on stderr.
    #[arg(long, env = "NETSLO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long to wait for the netslo CRDs to be served before giving up at start.
    #[arg(long, env = "NETSLO_CRD_WAIT_SECONDS", default_value_t = 60)]
    pub crd_wait_seconds: u64,

    /// The operator's namespace: mesh agents, external agents' service accounts, the channel's
    /// CA ConfigMap.
    #[arg(long, env = "POD_NAMESPACE", default_value = "netslo-system")]
    pub namespace: String,

    /// This replica's name, as the reporting instance of Events.
    #[arg(long, env = "POD_NAME", default_value = "netslo-operator")]
    pub pod_name: String,

    /// Act only on the ConnectivityChecks of this namespace (one team's or one environment's
    /// installation beside others on a shared cluster); unset, the checks of every namespace.
    /// Targets, workloads and nodes are still read cluster-wide.
    #[arg(long, env = "NETSLO_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Address the agent channel (HTTPS) listens on.
    #[arg(long, env = "NETSLO_CHANNEL_ADDR", default_value = "0.0.0.0:8443")]
    pub channel_addr: SocketAddr,

    /// Let agents upgrade to the framed channel: one connection per agent for assignments and
    /// results. Off, `/v1/channel` answers 404 and agents use one HTTP request per assignment
    /// poll and per batch, on two connections each (for a proxy in front of the operator that
    /// does not pass HTTP upgrades; it costs about 60 KiB of operator memory per agent).
    #[arg(long, env = "NETSLO_CHANNEL_UPGRADE", default_value_t = true, action = clap::ArgAction::Set)]
    pub channel_upgrade: bool,

    /// Names (DNS or IP) the channel's serving certificate is valid for, besides the in-cluster
    /// Service names `netslo-operator.<namespace>.svc[.<cluster domain>]`.
    #[arg(long, env = "NETSLO_CHANNEL_NAMES", value_delimiter = ',')]
    pub channel_names: Vec<String>,

    /// URL agents report to.
    #[arg(long, env = "NETSLO_OPERATOR_URL")]
    pub operator_url: Option<String>,

    /// Image of the agent workloads the operator runs.
    #[arg(long, env = "NETSLO_AGENT_IMAGE", default_value = "netslo:0.1.0")]
    pub agent_image: String,

    /// Service account of the mesh agents.
    #[arg(
        long,
        env = "NETSLO_AGENT_SERVICE_ACCOUNT",
        default_value = "netslo-agent"
    )]
    pub agent_service_account: String,

    /// Environment variables for the agent workloads the operator runs, `NAME=value`
    /// (repeatable): the agents' OpenTelemetry export (`OTEL_EXPORTER_OTLP_ENDPOINT=...`,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`, `OTEL_RESOURCE_ATTRIBUTES=...`) or
    /// `NETSLO_METRICS_PER_ENDPOINT=true`. Only `OTEL_*` and `NETSLO_*` names are accepted:
    /// the agents' identity variables are the downward API's.
    #[arg(long = "agent-env", env = "NETSLO_AGENT_ENV", value_delimiter = ';', value_parser = parse_agent_env)]
    pub agent_env: Vec<(String, String)>,

    /// PriorityClass of the mesh agent pods. One that outranks ordinary workloads keeps a full
    /// node from evicting (or never scheduling) the agent that watches it.
    #[arg(long, env = "NETSLO_AGENT_PRIORITY_CLASS")]
    pub agent_priority_class: Option<String>,

    /// Tolerations of the mesh agent pods, a JSON list of Kubernetes tolerations
    /// (`[{"key":"dedicated","operator":"Exists"}]`). Unset, they tolerate every taint: a node
    /// the mesh skips is a node whose network nobody watches.
    #[arg(long, env = "NETSLO_AGENT_TOLERATIONS", value_parser = parse_tolerations)]
    pub agent_tolerations: Option<AgentTolerations>,

    /// How often changed SLO windows are written to their ConfigMaps. Agents' results are
    /// acknowledged once written, so this bounds both the acknowledgement delay and the
    /// writes per check (at most one per interval).
    #[arg(long, env = "NETSLO_PERSIST_INTERVAL_SECONDS", default_value_t = 5)]
    pub persist_interval_seconds: u64,

    /// Run the node-mesh agent DaemonSet in the operator's namespace when a check needs mesh
    /// agents. Off when the mesh agents are deployed some other way.
    #[arg(long, env = "NETSLO_MANAGE_MESH_AGENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub manage_mesh_agents: bool,

    /// The cluster's DNS domain.
    #[arg(long, env = "NETSLO_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Act only while holding a coordination.k8s.io Lease in the operator's namespace, so that
    /// more than one replica may run; until then /readyz is false. Losing the Lease stops the
    /// process with an error (Kubernetes restarts it, and it becomes a candidate again).
    #[arg(long, env = "NETSLO_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease (the Role in config/rbac grants this name only).
    #[arg(
        long,
        env = "NETSLO_LEADER_ELECT_LEASE_NAME",
        default_value = "netslo-operator"
    )]
    pub leader_elect_lease_name: String,

    /// How long candidates wait, from seeing the last renewal, before taking over a Lease.
    #[arg(
        long,
        env = "NETSLO_LEADER_ELECT_LEASE_DURATION_SECONDS",
        default_value_t = 15
    )]
    pub leader_elect_lease_duration_seconds: u64,

    /// How long the leader keeps failing to renew before it stops; less than the lease
    /// duration, so it stops before anyone else may take over.
    #[arg(
        long,
        env = "NETSLO_LEADER_ELECT_RENEW_DEADLINE_SECONDS",
        default_value_t = 10
    )]
    pub leader_elect_renew_deadline_seconds: u64,

    /// Interval between renewals, and between a candidate's attempts (plus jitter).
    #[arg(
        long,
        env = "NETSLO_LEADER_ELECT_RETRY_PERIOD_SECONDS",
        default_value_t = 2
    )]
    pub leader_elect_retry_period_seconds: u64,
}

/// `NAME=value` for [`Config::agent_env`].
fn parse_agent_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not NAME=value"))?;
    let valid_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name || !(name.starts_with("OTEL_") || name.starts_with("NETSLO_")) {
        return Err(format!(
            "{name:?}: only OTEL_* and NETSLO_* variables are passed to agents"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The mesh agents' tolerations ([`Config::agent_tolerations`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentTolerations(pub Vec<Toleration>);

fn parse_tolerations(text: &str) -> Result<AgentTolerations, String> {
    serde_json::from_str(text)
        .map(AgentTolerations)
        .map_err(|e| format!("not a JSON list of tolerations: {e}"))
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_env_accepts_telemetry_and_netslo_variables_only() {
        assert_eq!(
            parse_agent_env("OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317").unwrap(),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                "http://c:4317".to_owned()
            )
        );
        assert_eq!(
            parse_agent_env("OTEL_RESOURCE_ATTRIBUTES=k8s.cluster.name=prod")
                .unwrap()
                .1,
            "k8s.cluster.name=prod"
        );
        for bad in ["NODE_NAME=evil", "OTEL_X", "=x", "otel_x=1", "PATH=/tmp"] {
            assert!(parse_agent_env(bad).is_err(), "{bad}");
        }
        let config = Config::try_parse_from([
            "netslo-operator",
            "--agent-env",
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317",
            "--agent-env",
            "NETSLO_METRICS_PER_ENDPOINT=true",
        ])
        .unwrap();
        assert_eq!(config.agent_env.len(), 2);
    }

    #[test]
    fn agent_tolerations_are_a_json_list_and_a_bad_one_is_named() {
        let config = Config::try_parse_from([
            "netslo-operator",
            "--agent-tolerations",
            r#"[{"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}]"#,
            "--agent-priority-class",
            "system-node-critical",
        ])
        .unwrap();
        let tolerations = config.agent_tolerations.unwrap().0;
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(tolerations[0].value.as_deref(), Some("edge"));
        assert_eq!(
            config.agent_priority_class.as_deref(),
            Some("system-node-critical")
        );
        let error = Config::try_parse_from([
            "netslo-operator",
            "--agent-tolerations",
            r#"{"key": "dedicated"}"#,
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--agent-tolerations") && error.contains("not a JSON list"),
            "{error}"
        );
    }
}
