//! [`CheckKey`]: which ConnectivityCheck, as every map and API of the operator names it.
//!
//! Its string form `<namespace>/<name>` is what crosses boundaries (persisted windows, logs,
//! metric attributes, the agent-side check name of [`crate::assign::agent_check_name`]);
//! inside the operator the two parts stay apart, so nothing formats and re-parses them.

use std::fmt;
use std::str::FromStr;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use netslo_crds::v1alpha1::ConnectivityCheck;

/// A ConnectivityCheck's namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CheckKey {
    pub namespace: String,
    pub name: String,
}

impl CheckKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        CheckKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The key of a check object; `None` for one without a namespace (ConnectivityChecks are
    /// namespaced, so only a malformed object lacks one).
    pub fn of(check: &ConnectivityCheck) -> Option<Self> {
        Some(CheckKey::new(check.namespace()?, check.name_any()))
    }

    /// The reference the controller's queue takes.
    pub fn object_ref(&self) -> ObjectRef<ConnectivityCheck> {
        ObjectRef::new(&self.name).within(&self.namespace)
    }
}

impl fmt::Display for CheckKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a string is not a check key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a check key: expected <namespace>/<name>")]
pub struct ParseCheckKeyError(pub String);

impl ParseCheckKeyError {
    pub fn reason(&self) -> &'static str {
        "InvalidCheckKey"
    }
}

impl FromStr for CheckKey {
    type Err = ParseCheckKeyError;

    /// Parses `<namespace>/<name>`: both parts non-empty, the name without a `/` (neither
    /// Kubernetes name can hold one).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(CheckKey::new(namespace, name))
            }
            _ => Err(ParseCheckKeyError(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_form_round_trips() {
        let key = CheckKey::new("shop", "web-to-api");
        assert_eq!(key.to_string(), "shop/web-to-api");
        assert_eq!("shop/web-to-api".parse::<CheckKey>(), Ok(key));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in ["", "shop", "/web", "shop/", "shop/web/api"] {
            let err = bad.parse::<CheckKey>().unwrap_err();
            assert_eq!(err.reason(), "InvalidCheckKey");
            assert!(err.to_string().contains("<namespace>/<name>"), "{err}");
        }
    }
}
