//! The operator channel's wire: paths, headers, bounds, the assignment envelope, result
//! batches and their acknowledgement. Agents send what [`ResultBatch::validate`] accepts; the
//! operator validates every batch it receives with the same function.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bucket::BucketReport;
use crate::hash::{fnv1a_64, random_u64};
use crate::histogram::BUCKETS;
use crate::spec::{
    Assignment, MAX_DOCUMENT_BYTES, MAX_ONE_SHOT_ATTEMPTS, MAX_ONE_SHOT_TARGETS, MAX_THRESHOLDS,
    validate_one_shot_id,
};
use crate::trace::PathTrace;
use crate::verdict::ProbeResult;

/// Path of the assignment endpoint (`GET`, long-poll).
pub const ASSIGNMENT_PATH: &str = "/v1/assignment";
/// Path of the results endpoint (`POST`).
pub const RESULTS_PATH: &str = "/v1/results";
/// Path of the one-shot results endpoint (`POST` a [`OneShotReport`]).
pub const ONE_SHOT_PATH: &str = "/v1/one-shot-results";
/// Header on assignment requests listing what the agent runs beyond checks, comma-separated.
pub const FEATURES_HEADER: &str = "x-netslo-features";
/// [`FEATURES_HEADER`]'s word for one-shot probes (`Assignment.oneShots`).
pub const FEATURE_ONE_SHOTS: &str = "one-shots";
/// Header naming the agent on assignment requests.
pub const AGENT_HEADER: &str = "x-netslo-agent";
/// Header with the longest a long-poll may wait, in seconds.
pub const WAIT_HEADER: &str = "x-netslo-wait-seconds";
/// Header on assignment requests with the digest ([`node_addresses_digest`]) of the node
/// addresses the agent holds, or [`NO_NODE_ADDRESSES`]. An agent that sends it understands
/// envelopes that leave the addresses out; one that does not is sent them every time.
pub const NODE_ADDRESSES_HEADER: &str = "x-netslo-node-addresses";
/// [`NODE_ADDRESSES_HEADER`]'s value from an agent that holds no node addresses yet.
pub const NO_NODE_ADDRESSES: &str = "none";
/// Longest long-poll the operator honours.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most buckets in one batch.
pub const MAX_BATCH_BUCKETS: usize = 2_000;
/// Largest result batch body the operator accepts.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Largest assignment response body the agent accepts.
pub const MAX_ASSIGNMENT_RESPONSE_BYTES: usize = MAX_DOCUMENT_BYTES + 64 * 1024;

/// A batch (or a name in it) that breaks the channel's rules.
#[derive(Debug, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidBatch {
    pub field: String,
    pub message: String,
}

impl InvalidBatch {
    pub fn reason(&self) -> &'static str {
        "BatchInvalid"
    }

    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        InvalidBatch {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The answer to an assignment request.
///
/// Every assignment carries every node's addresses (thousands at cluster sizes) while its
/// checks change with each mesh round, so an agent that says which addresses it holds
/// ([`NODE_ADDRESSES_HEADER`]) is sent them only when they changed: `nodeAddressesHeld` then
/// says the agent's list (with `nodeAddressesDigest`) stands in for the missing one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignmentEnvelope {
    /// Opaque version (also the `ETag`); unchanged version, unchanged assignment.
    pub version: String,
    /// Digest of the assignment's node addresses; set only for agents that sent
    /// [`NODE_ADDRESSES_HEADER`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_addresses_digest: String,
    /// The addresses were left out: they are the ones the agent said it holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node_addresses_held: bool,
    pub assignment: Assignment,
}

/// The digest that names a list of node addresses in [`NODE_ADDRESSES_HEADER`]: FNV-1a 64
/// over the addresses in order, with their count (detects change, not tampering: the list
/// comes from the operator over the authenticated channel either way).
pub fn node_addresses_digest(addresses: &[std::net::IpAddr]) -> String {
    let bytes = addresses.iter().flat_map(|ip| {
        let (tag, octets): (u8, [u8; 16]) = match ip {
            std::net::IpAddr::V4(v4) => (4, v4.to_ipv6_mapped().octets()),
            std::net::IpAddr::V6(v6) => (6, v6.octets()),
        };
        std::iter::once(tag).chain(octets)
    });
    let count = (addresses.len() as u64).to_le_bytes();
    format!("{:016x}", fnv1a_64(count.into_iter().chain(bytes)))
}

/// A batch of closed buckets from one agent process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResultBatch {
    pub agent_name: String,
    /// Random per process start; with `seq`, identifies a bucket for de-duplication.
    pub boot_id: String,
    /// Lowest and highest `seq` of the buckets (inclusive).
    pub seq_from: u64,
    pub seq_to: u64,
    /// Buckets this process dropped so far (outbox or aggregator full), cumulative.
    #[serde(default)]
    pub dropped_buckets: u64,
    pub buckets: Vec<BucketReport>,
}

/// What the operator did with a batch. Sent only once accepted buckets are durable; every
/// bucket of the batch is settled by it (accepted, duplicate or refused for good).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchAck {
    pub accepted: u64,
    pub duplicates: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedBucket>,
}

/// A bucket the operator will never accept (for example, a check this agent was not assigned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefusedBucket {
    pub seq: u64,
    pub reason: String,
}

/// An error body from the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub reason: String,
    pub message: String,
}

fn check_text(field: &str, s: &str, max: usize) -> Result<(), InvalidBatch> {
    if s.is_empty() || s.len() > max {
        return Err(InvalidBatch::new(field, format!("1 to {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidBatch::new(field, "contains control characters"));
    }
    Ok(())
}

/// Checks an agent name: 1 to 253 bytes, no control characters.
pub fn validate_agent_name(name: &str) -> Result<(), InvalidBatch> {
    check_text("agentName", name, 253)
}

/// Checks a boot id: 1 to 64 ASCII letters, digits or `-`.
pub fn validate_boot_id(id: &str) -> Result<(), InvalidBatch> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(InvalidBatch::new(
            "bootId",
            "1 to 64 ASCII letters, digits or '-'",
        ));
    }
    Ok(())
}

impl ResultBatch {
    /// Checks every bound and the internal consistency of each bucket; the first problem is
    /// reported with the path of the field.
    pub fn validate(&self) -> Result<(), InvalidBatch> {
        validate_agent_name(&self.agent_name)?;
        validate_boot_id(&self.boot_id)?;
        if self.buckets.is_empty() || self.buckets.len() > MAX_BATCH_BUCKETS {
            return Err(InvalidBatch::new(
                "buckets",
                format!("1 to {MAX_BATCH_BUCKETS} buckets"),
            ));
        }
        if self.seq_from > self.seq_to {
            return Err(InvalidBatch::new("seqFrom", "greater than seqTo"));
        }
        let mut prev: Option<u64> = None;
        for (i, b) in self.buckets.iter().enumerate() {
            let f = |x: &str| format!("buckets[{i}].{x}");
            if b.seq < self.seq_from || b.seq > self.seq_to || prev.is_some_and(|p| p >= b.seq) {
                return Err(InvalidBatch::new(
                    f("seq"),
                    "outside seqFrom..=seqTo or not strictly ascending",
                ));
            }
            prev = Some(b.seq);
            check_text(&f("check"), &b.check, 253)?;
            check_text(&f("target"), &b.target, 2_048)?;
            check_text(&f("source"), &b.source, 253)?;
            let k = &b.bucket;
            if k.good
                .checked_add(k.bad)
                .and_then(|x| x.checked_add(k.invalid))
                != Some(k.total)
            {
                return Err(InvalidBatch::new(f("total"), "is not good + bad + invalid"));
            }
            if k.thresholds_us.len() > MAX_THRESHOLDS
                || k.good_within.len() != k.thresholds_us.len()
                || k.good_within.iter().any(|n| *n > k.good)
            {
                return Err(InvalidBatch::new(
                    f("goodWithin"),
                    "must match thresholdsUs (at most 16) and not exceed good",
                ));
            }
            if k.reasons.len() > 128 || k.reasons.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(InvalidBatch::new(
                    f("reasons"),
                    "at most 128, sorted, unique",
                ));
            }
            let h = &k.latency;
            if h.buckets.len() > BUCKETS
                || h.buckets.windows(2).any(|w| w[0].0 >= w[1].0)
                || h.buckets
                    .iter()
                    .any(|(i, n)| usize::from(*i) >= BUCKETS || *n == 0)
                || h.count > k.good
            {
                return Err(InvalidBatch::new(
                    f("latency"),
                    "histogram buckets must be sorted, in range and non-empty; count at most good",
                ));
            }
            if b.duration_ms == 0 || b.duration_ms > 3_600_000 {
                return Err(InvalidBatch::new(f("durationMs"), "1 to 3600000"));
            }
            if b.start_unix_ms < 0 {
                return Err(InvalidBatch::new(f("startUnixMs"), "before 1970"));
            }
        }
        Ok(())
    }
}

/// What an agent found running a one-shot probe of its assignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OneShotReport {
    pub agent_name: String,
    /// The one-shot's id, as the assignment named it.
    pub id: String,
    /// Each attempt, in order.
    pub attempts: Vec<OneShotAttempt>,
    /// The path to the destination of the last attempt that failed on the way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathTrace>,
    /// Why a trace that was due could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_error: Option<String>,
}

/// One attempt of a one-shot probe at one of its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OneShotAttempt {
    /// The series label of the target (`via`, endpoint) as in the check's results.
    pub target: String,
    #[serde(flatten)]
    pub result: ProbeResult,
}

/// Most attempts in one report: every target of a one-shot, each its count of times.
pub const MAX_ONE_SHOT_REPORT_ATTEMPTS: usize =
    MAX_ONE_SHOT_TARGETS * MAX_ONE_SHOT_ATTEMPTS as usize;
/// Most hops in a reported trace.
pub const MAX_TRACE_HOPS: usize = 64;
/// Largest one-shot report body the operator accepts.
pub const MAX_ONE_SHOT_REPORT_BYTES: usize = 256 * 1024;

impl OneShotReport {
    /// Checks every bound; the first problem is reported with the path of the field.
    pub fn validate(&self) -> Result<(), InvalidBatch> {
        validate_agent_name(&self.agent_name)?;
        validate_one_shot_id(&self.id).map_err(|e| InvalidBatch::new("id", e.to_string()))?;
        if self.attempts.len() > MAX_ONE_SHOT_REPORT_ATTEMPTS {
            return Err(InvalidBatch::new(
                "attempts",
                format!("at most {MAX_ONE_SHOT_REPORT_ATTEMPTS}"),
            ));
        }
        for (i, a) in self.attempts.iter().enumerate() {
            check_text(&format!("attempts[{i}].target"), &a.target, 2_048)?;
        }
        if let Some(trace) = &self.trace
            && trace.hops.len() > MAX_TRACE_HOPS
        {
            return Err(InvalidBatch::new(
                "trace.hops",
                format!("at most {MAX_TRACE_HOPS}"),
            ));
        }
        if let Some(e) = &self.trace_error {
            check_text("traceError", e, 512)?;
        }
        Ok(())
    }
}

/// A new random boot id (32 hex digits).
pub fn new_boot_id() -> String {
    format!("{:016x}{:016x}", random_u64(), random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::Bucket;
    use std::sync::Arc;

    #[test]
    fn one_shot_reports_are_bounded() {
        let attempt = serde_json::json!({"target": "svc/ClusterIP", "outcome": "Bad",
            "latencyUs": 0, "lagUs": 0, "phases": {"connectUs": 2000000}, "reason": "TCPTimeout",
            "layer": "TCP"});
        let report = |attempts: usize| -> OneShotReport {
            serde_json::from_value(serde_json::json!({"agentName": "agent-a", "id": "9f-1",
                "attempts": vec![attempt.clone(); attempts]}))
            .unwrap()
        };
        let ok = report(3);
        assert!(ok.validate().is_ok());
        assert_eq!(ok.attempts[0].result.phases.connect_us, Some(2_000_000));
        assert!(report(MAX_ONE_SHOT_REPORT_ATTEMPTS + 1).validate().is_err());
        let mut bad = report(1);
        bad.id = "../x".into();
        assert_eq!(bad.validate().unwrap_err().field, "id");
        let mut bad = report(1);
        bad.attempts[0].target = "a\nb".into();
        assert_eq!(bad.validate().unwrap_err().field, "attempts[0].target");
        let mut bad = report(1);
        bad.trace = Some(PathTrace {
            destination: "10.0.0.1".parse().unwrap(),
            hops: vec![
                crate::trace::Hop {
                    ttl: 1,
                    address: None,
                    answer: None,
                    rtt_us: None
                };
                MAX_TRACE_HOPS + 1
            ],
            end: crate::trace::TraceEnd::HopLimit,
        });
        assert_eq!(bad.validate().unwrap_err().field, "trace.hops");
    }

    fn report(seq: u64) -> BucketReport {
        let mut bucket = Bucket::new(Arc::from(vec![1_000u64]));
        bucket.total = 3;
        bucket.good = 2;
        bucket.bad = 1;
        bucket.good_within = vec![1];
        bucket.latency.record(500);
        bucket.latency.record(1_500);
        BucketReport {
            seq,
            check: "ns/c".into(),
            target: "t".into(),
            source: "node-a".into(),
            start_unix_ms: 1_000,
            duration_ms: 10_000,
            bucket,
            p50_us: None,
            p90_us: None,
            p99_us: None,
        }
    }

    fn batch(seqs: &[u64]) -> ResultBatch {
        ResultBatch {
            agent_name: "node-a".into(),
            boot_id: "abc-123".into(),
            seq_from: seqs.first().copied().unwrap_or(0),
            seq_to: seqs.last().copied().unwrap_or(0),
            dropped_buckets: 0,
            buckets: seqs.iter().map(|s| report(*s)).collect(),
        }
    }
    #[test]
    fn batches_validate_bounds_and_consistency() {
        batch(&[1, 2, 5]).validate().unwrap();
        let cases: Vec<(ResultBatch, &str)> = vec![
            (batch(&[]), "buckets"),
            (
                {
                    let mut b = batch(&[1]);
                    b.agent_name = String::new();
                    b
                },
                "agentName",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.agent_name = "a\nb".into();
                    b
                },
                "agentName",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.boot_id = "x".repeat(65);
                    b
                },
                "bootId",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.boot_id = "a b".into();
                    b
                },
                "bootId",
            ),
            (
                {
                    let mut b = batch(&[2, 1]);
                    b.seq_from = 1;
                    b.seq_to = 2;
                    b
                },
                "buckets[1].seq",
            ),
            (
                {
                    let mut b = batch(&[3]);
                    b.seq_to = 2;
                    b
                },
                "seqFrom",
            ),
            (
                {
                    let mut b = batch(&[1, 1]);
                    b.seq_to = 1;
                    b
                },
                "buckets[1].seq",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.buckets[0].bucket.total = 4;
                    b
                },
                "total",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.buckets[0].bucket.good_within = vec![];
                    b
                },
                "goodWithin",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.buckets[0].check = "c".repeat(254).into();
                    b
                },
                "check",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.buckets[0].bucket.latency.buckets.push((9_999, 1));
                    b
                },
                "latency",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.buckets[0].duration_ms = 0;
                    b
                },
                "durationMs",
            ),
            (
                {
                    let mut b = batch(&[1]);
                    b.buckets[0].start_unix_ms = -1;
                    b
                },
                "startUnixMs",
            ),
        ];
        for (b, field) in cases {
            let e = b.validate().unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
            assert_eq!(e.reason(), "BatchInvalid");
        }
        let mut big = batch(&[1]);
        big.buckets = (1..=MAX_BATCH_BUCKETS as u64 + 1).map(report).collect();
        big.seq_to = MAX_BATCH_BUCKETS as u64 + 1;
        assert!(big.validate().is_err());
    }

    #[test]
    fn batch_json_is_strict_and_round_trips() {
        let b = batch(&[7]);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["agentName"], "node-a");
        assert_eq!(json["buckets"][0]["seq"], 7);
        let back: ResultBatch = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, b);
        let mut extra = json;
        extra["bogus"] = serde_json::json!(1);
        assert!(serde_json::from_value::<ResultBatch>(extra).is_err());
    }

    #[test]
    fn boot_ids_are_random_hex_and_valid() {
        let a = new_boot_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_boot_id());
        validate_boot_id(&a).unwrap();
    }

    #[test]
    fn node_address_digests_tell_lists_apart() {
        let ips = |list: &[&str]| -> Vec<std::net::IpAddr> {
            list.iter().map(|s| s.parse().unwrap()).collect()
        };
        let a = node_addresses_digest(&ips(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(a, node_addresses_digest(&ips(&["10.0.0.1", "10.0.0.2"])));
        assert_eq!(a.len(), 16);
        for other in [
            ips(&["10.0.0.2", "10.0.0.1"]),
            ips(&["10.0.0.1"]),
            ips(&["10.0.0.1", "10.0.0.2", "10.0.0.2"]),
            ips(&["10.0.0.1", "::ffff:10.0.0.2"]),
            ips(&[]),
        ] {
            assert_ne!(a, node_addresses_digest(&other), "{other:?}");
        }
        assert_ne!(node_addresses_digest(&[]), NO_NODE_ADDRESSES);
    }

    #[test]
    fn an_envelope_without_digest_fields_is_read_as_before() {
        let env: AssignmentEnvelope = serde_json::from_str(
            r#"{"version":"v1","assignment":{"checks":[],"nodeAddresses":["10.0.0.1"]}}"#,
        )
        .unwrap();
        assert!(env.node_addresses_digest.is_empty() && !env.node_addresses_held);
        let text = serde_json::to_string(&env).unwrap();
        assert!(!text.contains("nodeAddressesDigest") && !text.contains("nodeAddressesHeld"));
    }
}
