//! The agent's OpenTelemetry instruments: what each probe measured, and the agent's health.
//!
//! Cardinality is bounded by design. A series is named by the check, the target (its name in
//! the check's spec) and the path to it (`ClusterIP`, `DNSName`, `Endpoint`, `Mesh`, ...);
//! the source is the agent itself (resource attribute `k8s.node.name`). The endpoint (a pod
//! IP, a mesh peer) is an attribute only with `--metrics-per-endpoint`: mesh targets rotate
//! through peers, and per-endpoint series would grow with every rotation.
//!
//! | instrument | unit | attributes |
//! |---|---|---|
//! | `netslo.probes` (counter) | `{probe}` | check, target, path, `netslo.outcome`, `netslo.failure.reason` (bad and invalid only) |
//! | `netslo.probe.duration` (exponential histogram) | `s` | check, target, path; good probes of allow checks only |
//! | `netslo.agent.schedule.lag` (exponential histogram) | `s` | none |
//! | `netslo.agent.probes.invalidated` (counter) | `{probe}` | `netslo.failure.reason` |
//! | `netslo.agent.assignment.age` (gauge) | `s` | none |

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableGauge};
use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer};

use crate::aggregate::SeriesKey;
use crate::verdict::{Layer, Outcome, ProbeResult};
use netslo_protocol::names::{AssignedCheck, SeriesLabel};
use netslo_protocol::time::now_unix_ms;
use netslo_telemetry::attribute::{
    CHECK_NAME, CHECK_NAMESPACE, ENDPOINT, FAILURE_REASON, OUTCOME, TARGET, TARGET_PATH,
};
use netslo_telemetry::{PROBE_DURATION, SCHEDULE_LAG};

/// The agent's instruments.
#[derive(Debug)]
pub struct ProbeMetrics {
    per_endpoint: bool,
    trace_failures: bool,
    probes: Counter<u64>,
    duration: Histogram<f64>,
    lag: Histogram<f64>,
    invalidated: Counter<u64>,
    _assignment_age: ObservableGauge<f64>,
}

/// The attributes of one series, built once per job.
#[derive(Debug, Clone)]
pub struct SeriesAttributes {
    base: Vec<KeyValue>,
    good: Vec<KeyValue>,
}

impl ProbeMetrics {
    /// Instruments from `meter`; `trace_failures` builds a span for every failed probe;
    /// `assignment_confirmed` holds the Unix ms at which the assignment was last confirmed
    /// (0: never), read at each collection.
    pub fn new(
        meter: &Meter,
        per_endpoint: bool,
        trace_failures: bool,
        assignment_confirmed: Arc<AtomicI64>,
    ) -> Self {
        ProbeMetrics {
            per_endpoint,
            trace_failures,
            probes: meter
                .u64_counter("netslo.probes")
                .with_unit("{probe}")
                .with_description("Probes run, by outcome (good, bad, invalid) and failure reason")
                .build(),
            duration: meter
                .f64_histogram(PROBE_DURATION)
                .with_unit("s")
                .with_description("Headline latency of good probes (TCP connect, HTTP total, DNS lookup, ICMP/UDP round trip)")
                .build(),
            lag: meter
                .f64_histogram(SCHEDULE_LAG)
                .with_unit("s")
                .with_description("How late probes started after their scheduled time")
                .build(),
            invalidated: meter
                .u64_counter("netslo.agent.probes.invalidated")
                .with_unit("{probe}")
                .with_description("Probes that do not count towards any SLI, by reason (the agent was late, out of resources, refused the destination)")
                .build(),
            _assignment_age: meter
                .f64_observable_gauge("netslo.agent.assignment.age")
                .with_unit("s")
                .with_description("Time since the agent last received its assignment")
                .with_callback(move |gauge| {
                    let at = assignment_confirmed.load(Ordering::Relaxed);
                    if at > 0 {
                        gauge.observe(now_unix_ms().saturating_sub(at) as f64 / 1e3, &[]);
                    }
                })
                .build(),
        }
    }

    /// Instruments from the global meter provider (no-ops while export is off).
    pub fn global(
        per_endpoint: bool,
        trace_failures: bool,
        assignment_confirmed: Arc<AtomicI64>,
    ) -> Self {
        Self::new(
            &opentelemetry::global::meter("netslo-agent"),
            per_endpoint,
            trace_failures,
            assignment_confirmed,
        )
    }

    /// The attributes of a series. The operator names a check's part of an assignment
    /// `namespace/name/target` and labels a series `target/path/endpoint`; anything else (a
    /// static assignment) is taken as it is.
    pub fn attributes(&self, key: &SeriesKey) -> SeriesAttributes {
        let mut base = Vec::with_capacity(5);
        match AssignedCheck::parse(&key.check) {
            Some(check) => {
                base.push(KeyValue::new(CHECK_NAMESPACE, check.namespace.to_owned()));
                base.push(KeyValue::new(CHECK_NAME, check.check.to_owned()));
            }
            None => base.push(KeyValue::new(CHECK_NAME, key.check.to_string())),
        }
        match SeriesLabel::parse(&key.target) {
            Some(series) => {
                base.push(KeyValue::new(TARGET, series.target.to_owned()));
                base.push(KeyValue::new(TARGET_PATH, series.path.to_owned()));
                if self.per_endpoint {
                    base.push(KeyValue::new(ENDPOINT, series.endpoint.to_owned()));
                }
            }
            None => base.push(KeyValue::new(TARGET, key.target.to_string())),
        }
        let mut good = base.clone();
        good.push(KeyValue::new(OUTCOME, "good"));
        SeriesAttributes { base, good }
    }

    /// Records one judged probe.
    pub fn record(&self, key: &SeriesKey, series: &SeriesAttributes, result: &ProbeResult) {
        self.lag.record(result.lag_us as f64 / 1e6, &[]);
        match result.outcome {
            Outcome::Good => {
                self.probes.add(1, &series.good);
                if result.blocked_by.is_none() {
                    self.duration
                        .record(result.latency_us as f64 / 1e6, &series.base);
                }
            }
            Outcome::Bad | Outcome::Invalid => {
                let outcome = if result.outcome == Outcome::Bad {
                    "bad"
                } else {
                    "invalid"
                };
                let reason = result.reason.map_or("Unknown", |r| r.as_str());
                let mut attrs = series.base.clone();
                attrs.push(KeyValue::new(OUTCOME, outcome));
                attrs.push(KeyValue::new(FAILURE_REASON, reason));
                self.probes.add(1, &attrs);
                if result.outcome == Outcome::Invalid {
                    self.invalidated
                        .add(1, &[KeyValue::new(FAILURE_REASON, reason)]);
                } else if self.trace_failures {
                    trace_failure(key, series, result);
                }
            }
        }
    }
}

/// A span for a failed probe, ending now, with a child span per phase it completed (`dns`,
/// `connect`, `tls`, `ttfb`), laid end to end from the probe's start, and one for the phase
/// that failed, from there to the end, with the error.
fn trace_failure(key: &SeriesKey, series: &SeriesAttributes, result: &ProbeResult) {
    let tracer = opentelemetry::global::tracer("netslo-agent");
    let end = SystemTime::now();
    let phases = &result.phases;
    let total = Duration::from_micros(phases.total_us.unwrap_or(result.latency_us));
    let start = end.checked_sub(total).unwrap_or(end);
    let reason = result.reason.map_or("Unknown", |r| r.as_str());
    let mut attributes = series.base.clone();
    attributes.push(KeyValue::new("netslo.source", key.source.to_string()));
    attributes.push(KeyValue::new(FAILURE_REASON, reason));
    if let Some(layer) = result.layer {
        attributes.push(KeyValue::new("netslo.failure.layer", layer.as_str()));
    }
    let mut probe = tracer
        .span_builder("netslo.probe")
        .with_kind(SpanKind::Client)
        .with_start_time(start)
        .with_attributes(attributes)
        .start(&tracer);
    probe.set_status(Status::error(reason));
    let cx = opentelemetry::Context::new().with_span(probe);
    let mut at = start;
    for (name, us) in [
        ("dns", phases.dns_us),
        ("connect", phases.connect_us),
        ("tls", phases.tls_us),
        ("ttfb", phases.ttfb_us),
    ] {
        let Some(us) = us else { continue };
        let until = at + Duration::from_micros(us);
        tracer
            .span_builder(name)
            .with_start_time(at)
            .start_with_context(&tracer, &cx)
            .end_with_timestamp(until);
        at = until;
    }
    let failed_phase = result.layer.and_then(|layer| match layer {
        Layer::Dns => Some("dns"),
        Layer::Tcp => Some("connect"),
        Layer::Tls => Some("tls"),
        Layer::Http => Some("http"),
        Layer::Icmp => Some("icmp echo"),
        Layer::Udp => Some("udp echo"),
        Layer::Ip | Layer::Policy | Layer::Prober => None,
    });
    if let Some(name) = failed_phase
        && at < end
    {
        let mut failed = tracer
            .span_builder(name)
            .with_start_time(at)
            .start_with_context(&tracer, &cx);
        failed.set_status(Status::error(reason));
        failed.end_with_timestamp(end);
    }
    cx.span().end_with_timestamp(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(check: &str, target: &str) -> SeriesKey {
        SeriesKey {
            check: Arc::from(check),
            target: Arc::from(target),
            source: Arc::from("node-a"),
        }
    }

    fn value(attrs: &[KeyValue], name: &str) -> Option<String> {
        attrs
            .iter()
            .find(|kv| kv.key.as_str() == name)
            .map(|kv| kv.value.as_str().into_owned())
    }

    #[test]
    fn series_attributes_name_check_target_and_path_not_the_endpoint() {
        let meter = opentelemetry::global::meter("test");
        let m = ProbeMetrics::new(&meter, false, false, Arc::default());
        let a = m.attributes(&key("shop/web/api", "api/Endpoint/10.0.1.7:8080"));
        assert_eq!(value(&a.base, CHECK_NAMESPACE).as_deref(), Some("shop"));
        assert_eq!(value(&a.base, CHECK_NAME).as_deref(), Some("web"));
        assert_eq!(value(&a.base, TARGET).as_deref(), Some("api"));
        assert_eq!(value(&a.base, TARGET_PATH).as_deref(), Some("Endpoint"));
        assert_eq!(value(&a.base, ENDPOINT), None);
        assert_eq!(value(&a.good, OUTCOME).as_deref(), Some("good"));

        let drill = ProbeMetrics::new(&meter, true, false, Arc::default());
        let a = drill.attributes(&key("shop/web/mesh", "mesh/Mesh/node-b"));
        assert_eq!(value(&a.base, ENDPOINT).as_deref(), Some("node-b"));

        // A static assignment's labels are taken as they are.
        let a = m.attributes(&key("adhoc", "127.0.0.1:80"));
        assert_eq!(value(&a.base, CHECK_NAME).as_deref(), Some("adhoc"));
        assert_eq!(value(&a.base, TARGET).as_deref(), Some("127.0.0.1:80"));
        assert_eq!(value(&a.base, CHECK_NAMESPACE), None);
    }
}
