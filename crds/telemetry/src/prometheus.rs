//! A Prometheus scrape endpoint (`GET /metrics`, text exposition format 0.0.4) for the same
//! instruments the OTLP export carries, named as an OpenTelemetry Collector's Prometheus
//! exporters name them (the default `UnderscoreEscapingWithSuffixes` translation), so alert
//! rules and dashboards work on either path:
//!
//! - dots and other characters Prometheus does not allow become `_`;
//! - the unit becomes a suffix: `s` → `_seconds`, `ms` → `_milliseconds`, `By` → `_bytes`,
//!   `1` on a gauge → `_ratio`; annotations such as `{probe}` add none;
//! - a monotonic sum is a counter ending in `_total`; any other sum is a gauge;
//! - attributes become labels the same way; the resource's attributes are `target_info`'s.
//!
//! Exponential histograms (probe durations, scheduling lag) have no place in the text format,
//! which carries only classic histograms: they are exposed as classic histograms whose bounds
//! are the powers of two, which the exponential buckets merge into exactly (every bucket of a
//! scale of 0 or more lies within one power-of-two interval). `histogram_quantile` then works
//! on them as on any classic histogram, at a resolution of a factor of two.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, ExponentialHistogramDataPoint, Metric, MetricData, ResourceMetrics,
};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};
use tokio::net::TcpListener;

/// The powers of two every exponential histogram is exposed at: 2^-20 s (about 1 µs) to
/// 2^6 s (64 s). Always all of them, so a series' buckets do not come and go with its data;
/// values beyond them add their own bound.
const POWER_OF_TWO_BOUNDS: std::ops::RangeInclusive<i32> = -20..=6;

/// A reader the meter provider collects into on each scrape. Cloned into the provider (which
/// owns its readers) and kept for the endpoint.
#[derive(Debug, Clone, Default)]
pub struct Scraper(Arc<ManualReader>);

impl Scraper {
    /// The instruments' current values in the text exposition format.
    pub fn scrape(&self) -> Result<String, String> {
        let mut metrics = ResourceMetrics::default();
        self.0.collect(&mut metrics).map_err(|e| e.to_string())?;
        Ok(encode(&metrics))
    }
}

impl MetricReader for Scraper {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, metrics: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(metrics)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// Binds `addr` and serves `GET /metrics` there for the life of the process; the address
/// bound (port 0 picks one).
pub async fn start(addr: SocketAddr, scraper: Scraper) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, scraper));
    Ok(bound)
}

async fn serve(listener: TcpListener, scraper: Scraper) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors, most likely: wait rather than spin.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let scraper = scraper.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, scraper.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    scraper: Scraper,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        // Collection runs the operator's callbacks, which lock its figures: off the workers.
        "/metrics" => match tokio::task::spawn_blocking(move || scraper.scrape()).await {
            Ok(Ok(text)) => (
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                text,
            ),
            Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e + "\n"),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            ),
        },
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// The text exposition of collected metrics (pure).
pub fn encode(metrics: &ResourceMetrics) -> String {
    let mut out = String::new();
    let resource: Vec<(String, String)> = metrics
        .resource()
        .iter()
        .map(|(k, v)| (label_name(k.as_str()), v.as_str().into_owned()))
        .collect();
    if !resource.is_empty() {
        out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
        out.push_str("target_info");
        write_labels(
            &mut out,
            resource.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        );
        out.push_str(" 1\n");
    }
    for scope in metrics.scope_metrics() {
        for metric in scope.metrics() {
            encode_metric(&mut out, metric);
        }
    }
    out
}

fn encode_metric(out: &mut String, metric: &Metric) {
    match metric.data() {
        AggregatedMetrics::F64(data) => encode_data(out, metric, data, |v| *v),
        AggregatedMetrics::U64(data) => encode_data(out, metric, data, |v| *v as f64),
        AggregatedMetrics::I64(data) => encode_data(out, metric, data, |v| *v as f64),
    }
}

fn encode_data<T: Copy>(
    out: &mut String,
    metric: &Metric,
    data: &MetricData<T>,
    float: fn(&T) -> f64,
) {
    let kind = match data {
        MetricData::Gauge(_) => Kind::Gauge,
        MetricData::Sum(sum) if sum.is_monotonic() => Kind::Counter,
        MetricData::Sum(_) => Kind::Gauge,
        MetricData::Histogram(_) | MetricData::ExponentialHistogram(_) => Kind::Histogram,
    };
    let name = metric_name(metric.name(), metric.unit(), kind);
    let _ = writeln!(out, "# HELP {name} {}", escape_help(metric.description()));
    let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
    match data {
        MetricData::Gauge(gauge) => {
            for point in gauge.data_points() {
                sample(out, &name, point.attributes(), None, float(&point.value()));
            }
        }
        MetricData::Sum(sum) => {
            for point in sum.data_points() {
                sample(out, &name, point.attributes(), None, float(&point.value()));
            }
        }
        MetricData::Histogram(histogram) => {
            for point in histogram.data_points() {
                let mut cumulative = 0;
                let bounds = point.bounds().map(format_float);
                for (bound, count) in bounds.chain(["+Inf".to_owned()]).zip(point.bucket_counts()) {
                    cumulative += count;
                    let bucket = format!("{name}_bucket");
                    sample(
                        out,
                        &bucket,
                        point.attributes(),
                        Some(&bound),
                        cumulative as f64,
                    );
                }
                let sum = format!("{name}_sum");
                sample(out, &sum, point.attributes(), None, float(&point.sum()));
                let count = format!("{name}_count");
                sample(out, &count, point.attributes(), None, point.count() as f64);
            }
        }
        MetricData::ExponentialHistogram(histogram) => {
            for point in histogram.data_points() {
                for (bound, cumulative) in power_of_two_buckets(point) {
                    let bucket = format!("{name}_bucket");
                    sample(
                        out,
                        &bucket,
                        point.attributes(),
                        Some(&bound),
                        cumulative as f64,
                    );
                }
                let sum = format!("{name}_sum");
                sample(out, &sum, point.attributes(), None, float(&point.sum()));
                let count = format!("{name}_count");
                sample(out, &count, point.attributes(), None, point.count() as f64);
            }
        }
    }
}

/// Cumulative counts of an exponential histogram at power-of-two bounds (`le` values), `+Inf`
/// last. Exact for scales of 0 and more: bucket `i` of scale `s` covers
/// (2^(i/2^s), 2^((i+1)/2^s)], which lies within (2^k, 2^(k+1)] for k = floor(i / 2^s).
/// A negative scale's buckets span several powers of two: each counts at its upper bound.
fn power_of_two_buckets<T>(point: &ExponentialHistogramDataPoint<T>) -> Vec<(String, u64)> {
    let scale = i32::from(point.scale());
    let positive = point.positive_bucket();
    // Upper bound exponent k+1 of each populated bucket -> its count.
    let mut by_exponent: BTreeMap<i32, u64> = POWER_OF_TWO_BOUNDS.map(|e| (e, 0)).collect();
    for (i, count) in positive.counts().enumerate() {
        if count == 0 {
            continue;
        }
        let index = positive
            .offset()
            .saturating_add(i32::try_from(i).unwrap_or(i32::MAX));
        let upper = if scale >= 0 {
            (index >> scale.min(31)).saturating_add(1)
        } else {
            index
                .saturating_add(1)
                .saturating_mul(1 << (-scale).min(30))
        };
        *by_exponent.entry(upper).or_default() += count;
    }
    // Zero and negative values lie below every positive bound.
    let below_all: u64 = point.zero_count() + point.negative_bucket().counts().sum::<u64>();
    let mut cumulative = below_all;
    let mut buckets: Vec<(String, u64)> = by_exponent
        .into_iter()
        .map(|(exponent, count)| {
            cumulative += count;
            (format_float(2f64.powi(exponent)), cumulative)
        })
        .collect();
    buckets.push(("+Inf".to_owned(), point.count() as u64));
    buckets
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The collector's name for an instrument: sanitised, the unit's suffix, `_total` on counters.
fn metric_name(name: &str, unit: &str, kind: Kind) -> String {
    let mut out = sanitise(name);
    let suffix = match (unit, kind) {
        ("s", _) => Some("seconds"),
        ("ms", _) => Some("milliseconds"),
        ("By", _) => Some("bytes"),
        ("1", Kind::Gauge) => Some("ratio"),
        _ => None,
    };
    if let Some(suffix) = suffix
        && !out.ends_with(&format!("_{suffix}"))
    {
        out.push('_');
        out.push_str(suffix);
    }
    if kind == Kind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

fn label_name(key: &str) -> String {
    sanitise(key)
}

/// Characters outside `[a-zA-Z0-9_:]` become `_`, and so does a leading digit's place.
fn sanitise(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn sample<'a>(
    out: &mut String,
    name: &str,
    attributes: impl Iterator<Item = &'a KeyValue>,
    le: Option<&str>,
    value: f64,
) {
    out.push_str(name);
    let mut labels: Vec<(String, String)> = attributes
        .map(|kv| (label_name(kv.key.as_str()), value_text(&kv.value)))
        .collect();
    if let Some(le) = le {
        labels.push(("le".to_owned(), le.to_owned()));
    }
    write_labels(out, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    out.push(' ');
    out.push_str(&format_float(value));
    out.push('\n');
}

fn write_labels<'a>(out: &mut String, labels: impl Iterator<Item = (&'a str, &'a str)>) {
    let mut first = true;
    for (key, value) in labels {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{key}=\"{}\"", escape_label(value));
    }
    if !first {
        out.push('}');
    }
}

fn value_text(value: &Value) -> String {
    value.as_str().into_owned()
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn format_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    fn provider(scraper: &Scraper) -> SdkMeterProvider {
        SdkMeterProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_attribute(KeyValue::new("service.name", "netslo-agent"))
                    .build(),
            )
            .with_reader(scraper.clone())
            .with_view(crate::exponential_histograms)
            .build()
    }

    #[test]
    fn instruments_are_named_as_a_collector_names_them() {
        let scraper = Scraper::default();
        let provider = provider(&scraper);
        let meter = provider.meter("netslo-agent");
        let check = [
            KeyValue::new("netslo.check.name", "db"),
            KeyValue::new("netslo.outcome", "bad"),
        ];
        meter
            .u64_counter("netslo.probes")
            .with_unit("{probe}")
            .build()
            .add(3, &check);
        meter
            .f64_gauge("netslo.slo.sli")
            .with_unit("1")
            .build()
            .record(0.5, &check[..1]);
        meter
            .f64_gauge("netslo.agent.assignment.age")
            .with_unit("s")
            .build()
            .record(2.0, &[]);
        meter
            .f64_gauge("netslo.check.state")
            .with_unit("{check}")
            .build()
            .record(1.0, &[KeyValue::new("netslo.state", "say \"hi\"\n")]);
        let text = scraper.scrape().unwrap();
        for line in [
            "target_info{service_name=\"netslo-agent\"} 1",
            "# TYPE netslo_probes_total counter",
            "netslo_probes_total{netslo_check_name=\"db\",netslo_outcome=\"bad\"} 3",
            "# TYPE netslo_slo_sli_ratio gauge",
            "netslo_slo_sli_ratio{netslo_check_name=\"db\"} 0.5",
            "netslo_agent_assignment_age_seconds 2",
            "netslo_check_state{netslo_state=\"say \\\"hi\\\"\\n\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn exponential_histograms_are_classic_at_powers_of_two_exactly() {
        let scraper = Scraper::default();
        let provider = provider(&scraper);
        let meter = provider.meter("netslo-agent");
        let duration = meter
            .f64_histogram("netslo.probe.duration")
            .with_unit("s")
            .build();
        // 1 ms, 3 ms, 3 ms, 0.3 s and 5 s: bounds 2^-9 (1.95 ms), 2^-8 (3.9 ms), 2^-1, 2^3.
        for value in [0.001, 0.003, 0.003, 0.3, 5.0] {
            duration.record(value, &[KeyValue::new("netslo.target", "db")]);
        }
        let text = scraper.scrape().unwrap();
        let bucket = |le: f64| {
            let prefix = format!(
                "netslo_probe_duration_seconds_bucket{{netslo_target=\"db\",le=\"{}\"}} ",
                format_float(le)
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .parse::<f64>()
                .unwrap()
        };
        assert_eq!(bucket(2f64.powi(-20)), 0.0);
        assert_eq!(bucket(2f64.powi(-10)), 0.0);
        assert_eq!(bucket(2f64.powi(-9)), 1.0);
        assert_eq!(bucket(2f64.powi(-8)), 3.0);
        assert_eq!(bucket(2f64.powi(-2)), 3.0);
        assert_eq!(bucket(2f64.powi(-1)), 4.0);
        assert_eq!(bucket(2f64.powi(2)), 4.0);
        assert_eq!(bucket(2f64.powi(3)), 5.0);
        assert!(text.contains("le=\"+Inf\"} 5\n"), "{text}");
        assert!(text.contains("netslo_probe_duration_seconds_count{netslo_target=\"db\"} 5\n"));
        assert!(text.contains("# TYPE netslo_probe_duration_seconds histogram\n"));
        // Every power of two in the range, whatever the data.
        let bounds = text
            .lines()
            .filter(|l| l.starts_with("netslo_probe_duration_seconds_bucket"))
            .count();
        assert_eq!(bounds, POWER_OF_TWO_BOUNDS.count() + 1);
    }
}
