//! Status writes per minute in steady state: the reconciler's pure status path (window history
//! → evaluation → desired status → "would a reader see a change?" → per-object pacing) run
//! over simulated time, exactly as `controller::reconcile` composes it, for checks whose
//! network does not change. The reference, measured in the same run on the same inputs, is
//! a writer without the material-change test and pacing: one that writes whenever the
//! status it computes differs in any byte.
//!
//! Each scenario starts from a full 28-day window (so coverage and the budget are settled),
//! then runs two simulated hours: every agent reports a 10 s bucket every 10 s, the check is
//! reconciled every 15 s (the requeue period), and latencies jitter by ±20% around 2 ms.
//! Output: `name: value unit` lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use netslo_crds::v1alpha1::{AgentCounts, ConnectivityCheckStatus, Objectives, Protocol};
use netslo_operator::slo::config::SloConfig;
use netslo_operator::slo::evaluate::evaluate;
use netslo_operator::slo::window::{History, Sample};
use netslo_operator::slo::{DAY_MS, MINUTE_MS, UnixMs};
use netslo_operator::status::conditions::Setup;
use netslo_operator::status::pacing::{PacingLimits, WriteDecision, WritePacer};
use netslo_operator::status::verdict::TargetStats;
use netslo_operator::status::{StatusInput, desired_status, material_change};
use netslo_protocol::histogram::Histogram;

const T0: UnixMs = 1_767_225_600_000;
const BUCKET_MS: i64 = 10_000;
const RECONCILE_MS: i64 = 15_000;
const MEASURED_MS: i64 = 2 * 60 * MINUTE_MS;
const AGENTS: u64 = 3;
/// Probes per agent per bucket (1 s interval).
const PROBES: u64 = 10;

/// A small deterministic generator (xorshift64*), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

struct Scenario {
    name: &'static str,
    /// Probability that one probe fails.
    failure: f64,
}

struct Counts {
    writes: u64,
    naive_writes: u64,
}

fn sample(rng: &mut Rng, start_ms: UnixMs, failure: f64) -> (Sample, u64) {
    let total = AGENTS * PROBES;
    let bad = (0..total).filter(|_| rng.chance(failure)).count() as u64;
    let good = total - bad;
    (
        Sample {
            start_ms,
            total,
            invalid: 0,
            good,
            latency_valid: total,
            latency_good: good,
        },
        good,
    )
}

fn run(scenario: &Scenario) -> Counts {
    let objectives: Objectives = serde_json::from_value(serde_json::json!({
        "availability": {"target": "99"},
        "latency": {"threshold": "100ms", "target": "99"},
    }))
    .unwrap();
    let slo = SloConfig::from_spec(Some(&objectives)).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // A full window: 28 days of buckets (coarse enough to build fast, same counts per time).
    let start = T0 - 28 * DAY_MS;
    let mut history = History::new(slo.slice, start);
    let mut t = start;
    while t < T0 {
        let (mut s, _) = sample(&mut rng, t, scenario.failure);
        // One sample per 5 minutes carrying that span's probes.
        let scale = 30;
        s.total *= scale;
        s.good *= scale;
        s.latency_valid *= scale;
        s.latency_good *= scale;
        history.ingest(&s, t + BUCKET_MS);
        t += 5 * MINUTE_MS;
    }

    let setup = Setup {
        generation: Some(1),
        suspended: false,
        stalled: None,
        agents: AgentCounts {
            desired: AGENTS as i32,
            reporting: AGENTS as i32,
        },
        agents_rolling_out: false,
        // The simulated check has had results for days: silent agents would be missing.
        agents_due: true,
    };
    let mut pacer = WritePacer::new(PacingLimits::default());
    let mut written: Option<ConnectivityCheckStatus> = None;
    let mut naive: Option<ConnectivityCheckStatus> = None;
    // The last hour of per-minute target stats, as the store keeps them.
    let mut minutes: std::collections::VecDeque<(u64, u64, Histogram)> = Default::default();
    let mut counts = Counts {
        writes: 0,
        naive_writes: 0,
    };
    let warmup_end = T0 + 10 * MINUTE_MS;
    let mut now = T0;
    let mut next_bucket = T0;
    while now < warmup_end + MEASURED_MS {
        while next_bucket <= now {
            let (s, good) = sample(&mut rng, next_bucket, scenario.failure);
            history.ingest(&s, next_bucket + BUCKET_MS);
            let mut latency = Histogram::new();
            for _ in 0..good {
                latency.record(1_600 + rng.next() % 800);
            }
            let minute = next_bucket.div_euclid(MINUTE_MS) as u64;
            match minutes.back_mut() {
                Some(last) if last.0 == minute => {
                    last.1 += s.total;
                    last.2.merge(&latency);
                }
                _ => minutes.push_back((minute, s.total, latency)),
            }
            while minutes.len() > 60 {
                minutes.pop_front();
            }
            next_bucket += BUCKET_MS;
        }
        let evaluation = evaluate(&slo, &history, now);
        let mut latency = Histogram::new();
        let mut valid = 0;
        for (_, n, h) in &minutes {
            valid += n;
            latency.merge(h);
        }
        let good = latency.count_at_or_below(u64::MAX);
        let targets = [TargetStats {
            name: "api".into(),
            via: None,
            endpoint: None,
            locality: None,
            protocol: Protocol::TCP,
            good,
            valid,
            latency,
            last_failure: None,
        }];
        let input = StatusInput {
            setup: &setup,
            evaluation: Some(&evaluation),
            cells: &[],
            targets: &targets,
            mesh: None,
        };
        let measuring = now >= warmup_end;

        let status = desired_status(&input, written.as_ref(), now);
        if material_change(written.as_ref(), &status)
            && pacer.request("shop/api", now) == WriteDecision::Write
        {
            counts.writes += u64::from(measuring);
            written = Some(status);
        }
        let raw = desired_status(&input, naive.as_ref(), now);
        if naive.as_ref() != Some(&raw) {
            counts.naive_writes += u64::from(measuring);
            naive = Some(raw);
        }
        now += RECONCILE_MS;
    }
    counts
}

fn main() {
    let minutes = (MEASURED_MS / MINUTE_MS) as f64;
    for scenario in [
        Scenario {
            name: "healthy",
            failure: 0.0,
        },
        Scenario {
            name: "steady_loss_0.3pct",
            failure: 0.003,
        },
    ] {
        let counts = run(&scenario);
        println!(
            "status_writes_{}: {:.2} writes/min",
            scenario.name,
            counts.writes as f64 / minutes
        );
        println!(
            "status_writes_{}_reference_naive: {:.2} writes/min",
            scenario.name,
            counts.naive_writes as f64 / minutes
        );
    }
}
