//! OpenTelemetry export for both binaries: metrics and traces over OTLP, configured the
//! standard way and off unless an endpoint is set.
//!
//! * Endpoint: `OTEL_EXPORTER_OTLP_ENDPOINT`, or per signal `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
//!   / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`. A signal with no endpoint is not exported; nor is
//!   one whose `OTEL_METRICS_EXPORTER` / `OTEL_TRACES_EXPORTER` is `none`, nor anything with
//!   `OTEL_SDK_DISABLED=true`.
//! * Protocol: `OTEL_EXPORTER_OTLP_PROTOCOL` (or the per-signal variable): `grpc` or
//!   `http/protobuf` (the default, as the specification says). Headers, timeout, compression
//!   and `OTEL_METRIC_EXPORT_INTERVAL` are read by the exporter and the SDK themselves.
//! * Resource: `service.name` and `service.version`, the Kubernetes attributes each binary
//!   knows (`k8s.node.name`, `k8s.pod.name`, `k8s.namespace.name`), then
//!   `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME`, which win over both.
//!
//! Instruments are taken from the global providers, which are no-ops while export is off: the
//! code that records is the same either way and costs next to nothing when nothing exports.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::KeyValue;
use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::WithHttpConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{Aggregation, Instrument, SdkMeterProvider, Stream};
use opentelemetry_sdk::resource::{EnvResourceDetector, TelemetryResourceDetector};
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Name of the probe duration histogram (an exponential histogram, in seconds).
pub const PROBE_DURATION: &str = "netslo.probe.duration";
/// Name of the agent's scheduling lag histogram (exponential, in seconds).
pub const SCHEDULE_LAG: &str = "netslo.agent.schedule.lag";

/// Attribute keys of netslo's series, the same in the agents' and the operator's instruments
/// (dashboards and alert rules join on them).
pub mod attribute {
    pub const CHECK_NAMESPACE: &str = "netslo.check.namespace";
    pub const CHECK_NAME: &str = "netslo.check.name";
    pub const TARGET: &str = "netslo.target";
    pub const TARGET_PATH: &str = "netslo.target.path";
    pub const ENDPOINT: &str = "netslo.endpoint";
    pub const OUTCOME: &str = "netslo.outcome";
    pub const FAILURE_REASON: &str = "netslo.failure.reason";
}

/// Exponential histogram settings: at scale 20 a bucket is 0.00007% wide, far finer than the
/// microsecond the probes measure; 160 buckets then cover about 1 µs to 10 s at scale 3
/// (9% wide) after the SDK rescales to fit the range seen.
const EXPONENTIAL: Aggregation = Aggregation::Base2ExponentialHistogram {
    max_size: 160,
    max_scale: 20,
    record_min_max: true,
};

/// Why export could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    #[error("cannot build the OTLP {signal} exporter: {source}")]
    Exporter {
        signal: &'static str,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    #[error("{variable}={value:?}: netslo exports OTLP over grpc or http/protobuf")]
    Protocol { variable: String, value: String },
}

impl OtelError {
    /// Short reason for logs and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            OtelError::Exporter { .. } => "OtelExporter",
            OtelError::Protocol { .. } => "OtelProtocol",
        }
    }
}

pub mod prometheus;

/// The OTLP transport of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

impl Transport {
    /// `OTEL_EXPORTER_OTLP_<SIGNAL>_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`, else
    /// `http/protobuf`, the specification's default (pure: `env` looks a variable up).
    pub fn for_signal(
        signal: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Transport, OtelError> {
        let specific = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
        let (variable, value) = match env(&specific).filter(|v| !v.trim().is_empty()) {
            Some(v) => (specific, v),
            None => match env("OTEL_EXPORTER_OTLP_PROTOCOL").filter(|v| !v.trim().is_empty()) {
                Some(v) => ("OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(), v),
                None => return Ok(Transport::HttpProtobuf),
            },
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Transport::Grpc),
            "http/protobuf" => Ok(Transport::HttpProtobuf),
            _ => Err(OtelError::Protocol { variable, value }),
        }
    }
}

/// The hyper client, with each request run on the process's runtime: the SDK exports from
/// a thread of its own, which has no Tokio context for hyper's connections and timers.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: HyperClient,
}

impl OnRuntime {
    fn new(runtime: tokio::runtime::Handle) -> Self {
        // The exporter's own timeout (OTEL_EXPORTER_OTLP_TIMEOUT) bounds the export; this one
        // only keeps a stuck connection from holding a runtime task forever.
        let client = HyperClient::with_default_connector(Duration::from_secs(30), None);
        OnRuntime { runtime, client }
    }
}

impl HttpClient for OnRuntime {
    fn send_bytes<'s, 'f>(
        &'s self,
        request: http::Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<Bytes>, HttpError>> + Send + 'f>>
    where
        's: 'f,
        Self: 'f,
    {
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { client.send_bytes(request).await });
        Box::pin(async move { sent.await.map_err(|e| Box::new(e) as HttpError)? })
    }
}

/// Which signals the environment turns on (pure: `env` looks a variable up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Signals {
    pub metrics: bool,
    pub traces: bool,
}

impl Signals {
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Signals {
        let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
        let not_none =
            |name: &str| env(name).is_none_or(|v| !v.trim().eq_ignore_ascii_case("none"));
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Signals::default();
        }
        let any_endpoint = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        Signals {
            metrics: (any_endpoint || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
                && not_none("OTEL_METRICS_EXPORTER"),
            traces: (any_endpoint || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
                && not_none("OTEL_TRACES_EXPORTER"),
        }
    }

    pub fn from_env() -> Signals {
        Signals::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The running export; [`Otel::shutdown`] flushes what is pending.
#[derive(Debug, Default)]
pub struct Otel {
    meters: Option<SdkMeterProvider>,
    tracers: Option<SdkTracerProvider>,
    scraper: Option<prometheus::Scraper>,
}

impl Otel {
    /// Starts export as the environment says and installs the global providers; with
    /// `prometheus`, the metrics can also be scraped ([`Otel::scraper`]). Call it inside the
    /// Tokio runtime: the gRPC transport runs on it.
    ///
    /// `attributes` are this process's Kubernetes resource attributes; empty values are
    /// left out.
    pub fn from_env(
        service: &str,
        attributes: &[(&'static str, &str)],
        prometheus: bool,
    ) -> Result<Otel, OtelError> {
        let signals = Signals::from_env();
        if !signals.metrics && !signals.traces && !prometheus {
            return Ok(Otel::default());
        }
        let resource = resource(service, attributes);
        let mut otel = Otel::default();
        let env = |name: &str| std::env::var(name).ok();
        let runtime = tokio::runtime::Handle::current();
        if signals.metrics || prometheus {
            let mut builder = SdkMeterProvider::builder()
                .with_resource(resource.clone())
                .with_view(exponential_histograms);
            if signals.metrics {
                let exporter = opentelemetry_otlp::MetricExporter::builder();
                let exporter = match Transport::for_signal("METRICS", env)? {
                    Transport::Grpc => exporter.with_tonic().build(),
                    Transport::HttpProtobuf => exporter
                        .with_http()
                        .with_http_client(OnRuntime::new(runtime.clone()))
                        .build(),
                }
                .map_err(|source| OtelError::Exporter {
                    signal: "metrics",
                    source,
                })?;
                builder = builder.with_periodic_exporter(exporter);
            }
            if prometheus {
                let scraper = prometheus::Scraper::default();
                builder = builder.with_reader(scraper.clone());
                otel.scraper = Some(scraper);
            }
            let provider = builder.build();
            opentelemetry::global::set_meter_provider(provider.clone());
            otel.meters = Some(provider);
        }
        if signals.traces {
            let builder = opentelemetry_otlp::SpanExporter::builder();
            let exporter = match Transport::for_signal("TRACES", env)? {
                Transport::Grpc => builder.with_tonic().build(),
                Transport::HttpProtobuf => builder
                    .with_http()
                    .with_http_client(OnRuntime::new(runtime))
                    .build(),
            }
            .map_err(|source| OtelError::Exporter {
                signal: "traces",
                source,
            })?;
            let provider = SdkTracerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(exporter)
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            otel.tracers = Some(provider);
        }
        tracing::info!(
            metrics = signals.metrics,
            traces = signals.traces,
            prometheus,
            "OpenTelemetry export on"
        );
        Ok(otel)
    }

    /// What the Prometheus endpoint serves, when it was asked for.
    pub fn scraper(&self) -> Option<prometheus::Scraper> {
        self.scraper.clone()
    }

    /// Whether spans are exported (failed-probe and reconcile spans are only built then).
    pub fn tracing(&self) -> bool {
        self.tracers.is_some()
    }

    /// Exports what is pending and stops. Errors are logged: nothing is left to do about them.
    pub fn shutdown(self) {
        if let Some(p) = self.meters
            && let Err(e) = p.shutdown()
        {
            tracing::warn!("OpenTelemetry metrics shutdown: {e}");
        }
        if let Some(p) = self.tracers
            && let Err(e) = p.shutdown()
        {
            tracing::warn!("OpenTelemetry traces shutdown: {e}");
        }
    }
}

/// Duration histograms are exponential: explicit default buckets are shaped for
/// milliseconds and would put every in-cluster round trip, in seconds, into the first one.
fn exponential_histograms(instrument: &Instrument) -> Option<Stream> {
    [PROBE_DURATION, SCHEDULE_LAG]
        .contains(&instrument.name())
        .then(|| Stream::builder().with_aggregation(EXPONENTIAL).build().ok())
        .flatten()
}

fn resource(service: &str, attributes: &[(&'static str, &str)]) -> Resource {
    let mut builder = Resource::builder_empty()
        .with_service_name(service.to_owned())
        .with_attributes(
            std::iter::once(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).chain(
                attributes
                    .iter()
                    .filter(|(_, v)| !v.is_empty())
                    .map(|(k, v)| KeyValue::new(*k, v.to_string())),
            ),
        )
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
        ]);
    if let Ok(name) = std::env::var("OTEL_SERVICE_NAME")
        && !name.trim().is_empty()
    {
        builder = builder.with_service_name(name);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment holding only `vars`.
    fn env<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn signals(vars: &[(&str, &str)]) -> Signals {
        Signals::from_lookup(env(vars))
    }

    #[test]
    fn transport_per_signal_then_shared_then_http() {
        assert_eq!(
            Transport::for_signal("METRICS", env(&[])).unwrap(),
            Transport::HttpProtobuf
        );
        let grpc = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert_eq!(
            Transport::for_signal("METRICS", grpc).unwrap(),
            Transport::Grpc
        );
        let mixed = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]);
        assert_eq!(
            Transport::for_signal("TRACES", mixed).unwrap(),
            Transport::HttpProtobuf
        );
        let json = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
        let err = Transport::for_signal("METRICS", json).unwrap_err();
        assert_eq!(
            err.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\": netslo exports OTLP over grpc or http/protobuf"
        );
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(signals(&[]), Signals::default());
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
            Signals::default()
        );
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Signals::default()
        );
    }

    #[test]
    fn endpoints_per_signal_and_opt_outs() {
        let both = Signals {
            metrics: true,
            traces: true,
        };
        assert_eq!(
            signals(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]),
            both
        );
        assert_eq!(
            signals(&[(
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://c:4318/v1/metrics"
            )]),
            Signals {
                metrics: true,
                traces: false
            }
        );
        assert_eq!(
            signals(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ]),
            Signals {
                metrics: true,
                traces: false
            }
        );
        assert_eq!(
            signals(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_SDK_DISABLED", "true"),
            ]),
            Signals::default()
        );
    }
}
