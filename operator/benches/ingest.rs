//! SLO ingest throughput: agent bucket reports added to window histories per CPU-second, against
//! a bare loop that reads and sums the same counters of the same reports in the same run.
//!
//! One *result* is one `BucketReport` (one agent's 10 s bucket for one target), whatever number
//! of probes it holds; the probes figure is printed beside it. Also prints evaluation and
//! encoding costs of a full 30-day history. Output: `name: value unit` lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use netslo_operator::slo::config::SloConfig;
use netslo_operator::slo::evaluate::evaluate;
use netslo_operator::slo::window::{History, Sample};
use netslo_operator::slo::{DAY_MS, UnixMs};
use netslo_protocol::bucket::{Bucket, BucketReport};

/// CPU time spent per measured phase.
const CPU_BUDGET: Duration = Duration::from_secs(2);
/// Reports in the reused pool: 500 sources × 8 targets.
const POOL: usize = 4_000;
/// Checks the reports are spread over (one history each).
const CHECKS: usize = 50;
const LATENCY_THRESHOLD_US: u64 = 5_000;
const T0: UnixMs = 1_767_225_600_000;

/// User + system CPU seconds of this process (USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// Runs `step` (which reports how many items it did) until `CPU_BUDGET` of CPU is spent;
/// returns items per CPU-second.
fn per_cpu_second(mut step: impl FnMut() -> u64) -> f64 {
    let start = cpu_seconds();
    let mut items = 0u64;
    loop {
        items += step();
        let spent = cpu_seconds() - start;
        if spent >= CPU_BUDGET.as_secs_f64() {
            return items as f64 / spent;
        }
    }
}

fn pool() -> Vec<BucketReport> {
    let thresholds: Arc<[u64]> = Arc::from(vec![1_000, LATENCY_THRESHOLD_US]);
    (0..POOL)
        .map(|i| {
            let mut bucket = Bucket::new(thresholds.clone());
            let i64 = i as u64;
            bucket.total = 1 + i64 % 3;
            bucket.invalid = u64::from(i % 97 == 0);
            bucket.bad = u64::from(i % 13 == 0).min(bucket.total - bucket.invalid);
            bucket.good = bucket.total - bucket.invalid - bucket.bad;
            bucket.good_within = vec![bucket.good / 2, bucket.good];
            BucketReport {
                seq: i64,
                check: format!("ns/check-{}", i % CHECKS).into(),
                target: format!("target-{}", i % 8).into(),
                source: format!("node-{}", i / 8).into(),
                start_unix_ms: 0,
                duration_ms: 10_000,
                bucket,
                p50_us: None,
                p90_us: None,
                p99_us: None,
            }
        })
        .collect()
}

fn main() {
    let config = SloConfig::from_spec(None).unwrap();
    let mut reports = pool();
    let probes_per_pass: u64 = reports.iter().map(|r| r.bucket.total).sum();

    // Time advances 10 s per pass over the pool, as if every series reported once per bucket;
    // each report arrives a little late, some a few minutes late (resent after a reconnect).
    let mut histories: Vec<History> = (0..CHECKS)
        .map(|_| History::new(config.slice, T0))
        .collect();
    let mut now = T0;
    let ingest_rate = per_cpu_second(|| {
        now += 10_000;
        for (i, r) in reports.iter_mut().enumerate() {
            let lateness = if i % 101 == 0 {
                180_000
            } else {
                10_000 + (i as i64 % 7) * 100
            };
            r.start_unix_ms = now - lateness;
            let sample = Sample::from_report(r, Some(LATENCY_THRESHOLD_US), false);
            black_box(histories[i % CHECKS].ingest(&sample, now));
        }
        POOL as u64
    });
    let simulated = Duration::from_millis((now - T0) as u64);

    let mut sums = [0u64; 4];
    let mut ref_now = T0;
    let reference_rate = per_cpu_second(|| {
        ref_now += 10_000;
        for (i, r) in reports.iter_mut().enumerate() {
            r.start_unix_ms = ref_now - 10_000 - (i as i64 % 7) * 100;
            let b = black_box(&*r);
            sums[0] += b.bucket.total;
            sums[1] += b.bucket.good;
            sums[2] += b.bucket.invalid;
            sums[3] += b.bucket.good_within.get(1).copied().unwrap_or(0)
                + b.start_unix_ms.unsigned_abs() % 2;
        }
        POOL as u64
    });
    black_box(sums);

    // A full 30-day history of one check: evaluate and encode it.
    let mut full = History::new(config.slice, T0 - 30 * DAY_MS);
    let mut t = T0 - 30 * DAY_MS;
    while t < T0 {
        let bad = u64::from(t % 3_600_000 == 0);
        let s = Sample {
            start_ms: t,
            total: 1_000,
            invalid: 0,
            good: 1_000 - bad,
            latency_valid: 1_000,
            latency_good: 990,
        };
        full.ingest(&s, t + 15_000);
        t += 60_000;
    }
    full.advance(T0);
    let evaluate_rate = per_cpu_second(|| {
        black_box(evaluate(&config, &full, T0));
        1
    });
    let encoded = full.encode();
    let codec_rate = per_cpu_second(|| {
        let bytes = full.encode();
        black_box(History::decode(&bytes).unwrap());
        1
    });

    println!("slo_ingest_results_per_cpu_second: {ingest_rate:.0} reports/s");
    println!(
        "slo_ingest_probes_per_cpu_second: {:.0} probes/s",
        ingest_rate * probes_per_pass as f64 / POOL as f64
    );
    println!("reference_sum_counters_per_cpu_second: {reference_rate:.0} reports/s");
    println!(
        "slo_ingest_cost_vs_reference: {:.1} x",
        reference_rate / ingest_rate
    );
    println!(
        "slo_ingest_simulated_time: {:.0} s",
        simulated.as_secs_f64()
    );
    println!("slo_evaluate_30d_history_per_cpu_second: {evaluate_rate:.0} evaluations/s");
    println!("slo_history_30d_encoded_size: {} bytes", encoded.len());
    println!("slo_history_encode_decode_per_cpu_second: {codec_rate:.0} round-trips/s");
}
