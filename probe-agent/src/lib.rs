//! netslo probe engine: measures network paths cheaply and says precisely what failed.
//!
//! * [`spec`]: the assignment an agent runs (camelCase JSON, validated);
//! * [`probe`]: TCP, HTTP(S), DNS, ICMP and UDP probes behind one interface;
//! * [`verdict`]: outcome, failure reason and layer of each probe (pure);
//! * [`guard`]: which destinations a check may contact, and IP spellings normalised (pure);
//! * [`schedule`]: jittered per-target schedules (pure);
//! * [`aggregate`] and [`histogram`]: windowed per-series counters and latency histograms;
//! * [`engine`]: schedules, bounds concurrency, judges and aggregates;
//! * [`echo`]: the UDP/TCP/HTTP echo responder every agent serves;
//! * [`report`]: the operator channel (assignments in, acknowledged result batches out);
//! * [`otel`] and [`metrics`]: OpenTelemetry export (OTLP) and the agent's instruments;
//! * `testbed` (feature): network-namespace topologies for integration tests.

pub mod aggregate;
pub mod echo;
pub mod engine;
pub mod guard;
pub mod histogram;
pub mod metrics;
pub mod otel;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod spec;
#[cfg(feature = "testbed")]
pub mod testbed;
pub mod verdict;
