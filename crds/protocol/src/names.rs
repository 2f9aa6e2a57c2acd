//! The two names that cross the channel in both directions: the name of an assigned check
//! (one target of a ConnectivityCheck) and the label of one series within it. The operator
//! writes them into assignments; agents send them back in their buckets and take them apart
//! for metric attributes, and the operator for its store. One format, read in one place.

use std::fmt;

/// One target of a ConnectivityCheck as an agent knows it: `<namespace>/<check>/<target>`.
/// Namespace and check are Kubernetes names and the target a DNS label, so none holds a `/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssignedCheck<'a> {
    pub namespace: &'a str,
    pub check: &'a str,
    pub target: &'a str,
}

impl<'a> AssignedCheck<'a> {
    /// Reads a name back: three non-empty parts; `None` for anything else (a static
    /// assignment's own names, or garbage).
    pub fn parse(name: &'a str) -> Option<Self> {
        let mut parts = name.split('/');
        let (namespace, check, target) = (parts.next()?, parts.next()?, parts.next()?);
        let well_formed = parts.next().is_none()
            && !namespace.is_empty()
            && !check.is_empty()
            && !target.is_empty();
        well_formed.then_some(AssignedCheck {
            namespace,
            check,
            target,
        })
    }
}

impl fmt::Display for AssignedCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.check, self.target)
    }
}

/// One probed series of an assigned check: `<target>/<path>/<endpoint>`, where the path says
/// how the endpoint is reached (`ClusterIP`, `Endpoint`, `NodePort`, ...). Target names are DNS
/// labels and paths fixed words, so the first two slashes split it; the endpoint may hold
/// slashes and colons (URLs, IPv6, `node/address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesLabel<'a> {
    pub target: &'a str,
    pub path: &'a str,
    pub endpoint: &'a str,
}

impl<'a> SeriesLabel<'a> {
    /// Reads a label back: a non-empty target and path, then the endpoint; `None` otherwise.
    pub fn parse(label: &'a str) -> Option<Self> {
        let mut parts = label.splitn(3, '/');
        let (target, path, endpoint) = (parts.next()?, parts.next()?, parts.next()?);
        (!target.is_empty() && !path.is_empty()).then_some(SeriesLabel {
            target,
            path,
            endpoint,
        })
    }
}

impl fmt::Display for SeriesLabel<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.target, self.path, self.endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_check_names_round_trip_and_reject_other_shapes() {
        let name = AssignedCheck {
            namespace: "shop",
            check: "web-to-api",
            target: "api",
        };
        assert_eq!(name.to_string(), "shop/web-to-api/api");
        assert_eq!(AssignedCheck::parse("shop/web-to-api/api"), Some(name));
        for bad in ["", "a/b", "a//c", "/b/c", "a/b/", "a/b/c/d", "static-check"] {
            assert_eq!(AssignedCheck::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn series_labels_round_trip_with_slashes_in_the_endpoint() {
        for (target, path, endpoint) in [
            ("api", "ClusterIP", "10.96.0.10:80"),
            ("api", "Endpoint", "[fd00::1]:8080"),
            ("edge", "NodePort", "node-a/192.0.2.1:30080"),
            ("ext", "External", "https://example.com/a/b"),
            ("kube", "ApiServer", ""),
        ] {
            let label = SeriesLabel {
                target,
                path,
                endpoint,
            };
            assert_eq!(SeriesLabel::parse(&label.to_string()), Some(label));
        }
        for bad in ["", "api", "api/ClusterIP", "/ClusterIP/x", "api//x"] {
            assert_eq!(SeriesLabel::parse(bad), None, "{bad:?}");
        }
    }
}
