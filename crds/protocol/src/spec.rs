//! Probe assignments: what the operator (or a static file) asks an agent to probe.
//!
//! camelCase JSON, unknown fields rejected, every size bounded; [`Assignment::validate`]
//! reports the first problem with the path of the offending field.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::guard::{AddressPolicy, Cidr, DestinationRule, ExternalGrant, canonical};
use crate::verdict::BlockMode;

/// Most checks in one assignment.
pub const MAX_CHECKS: usize = 1_000;
/// Most targets in one check.
pub const MAX_TARGETS_PER_CHECK: usize = 10_000;
/// Most targets in one assignment.
pub const MAX_TARGETS: usize = 20_000;
/// Most latency thresholds per check.
pub const MAX_THRESHOLDS: usize = 16;
/// Largest body an HTTP probe may read.
pub const MAX_BODY_BYTES: u32 = 64 * 1024;
/// Largest ICMP/UDP payload.
pub const MAX_PAYLOAD: u16 = 1_400;
/// Largest assignment document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024 * 1024;
/// Most node addresses in one assignment (5,000 nodes with a few addresses each).
pub const MAX_NODE_ADDRESSES: usize = 65_536;
/// Most CIDRs, host names and ports in one external grant (as the policy's `ExternalGrant`
/// allows), and most grants in one check's rule.
pub const MAX_GRANT_CIDRS: usize = 64;
pub const MAX_GRANT_HOSTS: usize = 64;
pub const MAX_GRANT_PORTS: usize = 32;
pub const MAX_GRANTS: usize = 256;
/// Most CIDRs in the cluster's address space (pod ranges of 5,000 nodes, Service ranges and
/// the networks of pods outside them).
pub const MAX_CLUSTER_CIDRS: usize = 65_536;

/// Errors reading or validating an assignment.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read assignment {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("assignment is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("malformed assignment: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("invalid assignment: {field}: {message}")]
    Invalid { field: String, message: String },
}

impl SpecError {
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::Read { .. } => "AssignmentUnreadable",
            SpecError::TooLarge => "AssignmentTooLarge",
            SpecError::Parse(_) => "AssignmentMalformed",
            SpecError::Invalid { .. } => "AssignmentInvalid",
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything one agent probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Assignment {
    /// The source label of every series (defaults to the agent's node name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub checks: Vec<CheckSpec>,
    /// Every node's own addresses, refused as destinations unless a check's `addressPolicy`
    /// allows node addresses (the agent cannot know them: it never reads the cluster). The
    /// same for every agent: shared, one copy for all the assignments of a cluster.
    #[serde(default, skip_serializing_if = "no_addresses")]
    pub node_addresses: Arc<[IpAddr]>,
    /// The cluster's own address space (pod and Service ranges): reached through an external
    /// grant only where the grant says so (see [`crate::guard`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_cidrs: Vec<String>,
    /// Probes to run once each (a `ConnectivityProbe` someone asked for), reported apart from
    /// the series: each attempt with its phases, and a path trace when one failed on the way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub one_shots: Vec<OneShot>,
}

/// Most one-shot probes in one assignment.
pub const MAX_ONE_SHOTS: usize = 16;
/// Most attempts of one one-shot probe.
pub const MAX_ONE_SHOT_ATTEMPTS: u8 = 10;

/// A probe to run `count` times, once, and report with [`crate::channel::OneShotReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OneShot {
    /// Names the one-shot in its report (the ConnectivityProbe's UID).
    pub id: String,
    /// Attempts per target, one `intervalMs` apart.
    pub count: u8,
    /// Trace the path after an attempt that failed on the way.
    #[serde(default)]
    pub trace: bool,
    /// What to probe, as a check would (its targets and address policy are the operator's,
    /// resolved and granted as for any check).
    pub check: CheckSpec,
}

/// Most targets of one one-shot (a Service's paths: its ClusterIP, DNS name and endpoints).
pub const MAX_ONE_SHOT_TARGETS: usize = 16;

impl OneShot {
    /// Checks its bounds and its check, naming fields with `f`; the operator checks each
    /// one-shot on its own before adding it, so that one bad probe cannot get a whole
    /// assignment refused.
    pub fn validate(&self, f: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
        validate_one_shot_id(&self.id)
            .map_err(|_| SpecError::invalid(f("id"), ONE_SHOT_ID_RULE))?;
        if !(1..=MAX_ONE_SHOT_ATTEMPTS).contains(&self.count) {
            return Err(SpecError::invalid(
                f("count"),
                format!("must be between 1 and {MAX_ONE_SHOT_ATTEMPTS}"),
            ));
        }
        if self.check.targets.len() > MAX_ONE_SHOT_TARGETS {
            return Err(SpecError::invalid(
                f("check.targets"),
                format!("more than {MAX_ONE_SHOT_TARGETS}"),
            ));
        }
        self.check.validate(&|x: &str| f(&format!("check.{x}")))
    }
}

const ONE_SHOT_ID_RULE: &str = "1 to 64 letters, digits and '-'";

/// Whether `id` can name a one-shot: 1 to 64 of `[a-zA-Z0-9-]`.
pub fn validate_one_shot_id(id: &str) -> Result<(), SpecError> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(SpecError::invalid("id", ONE_SHOT_ID_RULE));
    }
    Ok(())
}

fn no_addresses(addresses: &Arc<[IpAddr]>) -> bool {
    addresses.is_empty()
}

/// Allow (the path must work) or Deny (the path must stay blocked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    #[default]
    Allow,
    Deny,
}

/// Schedule defaults, the same as the API documents for a check's `schedule`.
pub const DEFAULT_INTERVAL_MS: u64 = 10_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_JITTER_PERCENT: u8 = 10;

fn default_interval_ms() -> u64 {
    DEFAULT_INTERVAL_MS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_jitter() -> f64 {
    f64::from(DEFAULT_JITTER_PERCENT) / 100.0
}

/// One check as this agent runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckSpec {
    /// `namespace/name` of the ConnectivityCheck.
    pub name: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Fraction of the interval by which each probe is randomly delayed, `0..=0.5`.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Latency thresholds in microseconds, ascending; good probes at or below each are counted.
    #[serde(default)]
    pub latency_thresholds_us: Vec<u64>,
    #[serde(default)]
    pub expect: Expect,
    /// For `Deny`: the ways of being blocked that meet the expectation (default: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<BlockMode>,
    pub probe: ProbeSpec,
    pub targets: Vec<TargetSpec>,
    /// What this check's probes may contact (see [`crate::guard`]). When absent: the safe
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_policy: Option<AddressPolicySpec>,
}

/// The destinations one check may contact: what the `ConnectivityPolicy` grants the check's
/// namespace, as the operator sends it. Every permission defaults to refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressPolicySpec {
    /// Link-local addresses and cloud metadata (169.254.0.0/16, fe80::/10, fd00:ec2::254).
    #[serde(default)]
    pub allow_link_local: bool,
    /// Loopback (127.0.0.0/8, ::1).
    #[serde(default)]
    pub allow_loopback: bool,
    /// The addresses in the assignment's `nodeAddresses`.
    #[serde(default)]
    pub allow_node_addresses: bool,
    /// When present, what the check may reach beyond its exempt destinations: nothing else
    /// (see [`crate::guard::DestinationRule`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<DestinationRuleSpec>,
    /// Exact `ip:port` destinations the operator resolved itself from cluster state and
    /// vouches for, allowed whatever the rest says: a `localhost` target's `127.0.0.1:port`
    /// (probed from inside its own pod), a NodePort target's `nodeIP:nodePort`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_destinations: Vec<SocketAddr>,
}

/// A check's destination rule as the operator sends it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// In-cluster `ip:port` destinations the operator resolved for the check from cluster
    /// state it trusts (selected pods, a Service's ClusterIP and endpoints, mesh peers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster: Vec<SocketAddr>,
    /// The same for probes without ports (ICMP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<IpAddr>,
    /// The external grants of the check's namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<ExternalGrantSpec>,
}

/// One external grant (a ConnectivityPolicy's `spec.external`, or a name the operator
/// vouches for, such as a LoadBalancer's host name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExternalGrantSpec {
    /// Host names, exact or `*.suffix`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Empty: any port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Whether the grant may reach the cluster's own address space.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_cluster_addresses: bool,
}

/// A target. The address's form depends on the probe kind: `host:port` (TCP, UDP), a URL
/// (HTTP), a DNS name to query (DNS), an IP address (ICMP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSpec {
    /// Label of the series (defaults to the address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub address: String,
}

impl TargetSpec {
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.address)
    }
}

/// What kind of probe, with its settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProbeSpec {
    Tcp(TcpSpec),
    Http(HttpSpec),
    Dns(DnsSpec),
    Icmp(IcmpSpec),
    Udp(UdpSpec),
}

impl ProbeSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeSpec::Tcp(_) => "tcp",
            ProbeSpec::Http(_) => "http",
            ProbeSpec::Dns(_) => "dns",
            ProbeSpec::Icmp(_) => "icmp",
            ProbeSpec::Udp(_) => "udp",
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSpec {
    /// Close with RST (SO_LINGER 0) so the agent keeps no TIME_WAIT sockets (default true).
    #[serde(default = "yes")]
    pub close_with_reset: bool,
}

impl Default for TcpSpec {
    fn default() -> Self {
        TcpSpec {
            close_with_reset: true,
        }
    }
}

fn default_max_body() -> u32 {
    4_096
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSpec {
    /// Request method (default GET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Status codes that count as good (default: any 2xx).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_status: Vec<u16>,
    /// Text the first `maxBodyBytes` of the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Host header (default: the URL's authority).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TLS server name for SNI and certificate verification (default: the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// PEM CA certificates that replace the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Redirects to follow (default 0: a 3xx is judged as is).
    #[serde(default)]
    pub follow_redirects: u8,
    /// Keep the connection for the next probe (default false: every probe is a new client).
    #[serde(default)]
    pub reuse_connection: bool,
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u32,
}

impl Default for HttpSpec {
    fn default() -> Self {
        HttpSpec {
            method: None,
            expected_status: Vec::new(),
            body_contains: None,
            host: None,
            server_name: None,
            ca_bundle: None,
            follow_redirects: 0,
            reuse_connection: false,
            max_body_bytes: default_max_body(),
        }
    }
}

/// DNS record types a probe may query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordKind {
    #[default]
    A,
    #[serde(rename = "AAAA")]
    Aaaa,
    #[serde(rename = "SRV")]
    Srv,
    #[serde(rename = "CNAME")]
    Cname,
}

/// DNS response codes a probe may expect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rcode {
    #[default]
    NoError,
    #[serde(rename = "NXDomain")]
    NxDomain,
    ServFail,
    Refused,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsSpec {
    #[serde(default)]
    pub record_type: RecordKind,
    /// `ip` or `ip:port` of the server (default: the first nameserver of /etc/resolv.conf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Answers that must all be present (IPs for A/AAAA, names for CNAME,
    /// `priority weight port target` for SRV).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expected_answers: Vec<String>,
    #[serde(default)]
    pub expected_rcode: Rcode,
}

fn default_icmp_payload() -> u16 {
    16
}
fn default_udp_payload() -> u16 {
    32
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpSpec {
    #[serde(default = "default_icmp_payload")]
    pub payload_bytes: u16,
}

impl Default for IcmpSpec {
    fn default() -> Self {
        IcmpSpec {
            payload_bytes: default_icmp_payload(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UdpSpec {
    #[serde(default = "default_udp_payload")]
    pub payload_bytes: u16,
}

impl Default for UdpSpec {
    fn default() -> Self {
        UdpSpec {
            payload_bytes: default_udp_payload(),
        }
    }
}

fn check_name(field: &str, s: &str, max: usize) -> Result<(), SpecError> {
    if s.is_empty() {
        return Err(SpecError::invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(SpecError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(SpecError::invalid(field, "contains control characters"));
    }
    Ok(())
}

impl Assignment {
    /// Parses and validates a JSON document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        if bytes.len() > MAX_DOCUMENT_BYTES {
            return Err(SpecError::TooLarge);
        }
        let a: Assignment = serde_json::from_slice(bytes)?;
        a.validate()?;
        Ok(a)
    }

    /// Reads, parses and validates a file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, SpecError> {
        let read_err = |source| SpecError::Read {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.len() > MAX_DOCUMENT_BYTES as u64 {
            return Err(SpecError::TooLarge);
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Self::from_json(&bytes)
    }

    /// What every check's policy shares: the node addresses (canonical) and the cluster's
    /// address space. Call after [`Assignment::validate`]: invalid CIDRs are skipped.
    pub fn base_address_policy(&self) -> AddressPolicy {
        AddressPolicy {
            node_addresses: Arc::new(
                self.node_addresses
                    .iter()
                    .map(|ip| canonical(*ip))
                    .collect(),
            ),
            cluster_space: Arc::new(
                self.cluster_cidrs
                    .iter()
                    .filter_map(|c| c.parse::<Cidr>().ok())
                    .collect(),
            ),
            ..AddressPolicy::default()
        }
    }

    /// Checks every bound and cross-field rule.
    pub fn validate(&self) -> Result<(), SpecError> {
        if let Some(s) = &self.source {
            check_name("source", s, 253)?;
        }
        if self.node_addresses.len() > MAX_NODE_ADDRESSES {
            return Err(SpecError::invalid(
                "nodeAddresses",
                format!("more than {MAX_NODE_ADDRESSES}"),
            ));
        }
        if self.cluster_cidrs.len() > MAX_CLUSTER_CIDRS {
            return Err(SpecError::invalid(
                "clusterCidrs",
                format!("more than {MAX_CLUSTER_CIDRS}"),
            ));
        }
        for (k, c) in self.cluster_cidrs.iter().enumerate() {
            c.parse::<Cidr>()
                .map_err(|m| SpecError::invalid(format!("clusterCidrs[{k}]"), m))?;
        }
        if self.checks.len() > MAX_CHECKS {
            return Err(SpecError::invalid(
                "checks",
                format!("more than {MAX_CHECKS} checks"),
            ));
        }
        let mut total = 0usize;
        let mut names = HashSet::new();
        for (i, c) in self.checks.iter().enumerate() {
            let f = |x: &str| format!("checks[{i}].{x}");
            c.validate(&f)?;
            if !names.insert(c.name.as_str()) {
                return Err(SpecError::invalid(
                    f("name"),
                    format!("duplicate check {:?}", c.name),
                ));
            }
            total += c.targets.len();
        }
        if total > MAX_TARGETS {
            return Err(SpecError::invalid(
                "checks",
                format!("more than {MAX_TARGETS} targets in all"),
            ));
        }
        if self.one_shots.len() > MAX_ONE_SHOTS {
            return Err(SpecError::invalid(
                "oneShots",
                format!("more than {MAX_ONE_SHOTS}"),
            ));
        }
        let mut ids = HashSet::new();
        for (i, o) in self.one_shots.iter().enumerate() {
            o.validate(&|x: &str| format!("oneShots[{i}].{x}"))?;
            if !ids.insert(o.id.as_str()) {
                return Err(SpecError::invalid(
                    format!("oneShots[{i}].id"),
                    format!("duplicate {:?}", o.id),
                ));
            }
        }
        Ok(())
    }

    /// The assignment that runs one of its one-shots: that check alone, under the same node
    /// addresses and cluster address space as every other check.
    pub fn for_one_shot(&self, one_shot: &OneShot) -> Assignment {
        Assignment {
            source: self.source.clone(),
            checks: vec![one_shot.check.clone()],
            node_addresses: self.node_addresses.clone(),
            cluster_cidrs: self.cluster_cidrs.clone(),
            one_shots: Vec::new(),
        }
    }
}

impl CheckSpec {
    fn validate(&self, f: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
        check_name(&f("name"), &self.name, 253)?;
        if !(100..=3_600_000).contains(&self.interval_ms) {
            return Err(SpecError::invalid(
                f("intervalMs"),
                "must be between 100 and 3600000",
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms.min(60_000) {
            return Err(SpecError::invalid(
                f("timeoutMs"),
                "must be positive, at most 60000 and at most intervalMs",
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(SpecError::invalid(f("jitter"), "must be between 0 and 0.5"));
        }
        if self.latency_thresholds_us.len() > MAX_THRESHOLDS {
            return Err(SpecError::invalid(
                f("latencyThresholdsUs"),
                format!("more than {MAX_THRESHOLDS}"),
            ));
        }
        if self.latency_thresholds_us.windows(2).any(|w| w[0] >= w[1])
            || self.latency_thresholds_us.first() == Some(&0)
        {
            return Err(SpecError::invalid(
                f("latencyThresholdsUs"),
                "must be positive and strictly ascending",
            ));
        }
        if self.expect == Expect::Allow && !self.blocked_by.is_empty() {
            return Err(SpecError::invalid(
                f("blockedBy"),
                "only allowed with expect: Deny",
            ));
        }
        if self.blocked_by.len() > 4 {
            return Err(SpecError::invalid(f("blockedBy"), "at most 4 entries"));
        }
        if self.targets.is_empty() {
            return Err(SpecError::invalid(f("targets"), "must not be empty"));
        }
        if self.targets.len() > MAX_TARGETS_PER_CHECK {
            return Err(SpecError::invalid(
                f("targets"),
                format!("more than {MAX_TARGETS_PER_CHECK}"),
            ));
        }
        let mut labels = HashSet::new();
        for (j, t) in self.targets.iter().enumerate() {
            check_name(&f(&format!("targets[{j}].address")), &t.address, 2_048)?;
            if let Some(n) = &t.name {
                check_name(&f(&format!("targets[{j}].name")), n, 253)?;
            }
            if !labels.insert(t.label()) {
                return Err(SpecError::invalid(
                    f(&format!("targets[{j}]")),
                    format!("duplicate target {:?}", t.label()),
                ));
            }
        }
        match &self.probe {
            ProbeSpec::Http(h) => {
                if let Some(m) = &h.method
                    && (m.is_empty() || m.len() > 16 || !m.bytes().all(|b| b.is_ascii_uppercase()))
                {
                    return Err(SpecError::invalid(
                        f("probe.http.method"),
                        "must be an upper-case token",
                    ));
                }
                if h.expected_status.len() > 32
                    || h.expected_status.iter().any(|s| !(100..=599).contains(s))
                {
                    return Err(SpecError::invalid(
                        f("probe.http.expectedStatus"),
                        "at most 32 codes in 100..=599",
                    ));
                }
                if h.max_body_bytes > MAX_BODY_BYTES {
                    return Err(SpecError::invalid(
                        f("probe.http.maxBodyBytes"),
                        format!("at most {MAX_BODY_BYTES}"),
                    ));
                }
                if let Some(b) = &h.body_contains
                    && (b.is_empty() || b.len() > 1_024 || b.len() > h.max_body_bytes as usize)
                {
                    return Err(SpecError::invalid(
                        f("probe.http.bodyContains"),
                        "1 to 1024 bytes, and no longer than maxBodyBytes",
                    ));
                }
                if h.follow_redirects > 10 {
                    return Err(SpecError::invalid(
                        f("probe.http.followRedirects"),
                        "at most 10",
                    ));
                }
                if h.reuse_connection && h.follow_redirects > 0 {
                    return Err(SpecError::invalid(
                        f("probe.http.reuseConnection"),
                        "cannot be combined with followRedirects",
                    ));
                }
                if let Some(ca) = &h.ca_bundle
                    && ca.len() > 256 * 1024
                {
                    return Err(SpecError::invalid(
                        f("probe.http.caBundle"),
                        "larger than 256 KiB",
                    ));
                }
                for (name, v) in [("host", &h.host), ("serverName", &h.server_name)] {
                    if let Some(v) = v {
                        check_name(&f(&format!("probe.http.{name}")), v, 253)?;
                    }
                }
            }
            ProbeSpec::Dns(d) => {
                if d.expected_answers.len() > 64 {
                    return Err(SpecError::invalid(
                        f("probe.dns.expectedAnswers"),
                        "at most 64",
                    ));
                }
                if !d.expected_answers.is_empty() && d.expected_rcode != Rcode::NoError {
                    return Err(SpecError::invalid(
                        f("probe.dns.expectedAnswers"),
                        "only meaningful with expectedRcode NoError",
                    ));
                }
            }
            ProbeSpec::Icmp(i) if i.payload_bytes > MAX_PAYLOAD => {
                return Err(SpecError::invalid(
                    f("probe.icmp.payloadBytes"),
                    format!("at most {MAX_PAYLOAD}"),
                ));
            }
            ProbeSpec::Udp(u) if u.payload_bytes < 16 || u.payload_bytes > MAX_PAYLOAD => {
                return Err(SpecError::invalid(
                    f("probe.udp.payloadBytes"),
                    format!("16 to {MAX_PAYLOAD}"),
                ));
            }
            _ => {}
        }
        if let Some(p) = &self.address_policy {
            p.validate(&|x| f(&format!("addressPolicy.{x}")))?;
        }
        Ok(())
    }

    /// The policy this check's probes apply; `base`: what all checks share
    /// ([`Assignment::base_address_policy`]).
    pub fn guard_policy(&self, base: &AddressPolicy) -> AddressPolicy {
        match &self.address_policy {
            None => base.clone(),
            Some(p) => AddressPolicy {
                allow_link_local: p.allow_link_local,
                allow_loopback: p.allow_loopback,
                allow_node_addresses: p.allow_node_addresses,
                rule: p.destinations.as_ref().map(|d| Arc::new(d.rule())),
                exempt: p.exempt_destinations.clone(),
                ..base.clone()
            },
        }
    }

    /// The block modes that meet a Deny expectation.
    pub fn deny_modes(&self) -> Vec<BlockMode> {
        if self.blocked_by.is_empty() {
            vec![
                BlockMode::Timeout,
                BlockMode::Refused,
                BlockMode::Reset,
                BlockMode::Unreachable,
            ]
        } else {
            self.blocked_by.clone()
        }
    }
}

impl AddressPolicySpec {
    fn validate(&self, f: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
        if let Some(d) = &self.destinations {
            d.validate(&|x| f(&format!("destinations.{x}")))?;
        }
        if self.exempt_destinations.len() > MAX_TARGETS_PER_CHECK {
            return Err(SpecError::invalid(
                f("exemptDestinations"),
                format!("more than {MAX_TARGETS_PER_CHECK}"),
            ));
        }
        Ok(())
    }
}

impl DestinationRuleSpec {
    fn validate(&self, f: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
        for (field, len) in [
            ("cluster", self.cluster.len()),
            ("clusterIps", self.cluster_ips.len()),
        ] {
            if len > MAX_TARGETS_PER_CHECK {
                return Err(SpecError::invalid(
                    f(field),
                    format!("more than {MAX_TARGETS_PER_CHECK}"),
                ));
            }
        }
        if self.external.len() > MAX_GRANTS {
            return Err(SpecError::invalid(
                f("external"),
                format!("more than {MAX_GRANTS}"),
            ));
        }
        for (i, g) in self.external.iter().enumerate() {
            let f = |x: &str| f(&format!("external[{i}].{x}"));
            if g.cidrs.len() > MAX_GRANT_CIDRS {
                return Err(SpecError::invalid(
                    f("cidrs"),
                    format!("more than {MAX_GRANT_CIDRS}"),
                ));
            }
            for (k, c) in g.cidrs.iter().enumerate() {
                c.parse::<Cidr>()
                    .map_err(|m| SpecError::invalid(f(&format!("cidrs[{k}]")), m))?;
            }
            if g.hosts.len() > MAX_GRANT_HOSTS {
                return Err(SpecError::invalid(
                    f("hosts"),
                    format!("more than {MAX_GRANT_HOSTS}"),
                ));
            }
            for (k, h) in g.hosts.iter().enumerate() {
                check_name(
                    &f(&format!("hosts[{k}]")),
                    h.strip_prefix("*.").unwrap_or(h),
                    253,
                )?;
            }
            if g.ports.len() > MAX_GRANT_PORTS || g.ports.contains(&0) {
                return Err(SpecError::invalid(
                    f("ports"),
                    format!("at most {MAX_GRANT_PORTS} ports, none of them 0"),
                ));
            }
        }
        Ok(())
    }

    /// The rule as the guard applies it (validated: every CIDR parses).
    fn rule(&self) -> DestinationRule {
        DestinationRule {
            cluster: self
                .cluster
                .iter()
                .map(|a| SocketAddr::new(canonical(a.ip()), a.port()))
                .collect(),
            cluster_ips: self.cluster_ips.iter().map(|ip| canonical(*ip)).collect(),
            external: self
                .external
                .iter()
                .map(|g| ExternalGrant {
                    hosts: g.hosts.clone(),
                    cidrs: g.cidrs.iter().filter_map(|c| c.parse().ok()).collect(),
                    ports: g.ports.clone(),
                    allow_cluster_addresses: g.allow_cluster_addresses,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "source": "node-a",
      "checks": [
        {"name": "default/web", "intervalMs": 5000, "timeoutMs": 1000,
         "latencyThresholdsUs": [1000, 10000],
         "probe": {"http": {"expectedStatus": [200], "bodyContains": "ok"}},
         "targets": [{"address": "http://10.0.0.1:8080/healthz"}]},
        {"name": "default/deny", "expect": "Deny", "blockedBy": ["Timeout"],
         "probe": {"tcp": {}}, "targets": [{"name": "db", "address": "10.0.0.2:5432"}]},
        {"name": "default/dns", "probe": {"dns": {"recordType": "AAAA", "expectedRcode": "NXDomain"}},
         "targets": [{"address": "nope.example."}]}
      ]
    }"#;

    #[test]
    fn one_shots_are_bounded_and_run_alone_under_the_assignment_policy() {
        let one_shot = |id: &str, count: u8| {
            serde_json::json!({"id": id, "count": count, "trace": true, "check": {
                "name": "shop/probe-x", "probe": {"tcp": {}},
                "targets": [{"name": "svc/ClusterIP", "address": "10.96.0.10:80"}]}})
        };
        let doc = |shots: Vec<serde_json::Value>| {
            serde_json::json!({"checks": [], "nodeAddresses": ["10.0.0.1"],
                "clusterCidrs": ["10.96.0.0/12"], "oneShots": shots})
            .to_string()
        };
        let a = Assignment::from_json(doc(vec![one_shot("4f0c-9a", 3)]).as_bytes()).unwrap();
        let alone = a.for_one_shot(&a.one_shots[0]);
        assert_eq!(alone.checks, vec![a.one_shots[0].check.clone()]);
        assert_eq!(
            (alone.node_addresses.clone(), alone.cluster_cidrs.clone()),
            (a.node_addresses.clone(), a.cluster_cidrs.clone())
        );
        assert!(alone.one_shots.is_empty() && alone.validate().is_ok());
        for (shots, field) in [
            (vec![one_shot("a", 0)], "oneShots[0].count"),
            (vec![one_shot("a", 11)], "oneShots[0].count"),
            (vec![one_shot("a/b", 1)], "oneShots[0].id"),
            (vec![one_shot("", 1)], "oneShots[0].id"),
            (vec![one_shot("a", 1), one_shot("a", 2)], "oneShots[1].id"),
            (
                (0..17).map(|i| one_shot(&format!("s{i}"), 1)).collect(),
                "oneShots",
            ),
        ] {
            let err = Assignment::from_json(doc(shots).as_bytes()).unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        let mut bad_check = one_shot("a", 1);
        bad_check["check"]["timeoutMs"] = serde_json::json!(0);
        let err = Assignment::from_json(doc(vec![bad_check]).as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("oneShots[0].check.timeoutMs"),
            "{err}"
        );
    }

    #[test]
    fn parses_sample_with_defaults() {
        let a = Assignment::from_json(SAMPLE.as_bytes()).unwrap();
        assert_eq!(a.checks.len(), 3);
        let deny = &a.checks[1];
        assert_eq!(deny.interval_ms, 10_000);
        assert_eq!(deny.expect, Expect::Deny);
        assert_eq!(deny.deny_modes(), vec![BlockMode::Timeout]);
        assert_eq!(
            deny.probe,
            ProbeSpec::Tcp(TcpSpec {
                close_with_reset: true
            })
        );
        assert_eq!(deny.targets[0].label(), "db");
        let ProbeSpec::Dns(d) = &a.checks[2].probe else {
            panic!()
        };
        assert_eq!(
            (d.record_type, d.expected_rcode),
            (RecordKind::Aaaa, Rcode::NxDomain)
        );
        // Round trip.
        let again: Assignment = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(again, a);
    }

    fn invalid(doc: &str) -> String {
        match Assignment::from_json(doc.as_bytes()) {
            Err(e) => {
                assert!(
                    matches!(e, SpecError::Invalid { .. } | SpecError::Parse(_)),
                    "{e}"
                );
                e.to_string()
            }
            Ok(_) => panic!("accepted: {doc}"),
        }
    }

    fn one(check: &str) -> String {
        format!(r#"{{"checks":[{check}]}}"#)
    }

    #[test]
    fn rejects_bad_input_with_clear_errors() {
        assert!(invalid("not json").contains("malformed"));
        assert!(invalid(r#"{"checks":[], "bogus": 1}"#).contains("unknown field"));
        let e = invalid(&one(
            r#"{"name":"c","intervalMs":50,"probe":{"tcp":{}},"targets":[{"address":"a:1"}]}"#,
        ));
        assert!(e.contains("checks[0].intervalMs"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","timeoutMs":20000,"intervalMs":10000,"probe":{"tcp":{}},"targets":[{"address":"a:1"}]}"#,
        ));
        assert!(e.contains("timeoutMs"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","latencyThresholdsUs":[5,5],"probe":{"tcp":{}},"targets":[{"address":"a:1"}]}"#,
        ));
        assert!(e.contains("ascending"), "{e}");
        let e = invalid(&one(r#"{"name":"c","probe":{"tcp":{}},"targets":[]}"#));
        assert!(e.contains("targets"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","blockedBy":["Timeout"],"probe":{"tcp":{}},"targets":[{"address":"a:1"}]}"#,
        ));
        assert!(e.contains("Deny"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","probe":{"http":{"maxBodyBytes":10000000}},"targets":[{"address":"http://a/"}]}"#,
        ));
        assert!(e.contains("maxBodyBytes"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","probe":{"http":{"method":"get"}},"targets":[{"address":"http://a/"}]}"#,
        ));
        assert!(e.contains("method"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","probe":{"tcp":{}},"targets":[{"address":"a:1"},{"address":"a:1"}]}"#,
        ));
        assert!(e.contains("duplicate"), "{e}");
        let e = invalid(&one(
            r#"{"name":"c","probe":{"smtp":{}},"targets":[{"address":"a:1"}]}"#,
        ));
        assert!(e.contains("unknown variant"), "{e}");
        let e = invalid(
            r#"{"checks":[{"name":"c","probe":{"tcp":{}},"targets":[{"address":"a:1"}]},{"name":"c","probe":{"tcp":{}},"targets":[{"address":"a:1"}]}]}"#,
        );
        assert!(e.contains("duplicate check"), "{e}");
    }

    #[test]
    fn address_policies_default_safe() {
        use crate::guard::Refusal;
        let lo: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let node: SocketAddr = "10.0.0.5:10250".parse().unwrap();
        let check = |policy: &str| {
            format!(
                r#"{{"name":"c{}","probe":{{"tcp":{{}}}},"targets":[{{"address":"a:1"}}]{policy}}}"#,
                policy.len()
            )
        };
        // No policy anywhere: the safe default (loopback, link-local and the rest refused).
        let a =
            Assignment::from_json(format!(r#"{{"checks":[{}]}}"#, check("")).as_bytes()).unwrap();
        let p = a.checks[0].guard_policy(&a.base_address_policy());
        assert_eq!(p.check(lo), Err(Refusal::Loopback));
        assert_eq!(
            p.check("169.254.169.254:80".parse().unwrap()),
            Err(Refusal::LinkLocal)
        );
        // A check without a policy beside one with: still the safe default.
        let doc = format!(
            r#"{{"nodeAddresses":["10.0.0.5","fd00::5"],"checks":[{},{}]}}"#,
            check(""),
            check(
                r#","addressPolicy":{"allowLoopback":true,"exemptDestinations":["10.0.0.5:10250"]}"#
            )
        );
        let a = Assignment::from_json(doc.as_bytes()).unwrap();
        let nodes = a.base_address_policy();
        let bare = a.checks[0].guard_policy(&nodes);
        assert_eq!(bare.check(lo), Err(Refusal::Loopback));
        assert_eq!(bare.check(node), Err(Refusal::NodeAddress));
        let opened = a.checks[1].guard_policy(&nodes);
        assert_eq!(opened.check(lo), Ok(()));
        assert_eq!(opened.check(node), Ok(()));
        assert_eq!(
            opened.check("10.0.0.5:22".parse().unwrap()),
            Err(Refusal::NodeAddress)
        );
        // An empty policy object is the safe default.
        let doc = format!(r#"{{"checks":[{}]}}"#, check(r#","addressPolicy":{}"#));
        let a = Assignment::from_json(doc.as_bytes()).unwrap();
        assert_eq!(
            a.checks[0].address_policy,
            Some(AddressPolicySpec::default())
        );
        assert_eq!(
            a.checks[0].guard_policy(&a.base_address_policy()).check(lo),
            Err(Refusal::Loopback)
        );
        // A destination rule: exactly the operator's in-cluster destinations, and what the
        // grants admit outside the cluster's address space.
        let doc = format!(
            r#"{{"clusterCidrs":["10.244.0.0/16","10.96.0.0/12"],"checks":[{}]}}"#,
            check(
                r#","addressPolicy":{"destinations":{"cluster":["10.244.1.5:8080"],"external":[{"hosts":["*.example.com"],"cidrs":["203.0.113.0/24"],"ports":[443]}]}}"#
            )
        );
        let a = Assignment::from_json(doc.as_bytes()).unwrap();
        let p = a.checks[0].guard_policy(&a.base_address_policy());
        assert_eq!(p.check("10.244.1.5:8080".parse().unwrap()), Ok(()));
        assert_eq!(
            p.check("10.244.1.6:8080".parse().unwrap()),
            Err(Refusal::ClusterAddress)
        );
        assert_eq!(p.check("203.0.113.1:443".parse().unwrap()), Ok(()));
        assert_eq!(
            p.check("203.0.113.1:80".parse().unwrap()),
            Err(Refusal::NotInGrant)
        );
        let public: SocketAddr = "198.51.100.7:443".parse().unwrap();
        assert_eq!(p.check(public), Err(Refusal::NotInGrant));
        assert_eq!(p.check_named("api.example.com", public), Ok(()));
        assert_eq!(
            p.check_named("api.example.com", "10.96.0.1:443".parse().unwrap()),
            Err(Refusal::ClusterAddress),
            "a granted name resolving into the cluster"
        );
        // Round trip keeps the fields.
        let again: Assignment = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(again, a);
    }

    #[test]
    fn rejects_bad_address_policies() {
        let with = |policy: &str| {
            one(&format!(
                r#"{{"name":"c","probe":{{"tcp":{{}}}},"targets":[{{"address":"a:1"}}],"addressPolicy":{policy}}}"#
            ))
        };
        let e = invalid(&with(
            r#"{"destinations":{"external":[{"cidrs":["10.0.0.0/33"]}]}}"#,
        ));
        assert!(
            e.contains("checks[0].addressPolicy.destinations.external[0].cidrs[0]"),
            "{e}"
        );
        let e = invalid(&with(r#"{"destinations":{"external":[{"ports":[0]}]}}"#));
        assert!(
            e.contains("addressPolicy.destinations.external[0].ports"),
            "{e}"
        );
        let e = invalid(&with(r#"{"destinations":{"external":[{"hosts":[""]}]}}"#));
        assert!(e.contains("external[0].hosts[0]"), "{e}");
        let e = invalid(&with(r#"{"destinations":{"cluster":["10.0.0.1"]}}"#));
        assert!(e.contains("malformed"), "{e}");
        let e = invalid(r#"{"clusterCidrs":["10.0.0.0/8x"],"checks":[]}"#);
        assert!(e.contains("clusterCidrs[0]"), "{e}");
        let e = invalid(&with(r#"{"allowEverything":true}"#));
        assert!(e.contains("unknown field"), "{e}");
        let e = invalid(&with(r#"{"exemptDestinations":["127.0.0.1"]}"#));
        assert!(e.contains("malformed"), "{e}");
        let e = invalid(r#"{"nodeAddresses":["0x7f.1"],"checks":[]}"#);
        assert!(e.contains("malformed"), "{e}");
    }

    #[test]
    fn errors_have_reasons() {
        assert_eq!(SpecError::invalid("x", "y").reason(), "AssignmentInvalid");
        assert_eq!(SpecError::TooLarge.reason(), "AssignmentTooLarge");
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(
            Assignment::from_json(&big),
            Err(SpecError::TooLarge)
        ));
        let e =
            Assignment::from_file(std::path::Path::new("/nonexistent/netslo.json")).unwrap_err();
        assert_eq!(e.reason(), "AssignmentUnreadable");
    }
}
