//! `netslo-agent`: the probe agent binary.
//!
//! The agent probes either a static assignment file (re-read on SIGHUP), writing raw results or
//! closed aggregation windows as JSON lines to stdout, or what the operator assigns it
//! (`--operator-url`): assignments arrive over the authenticated channel and closed windows go
//! back over it (see `netslo_agent::report`). Both feed the same engine through its `watch`
//! input and drain the same aggregator outbox.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use netslo_agent::echo::{Echo, EchoError};
use netslo_agent::engine::{Engine, EngineConfig, Jobs, compile, trace_failure};
use netslo_agent::metrics::ProbeMetrics;
use netslo_agent::probe::trace::TraceSettings;
use netslo_agent::report::{OutboxLimits, ReportError, Reporter, ReporterConfig};
use netslo_protocol::spec::{Assignment, SpecError};
use netslo_protocol::time::now_unix_ms;
use netslo_protocol::verdict::Outcome;
use netslo_telemetry::{Otel, OtelError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, Parser)]
#[command(
    name = "netslo-agent",
    version,
    about = "netslo probe agent: measures network paths and says which layer failed"
)]
struct Cli {
    /// Name of the node this agent runs on (the default source label of every series).
    #[arg(long, env = "NODE_NAME", default_value = "unknown", global = true)]
    node_name: String,
    /// Log format on stderr.
    #[arg(long, env = "NETSLO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Tokio worker threads (1 = single-threaded runtime, the leanest).
    #[arg(
        long,
        env = "NETSLO_WORKER_THREADS",
        default_value_t = 1,
        global = true
    )]
    worker_threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// One JSON line per probe.
    Raw,
    /// One JSON line per closed aggregation window and series.
    Summary,
    /// Nothing (results stay in the aggregator).
    None,
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// Addresses to serve UDP and TCP echo on (comma-separated or repeated).
    #[arg(long, env = "NETSLO_ECHO_LISTEN", value_delimiter = ',')]
    echo_listen: Vec<SocketAddr>,
    /// Addresses to serve the HTTP echo endpoint on (comma-separated or repeated).
    #[arg(long, env = "NETSLO_ECHO_HTTP_LISTEN", value_delimiter = ',')]
    echo_http_listen: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct OperatorArgs {
    /// Get assignments from and report results to the operator at this URL
    /// (`https://host:port`) instead of probing a file.
    #[arg(long, env = "NETSLO_OPERATOR_URL", conflicts_with = "config")]
    operator_url: Option<http::Uri>,
    /// PEM CA certificate of the operator's channel (re-read on every new connection).
    #[arg(
        long,
        env = "NETSLO_OPERATOR_CA",
        default_value = "/var/run/netslo/operator-ca/ca.crt"
    )]
    operator_ca: PathBuf,
    /// Projected service-account token with audience `netslo` (re-read before every request).
    #[arg(
        long,
        env = "NETSLO_TOKEN_FILE",
        default_value = "/var/run/secrets/netslo/token"
    )]
    token_file: PathBuf,
    /// This agent's name at the operator (default: the node name); also the default source
    /// label of every series.
    #[arg(long, env = "NETSLO_AGENT_NAME")]
    agent_name: Option<String>,
    /// Most bytes of unacknowledged results kept while the operator is away (oldest dropped
    /// first, drops counted and reported).
    #[arg(long, env = "NETSLO_OUTBOX_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    outbox_max_bytes: usize,
    /// Oldest unacknowledged result kept, in seconds.
    #[arg(long, env = "NETSLO_OUTBOX_MAX_AGE_SECONDS", default_value_t = 3_600)]
    outbox_max_age_seconds: u64,
    /// File where the last assignment is kept, so a restarted agent probes on while the
    /// operator is away (mount an `emptyDir`).
    #[arg(long, env = "NETSLO_ASSIGNMENT_CACHE")]
    assignment_cache: Option<PathBuf>,
    /// Seconds to keep trying to deliver pending results at shutdown.
    #[arg(long, env = "NETSLO_FLUSH_SECONDS", default_value_t = 10)]
    flush_seconds: u64,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe continuously and serve the echo responder: an assignment file (SIGHUP re-reads
    /// it), or what the operator assigns (`--operator-url`).
    Run {
        /// Assignment file (JSON).
        #[arg(long, env = "NETSLO_CONFIG", required_unless_present = "operator_url")]
        config: Option<PathBuf>,
        #[command(flatten)]
        operator: Box<OperatorArgs>,
        /// What to write to stdout (with `--operator-url`, only `raw` writes anything:
        /// closed windows go to the operator).
        #[arg(long, env = "NETSLO_OUTPUT", value_enum, default_value_t = Output::Summary)]
        output: Output,
        /// Most probes in flight at once.
        #[arg(long, env = "NETSLO_MAX_CONCURRENCY", default_value_t = 256)]
        max_concurrency: usize,
        /// A probe started more than this late is Invalid (ProberLate), in milliseconds.
        #[arg(long, env = "NETSLO_MAX_LAG_MS", default_value_t = 5)]
        max_lag_ms: u64,
        /// Aggregation window in seconds.
        #[arg(long, env = "NETSLO_WINDOW_SECONDS", default_value_t = 10)]
        window_seconds: u64,
        /// Stop after this many seconds (default: run until SIGTERM/SIGINT).
        #[arg(long, env = "NETSLO_DURATION_SECONDS")]
        duration_seconds: Option<u64>,
        /// Name each endpoint (pod IP, mesh peer) in exported metrics: a drill-down whose
        /// series grow with endpoints and mesh rotation. Off by default.
        #[arg(long, env = "NETSLO_METRICS_PER_ENDPOINT")]
        metrics_per_endpoint: bool,
        /// Address of a Prometheus scrape endpoint (`/metrics`) for the same metrics the OTLP
        /// export carries, named as a collector's Prometheus exporter names them. Off unless set.
        #[arg(long, env = "NETSLO_PROMETHEUS_ADDR")]
        prometheus_addr: Option<SocketAddr>,
        #[command(flatten)]
        echo: EchoArgs,
    },
    /// Probe every target of an assignment once and print the results as JSON lines. Exits 0
    /// when every probe met its expectation, 3 when any did not (or could not be measured),
    /// 1 on bad input.
    Once {
        /// Assignment file (JSON).
        #[arg(long, env = "NETSLO_CONFIG")]
        config: PathBuf,
        /// After a probe that failed on the way (IP or TCP layer, or silence), trace the path to
        /// its destination and print the hops as one more line (`"trace"`): the last hop that
        /// answered is where the path was last seen alive.
        #[arg(long)]
        trace: bool,
    },
    /// Validate an assignment file and print it with defaults filled in.
    Validate {
        /// Assignment file (JSON).
        #[arg(long, env = "NETSLO_CONFIG")]
        config: PathBuf,
    },
    /// Serve only the echo responder.
    Echo {
        #[command(flatten)]
        echo: EchoArgs,
    },
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Echo(#[from] EchoError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Otel(#[from] OtelError),
    #[error("cannot bind the Prometheus endpoint {addr}: {source}")]
    PrometheusBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{failed} of {total} probes did not meet their expectation")]
    ProbesFailed { failed: usize, total: usize },
}

impl CliError {
    fn reason(&self) -> &'static str {
        match self {
            CliError::Spec(e) => e.reason(),
            CliError::Echo(e) => e.reason(),
            CliError::Report(e) => e.reason(),
            CliError::Runtime(_) => "RuntimeFailed",
            CliError::Signal(_) => "SignalSetupFailed",
            CliError::Output(_) => "OutputFailed",
            CliError::Otel(e) => e.reason(),
            CliError::PrometheusBind { .. } => "PrometheusBind",
            CliError::ProbesFailed { .. } => "ProbesFailed",
        }
    }

    /// 3 when probes ran and some failed, so scripts tell a failing network from bad input.
    fn exit_code(&self) -> u8 {
        match self {
            CliError::ProbesFailed { .. } => 3,
            _ => 1,
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match real_main(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(reason = e.reason(), "{e}");
            eprintln!("netslo-agent: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
}

fn real_main(cli: Cli) -> Result<(), CliError> {
    if let Command::Validate { config } = &cli.command {
        let a = Assignment::from_file(config)?;
        compile(&a, &cli.node_name)?;
        let text = serde_json::to_string_pretty(&a).map_err(|e| CliError::Output(e.into()))?;
        println!("{text}");
        return Ok(());
    }
    let rt = if cli.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.worker_threads)
            .enable_all()
            .build()
    }
    .map_err(CliError::Runtime)?;
    rt.block_on(async_main(cli))
}

async fn start_echo(args: &EchoArgs, node: &str) -> Result<Option<JoinHandle<()>>, CliError> {
    if args.echo_listen.is_empty() && args.echo_http_listen.is_empty() {
        return Ok(None);
    }
    let echo = Echo::bind(&args.echo_listen, &args.echo_http_listen, node).await?;
    let (e, h) = echo.local_addrs();
    tracing::info!(echo = ?e, http = ?h, "echo responder listening");
    Ok(Some(tokio::spawn(echo.serve())))
}

async fn shutdown_signal(duration: Option<Duration>) -> Result<impl Future<Output = ()>, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(CliError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(CliError::Signal)?;
    Ok(async move {
        let sleep = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            () = sleep => tracing::info!("duration elapsed: stopping"),
        }
    })
}

fn print_json<T: serde::Serialize>(out: &mut impl Write, v: &T) -> Result<(), CliError> {
    serde_json::to_writer(&mut *out, v).map_err(|e| CliError::Output(e.into()))?;
    out.write_all(b"\n").map_err(CliError::Output)
}

async fn async_main(cli: Cli) -> Result<(), CliError> {
    let node = cli.node_name.clone();
    match cli.command {
        Command::Validate { .. } => Ok(()),
        Command::Echo { echo } => {
            let _server = start_echo(&echo, &node).await?;
            shutdown_signal(None).await?.await;
            Ok(())
        }
        Command::Once { config, trace } => {
            let a = Assignment::from_file(&config)?;
            let jobs = compile(&a, &node)?;
            let engine = Engine::new(EngineConfig {
                source: node,
                ..EngineConfig::default()
            });
            let mut out = std::io::stdout().lock();
            let mut failed = 0;
            for job in jobs.iter() {
                let result = engine.probe_once(job).await;
                if result.outcome != Outcome::Good {
                    failed += 1;
                }
                let traced = match trace {
                    true => trace_failure(job, &result, TraceSettings::default()).await,
                    false => None,
                };
                let rec = netslo_agent::engine::RawRecord {
                    check: job.key.check.clone(),
                    target: job.key.target.clone(),
                    source: job.key.source.clone(),
                    result,
                };
                print_json(&mut out, &rec)?;
                match traced {
                    Some(Ok(trace)) => print_json(
                        &mut out,
                        &serde_json::json!({
                            "check": job.key.check,
                            "target": job.key.target,
                            "source": job.key.source,
                            "trace": trace,
                            "summary": trace.summary(),
                        }),
                    )?,
                    Some(Err(e)) => {
                        tracing::warn!(reason = e.reason(), target = %job.key.target, "{e}");
                    }
                    None => {}
                }
            }
            out.flush().map_err(CliError::Output)?;
            match failed {
                0 => Ok(()),
                failed => Err(CliError::ProbesFailed {
                    failed,
                    total: jobs.len(),
                }),
            }
        }
        Command::Run {
            config,
            operator,
            output,
            max_concurrency,
            max_lag_ms,
            window_seconds,
            duration_seconds,
            metrics_per_endpoint,
            prometheus_addr,
            echo,
        } => {
            let pod = std::env::var("POD_NAME").unwrap_or_default();
            let namespace = std::env::var("POD_NAMESPACE").unwrap_or_default();
            let otel = Otel::from_env(
                "netslo-agent",
                &[
                    ("k8s.node.name", node.as_str()),
                    ("k8s.pod.name", pod.as_str()),
                    ("k8s.namespace.name", namespace.as_str()),
                ],
                prometheus_addr.is_some(),
            )?;
            if let (Some(addr), Some(scraper)) = (prometheus_addr, otel.scraper()) {
                let bound = netslo_telemetry::prometheus::start(addr, scraper)
                    .await
                    .map_err(|source| CliError::PrometheusBind { addr, source })?;
                tracing::info!(%bound, "Prometheus metrics on /metrics");
            }
            let reporter = match &operator.operator_url {
                Some(url) => Some(Arc::new(Reporter::new(reporter_config(
                    url, &operator, &node,
                ))?)),
                None => None,
            };
            let (jobs, source) = match (&config, &reporter) {
                (Some(config), _) => (
                    compile(&Assignment::from_file(config)?, &node)?,
                    config.display().to_string(),
                ),
                // Until the operator answers: the cached assignment, or nothing.
                (None, Some(r)) => (
                    r.load_cached_assignment()
                        .unwrap_or_else(|| Jobs::from(Vec::new())),
                    format!("operator as {}", r.agent_name()),
                ),
                (None, None) => {
                    return Err(CliError::Report(ReportError::Config(
                        "either --config or --operator-url is required".into(),
                    )));
                }
            };
            // With the operator, closed windows are the reporter's (only raw output prints) and
            // the agent's name is the default source label.
            let output = match (&reporter, output) {
                (Some(_), Output::Summary) => Output::None,
                (_, o) => o,
            };
            let source_label = reporter
                .as_ref()
                .map_or(node.clone(), |r| r.agent_name().to_owned());
            tracing::info!(
                node = %node, assignment = %source, targets = jobs.len(), max_concurrency, max_lag_ms,
                window_seconds, output = ?output, boot_id = reporter.as_ref().map(|r| r.boot_id()),
                "starting"
            );
            let _server = start_echo(&echo, &node).await?;
            // A static assignment is as confirmed as it gets when it is read.
            let assignment_confirmed = match &reporter {
                Some(r) => r.stats().assignment_confirmed_unix_ms.clone(),
                None => Arc::new(AtomicI64::new(now_unix_ms())),
            };
            let metrics =
                ProbeMetrics::global(metrics_per_endpoint, otel.tracing(), assignment_confirmed);
            let cfg = EngineConfig {
                source: source_label,
                max_concurrency,
                max_lag: Duration::from_millis(max_lag_ms),
                window: Duration::from_secs(window_seconds.max(1)),
                metrics: Some(Arc::new(metrics)),
                ..EngineConfig::default()
            };
            let (engine, raw) = if output == Output::Raw {
                let (e, rx) = Engine::with_raw_results(cfg, 1_024);
                (Arc::new(e), Some(rx))
            } else {
                (Arc::new(Engine::new(cfg)), None)
            };
            let (tx, rx) = watch::channel(jobs);
            let feed = match &reporter {
                Some(r) => {
                    let (r1, e) = (r.clone(), engine.clone());
                    let (r3, e3) = (r.clone(), engine.clone());
                    // Ends with the process, like the channel below; a one-shot cut short is
                    // reported as unanswered by the operator.
                    tokio::spawn(r3.run_one_shots(e3));
                    tokio::spawn(async move { r1.run(&e, &tx).await })
                }
                None => tokio::spawn(reload_on_sighup(
                    config.unwrap_or_default(),
                    node.clone(),
                    tx,
                )),
            };
            let printer = if reporter.is_some() && output == Output::None {
                tokio::spawn(std::future::pending::<()>())
            } else {
                tokio::spawn(print_results(engine.clone(), raw, output))
            };
            let stop = shutdown_signal(duration_seconds.map(Duration::from_secs)).await?;
            engine.run(rx, stop).await;
            feed.abort();
            // The engine's raw sender lives as long as the engine; stop the printer after a
            // last drain of closed windows.
            printer.abort();
            if let Some(r) = &reporter {
                let left = r
                    .flush(&engine, Duration::from_secs(operator.flush_seconds))
                    .await;
                if left > 0 {
                    tracing::warn!(pending = left, "stopping with unacknowledged results");
                }
            }
            if output == Output::Summary {
                let mut out = std::io::stdout().lock();
                for b in engine.with_aggregator(|a| a.drain()) {
                    print_json(&mut out, &b)?;
                }
                out.flush().map_err(CliError::Output)?;
            }
            otel.shutdown();
            Ok(())
        }
    }
}

fn reporter_config(url: &http::Uri, args: &OperatorArgs, node: &str) -> ReporterConfig {
    let mut cfg = ReporterConfig::new(
        url.clone(),
        args.operator_ca.clone(),
        args.token_file.clone(),
        args.agent_name.clone().unwrap_or_else(|| node.to_owned()),
    );
    cfg.assignment_cache = args.assignment_cache.clone();
    cfg.outbox = OutboxLimits {
        max_bytes: args.outbox_max_bytes,
        max_age: Duration::from_secs(args.outbox_max_age_seconds),
    };
    cfg
}

async fn reload_on_sighup(config: PathBuf, node: String, tx: watch::Sender<Jobs>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match Assignment::from_file(&config).and_then(|a| compile(&a, &node)) {
            Ok(jobs) => {
                tracing::info!(targets = jobs.len(), "assignment reloaded");
                let _ = tx.send(jobs);
            }
            Err(e) => tracing::warn!(reason = e.reason(), "keeping the previous assignment: {e}"),
        }
    }
}

async fn print_results(
    engine: Arc<Engine>,
    raw: Option<tokio::sync::mpsc::Receiver<netslo_agent::engine::RawRecord>>,
    output: Output,
) {
    match (output, raw) {
        (Output::Raw, Some(mut rx)) => {
            while let Some(rec) = rx.recv().await {
                let mut out = std::io::stdout().lock();
                if print_json(&mut out, &rec)
                    .and_then(|()| out.flush().map_err(CliError::Output))
                    .is_err()
                {
                    return;
                }
            }
        }
        (Output::Summary, _) => {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let closed = engine.with_aggregator(|a| a.drain());
                if closed.is_empty() {
                    continue;
                }
                let mut out = std::io::stdout().lock();
                for b in &closed {
                    if print_json(&mut out, b).is_err() {
                        return;
                    }
                }
                let _ = out.flush();
            }
        }
        _ => {
            // Nothing to print: keep the outbox from filling by discarding closed windows.
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                engine.with_aggregator(|a| a.drain());
            }
        }
    }
}
