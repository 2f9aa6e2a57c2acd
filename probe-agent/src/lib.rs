//! netslo probe engine: measures network paths cheaply and says precisely what failed.
//!
//! What an agent is asked and what it reports are the protocol crate's (`netslo_protocol`:
//! assignments, the address guard, failure reasons, buckets, the channel's wire); this crate
//! runs them:
//!
//! * [`probe`]: TCP, HTTP(S), DNS, ICMP and UDP probes behind one interface;
//! * [`verdict`]: how each probe's observation is judged (pure);
//! * [`schedule`]: jittered per-target schedules (pure);
//! * [`aggregate`]: windowed per-series counters and latency histograms;
//! * [`engine`]: schedules, bounds concurrency, judges and aggregates;
//! * [`echo`]: the UDP/TCP/HTTP echo responder every agent serves;
//! * [`one_shot`]: probes asked for once, reported attempt by attempt with a path trace;
//! * [`report`]: the operator channel's client (assignments in, acknowledged batches out);
//! * [`metrics`]: the agent's OpenTelemetry instruments;
//! * `testbed` (feature): network-namespace topologies for integration tests.

pub mod aggregate;
pub mod echo;
pub mod engine;
pub mod metrics;
pub mod one_shot;
pub mod probe;
pub mod report;
pub mod schedule;
#[cfg(feature = "testbed")]
pub mod testbed;
pub mod verdict;
