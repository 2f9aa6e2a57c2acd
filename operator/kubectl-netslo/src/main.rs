//! `kubectl netslo`: netslo's checks from the terminal. kubectl runs `kubectl-netslo` from the
//! PATH for `kubectl netslo ...` (the krew convention); it reads the kubeconfig as kubectl
//! does (`--kubeconfig`, `KUBECONFIG`, `--context`, `-n`, `-A`).
//!
//! Exit codes: 0 done; 1 an error (the API, a check not found); 2 a usage error; `wait`: 3 the
//! check failed (stalled, objective breached, expected-deny violated), 4 timed out; `probe`: 3
//! an attempt failed, 4 no answer in time, 5 refused (RBAC refused the ConnectivityProbe, or
//! the operator refused to run it: its destination or origin not granted or not found, or too
//! many probes running; the message says which); `matrix`: 3 a cell fails, 5 RBAC
//! refused the ConnectivityMatrix, 1 no grid (the check unknown or without results).

mod matrix;
mod probe;
mod view;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use netslo_crds::duration::GoDuration;
use netslo_crds::v1alpha1::{
    ConnectivityCheck, ConnectivityMatrix, ConnectivityMatrixSpec, ConnectivityProbe,
    ConnectivityProbeSpec, MatrixPhase, MatrixRows, Protocol,
};

use view::{Judgement, Row, WaitFor};

/// netslo's ConnectivityChecks: their state, and gates for scripts.
#[derive(Debug, Parser)]
#[command(name = "kubectl netslo", version)]
struct Cli {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace of the checks (default: the context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    /// Act as this user (impersonation, as kubectl's --as).
    #[arg(long = "as", global = true)]
    as_user: Option<String>,
    /// Act with this group too (repeatable, as kubectl's --as-group).
    #[arg(long = "as-group", global = true)]
    as_groups: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks with Ready, its reason, SLI, error budget and verdict, one line each.
    Get {
        /// One check; all in the namespace when left out.
        check: Option<String>,
        /// Checks of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Output: a table, or the objects as the API serves them.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// The check's verdict, the evidence behind it, and the commands to run next.
    Explain { check: String },
    /// The check's source × destination grid over the last hour: success ratio and p99 per
    /// cell, failing cells marked (through a ConnectivityMatrix in the namespace, so RBAC
    /// decides who may look). Exit: 0 none fails, 3 a cell fails.
    Matrix {
        check: String,
        /// One row per source node, or per zone (default: node, zone past 64 nodes).
        #[arg(long, value_enum)]
        rows: Option<RowsBy>,
        /// Output: a table, or the grid as data.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Wait until a check is Ready (or its SLO met); fails at once when it stalls, breaches
    /// an objective or violates an expected-deny. Exit: 0 met, 3 failed, 4 timed out.
    Wait {
        check: String,
        /// What to wait for.
        #[arg(long = "for", value_enum, default_value_t = WaitFor::Ready)]
        what: WaitFor,
        /// How long to wait ("90s", "5m").
        #[arg(long, default_value = "5m")]
        timeout: GoDuration,
    },
    /// Probe once, from a node's netslo agent or as a workload (a short-lived probe pod with
    /// its labels and service account): each attempt's phases (DNS, connect, TLS, first byte)
    /// and, when it fails on the way, a path trace to the last hop that answered. Runs through
    /// a ConnectivityProbe in the namespace, so RBAC and the namespace's ConnectivityPolicy
    /// grants apply. Exit: 0 succeeded, 3 failed, 4 no answer, 5 refused.
    Probe {
        /// Where from: node/NAME, deploy/NAME or pod/NAME (in the namespace).
        #[arg(long)]
        from: String,
        /// What: svc/NAME:PORT, pod/NAME[:PORT], HOST:PORT or an http(s):// URL.
        #[arg(long)]
        to: String,
        /// The namespace of a svc/ or pod/ destination (default: the probe's).
        #[arg(long)]
        to_namespace: Option<String>,
        /// How to probe (default: TCP, or the URL's scheme).
        #[arg(long, value_parser = parse_protocol)]
        protocol: Option<Protocol>,
        /// Attempts at each path (1 to 10).
        #[arg(long, default_value_t = 3)]
        count: u8,
        /// Longest an attempt may take ("2s").
        #[arg(long)]
        attempt_timeout: Option<GoDuration>,
        /// How long to wait for the answer ("5m"); the operator fails a probe nobody
        /// answers sooner, by what it asked for.
        #[arg(long, default_value = "5m")]
        timeout: GoDuration,
        /// Keep the ConnectivityProbe afterwards (the operator deletes it an hour later).
        #[arg(long)]
        keep: bool,
        /// Output: text, or the finished ConnectivityProbe.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_uppercase()))
        .map_err(|_| format!("{s}: one of TCP, HTTP, HTTPS, UDP, ICMP, DNS"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RowsBy {
    Node,
    Zone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, thiserror::Error)]
enum PluginError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("the API server: {0}")]
    Api(#[from] kube::Error),
    #[error("connectivitycheck {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("connectivitycheck {name} failed: {why}")]
    Failed { name: String, why: String },
    #[error("connectivitycheck {name}: timed out after {after:?} waiting for {what:?}: {why}")]
    TimedOut {
        name: String,
        what: WaitFor,
        after: Duration,
        why: String,
    },
    #[error("{0}")]
    Usage(#[from] probe::UsageError),
    #[error("not allowed: {0}")]
    Forbidden(String),
    #[error("no answer within {0:?} (is the netslo operator running?)")]
    NoAnswer(Duration),
    #[error("{0}")]
    NoMatrix(String),
    /// The probe's answer, printed already; only the exit code is left to say.
    #[error("")]
    Answered(u8),
}

impl PluginError {
    fn exit_code(&self) -> u8 {
        match self {
            PluginError::Failed { .. } => 3,
            PluginError::TimedOut { .. } | PluginError::NoAnswer(_) => 4,
            PluginError::Usage(_) => 2,
            PluginError::Forbidden(_) => 5,
            PluginError::Answered(code) => *code,
            _ => 1,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kubectl netslo: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(PluginError::Answered(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kubectl netslo: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), PluginError> {
    let (client, default_namespace) = client(&cli).await?;
    let namespace = cli.namespace.clone().unwrap_or(default_namespace);
    match cli.command {
        Command::Get {
            check,
            all_namespaces,
            output,
        } => get(&client, &namespace, check, all_namespaces, output).await,
        Command::Matrix {
            check,
            rows,
            output,
        } => run_matrix(&client, &namespace, &check, rows, output).await,
        Command::Explain { check } => {
            let check = fetch(&client, &namespace, &check).await?;
            print!("{}", view::explain(&check));
            Ok(())
        }
        Command::Wait {
            check,
            what,
            timeout,
        } => wait(&client, &namespace, &check, what, timeout.get()).await,
        Command::Probe {
            from,
            to,
            to_namespace,
            protocol,
            count,
            attempt_timeout,
            timeout,
            keep,
            output,
        } => {
            let spec = probe::spec(
                &from,
                &to,
                to_namespace.as_deref(),
                protocol,
                count,
                attempt_timeout,
            )?;
            run_probe(&client, &namespace, spec, &to, timeout.get(), keep, output).await
        }
    }
}

/// Creates the ConnectivityProbe, waits for its answer, prints it and deletes it.
async fn run_probe(
    client: &Client,
    namespace: &str,
    spec: ConnectivityProbeSpec,
    to: &str,
    timeout: Duration,
    keep: bool,
    output: Output,
) -> Result<(), PluginError> {
    let api: Api<ConnectivityProbe> = Api::namespaced(client.clone(), namespace);
    let mut asked = ConnectivityProbe::new("", spec);
    asked.metadata.name = None;
    asked.metadata.generate_name = Some("probe-".into());
    let created = match api.create(&PostParams::default(), &asked).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(PluginError::Forbidden(status.message));
        }
        Err(e) => return Err(e.into()),
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    let answered = await_answer(&api, &name, timeout).await;
    if !keep {
        let _ = api.delete(&name, &Default::default()).await;
    }
    let probe = answered?;
    let code = probe::exit_code(&probe).unwrap_or(4);
    let mut out = std::io::stdout().lock();
    match output {
        Output::Table => {
            let paint = paint();
            out.write_all(probe::render(&probe, to, paint).as_bytes())?;
        }
        Output::Json | Output::Yaml => write_document(&mut out, &probe, output)?,
    }
    out.flush()?;
    match code {
        0 => Ok(()),
        code => Err(PluginError::Answered(code)),
    }
}

/// Asks for the check's grid, prints it and deletes the request.
async fn run_matrix(
    client: &Client,
    namespace: &str,
    check: &str,
    rows: Option<RowsBy>,
    output: Output,
) -> Result<(), PluginError> {
    // A missing check is said plainly, before anything is created.
    fetch(client, namespace, check).await?;
    let api: Api<ConnectivityMatrix> = Api::namespaced(client.clone(), namespace);
    let mut asked = ConnectivityMatrix::new(
        "",
        ConnectivityMatrixSpec {
            check: check.to_owned(),
            rows_by: rows.map(|r| match r {
                RowsBy::Node => MatrixRows::Node,
                RowsBy::Zone => MatrixRows::Zone,
            }),
        },
    );
    asked.metadata.name = None;
    asked.metadata.generate_name = Some(format!("{check}-"));
    let created = match api.create(&PostParams::default(), &asked).await {
        Ok(created) => created,
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Err(PluginError::Forbidden(status.message));
        }
        Err(e) => return Err(e.into()),
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    let timeout = Duration::from_secs(30);
    let started = Instant::now();
    let answered = loop {
        match api.get_opt(&name).await {
            Ok(Some(m)) if m.status.is_some() => break Ok(m),
            Ok(_) if started.elapsed() >= timeout => break Err(PluginError::NoAnswer(timeout)),
            Ok(_) => tokio::time::sleep(Duration::from_millis(300)).await,
            Err(e) => break Err(e.into()),
        }
    };
    let _ = api.delete(&name, &Default::default()).await;
    let status = answered?.status.unwrap_or_default();
    if status.phase != Some(MatrixPhase::Ready) {
        return Err(PluginError::NoMatrix(
            status.message.unwrap_or_else(|| "no grid".into()),
        ));
    }
    let mut out = std::io::stdout().lock();
    match output {
        Output::Table => {
            let paint = paint();
            let title = format!("{namespace}/{check}");
            out.write_all(matrix::render(&title, &status, paint).as_bytes())?;
        }
        Output::Json | Output::Yaml => write_document(&mut out, &status, output)?,
    }
    out.flush()?;
    if matrix::any_failing(&status) {
        return Err(PluginError::Answered(3));
    }
    Ok(())
}

/// Polls the probe until it is over or `timeout` passes.
async fn await_answer(
    api: &Api<ConnectivityProbe>,
    name: &str,
    timeout: Duration,
) -> Result<ConnectivityProbe, PluginError> {
    let started = Instant::now();
    loop {
        if let Some(probe) = api.get_opt(name).await?
            && probe::exit_code(&probe).is_some()
        {
            return Ok(probe);
        }
        if started.elapsed() >= timeout {
            return Err(PluginError::NoAnswer(timeout));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A client as kubectl would make one from these flags, and the context's namespace.
async fn client(cli: &Cli) -> Result<(Client, String), PluginError> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| PluginError::Kubeconfig(e.to_string()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| PluginError::Kubeconfig(e.to_string()))?;
    let mut config = config;
    if let Some(user) = &cli.as_user {
        config.auth_info.impersonate = Some(user.clone());
        config.auth_info.impersonate_groups =
            (!cli.as_groups.is_empty()).then(|| cli.as_groups.clone());
    }
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

async fn get(
    client: &Client,
    namespace: &str,
    check: Option<String>,
    all_namespaces: bool,
    output: Output,
) -> Result<(), PluginError> {
    let api: Api<ConnectivityCheck> = if all_namespaces {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    };
    let checks = match &check {
        Some(name) => vec![fetch(client, namespace, name).await?],
        None => api.list(&Default::default()).await?.items,
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Table => {
            let rows: Vec<Row> = checks.iter().map(Row::of).collect();
            if rows.is_empty() {
                eprintln!("No connectivitychecks found.");
                return Ok(());
            }
            let paint = paint();
            out.write_all(view::table(&rows, all_namespaces, paint).as_bytes())?;
        }
        // One object for one check, as kubectl prints; a List otherwise.
        Output::Json | Output::Yaml => match (&check, checks.as_slice()) {
            (Some(_), [one]) => write_document(&mut out, one, output)?,
            _ => write_document(
                &mut out,
                &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": checks}),
                output,
            )?,
        },
    }
    Ok(())
}

/// Whether output may carry colour: a terminal, and NO_COLOR unset.
fn paint() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes `document` as pretty JSON or YAML, as kubectl prints objects.
fn write_document(
    out: &mut impl Write,
    document: &impl serde::Serialize,
    output: Output,
) -> Result<(), PluginError> {
    let as_output_error =
        |e: &dyn std::fmt::Display| PluginError::Output(std::io::Error::other(e.to_string()));
    let text = match output {
        Output::Json => serde_json::to_string_pretty(document).map_err(|e| as_output_error(&e))?,
        _ => serde_saphyr::to_string(document).map_err(|e| as_output_error(&e))?,
    };
    writeln!(out, "{}", text.trim_end())?;
    Ok(())
}

async fn fetch(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<ConnectivityCheck, PluginError> {
    Api::<ConnectivityCheck>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?
        .ok_or_else(|| PluginError::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}

/// Polls the check every second until `judge` says it is over, or `timeout` passes.
async fn wait(
    client: &Client,
    namespace: &str,
    name: &str,
    what: WaitFor,
    timeout: Duration,
) -> Result<(), PluginError> {
    let started = Instant::now();
    let mut last_said = String::new();
    loop {
        let check = fetch(client, namespace, name).await?;
        match view::judge(&check, what) {
            Judgement::Met => {
                println!("connectivitycheck/{name} condition met");
                return Ok(());
            }
            Judgement::Failed(why) => {
                return Err(PluginError::Failed {
                    name: name.to_owned(),
                    why,
                });
            }
            Judgement::Pending(why) => {
                if started.elapsed() >= timeout {
                    return Err(PluginError::TimedOut {
                        name: name.to_owned(),
                        what,
                        after: timeout,
                        why,
                    });
                }
                // Say what it waits on when that changes, not every second.
                if why != last_said {
                    eprintln!("connectivitycheck/{name}: waiting: {why}");
                    last_said = why;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_read_in_any_case_and_others_refused() {
        assert_eq!(parse_protocol("tcp"), Ok(Protocol::TCP));
        assert_eq!(parse_protocol("HTTPS"), Ok(Protocol::HTTPS));
        assert_eq!(parse_protocol("Icmp"), Ok(Protocol::ICMP));
        let err = parse_protocol("sctp").unwrap_err();
        assert!(
            err.contains("one of TCP, HTTP, HTTPS, UDP, ICMP, DNS"),
            "{err}"
        );
    }

    #[test]
    fn exit_codes_tell_scripts_what_happened() {
        assert_eq!(PluginError::Answered(3).exit_code(), 3);
        assert_eq!(PluginError::NoAnswer(Duration::from_secs(1)).exit_code(), 4);
        assert_eq!(PluginError::Forbidden("no".into()).exit_code(), 5);
        assert_eq!(
            PluginError::Usage(probe::UsageError("bad".into())).exit_code(),
            2
        );
        assert_eq!(PluginError::NoMatrix("none".into()).exit_code(), 1);
    }
}
