//! Tenancy: what a check may probe, from the cluster admins' `ConnectivityPolicy` objects.
//!
//! A check is namespaced, yet its probes run from agents that reach the whole cluster network,
//! so netslo must not let whoever may create a check in namespace A scan namespace B or the
//! internet. With no policy, a check may target its own namespace, the agent mesh, cluster DNS
//! (DNS names resolved by the cluster's resolver) and the API server. Each policy that selects
//! the check's namespace widens that (other namespaces, external hosts, domains and CIDRs);
//! policies add up, and of their limits the tightest applies. Denied targets are never handed
//! to an agent: the reconciler drops them from the plan and reports the check `Stalled` with
//! reason TargetNotPermitted, naming the missing grant.
//!
//! Pure: the policies and namespaces come from the cluster cache; tested on tables of cases.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use netslo_crds::v1alpha1::{ConnectivityCheckSpec, ConnectivityPolicy, Target};
use netslo_protocol::guard::{Cidr, host_matches, normalise_ip};
use netslo_protocol::spec::{AddressPolicySpec, DestinationRuleSpec, ExternalGrantSpec};

use crate::resolve::{ResolvedTarget, selects};

/// Why a target (or the whole check, `target: None`) may not be probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub target: Option<String>,
    pub missing: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Some(target) => write!(f, "target {target}: {}", self.missing),
            None => write!(f, "{}", self.missing),
        }
    }
}

/// The policies in force for checks in one namespace.
#[derive(Debug)]
pub struct Grants<'a> {
    namespace: &'a str,
    policies: Vec<&'a ConnectivityPolicy>,
    namespace_labels: BTreeMap<&'a str, Option<&'a BTreeMap<String, String>>>,
}

impl<'a> Grants<'a> {
    /// The policies that select `namespace` (a policy without a namespace selector selects
    /// every namespace).
    pub fn for_namespace(
        namespace: &'a str,
        policies: &'a [Arc<ConnectivityPolicy>],
        namespaces: &'a [Arc<Namespace>],
    ) -> Self {
        let namespace_labels: BTreeMap<&str, Option<&BTreeMap<String, String>>> = namespaces
            .iter()
            .filter_map(|ns| Some((ns.metadata.name.as_deref()?, ns.metadata.labels.as_ref())))
            .collect();
        let own_labels = namespace_labels.get(namespace).copied().flatten();
        let policies = policies
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| {
                p.spec
                    .namespace_selector
                    .as_ref()
                    .is_none_or(|s| selects(s, own_labels))
            })
            .collect();
        Grants {
            namespace,
            policies,
            namespace_labels,
        }
    }

    fn namespace_granted(&self, target_namespace: &str) -> bool {
        target_namespace == self.namespace
            || self.policies.iter().any(|p| {
                p.spec.target_namespaces.as_ref().is_some_and(|g| {
                    g.names
                        .as_ref()
                        .is_some_and(|names| names.iter().any(|n| n == target_namespace))
                        || g.selector.as_ref().is_some_and(|s| {
                            // An unknown namespace has no labels to match.
                            self.namespace_labels
                                .get(target_namespace)
                                .is_some_and(|labels| selects(s, *labels))
                        })
                })
            })
    }

    fn external_granted(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        // Every spelling of an address (`0x0a.1`, `167772161`) is judged as the address.
        let ip: Option<IpAddr> = normalise_ip(&host);
        self.policies.iter().any(|p| {
            let Some(grant) = &p.spec.external else {
                return false;
            };
            let port_ok = grant.ports.is_empty()
                || port.is_some_and(|port| grant.ports.iter().any(|g| *g == i32::from(port)));
            let host_ok = match ip {
                Some(ip) => grant
                    .cidrs
                    .iter()
                    .any(|c| c.parse::<Cidr>().is_ok_and(|c| c.contains(ip))),
                None => grant
                    .hosts
                    .iter()
                    .any(|pattern| host_matches(pattern, &host)),
            };
            port_ok && host_ok
        })
    }

    /// What the agents may contact for this check, for their own last-moment check of every
    /// resolved address: sensitive classes only where some policy allows them, and a
    /// destination rule holding the namespace's external grants. The planner adds each
    /// target's in-cluster destinations to the rule ([`crate::assign`]).
    pub fn address_policy(&self) -> AddressPolicySpec {
        let sensitive = self
            .policies
            .iter()
            .filter_map(|p| p.spec.sensitive_destinations.as_ref());
        let mut out = AddressPolicySpec::default();
        for s in sensitive {
            out.allow_link_local |= s.allow_link_local == Some(true);
            out.allow_loopback |= s.allow_loopback == Some(true);
            out.allow_node_addresses |= s.allow_node_addresses == Some(true);
        }
        let external = self
            .policies
            .iter()
            .filter_map(|p| p.spec.external.as_ref())
            .map(|g| ExternalGrantSpec {
                hosts: g.hosts.clone(),
                cidrs: g.cidrs.clone(),
                ports: g
                    .ports
                    .iter()
                    .filter_map(|p| u16::try_from(*p).ok())
                    .collect(),
                allow_cluster_addresses: g.allow_cluster_addresses == Some(true),
            })
            .collect();
        out.destinations = Some(DestinationRuleSpec {
            external,
            ..DestinationRuleSpec::default()
        });
        out
    }

    /// Refusals of what resolution found outside the cluster: the host an ExternalName
    /// Service names is an external destination like any other.
    pub fn resolved_denials(&self, targets: &[ResolvedTarget]) -> Vec<Denial> {
        targets
            .iter()
            .flat_map(|t| {
                t.external_hosts
                    .iter()
                    .filter(|(host, port)| !self.external_granted(host, Some(*port)))
                    .map(|(host, port)| Denial {
                        target: Some(t.name.clone()),
                        missing: format!(
                            "its Service is ExternalName {host}: external destination {host}:{port} is not granted to checks in namespace {} by any ConnectivityPolicy (spec.external)",
                            self.namespace
                        ),
                    })
            })
            .collect()
    }

    /// The tightest `maxChecks` of the policies in force.
    pub fn max_checks(&self) -> Option<usize> {
        self.policies
            .iter()
            .filter_map(|p| p.spec.limits.as_ref()?.max_checks)
            .min()
            .map(|m| usize::try_from(m).unwrap_or(0))
    }

    /// Refuses `name` when the namespace holds more checks than [`Grants::max_checks`]: the
    /// oldest checks keep running (by creation time, then name), so adding one never stops
    /// another that already ran.
    pub fn check_count_denial(
        &self,
        name: &str,
        checks_in_namespace: &[(Option<i64>, String)],
    ) -> Option<Denial> {
        let max = self.max_checks()?;
        let mut order: Vec<&(Option<i64>, String)> = checks_in_namespace.iter().collect();
        order.sort();
        let rank = order.iter().position(|(_, n)| n == name)?;
        (rank >= max).then(|| Denial {
            target: None,
            missing: format!(
                "namespace {} has {} checks, over its limit of {max} (ConnectivityPolicy spec.limits.maxChecks); the oldest run",
                self.namespace,
                order.len()
            ),
        })
    }

    /// Every reason the check may not run as specified: its source, per target, then the
    /// limits.
    pub fn denials(&self, spec: &ConnectivityCheckSpec) -> Vec<Denial> {
        let mut denials = Vec::new();
        if let Some(ns) = spec
            .source
            .workload
            .as_ref()
            .and_then(|w| w.namespace.as_deref())
            && !self.namespace_granted(ns)
        {
            denials.push(Denial {
                target: None,
                missing: format!(
                    "probing from namespace {ns} is not granted to checks in namespace {} by any ConnectivityPolicy (spec.targetNamespaces)",
                    self.namespace
                ),
            });
        }
        denials.extend(spec.targets.iter().filter_map(|t| {
            self.target_denial(t).map(|missing| Denial {
                target: Some(t.name.clone()),
                missing,
            })
        }));
        denials.extend(self.limit_denials(spec));
        denials
    }

    fn target_denial(&self, target: &Target) -> Option<String> {
        let other_namespace = target
            .pods
            .as_ref()
            .and_then(|p| p.namespace.as_deref())
            .or_else(|| target.service.as_ref().and_then(|s| s.namespace.as_deref()))
            .or_else(|| target.ingress.as_ref().and_then(|i| i.namespace.as_deref()));
        if let Some(ns) = other_namespace
            && !self.namespace_granted(ns)
        {
            return Some(format!(
                "namespace {ns} is not granted to checks in namespace {} by any ConnectivityPolicy (spec.targetNamespaces)",
                self.namespace
            ));
        }
        if let Some(external) = &target.external {
            let (host, port) = match (&external.host, &external.url) {
                (Some(host), _) => (
                    host.clone(),
                    external.port.and_then(|p| u16::try_from(p).ok()),
                ),
                (None, Some(url)) => match url_host_port(url) {
                    Some(host_port) => host_port,
                    // Never let what cannot be read pass as granted.
                    None => {
                        return Some(format!(
                            "external URL {url:?} has no host and port that can be checked against a ConnectivityPolicy"
                        ));
                    }
                },
                (None, None) => return None,
            };
            if !self.external_granted(&host, port) {
                return Some(format!(
                    "external destination {host}{} is not granted to checks in namespace {} by any ConnectivityPolicy (spec.external)",
                    port.map(|p| format!(":{p}")).unwrap_or_default(),
                    self.namespace
                ));
            }
        }
        if let Some(server) = target.dns.as_ref().and_then(|d| d.server.as_deref()) {
            let port = target
                .dns
                .as_ref()
                .and_then(|d| d.server_port)
                .and_then(|p| u16::try_from(p).ok())
                .or(Some(53));
            if !self.external_granted(server, port) {
                return Some(format!(
                    "DNS server {server} is not granted to checks in namespace {} by any ConnectivityPolicy (spec.external); without a server the cluster's resolver is used",
                    self.namespace
                ));
            }
        }
        None
    }

    fn limit_denials(&self, spec: &ConnectivityCheckSpec) -> Vec<Denial> {
        let mut out = Vec::new();
        let limits = self.policies.iter().filter_map(|p| p.spec.limits.as_ref());
        let max_targets = limits.clone().filter_map(|l| l.max_targets_per_check).min();
        if let Some(max) = max_targets
            && spec.targets.len() > usize::try_from(max).unwrap_or(0)
        {
            out.push(Denial {
                target: None,
                missing: format!(
                    "{} targets exceed the limit of {max} per check for namespace {} (ConnectivityPolicy spec.limits.maxTargetsPerCheck)",
                    spec.targets.len(),
                    self.namespace
                ),
            });
        }
        let min_interval = limits
            .filter_map(|l| l.min_interval.as_ref().map(|d| d.get()))
            .max();
        let interval = std::time::Duration::from_millis(crate::assign::interval_ms(spec));
        if let Some(min) = min_interval
            && interval < min
        {
            out.push(Denial {
                target: None,
                missing: format!(
                    "interval {interval:?} is shorter than the minimum {min:?} for namespace {} (ConnectivityPolicy spec.limits.minInterval)",
                    self.namespace
                ),
            });
        }
        out
    }
}

/// Host and port of an http(s) URL (the API server has validated its shape); `None` when a
/// port is written but is not 1 to 65535, which is refused rather than defaulted.
fn url_host_port(url: &str) -> Option<(String, Option<u16>)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(url_port(p)?),
            None if after.is_empty() => None,
            None => return None,
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(url_port(p)?)),
            None => (authority.to_string(), None),
        }
    };
    Some((host, Some(port.flatten().unwrap_or(default_port))))
}

/// A URL's port: digits for 1 to 65535, or empty (the scheme's default: `None` inside).
fn url_port(text: &str) -> Option<Option<u16>> {
    if text.is_empty() {
        return Some(None);
    }
    if text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p > 0).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> Arc<ConnectivityPolicy> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "netslo.io/v1alpha1", "kind": "ConnectivityPolicy",
                "metadata": {"name": "p"}, "spec": spec,
            }))
            .unwrap(),
        )
    }

    fn namespace(name: &str, labels: serde_json::Value) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
    }

    fn spec(targets: serde_json::Value) -> ConnectivityCheckSpec {
        serde_json::from_value(json!({"source": {"mesh": {}}, "targets": targets})).unwrap()
    }

    fn denied(policies: &[Arc<ConnectivityPolicy>], targets: serde_json::Value) -> Vec<String> {
        let namespaces = [
            namespace("shop", json!({"team": "shop"})),
            namespace("payments", json!({"tier": "backend"})),
            namespace("secrets", json!({})),
        ];
        Grants::for_namespace("shop", policies, &namespaces)
            .denials(&spec(targets))
            .iter()
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn with_no_policy_only_the_own_namespace_and_cluster_services() {
        let allowed = json!([
            {"name": "pods", "pods": {"selector": {"matchLabels": {"app": "x"}}, "port": 80}},
            {"name": "own", "service": {"name": "api", "namespace": "shop", "port": 80}},
            {"name": "dns", "dns": {"name": "example.com"}},
            {"name": "kube", "apiServer": {}},
            {"name": "peers", "mesh": {}},
        ]);
        assert_eq!(denied(&[], allowed), Vec::<String>::new());

        let other = denied(
            &[],
            json!([{"name": "db", "service": {"name": "db", "namespace": "payments", "port": 5432}}]),
        );
        assert_eq!(other.len(), 1);
        assert!(
            other[0].starts_with("target db: namespace payments is not granted"),
            "{other:?}"
        );
        for target in [
            json!({"name": "meta", "external": {"host": "169.254.169.254", "port": 80}}),
            json!({"name": "web", "external": {"url": "https://example.com/"}}),
            json!({"name": "resolver", "dns": {"name": "example.com", "server": "8.8.8.8"}}),
        ] {
            let d = denied(&[], json!([target]));
            assert_eq!(d.len(), 1, "{d:?}");
            assert!(
                d[0].contains("not granted to checks in namespace shop"),
                "{d:?}"
            );
        }
    }

    #[test]
    fn grants_widen_per_namespace_and_destination() {
        let grant = policy(json!({
            "namespaceSelector": {"matchLabels": {"team": "shop"}},
            "targetNamespaces": {"selector": {"matchLabels": {"tier": "backend"}}},
            "external": {"hosts": ["api.example.com", "*.cdn.example.net"], "cidrs": ["203.0.113.0/24"], "ports": [443]},
        }));
        let p = [grant];
        assert!(denied(&p, json!([{"name": "db", "service": {"name": "db", "namespace": "payments", "port": 1}}])).is_empty());
        assert_eq!(
            denied(
                &p,
                json!([{"name": "s", "pods": {"namespace": "secrets", "selector": {}, "port": 1}}])
            )
            .len(),
            1
        );
        for (target, ok) in [
            (
                json!({"external": {"host": "api.example.com", "port": 443}}),
                true,
            ),
            (
                json!({"external": {"host": "api.example.com.", "port": 443}}),
                true,
            ),
            (
                json!({"external": {"host": "api.example.com", "port": 80}}),
                false,
            ),
            (
                json!({"external": {"url": "https://a.cdn.example.net/x"}}),
                true,
            ),
            (
                json!({"external": {"url": "https://cdn.example.net/"}}),
                false,
            ),
            (
                json!({"external": {"url": "https://evilcdn.example.net/"}}),
                false,
            ),
            (
                json!({"external": {"host": "203.0.113.9", "port": 443}}),
                true,
            ),
            (
                json!({"external": {"host": "::ffff:203.0.113.9", "port": 443}}),
                true,
            ),
            (
                json!({"external": {"host": "203.0.114.9", "port": 443}}),
                false,
            ),
        ] {
            let mut t = target.clone();
            t["name"] = json!("t");
            assert_eq!(denied(&p, json!([t])).is_empty(), ok, "{target}");
        }
        // The same policy selects no other namespace.
        let namespaces = [namespace("blog", json!({}))];
        let grants = Grants::for_namespace("blog", &p, &namespaces);
        assert_eq!(
            grants
                .denials(&spec(
                    json!([{"name": "w", "external": {"url": "https://api.example.com/"}}])
                ))
                .len(),
            1
        );
    }

    #[test]
    fn sensitive_destinations_open_only_where_a_policy_says_so() {
        let namespaces = [namespace("shop", json!({"team": "shop"}))];
        let none = Grants::for_namespace("shop", &[], &namespaces).address_policy();
        assert_eq!(
            none,
            AddressPolicySpec {
                destinations: Some(DestinationRuleSpec::default()),
                ..AddressPolicySpec::default()
            },
            "refused by default, and no external grant"
        );
        let p = [
            policy(json!({"sensitiveDestinations": {"allowLoopback": true}})),
            policy(
                json!({"namespaceSelector": {"matchLabels": {"team": "other"}},
                          "sensitiveDestinations": {"allowLinkLocal": true}}),
            ),
        ];
        let granted = Grants::for_namespace("shop", &p, &namespaces).address_policy();
        assert!(granted.allow_loopback);
        assert!(
            !granted.allow_link_local,
            "that policy selects another namespace"
        );
        assert!(!granted.allow_node_addresses);
    }

    #[test]
    fn probing_from_another_namespace_needs_a_grant() {
        let namespaces = [
            namespace("shop", json!({})),
            namespace("payments", json!({"tier": "backend"})),
        ];
        let spec: ConnectivityCheckSpec = serde_json::from_value(json!({
            "source": {"workload": {"namespace": "payments", "podLabels": {"app": "pay"}, "serviceAccountName": "pay"}},
            "targets": [{"name": "kube", "apiServer": {}}],
        }))
        .unwrap();
        let denied = Grants::for_namespace("shop", &[], &namespaces).denials(&spec);
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert_eq!(denied[0].target, None, "the whole check");
        assert!(
            denied[0]
                .missing
                .starts_with("probing from namespace payments is not granted")
        );
        let p = [policy(json!({"targetNamespaces": {"names": ["payments"]}}))];
        assert!(
            Grants::for_namespace("shop", &p, &namespaces)
                .denials(&spec)
                .is_empty()
        );
    }

    #[test]
    fn the_tightest_limits_apply() {
        let p = [
            policy(json!({"limits": {"maxTargetsPerCheck": 3, "minInterval": "5s"}})),
            policy(json!({"limits": {"maxTargetsPerCheck": 1, "minInterval": "30s"}})),
        ];
        let two = json!([{"name": "a", "apiServer": {}}, {"name": "b", "apiServer": {}}]);
        let d = denied(&p, two);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("limit of 1 per check"), "{d:?}");
        assert!(d[1].contains("minimum 30s"), "{d:?}");
    }

    #[test]
    fn the_oldest_checks_run_within_max_checks() {
        let p = [policy(json!({"limits": {"maxChecks": 2}}))];
        let namespaces = [namespace("shop", json!({}))];
        let grants = Grants::for_namespace("shop", &p, &namespaces);
        let checks = vec![
            (Some(30), "newest".to_string()),
            (Some(10), "first".to_string()),
            (Some(20), "second".to_string()),
        ];
        assert!(grants.check_count_denial("first", &checks).is_none());
        assert!(grants.check_count_denial("second", &checks).is_none());
        let d = grants.check_count_denial("newest", &checks).unwrap();
        assert!(
            d.to_string().contains("3 checks, over its limit of 2"),
            "{d}"
        );
        let unlimited = Grants::for_namespace("shop", &[], &namespaces);
        assert!(unlimited.check_count_denial("newest", &checks).is_none());
    }

    #[test]
    fn urls_and_cidrs_parse_strictly() {
        assert_eq!(
            url_host_port("https://h.example/x"),
            Some(("h.example".into(), Some(443)))
        );
        assert_eq!(
            url_host_port("http://h:8080?q"),
            Some(("h".into(), Some(8080)))
        );
        assert_eq!(
            url_host_port("http://[2001:db8::1]:81/"),
            Some(("2001:db8::1".into(), Some(81)))
        );
        // A port out of range is refused, never replaced by the scheme's default.
        assert_eq!(url_host_port("https://example.com:65536/"), None);
        assert_eq!(url_host_port("https://example.com:0/"), None);
        assert_eq!(url_host_port("https://example.com:x/"), None);
        assert_eq!(url_host_port("http://[2001:db8::1]:99999/"), None);
        assert_eq!(
            url_host_port("https://example.com:/"),
            Some(("example.com".into(), Some(443)))
        );
        let d = denied(
            &[policy(
                json!({"external": {"hosts": ["example.com"], "ports": [443]}}),
            )],
            json!([{"name": "w", "external": {"url": "https://example.com:65536/"}}]),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("that can be checked against"), "{d:?}");
        // Numeric spellings of an address are judged as the address.
        let cidr = [policy(json!({"external": {"cidrs": ["10.0.0.0/8"]}}))];
        assert!(
            denied(
                &cidr,
                json!([{"name": "w", "external": {"url": "http://0x0a000001/"}}])
            )
            .is_empty()
        );
        assert_eq!(
            denied(
                &cidr,
                json!([{"name": "w", "external": {"url": "http://0xc0000201/"}}])
            )
            .len(),
            1
        );
    }
}
