//! netslo operator library: everything behind the `netslo-operator` binary.

pub mod admin;
pub mod assign;
pub mod cache;
pub mod channel;
pub mod check_key;
pub mod cluster_space;
pub mod config;
pub mod controller;
pub mod leader;
pub mod mesh;
pub mod metrics;
pub mod persist;
pub mod policy;
pub mod resolve;
pub mod settled;
pub mod slo;
pub mod status;
pub mod store;
pub mod telemetry;
pub mod workloads;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams};
use kube::runtime::{conditions, wait};
use kube::{Client, Resource};
use netslo_crds::v1alpha1::{
    ConnectivityCheck, ConnectivityMatrix, ConnectivityPolicy, ConnectivityProbe,
};
use tokio::sync::watch;

use crate::admin::Readiness;
use crate::cache::ClusterCache;
use crate::channel::{
    CachingVerifier, ChannelConfig, ChannelServer, LivePods, MemoryAssignments, TokenReviewVerifier,
};
use crate::config::Config;
use crate::controller::{ChannelShared, Context, Settings};
use crate::metrics::OperatorMetrics;
use crate::store::ResultStore;
use crate::workloads::{AgentSettings, OPERATOR_CA_CONFIGMAP};
use netslo_telemetry::{Otel, OtelError};

/// The ConfigMap Kubernetes publishes the cluster CA in, in every namespace.
const CLUSTER_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Kubernetes client configuration (in-cluster or KUBECONFIG): {0}")]
    ClientConfig(#[source] kube::Error),
    #[error("cannot bind the admin endpoint {addr}: {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the Prometheus endpoint {addr}: {source}")]
    PrometheusBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("CRD {crd} is not established; install config/crd first: {detail}")]
    CrdMissing { crd: String, detail: String },
    #[error("cannot read ConnectivityChecks: {0}")]
    Api(#[source] kube::Error),
    #[error("cannot install the signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("agent channel: {0}")]
    Channel(#[from] channel::ChannelError),
    #[error("cannot read the stored SLO windows: {0}")]
    Persist(#[from] persist::PersistError),
    #[error("leader election: {0}")]
    Leader(#[from] leader::Error),
    #[error("OpenTelemetry: {0}")]
    Otel(#[from] OtelError),
}

impl Error {
    /// Short PascalCase reason for logs, Events and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ClientConfig(_) => "ClientConfig",
            Self::AdminBind { .. } => "AdminBind",
            Self::PrometheusBind { .. } => "PrometheusBind",
            Self::CrdMissing { .. } => "CrdMissing",
            Self::Api(_) => "ApiError",
            Self::Otel(e) => e.reason(),
            Self::Signal(_) => "Signal",
            Self::Channel(err) => err.reason(),
            Self::Persist(err) => err.reason(),
            Self::Leader(err) => err.reason(),
        }
    }
}

/// Longest an agent's batch waits for the flush that makes it durable: under the agents'
/// 30 s request timeout.
const ACK_WAIT: Duration = Duration::from_secs(20);

/// Runs the operator until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), Error> {
    tracing::info!(
        ?config,
        "starting netslo-operator {}",
        env!("CARGO_PKG_VERSION")
    );
    let otel = Otel::from_env(
        "netslo-operator",
        &[
            ("k8s.pod.name", config.pod_name.as_str()),
            ("k8s.namespace.name", config.namespace.as_str()),
        ],
        config.prometheus_addr.is_some(),
    )?;
    if let (Some(addr), Some(scraper)) = (config.prometheus_addr, otel.scraper()) {
        let bound = netslo_telemetry::prometheus::start(addr, scraper)
            .await
            .map_err(|source| Error::PrometheusBind { addr, source })?;
        tracing::info!(%bound, "Prometheus metrics on /metrics");
    }
    let result = run_with(config).await;
    otel.shutdown();
    result
}

async fn run_with(config: Config) -> Result<(), Error> {
    let client = Client::try_default().await.map_err(Error::ClientConfig)?;
    let readiness = Readiness::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = admin::bind(config.admin_addr)
        .await
        .map_err(|source| Error::AdminBind {
            addr: config.admin_addr,
            source,
        })?;
    let admin = tokio::spawn(admin::serve(listener, readiness.clone(), stop_rx.clone()));

    let crd_wait = Duration::from_secs(config.crd_wait_seconds);
    await_crd_established::<ConnectivityCheck>(&client, crd_wait).await?;
    await_crd_established::<ConnectivityPolicy>(&client, crd_wait).await?;
    await_crd_established::<ConnectivityProbe>(&client, crd_wait).await?;
    await_crd_established::<ConnectivityMatrix>(&client, crd_wait).await?;

    // Leader election (--leader-elect): wait here, live but not ready, until this process
    // holds the Lease; a signal meanwhile ends the process without having acted. The same
    // signal future serves the shutdown below, so no signal is lost in between.
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut leadership = None;
    if config.leader_elect {
        let elector = leader::LeaderElector::from_config(client.clone(), &config)?;
        match leader::elect(elector, shutdown.as_mut()).await {
            leader::Elected::Leader(held) => leadership = Some(held),
            leader::Elected::Stopped(signal) => return signal,
        }
    }
    // One read proves the types in this binary match what the API server serves (and that
    // this operator may read the checks it is to act on).
    let checks: Api<ConnectivityCheck> = match &config.watch_namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    };
    checks
        .list(&ListParams::default().limit(1))
        .await
        .map_err(Error::Api)?;

    // The agent channel: a serving certificate made in memory, its CA published for agents.
    let service = format!("netslo-operator.{}.svc", config.namespace);
    let mut names = vec![
        service.clone(),
        format!("{service}.{}", config.cluster_domain),
    ];
    names.extend(config.channel_names.iter().cloned());
    let assignments = Arc::new(MemoryAssignments::new(Duration::from_secs(3600)));
    // Results are acknowledged to agents only once persisted; the windows stored by the
    // previous operator process are loaded before the channel accepts anything.
    let results = Arc::new(ResultStore::durable(ACK_WAIT));
    let (windows, shards) = persist::load(
        &Api::namespaced(client.clone(), &config.namespace),
        &results,
    )
    .await?;
    tracing::info!(checks = windows, "SLO windows loaded");
    let (flusher_stop_tx, flusher_stop_rx) = watch::channel(false);
    let flusher = tokio::spawn(persist::run_flusher(
        client.clone(),
        config.namespace.clone(),
        results.clone(),
        shards,
        Duration::from_secs(config.persist_interval_seconds.max(1)),
        flusher_stop_rx,
    ));
    let live_pods = Arc::new(LivePods::default());
    let verifier = Arc::new(
        CachingVerifier::new(TokenReviewVerifier::new(client.clone()))
            .keeping_live_pods(live_pods.clone()),
    );
    let mut channel_config = ChannelConfig::new(config.channel_addr, names);
    channel_config.upgrades = config.channel_upgrade;
    let one_shots = channel_config.one_shots.clone();
    let channel = ChannelServer::start(
        channel_config,
        verifier,
        assignments.clone(),
        results.clone(),
    )
    .await?;
    channel::publish_ca(
        client.clone(),
        &config.namespace,
        OPERATOR_CA_CONFIGMAP,
        channel.ca_pem(),
    )
    .await?;
    tracing::info!(addr = %channel.local_addr(), "agent channel listening");

    let cache = ClusterCache::start(&client, stop_rx.clone());
    cache.wait_ready().await;
    let settings = Settings {
        namespace: config.namespace.clone(),
        watch_namespace: config.watch_namespace.clone(),
        cluster_domain: config.cluster_domain.clone(),
        agent: AgentSettings {
            namespace: config.namespace.clone(),
            image: config.agent_image.clone(),
            mesh_service_account: config.agent_service_account.clone(),
            operator_url: config
                .operator_url
                .clone()
                .unwrap_or_else(|| format!("https://{service}:{}", config.channel_addr.port())),
            env: config.agent_env.clone(),
            mesh_tolerations: config.agent_tolerations.clone().map(|t| t.0),
            mesh_priority_class: config.agent_priority_class.clone(),
        },
        instance: config.pod_name.clone(),
        manage_mesh_agents: config.manage_mesh_agents,
        cluster_ca_pem: cluster_ca(&client, &config.namespace).await,
        channel_ca_pem: channel.ca_pem().to_owned(),
    };
    let metrics = OperatorMetrics::global(results.clone(), channel.stats().clone());
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        cache,
        ChannelShared {
            assignments,
            live_pods,
            one_shots,
        },
        results,
        metrics,
    ));
    let planner = tokio::spawn(controller::run_planner(ctx.clone(), stop_rx.clone()));
    let probes = tokio::spawn(controller::run_probes(ctx.clone(), stop_rx.clone()));
    let matrices = tokio::spawn(controller::run_matrices(ctx.clone(), stop_rx.clone()));
    let mut controller_stop = stop_rx.clone();
    let controller = tokio::spawn(controller::run_controller(ctx, async move {
        let _ = controller_stop.wait_for(|stop| *stop).await;
    }));
    readiness.set(true);
    tracing::info!(
        watch_namespace = config.watch_namespace.as_deref().unwrap_or("(all)"),
        "ready"
    );

    // Losing the Lease takes the shutdown path too, and exits non-zero so that Kubernetes
    // restarts the process as a candidate (controller-runtime's behaviour).
    let lost = tokio::select! {
        signal = &mut shutdown => { signal?; None }
        lost = leader::lost(&mut leadership) => Some(lost),
    };
    tracing::info!("shutting down");
    readiness.set(false);
    let _ = stop_tx.send(true);
    // In-flight reconciles and connections get a bounded grace period; a hung API call must
    // not keep a terminating pod alive until SIGKILL.
    let grace = Duration::from_secs(5);
    if tokio::time::timeout(grace, async {
        let _ = controller.await;
        let _ = planner.await;
        let _ = probes.await;
        let _ = matrices.await;
        channel.stop().await;
        // Last, so that batches the channel was still settling are written.
        let _ = flusher_stop_tx.send(true);
        let _ = flusher.await;
        let _ = admin.await;
    })
    .await
    .is_err()
    {
        tracing::warn!("shutdown grace period of {grace:?} ended with work in flight");
    }
    // Released only now that nothing acts any more, so that the successor starts alone.
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    lost.map_or(Ok(()), |err| Err(err.into()))
}

/// The cluster CA as Kubernetes publishes it to every namespace (`kube-root-ca.crt`, written by
/// kube-controller-manager): what pods, and so agents, verify the API server against.
async fn cluster_ca(client: &Client, namespace: &str) -> Option<String> {
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match configmaps.get_opt(CLUSTER_CA_CONFIGMAP).await {
        Ok(found) => {
            let pem = found.and_then(|cm| cm.data?.remove("ca.crt"));
            if pem.is_none() {
                tracing::warn!(
                    "ConfigMap {namespace}/{CLUSTER_CA_CONFIGMAP} has no ca.crt: apiServer targets cannot verify the API server"
                );
            }
            pem
        }
        Err(err) => {
            tracing::warn!(
                "cannot read ConfigMap {namespace}/{CLUSTER_CA_CONFIGMAP}: {err}; apiServer targets cannot verify the API server"
            );
            None
        }
    }
}

async fn await_crd_established<K: Resource<DynamicType = ()>>(
    client: &Client,
    timeout: Duration,
) -> Result<(), Error> {
    let name = format!("{}.{}", K::plural(&()), K::group(&()));
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let established = wait::await_condition(crds, &name, conditions::is_crd_established());
    match tokio::time::timeout(timeout, established).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(Error::CrdMissing {
            crd: name,
            detail: err.to_string(),
        }),
        Err(_) => Err(Error::CrdMissing {
            crd: name,
            detail: format!("not established within {timeout:?}"),
        }),
    }
}

async fn shutdown_signal() -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(Error::Signal)?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
