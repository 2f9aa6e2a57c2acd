//! `netslo-agent`: the probe agent binary.
//!
//! Today the agent probes a static assignment file (re-read on SIGHUP) and writes raw results
//! or closed aggregation windows as JSON lines to stdout. The operator channel will feed the
//! same engine through its `watch` input and drain the same aggregator outbox.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use netslo_agent::echo::{Echo, EchoError};
use netslo_agent::engine::{Engine, EngineConfig, compile};
use netslo_agent::spec::{Assignment, SpecError};
use tokio::sync::watch;

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

#[derive(Debug, Subcommand)]
enum Command {
    /// Probe an assignment file continuously (SIGHUP re-reads it) and serve the echo responder.
    Run {
        /// Assignment file (JSON).
        #[arg(long, env = "NETSLO_CONFIG")]
        config: PathBuf,
        /// What to write to stdout.
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
        #[command(flatten)]
        echo: EchoArgs,
    },
    /// Probe every target of an assignment once and print the results as JSON lines.
    Once {
        /// Assignment file (JSON).
        #[arg(long, env = "NETSLO_CONFIG")]
        config: PathBuf,
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
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot install signal handlers: {0}")]
    Signal(#[source] std::io::Error),
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl CliError {
    fn reason(&self) -> &'static str {
        match self {
            CliError::Spec(e) => e.reason(),
            CliError::Echo(e) => e.reason(),
            CliError::Runtime(_) => "RuntimeFailed",
            CliError::Signal(_) => "SignalSetupFailed",
            CliError::Output(_) => "OutputFailed",
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
            std::process::ExitCode::FAILURE
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

async fn start_echo(
    args: &EchoArgs,
    node: &str,
) -> Result<Option<tokio::task::JoinHandle<()>>, CliError> {
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
        Command::Once { config } => {
            let a = Assignment::from_file(&config)?;
            let jobs = compile(&a, &node)?;
            let engine = Engine::new(EngineConfig {
                source: node,
                ..EngineConfig::default()
            });
            let mut out = std::io::stdout().lock();
            for job in jobs.iter() {
                let result = engine.probe_once(job).await;
                let rec = netslo_agent::engine::RawRecord {
                    check: job.key.check.clone(),
                    target: job.key.target.clone(),
                    source: job.key.source.clone(),
                    result,
                };
                print_json(&mut out, &rec)?;
            }
            out.flush().map_err(CliError::Output)
        }
        Command::Run {
            config,
            output,
            max_concurrency,
            max_lag_ms,
            window_seconds,
            duration_seconds,
            echo,
        } => {
            let a = Assignment::from_file(&config)?;
            let jobs = compile(&a, &node)?;
            tracing::info!(
                node = %node, config = %config.display(), targets = jobs.len(), max_concurrency, max_lag_ms,
                window_seconds, output = ?output, "starting"
            );
            let _server = start_echo(&echo, &node).await?;
            let cfg = EngineConfig {
                source: node.clone(),
                max_concurrency,
                max_lag: Duration::from_millis(max_lag_ms),
                window: Duration::from_secs(window_seconds.max(1)),
                ..EngineConfig::default()
            };
            let (engine, raw) = if output == Output::Raw {
                let (e, rx) = Engine::with_raw_results(cfg, 1_024);
                (Arc::new(e), Some(rx))
            } else {
                (Arc::new(Engine::new(cfg)), None)
            };
            let (tx, rx) = watch::channel(jobs);
            let reload = tokio::spawn(reload_on_sighup(config.clone(), node.clone(), tx));
            let printer = tokio::spawn(print_results(engine.clone(), raw, output));
            let stop = shutdown_signal(duration_seconds.map(Duration::from_secs)).await?;
            engine.run(rx, stop).await;
            reload.abort();
            // The engine's raw sender lives as long as the engine; stop the printer after a
            // last drain of closed windows.
            printer.abort();
            if output == Output::Summary {
                let mut out = std::io::stdout().lock();
                for b in engine.with_aggregator(|a| a.drain()) {
                    print_json(&mut out, &b)?;
                }
                out.flush().map_err(CliError::Output)?;
            }
            Ok(())
        }
    }
}

async fn reload_on_sighup(
    config: PathBuf,
    node: String,
    tx: watch::Sender<netslo_agent::engine::Jobs>,
) {
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
