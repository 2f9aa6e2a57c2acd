//! The agent's last line of defence against being a confused deputy (pure, no I/O).
//!
//! Whoever may create a check can make an agent open connections. The operator decides what
//! a check may target (`ConnectivityPolicy`), but the agent is the one that sends packets, so
//! it judges every address it is about to contact once more, after resolution, against the
//! [`AddressPolicy`] its assignment carries:
//!
//! * [`normalise_ip`] turns every spelling of an IP address that a URL or host field could
//!   carry (`0x7f.1`, `2852039166`, `[::ffff:169.254.169.254]`, ...) into the address the
//!   system would actually contact, so that an unusual spelling cannot pass for a host name;
//! * [`AddressPolicy::check`] refuses link-local (cloud metadata), loopback, the nodes' own
//!   addresses, unspecified, multicast and broadcast destinations unless allowed; then, when
//!   the operator sent a [`DestinationRule`], everything it does not admit: a check reaches
//!   exactly the in-cluster destinations the operator resolved for it from cluster state, and
//!   through its namespace's external grants only addresses outside the cluster's own address
//!   space (pod and Service ranges, node addresses), unless a grant opens that explicitly.
//!
//! The rule is judged on every address a probe is about to contact: the first hop, every
//! address a name resolves to, every HTTP redirect hop, a DNS probe's server. A grant by host
//! name admits the addresses that name resolves to; so the name a hop was reached by is
//! judged with its address ([`AddressPolicy::check_named`]).
//!
//! The probes resolve, check every resolved address, and connect to exactly the checked
//! address (never resolving again in between), so a DNS name rebound to a refused address
//! between the check and the connection cannot slip through.
//!
//! A check without an `addressPolicy` gets [`AddressPolicy::default`]: loopback, link-local,
//! the nodes' own addresses and the rest of the refusals above all apply.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;

/// Parses every textual form of an IP address a URL host or a host field could carry and
/// returns the canonical address; `None` for anything else (a host name, or garbage).
///
/// * IPv4 as `inet_aton(3)` (and so getaddrinfo and the WHATWG URL parser) reads it: 1 to 4
///   dot-separated parts, each decimal, `0x` hexadecimal or `0`-prefixed octal, the last one
///   filling the remaining bytes (`127.1`, `10.1.2`, `2852039166`, `0xa9fea9fe`,
///   `0251.0376.0251.0376`); one trailing dot is accepted, as URL parsers do.
/// * IPv6 with or without brackets, with an optional `%zone` (ignored: the address decides
///   the class). IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`) addresses
///   become the IPv4 address, since that is what they reach.
/// * Surrounding whitespace is refused rather than trimmed: a field that carries it is not
///   an address, and silently accepting it would make two spellings mean one thing.
pub fn normalise_ip(text: &str) -> Option<IpAddr> {
    if text.is_empty() || text.trim() != text {
        return None;
    }
    if let Some(inner) = text.strip_prefix('[') {
        return parse_v6(inner.strip_suffix(']')?).map(|a| canonical(IpAddr::V6(a)));
    }
    if text.contains(':') {
        return parse_v6(text).map(|a| canonical(IpAddr::V6(a)));
    }
    parse_v4(text).map(IpAddr::V4)
}

fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    let addr = match s.split_once('%') {
        Some((addr, zone)) => {
            let zone_ok = !zone.is_empty()
                && zone
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !zone_ok {
                return None;
            }
            addr
        }
        None => s,
    };
    addr.parse().ok()
}

/// `inet_aton` semantics; see [`normalise_ip`].
fn parse_v4(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    let mut parts = [0u32; 4];
    let mut n = 0;
    for part in s.split('.') {
        if n == 4 {
            return None;
        }
        parts[n] = parse_v4_part(part)?;
        n += 1;
    }
    let (head, last) = (&parts[..n - 1], parts[n - 1]);
    if head.iter().any(|&p| p > 0xff) {
        return None;
    }
    // The last part fills the bytes the others left: 32, 24, 16 or 8 bits.
    let last_bits = 32 - 8 * (n as u32 - 1);
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    let value = head
        .iter()
        .enumerate()
        .fold(last, |acc, (i, &p)| acc | (p << (24 - 8 * i as u32)));
    Some(Ipv4Addr::from(value))
}

/// One part of an `inet_aton` address: decimal, `0x` hex (an empty `0x` is 0, as URL parsers
/// read it) or `0`-prefixed octal; anything that does not fit in 32 bits is refused.
fn parse_v4_part(part: &str) -> Option<u32> {
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return (radix == 16).then_some(0);
    }
    let mut value: u32 = 0;
    for c in digits.chars() {
        let d = c.to_digit(radix)?;
        value = value.checked_mul(radix)?.checked_add(d)?;
    }
    Some(value)
}

/// The address an IPv6 form reaches when it embeds IPv4: IPv4-mapped (`::ffff:0:0/96`) and
/// IPv4-compatible (`::/96`, other than `::` and `::1`) addresses become the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
                return IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// The address a destination is judged as: its [`canonical`] form, and the IPv4 address
/// embedded in a NAT64 well-known-prefix address (`64:ff9b::/96`), which a translator would
/// contact on the prober's behalf.
fn judged_as(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
            IpAddr::V4(Ipv4Addr::from(u128::from(v6) as u32))
        }
        other => other,
    }
}

/// Why a destination is refused. The class names are stable (`reason()`), for logs and
/// messages; a probe reports every refusal as `DestinationRefused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `0.0.0.0/8`, `::`: "this host" (Linux connects `0.0.0.0` to the loopback). Never probed.
    Unspecified,
    /// `127.0.0.0/8`, `::1`: services of the agent's own network namespace.
    Loopback,
    /// `169.254.0.0/16`, `fe80::/10` and the cloud metadata endpoints outside them
    /// (`fd00:ec2::254`, `100.100.100.200`).
    LinkLocal,
    /// One of the nodes' own addresses (kubelet and other node services).
    NodeAddress,
    /// `224.0.0.0/4`, `ff00::/8`. Never probed.
    Multicast,
    /// `255.255.255.255`. Never probed.
    Broadcast,
    /// In the cluster's own pod or Service ranges, yet not a destination the operator resolved
    /// for this check, and no external grant opens the cluster's addresses.
    ClusterAddress,
    /// Neither a destination the operator resolved for this check nor inside any of its
    /// namespace's external grants (host names, CIDRs, ports).
    NotInGrant,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Unspecified => "Unspecified",
            Refusal::Loopback => "Loopback",
            Refusal::LinkLocal => "LinkLocal",
            Refusal::NodeAddress => "NodeAddress",
            Refusal::ClusterAddress => "ClusterAddress",
            Refusal::Multicast => "Multicast",
            Refusal::Broadcast => "Broadcast",
            Refusal::NotInGrant => "NotInGrant",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Cloud metadata endpoints outside the link-local ranges: AWS over IPv6 (Nitro) and
/// Alibaba Cloud. Both are judged as link-local, i.e. opened only by `allowLinkLocal`.
const METADATA: [IpAddr; 2] = [
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

/// The intrinsic class of a (judged) address, if it is a sensitive one.
fn class_of(ip: IpAddr) -> Option<Refusal> {
    if METADATA.contains(&ip) {
        return Some(Refusal::LinkLocal);
    }
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if o[0] == 0 {
                Some(Refusal::Unspecified)
            } else if a.is_loopback() {
                Some(Refusal::Loopback)
            } else if a.is_link_local() {
                Some(Refusal::LinkLocal)
            } else if a.is_multicast() {
                Some(Refusal::Multicast)
            } else if a.is_broadcast() {
                Some(Refusal::Broadcast)
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            if a.is_unspecified() {
                Some(Refusal::Unspecified)
            } else if a.is_loopback() {
                Some(Refusal::Loopback)
            } else if a.is_unicast_link_local() {
                Some(Refusal::LinkLocal)
            } else if a.is_multicast() {
                Some(Refusal::Multicast)
            } else {
                None
            }
        }
    }
}

/// An address range, `203.0.113.0/24` or `2001:db8::/32`: the one CIDR type of agent and
/// operator. IPv4-mapped networks are the IPv4 network, as the addresses in them are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }

    /// The network (host bits cleared) of `ip`'s `prefix`-bit prefix, e.g. the `/24` an
    /// address belongs to; the prefix is clamped to the address family's length.
    pub fn covering(ip: IpAddr, prefix: u8) -> Cidr {
        let ip = canonical(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        // In range by the clamp, so `new` cannot fail.
        let net = IpNet::new(ip, prefix.min(max)).map_or(IpNet::from(ip), |n| n.trunc());
        Cidr(net)
    }

    /// The smallest set of CIDRs covering exactly the same addresses.
    pub fn aggregate(cidrs: &[Cidr]) -> Vec<Cidr> {
        let nets: Vec<IpNet> = cidrs.iter().map(|c| c.0).collect();
        IpNet::aggregate(&nets).into_iter().map(Cidr).collect()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Strict notation: the canonical address text and a prefix length in range, host bits
    /// allowed (they are cleared: `10.1.2.3/8` is `10.0.0.0/8`).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a CIDR such as 203.0.113.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        // Digits only: `u8::from_str` would take a leading `+`.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad());
        }
        let addr = match (addr, canonical(addr)) {
            (IpAddr::V6(_), v4 @ IpAddr::V4(_)) if prefix >= 96 => {
                prefix -= 96;
                v4
            }
            _ => addr,
        };
        IpNet::new(addr, prefix)
            .map(|n| Cidr(n.trunc()))
            .map_err(|_| bad())
    }
}

/// Whether a host name matches a grant's pattern: exact (`api.example.com`) or a wildcard
/// for strict sub-domains (`*.example.com` matches `a.example.com`, not `example.com`).
/// Case and one trailing dot do not matter.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let host = host.strip_suffix('.').unwrap_or(host);
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            host.len() > suffix.len() + 1 && {
                let (rest, tail) = host.split_at(host.len() - suffix.len());
                tail.eq_ignore_ascii_case(suffix) && rest.ends_with('.')
            }
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// One external grant of the check's namespace (a ConnectivityPolicy's `spec.external`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalGrant {
    /// Host-name patterns ([`host_matches`]): what such a name resolves to is admitted.
    pub hosts: Vec<String>,
    pub cidrs: Vec<Cidr>,
    /// Empty: any port.
    pub ports: Vec<u16>,
    /// Whether the grant may reach the cluster's own address space.
    pub allow_cluster_addresses: bool,
}

impl ExternalGrant {
    fn admits(&self, name: Option<&str>, ip: IpAddr, port: Option<u16>, in_cluster: bool) -> bool {
        let port_ok = self.ports.is_empty() || port.is_none_or(|p| self.ports.contains(&p));
        let destination_ok = self.cidrs.iter().any(|c| c.contains(ip))
            || name.is_some_and(|n| self.hosts.iter().any(|h| host_matches(h, n)));
        port_ok && destination_ok && (!in_cluster || self.allow_cluster_addresses)
    }
}

/// What one check may reach once the sensitive classes are judged: exactly the in-cluster
/// destinations the operator resolved for it, and what its external grants admit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationRule {
    /// `ip:port` destinations, canonical.
    pub cluster: HashSet<SocketAddr>,
    /// Addresses for probes without ports (ICMP), canonical.
    pub cluster_ips: HashSet<IpAddr>,
    pub external: Vec<ExternalGrant>,
}

/// What one check may contact. Built from the assignment (`spec::AddressPolicySpec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_link_local: bool,
    pub allow_loopback: bool,
    pub allow_node_addresses: bool,
    /// Every node's addresses, canonical (shared by all checks of an assignment).
    pub node_addresses: Arc<HashSet<IpAddr>>,
    /// The cluster's own address space (shared by all checks of an assignment).
    pub cluster_space: Arc<Vec<Cidr>>,
    /// When the operator sends one: everything this check may reach beyond the exemptions.
    pub rule: Option<Arc<DestinationRule>>,
    /// Exact destinations the operator resolved itself from cluster state and vouches for:
    /// a `localhost` target's `127.0.0.1:port` inside the agent's own pod, a NodePort
    /// target's `nodeIP:nodePort`. They pass every refusal except the never-probed classes.
    pub exempt: Vec<SocketAddr>,
}

impl Default for AddressPolicy {
    /// The safe default: nothing sensitive, no destination rule.
    fn default() -> Self {
        AddressPolicy {
            allow_link_local: false,
            allow_loopback: false,
            allow_node_addresses: false,
            node_addresses: Arc::default(),
            cluster_space: Arc::default(),
            rule: None,
            exempt: Vec::new(),
        }
    }
}

impl AddressPolicy {
    /// Whether this check may contact `addr`. IPv4-mapped, IPv4-compatible and NAT64
    /// addresses are judged as the IPv4 address they embed.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        self.judge(None, addr.ip(), Some(addr.port()))
    }

    /// As [`AddressPolicy::check`], for an address reached through the host name `name`
    /// (which an external grant by host name may admit).
    pub fn check_named(&self, name: &str, addr: SocketAddr) -> Result<(), Refusal> {
        self.judge(Some(name), addr.ip(), Some(addr.port()))
    }

    /// Whether this check may contact `ip` with a protocol that has no ports (ICMP): as
    /// [`AddressPolicy::check`], except that grants' ports do not apply and no exempt or
    /// in-cluster `ip:port` destination matches.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refusal> {
        self.judge(None, ip, None)
    }

    fn judge(&self, name: Option<&str>, raw: IpAddr, port: Option<u16>) -> Result<(), Refusal> {
        let ip = judged_as(raw);
        let class = class_of(ip);
        if let Some(never @ (Refusal::Unspecified | Refusal::Multicast | Refusal::Broadcast)) =
            class
        {
            return Err(never);
        }
        if let Some(port) = port
            && self
                .exempt
                .iter()
                .any(|e| e.port() == port && judged_as(e.ip()) == ip)
        {
            return Ok(());
        }
        match class {
            Some(Refusal::Loopback) if !self.allow_loopback => return Err(Refusal::Loopback),
            Some(Refusal::LinkLocal) if !self.allow_link_local => return Err(Refusal::LinkLocal),
            _ => {}
        }
        // Node addresses are stored canonical; a NAT64 form is judged by what it embeds too.
        let node =
            self.node_addresses.contains(&ip) || self.node_addresses.contains(&canonical(raw));
        if node && !self.allow_node_addresses {
            return Err(Refusal::NodeAddress);
        }
        let Some(rule) = &self.rule else {
            return Ok(());
        };
        let resolved_by_operator = match port {
            Some(port) => rule.cluster.contains(&SocketAddr::new(ip, port)),
            None => rule.cluster_ips.contains(&ip),
        };
        if resolved_by_operator {
            return Ok(());
        }
        // Node addresses got here only if the policy opened them (`allowNodeAddresses`, the
        // explicit grant for them): they count as outside the cluster's space.
        let in_cluster = self.cluster_space.iter().any(|c| c.contains(ip));
        if rule
            .external
            .iter()
            .any(|g| g.admits(name, ip, port, in_cluster))
        {
            return Ok(());
        }
        Err(if in_cluster {
            Refusal::ClusterAddress
        } else {
            Refusal::NotInGrant
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }

    #[test]
    fn every_spelling_of_an_address() {
        let table: &[(&str, Option<&str>)] = &[
            // Dotted decimal and the inet_aton short forms.
            ("169.254.169.254", Some("169.254.169.254")),
            ("127.0.0.1", Some("127.0.0.1")),
            ("127.1", Some("127.0.0.1")),
            ("10.1.2", Some("10.1.0.2")),
            ("10.1.65535", Some("10.1.255.255")),
            ("0", Some("0.0.0.0")),
            // One integer.
            ("2852039166", Some("169.254.169.254")),
            ("2130706433", Some("127.0.0.1")),
            ("4294967295", Some("255.255.255.255")),
            // Hexadecimal, whole and per part, either case.
            ("0xa9fea9fe", Some("169.254.169.254")),
            ("0XA9FEA9FE", Some("169.254.169.254")),
            ("0xa9.0xfe.0xa9.0xfe", Some("169.254.169.254")),
            ("0x7f.1", Some("127.0.0.1")),
            ("0x7f.0.0.0x1", Some("127.0.0.1")),
            ("0x", Some("0.0.0.0")),
            // Octal, whole and per part, with any number of leading zeros.
            ("0251.0376.0251.0376", Some("169.254.169.254")),
            ("017700000001", Some("127.0.0.1")),
            ("0177.0.0.01", Some("127.0.0.1")),
            ("00000000000000000000177.1", Some("127.0.0.1")),
            ("0x7f.0.0.01", Some("127.0.0.1")),
            // A trailing dot, as URL parsers accept it.
            ("169.254.169.254.", Some("169.254.169.254")),
            ("127.1.", Some("127.0.0.1")),
            // IPv6, bracketed or not, zones ignored, embedded IPv4 unwrapped.
            ("::1", Some("::1")),
            ("[::1]", Some("::1")),
            ("::", Some("::")),
            ("[fe80::1%25eth0]", Some("fe80::1")),
            ("fe80::1%eth0", Some("fe80::1")),
            ("FD00:EC2::254", Some("fd00:ec2::254")),
            ("::ffff:7f00:1", Some("127.0.0.1")),
            ("::ffff:127.0.0.1", Some("127.0.0.1")),
            ("[::ffff:169.254.169.254]", Some("169.254.169.254")),
            ("::ffff:a9fe:a9fe", Some("169.254.169.254")),
            ("::169.254.169.254", Some("169.254.169.254")),
            ("::7f00:1", Some("127.0.0.1")),
            ("0:0:0:0:0:0:0:1", Some("::1")),
            ("64:ff9b::a9fe:a9fe", Some("64:ff9b::a9fe:a9fe")),
            ("2001:db8::1", Some("2001:db8::1")),
            // Host names and garbage.
            ("example.com", None),
            ("web.default.svc.cluster.local.", None),
            ("1.2.3.com", None),
            ("0x7f.example", None),
            ("localhost", None),
            ("", None),
            (".", None),
            ("1..2", None),
            ("1.2.3.4..", None),
            (".1.2.3", None),
            ("1.2.3.4.5", None),
            ("256.1.1.1", None),
            ("1.2.3.256", None),
            ("1.2.65536", None),
            ("1.16777216", None),
            ("4294967296", None),
            ("99999999999999999999999", None),
            ("08", None),
            ("09.1.1.1", None),
            ("0xg1", None),
            ("0x1ffffffff", None),
            ("+1.2.3.4", None),
            ("-1", None),
            ("1e5", None),
            (" 127.0.0.1", None),
            ("127.0.0.1 ", None),
            ("\t127.0.0.1", None),
            ("127.0.0.1\n", None),
            (" [::1]", None),
            ("127.0.0 .1", None),
            ("[127.0.0.1]", None),
            ("[::1", None),
            ("::1]", None),
            ("[[::1]]", None),
            ("::ffff:127.1", None),
            ("::ffff:0x7f.1", None),
            ("fe80::1%", None),
            ("fe80::1%eth 0", None),
            ("1.2.3.4:80", None),
            ("１２７.0.0.1", None),
        ];
        for (text, want) in table {
            let got = normalise_ip(text);
            let want = want.map(|w| w.parse::<IpAddr>().unwrap());
            assert_eq!(got, want, "{text:?}");
        }
    }

    fn sa(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(
            normalise_ip(ip).unwrap_or_else(|| ip.parse().unwrap()),
            port,
        )
    }

    fn raw(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn every_class_under_the_safe_default() {
        let p = AddressPolicy::default();
        use Refusal::*;
        let table: &[(SocketAddr, Result<(), Refusal>)] = &[
            (raw("169.254.169.254", 80), Err(LinkLocal)),
            (raw("169.254.0.1", 80), Err(LinkLocal)),
            (raw("169.254.20.10", 53), Err(LinkLocal)),
            (raw("fe80::1", 80), Err(LinkLocal)),
            (raw("febf::1", 80), Err(LinkLocal)),
            (raw("fd00:ec2::254", 80), Err(LinkLocal)),
            (raw("100.100.100.200", 80), Err(LinkLocal)),
            (raw("127.0.0.1", 80), Err(Loopback)),
            (raw("127.255.255.254", 80), Err(Loopback)),
            (raw("::1", 80), Err(Loopback)),
            (raw("0.0.0.0", 80), Err(Unspecified)),
            (raw("0.1.2.3", 80), Err(Unspecified)),
            (raw("::", 80), Err(Unspecified)),
            (raw("224.0.0.1", 80), Err(Multicast)),
            (raw("239.255.255.250", 1900), Err(Multicast)),
            (raw("ff02::1", 80), Err(Multicast)),
            (raw("255.255.255.255", 80), Err(Broadcast)),
            // IPv4 embedded in IPv6 is judged as IPv4.
            (raw("::ffff:169.254.169.254", 80), Err(LinkLocal)),
            (raw("::ffff:127.0.0.1", 80), Err(Loopback)),
            (raw("::ffff:0.0.0.0", 80), Err(Unspecified)),
            (raw("::169.254.169.254", 80), Err(LinkLocal)),
            (raw("64:ff9b::a9fe:a9fe", 80), Err(LinkLocal)),
            (raw("64:ff9b::7f00:1", 80), Err(Loopback)),
            // Ordinary pod, service, node-less and public addresses pass.
            (raw("10.77.0.2", 7000), Ok(())),
            (raw("10.96.0.10", 53), Ok(())),
            (raw("192.168.1.1", 443), Ok(())),
            (raw("100.64.0.1", 80), Ok(())),
            (raw("169.253.255.255", 80), Ok(())),
            (raw("169.255.0.0", 80), Ok(())),
            (raw("fec0::1", 80), Ok(())),
            (raw("fd00:ec2::253", 80), Ok(())),
            (raw("2001:db8::1", 80), Ok(())),
            (raw("::ffff:10.0.0.1", 80), Ok(())),
            (raw("64:ff9b::808:808", 53), Ok(())),
            (raw("8.8.8.8", 53), Ok(())),
        ];
        for (addr, want) in table {
            assert_eq!(p.check(*addr), *want, "{addr}");
        }
        assert_eq!(LinkLocal.reason(), "LinkLocal");
        assert_eq!(NotInGrant.to_string(), "NotInGrant");
        assert_eq!(ClusterAddress.reason(), "ClusterAddress");
    }

    #[test]
    fn hostile_spellings_are_refused_once_normalised() {
        let p = AddressPolicy::default();
        for (text, class) in [
            ("0x7f.1", Refusal::Loopback),
            ("017700000001", Refusal::Loopback),
            ("::ffff:7f00:1", Refusal::Loopback),
            ("[::ffff:169.254.169.254]", Refusal::LinkLocal),
            ("169.254.169.254.", Refusal::LinkLocal),
            ("2852039166", Refusal::LinkLocal),
            ("0xa9.0xfe.0xa9.0xfe", Refusal::LinkLocal),
            ("0251.0376.0251.0376", Refusal::LinkLocal),
            ("127.1", Refusal::Loopback),
            ("0", Refusal::Unspecified),
        ] {
            assert_eq!(p.check(sa(text, 80)), Err(class), "{text}");
        }
    }

    #[test]
    fn allowances_open_only_their_class() {
        let nodes: Arc<HashSet<IpAddr>> = Arc::new([v4("10.0.0.5"), v4("10.0.0.6")].into());
        let base = AddressPolicy {
            node_addresses: nodes,
            ..AddressPolicy::default()
        };
        let node = raw("10.0.0.5", 10250);
        let node_mapped = raw("::ffff:10.0.0.6", 10250);
        assert_eq!(base.check(node), Err(Refusal::NodeAddress));
        assert_eq!(base.check(node_mapped), Err(Refusal::NodeAddress));
        assert_eq!(base.check(raw("10.0.0.7", 80)), Ok(()));

        let ll = AddressPolicy {
            allow_link_local: true,
            ..base.clone()
        };
        assert_eq!(ll.check(raw("169.254.169.254", 80)), Ok(()));
        assert_eq!(ll.check(raw("fd00:ec2::254", 80)), Ok(()));
        assert_eq!(ll.check(raw("127.0.0.1", 80)), Err(Refusal::Loopback));
        assert_eq!(ll.check(node), Err(Refusal::NodeAddress));

        let lo = AddressPolicy {
            allow_loopback: true,
            ..base.clone()
        };
        assert_eq!(lo.check(raw("127.0.0.1", 80)), Ok(()));
        assert_eq!(lo.check(raw("::1", 80)), Ok(()));
        assert_eq!(
            lo.check(raw("169.254.169.254", 80)),
            Err(Refusal::LinkLocal)
        );

        let na = AddressPolicy {
            allow_node_addresses: true,
            ..base.clone()
        };
        assert_eq!(na.check(node), Ok(()));
        assert_eq!(na.check(raw("127.0.0.1", 80)), Err(Refusal::Loopback));

        // Never probed, whatever is allowed or exempt.
        let all = AddressPolicy {
            allow_link_local: true,
            allow_loopback: true,
            allow_node_addresses: true,
            exempt: vec![raw("0.0.0.0", 80), raw("224.0.0.1", 80)],
            ..base.clone()
        };
        for never in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
            assert!(all.check(raw(never, 80)).is_err(), "{never}");
        }

        // Loopback alone opens loopback only.
        let loopback = AddressPolicy {
            allow_loopback: true,
            ..AddressPolicy::default()
        };
        assert_eq!(loopback.check(raw("127.0.0.1", 80)), Ok(()));
        assert_eq!(
            loopback.check(raw("169.254.169.254", 80)),
            Err(Refusal::LinkLocal)
        );
        assert_eq!(
            loopback.check(raw("0.0.0.0", 80)),
            Err(Refusal::Unspecified)
        );
    }

    fn grant(hosts: &[&str], cidrs: &[&str], ports: &[u16]) -> ExternalGrant {
        ExternalGrant {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            ports: ports.to_vec(),
            allow_cluster_addresses: false,
        }
    }

    fn rule(cluster: &[&str], external: Vec<ExternalGrant>) -> Option<Arc<DestinationRule>> {
        Some(Arc::new(DestinationRule {
            cluster: cluster.iter().map(|a| a.parse().unwrap()).collect(),
            cluster_ips: HashSet::new(),
            external,
        }))
    }

    #[test]
    fn exempt_destinations_pass_exactly() {
        let p = AddressPolicy {
            node_addresses: Arc::new([v4("10.0.0.5")].into()),
            exempt: vec![raw("127.0.0.1", 9090), raw("10.0.0.5", 30080)],
            rule: rule(&[], vec![grant(&[], &["203.0.113.0/24"], &[])]),
            ..AddressPolicy::default()
        };
        assert_eq!(p.check(raw("127.0.0.1", 9090)), Ok(()));
        assert_eq!(p.check(raw("::ffff:127.0.0.1", 9090)), Ok(()));
        assert_eq!(p.check(raw("127.0.0.1", 9091)), Err(Refusal::Loopback));
        assert_eq!(p.check(raw("127.0.0.2", 9090)), Err(Refusal::Loopback));
        assert_eq!(p.check(raw("10.0.0.5", 30080)), Ok(()));
        assert_eq!(p.check(raw("10.0.0.5", 10250)), Err(Refusal::NodeAddress));
    }

    #[test]
    fn grants_restrict_addresses_and_ports() {
        let p = AddressPolicy {
            rule: rule(
                &[],
                vec![grant(
                    &[],
                    &["203.0.113.0/24", "2001:db8::/32"],
                    &[443, 8443],
                )],
            ),
            ..AddressPolicy::default()
        };
        assert_eq!(p.check(raw("203.0.113.9", 443)), Ok(()));
        assert_eq!(p.check(raw("::ffff:203.0.113.9", 8443)), Ok(()));
        assert_eq!(p.check(raw("2001:db8:1::1", 443)), Ok(()));
        assert_eq!(p.check(raw("203.0.114.9", 443)), Err(Refusal::NotInGrant));
        assert_eq!(p.check(raw("203.0.113.9", 80)), Err(Refusal::NotInGrant));
        assert_eq!(p.check(raw("2001:db9::1", 443)), Err(Refusal::NotInGrant));
        // Sensitive classes are judged before the grant: a grant never opens them.
        let wide = AddressPolicy {
            rule: rule(&[], vec![grant(&[], &["0.0.0.0/0"], &[])]),
            ..AddressPolicy::default()
        };
        assert_eq!(wide.check(raw("8.8.8.8", 53)), Ok(()));
        assert_eq!(
            wide.check(raw("169.254.169.254", 80)),
            Err(Refusal::LinkLocal)
        );
        assert_eq!(wide.check(raw("::1", 80)), Err(Refusal::Loopback));
        // Without a port (ICMP) the address alone is judged.
        assert_eq!(p.check_ip(v4("203.0.113.9")), Ok(()));
        assert_eq!(p.check_ip(v4("198.51.100.1")), Err(Refusal::NotInGrant));
        assert_eq!(
            AddressPolicy::default().check_ip("::ffff:169.254.169.254".parse().unwrap()),
            Err(Refusal::LinkLocal)
        );
        // Several grants add up; each keeps its own ports.
        let two = AddressPolicy {
            rule: rule(
                &[],
                vec![
                    grant(&[], &["203.0.113.0/24"], &[443]),
                    grant(&[], &["198.51.100.0/24"], &[]),
                ],
            ),
            ..AddressPolicy::default()
        };
        assert_eq!(two.check(raw("198.51.100.1", 22)), Ok(()));
        assert_eq!(two.check(raw("203.0.113.1", 22)), Err(Refusal::NotInGrant));
        // No rule: nothing beyond the sensitive classes is refused (static assignments).
        assert_eq!(
            AddressPolicy::default().check(raw("198.51.100.1", 22)),
            Ok(())
        );
    }

    #[test]
    fn the_operators_cluster_destinations_and_nothing_else_inside_the_cluster() {
        let space: Arc<Vec<Cidr>> = Arc::new(vec![
            "10.244.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
            "fd00:10::/64".parse().unwrap(),
        ]);
        let p = AddressPolicy {
            cluster_space: space.clone(),
            rule: rule(
                &["10.244.1.5:8080", "10.96.0.20:80", "[fd00:10::5]:80"],
                vec![grant(
                    &["api.example.com", "*.cdn.example.net"],
                    &["10.0.0.0/8"],
                    &[],
                )],
            ),
            ..AddressPolicy::default()
        };
        use Refusal::*;
        for (name, addr, want) in [
            (None, raw("10.244.1.5", 8080), Ok(())),
            (None, raw("::ffff:10.244.1.5", 8080), Ok(())),
            (None, raw("10.96.0.20", 80), Ok(())),
            (None, raw("fd00:10::5", 80), Ok(())),
            // Another port of the same pod, another pod, another ClusterIP.
            (None, raw("10.244.1.5", 22), Err(ClusterAddress)),
            (None, raw("10.244.2.7", 8080), Err(ClusterAddress)),
            (None, raw("10.96.0.1", 443), Err(ClusterAddress)),
            (None, raw("fd00:10::6", 80), Err(ClusterAddress)),
            // A CIDR grant does not open the cluster's space it overlaps...
            (None, raw("10.1.2.3", 80), Ok(())),
            // ...nor does a granted name that resolves (or is rebound) into it.
            (
                Some("api.example.com"),
                raw("10.244.2.7", 8080),
                Err(ClusterAddress),
            ),
            (Some("api.example.com"), raw("198.51.100.9", 443), Ok(())),
            (Some("API.Example.COM."), raw("198.51.100.9", 443), Ok(())),
            (Some("a.cdn.example.net"), raw("198.51.100.9", 443), Ok(())),
            (
                Some("cdn.example.net"),
                raw("198.51.100.9", 443),
                Err(NotInGrant),
            ),
            (
                Some("evilcdn.example.net"),
                raw("198.51.100.9", 443),
                Err(NotInGrant),
            ),
            (
                Some("other.example"),
                raw("198.51.100.9", 443),
                Err(NotInGrant),
            ),
            (None, raw("198.51.100.9", 443), Err(NotInGrant)),
        ] {
            let got = match name {
                Some(n) => p.check_named(n, addr),
                None => p.check(addr),
            };
            assert_eq!(got, want, "{name:?} {addr}");
        }
        // A grant that says so reaches into the cluster.
        let open = AddressPolicy {
            cluster_space: space,
            rule: rule(
                &[],
                vec![ExternalGrant {
                    allow_cluster_addresses: true,
                    ..grant(&["api.example.com"], &[], &[8080])
                }],
            ),
            ..AddressPolicy::default()
        };
        assert_eq!(
            open.check_named("api.example.com", raw("10.244.2.7", 8080)),
            Ok(())
        );
        assert_eq!(
            open.check_named("api.example.com", raw("10.244.2.7", 22)),
            Err(ClusterAddress)
        );
    }

    #[test]
    fn host_patterns() {
        for (pattern, host, want) in [
            ("api.example.com", "api.example.com", true),
            ("api.example.com", "API.example.com.", true),
            ("api.example.com", "xapi.example.com", false),
            ("*.example.com", "a.example.com", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", ".example.com", false),
            ("*.example.com", "aexample.com", false),
            ("*.example.com", "a.example.com.evil", false),
            ("localhost", "localhost.", true),
        ] {
            assert_eq!(host_matches(pattern, host), want, "{pattern} {host}");
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(v4("10.255.0.1")) && !c.contains(v4("11.0.0.1")));
        assert!(c.contains("::ffff:10.1.1.1".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let all6: Cidr = "::/0".parse().unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()) && !all6.contains(v4("1.1.1.1")));
        let mapped: Cidr = "::ffff:203.0.113.0/120".parse().unwrap();
        assert!(mapped.contains(v4("203.0.113.7")));
        let host: Cidr = "192.0.2.1/32".parse().unwrap();
        assert!(host.contains(v4("192.0.2.1")) && !host.contains(v4("192.0.2.2")));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/-1",
            "0x0a.0/8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    /// Deterministic fuzzing: random and mutated strings never panic `normalise_ip`, every
    /// accepted string yields a canonical address whose text normalises to itself and which
    /// the guard judges exactly as that text (and as its IPv4-mapped form), and the parser
    /// agrees with the standard library wherever that accepts the text.
    #[test]
    fn fuzz_normalise_ip_round_trips() {
        use crate::hash::splitmix64;
        const SEEDS: &[&str] = &[
            "169.254.169.254",
            "0xa9fea9fe",
            "0251.0376.0251.0376",
            "2852039166",
            "127.1",
            "0x7f.1",
            "017700000001",
            "::ffff:7f00:1",
            "[::ffff:169.254.169.254]",
            "169.254.169.254.",
            "fe80::1%eth0",
            "fd00:ec2::254",
            "64:ff9b::a9fe:a9fe",
            "10.77.0.2",
            "web.default.svc.",
            "::",
            "0",
        ];
        const ALPHABET: &[u8] = b"0123456789abcdefxX.:[]%- g\t\n+";
        let nodes: Arc<HashSet<IpAddr>> = Arc::new([v4("10.77.0.2"), v4("127.0.0.1")].into());
        let policies = [
            AddressPolicy::default(),
            AddressPolicy {
                allow_loopback: true,
                ..AddressPolicy::default()
            },
            AddressPolicy {
                allow_link_local: true,
                node_addresses: nodes.clone(),
                ..AddressPolicy::default()
            },
            AddressPolicy {
                allow_loopback: true,
                allow_node_addresses: true,
                node_addresses: nodes,
                rule: rule(&[], vec![grant(&[], &["169.254.0.0/16", "::/0"], &[80])]),
                ..AddressPolicy::default()
            },
        ];
        let mut x = 0x6e65_7473_6c6f_u64;
        let mut rand = |n: usize| {
            x = splitmix64(x);
            (x % n as u64) as usize
        };
        let mut accepted = 0;
        for round in 0..200_000 {
            let mut s: Vec<u8> = if round % 3 == 0 {
                (0..rand(24))
                    .map(|_| ALPHABET[rand(ALPHABET.len())])
                    .collect()
            } else {
                SEEDS[rand(SEEDS.len())].as_bytes().to_vec()
            };
            for _ in 0..rand(4) {
                let at = rand(s.len() + 1);
                match rand(3) {
                    0 => s.insert(at, ALPHABET[rand(ALPHABET.len())]),
                    1 if at < s.len() => {
                        s.remove(at);
                    }
                    _ if at < s.len() => s[at] = ALPHABET[rand(ALPHABET.len())],
                    _ => {}
                }
            }
            let Ok(text) = String::from_utf8(s) else {
                continue;
            };
            let got = normalise_ip(&text);
            if let Ok(std) = text.parse::<IpAddr>() {
                assert_eq!(got, Some(canonical(std)), "{text:?}: std reads {std}");
            }
            let Some(ip) = got else { continue };
            accepted += 1;
            assert_eq!(canonical(ip), ip, "{text:?} not canonical");
            let again = normalise_ip(&ip.to_string());
            assert_eq!(again, Some(ip), "{text:?} -> {ip} does not round-trip");
            let mapped = match ip {
                IpAddr::V4(a) => Some(IpAddr::V6(a.to_ipv6_mapped())),
                IpAddr::V6(_) => None,
            };
            for p in &policies {
                for port in [80, 443] {
                    let judged = p.check(SocketAddr::new(ip, port));
                    let canon = p.check(SocketAddr::new(
                        normalise_ip(&ip.to_string()).unwrap_or(ip),
                        port,
                    ));
                    assert_eq!(judged, canon, "{text:?}");
                    if let Some(m) = mapped {
                        assert_eq!(p.check(SocketAddr::new(m, port)), judged, "{text:?} mapped");
                    }
                }
            }
        }
        assert!(
            accepted > 10_000,
            "the generator reaches the parser: {accepted}"
        );
    }
}
