//! Patterns and schemas shared by the API types, so that the API server refuses at apply what
//! Kubernetes itself would refuse (label keys and values, label selectors, object names) and
//! every refusal names the field.
//!
//! Patterns are OpenAPI `pattern`s (no CEL cost); CEL is used where a pattern cannot say it
//! (map keys, lengths of parts of a string, numeric host spellings), on bounded strings so the
//! API server's cost estimate stays within its budget.

use schemars::{Schema, SchemaGenerator};

/// RFC 1123 label: names of targets, agents, namespaces, Services, containers.
pub(crate) const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// RFC 1123 subdomain as Kubernetes checks object names (ConfigMap, Ingress, ServiceAccount):
/// lower-case labels joined by dots, no trailing dot, at most 253 characters (set beside it).
pub(crate) const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// RFC 1123 host name, optionally fully qualified with a trailing dot.
pub(crate) const HOSTNAME: &str =
    r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.?$";

/// A DNS name to query: like [`HOSTNAME`], but labels may hold underscores, as service names
/// in SRV queries do (`_http._tcp.example.com`).
pub(crate) const DNS_NAME: &str =
    r"^([a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?\.)*[a-z0-9_]([-a-z0-9_]{0,61}[a-z0-9_])?\.?$";

/// A label value: empty, or at most 63 alphanumerics, '-', '_' and '.', starting and ending
/// with an alphanumeric (the length is set beside it).
pub(crate) const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// A label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters.
/// The prefix's length (at most 253) is checked by [`LABEL_KEY_RULE`].
pub(crate) const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";

/// Longest label key: a 253-character prefix, '/', a 63-character name.
pub(crate) const LABEL_KEY_MAX: u32 = 317;

/// What a label key must be, for messages.
pub(crate) const LABEL_KEY_RULE: &str = "must be a label key: an optional DNS subdomain prefix of at most 253 characters and '/', then a name of 1 to 63 alphanumerics, '-', '_' or '.' that starts and ends with an alphanumeric (e.g. app.kubernetes.io/name)";

/// A CEL rule on a map whose keys must be label keys; `self` is the map.
pub(crate) fn label_keys_rule() -> serde_json::Value {
    serde_json::json!({
        "rule": format!("self.all(k, k.matches(r'{LABEL_KEY}') && k.indexOf('/') <= 253)"),
        "message": format!("every key {LABEL_KEY_RULE}"),
    })
}

/// A map of labels (`key: value`), keys and values checked as Kubernetes checks them.
fn label_map(max: u32, min: u32) -> serde_json::Value {
    let mut map = serde_json::json!({
        "type": "object",
        "maxProperties": max,
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": LABEL_VALUE,
        },
        "x-kubernetes-validations": [label_keys_rule()],
    });
    if min > 0 {
        map["minProperties"] = min.into();
    }
    map
}

/// The schema of a metav1 `LabelSelector`, bounded and validated the way Kubernetes validates
/// the selectors of its own objects: operators from the fixed set, values for In and NotIn
/// only, label keys and values well formed. Used with `schema_with`; the Rust type stays
/// `LabelSelector`.
fn label_selector_value() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "matchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels map is equivalent to an element of matchExpressions, whose key field is \"key\", the operator is \"In\", and the values array contains only \"value\". The requirements are ANDed.",
            },
            "matchExpressions": {
                "description": "matchExpressions is a list of label selector requirements. The requirements are ANDed.",
                "type": "array",
                "maxItems": 32,
                "items": {
                    "description": "A label selector requirement is a selector that contains values, a key, and an operator that relates the key and values.",
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "description": "key is the label key that the selector applies to.",
                            "type": "string",
                            "minLength": 1,
                            "maxLength": LABEL_KEY_MAX,
                            "pattern": LABEL_KEY,
                            "x-kubernetes-validations": [
                                {
                                    "rule": "self.indexOf('/') <= 253",
                                    "message": "the prefix of a label key (before '/') must be at most 253 characters",
                                },
                            ],
                        },
                        "operator": {
                            "description": "operator represents a key's relationship to a set of values. Valid operators are In, NotIn, Exists and DoesNotExist.",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"],
                        },
                        "values": {
                            "description": "values is an array of string values. If the operator is In or NotIn, the values array must be non-empty. If the operator is Exists or DoesNotExist, the values array must be empty.",
                            "type": "array",
                            "maxItems": 64,
                            "items": {
                                "type": "string",
                                "maxLength": 63,
                                "pattern": LABEL_VALUE,
                            },
                        },
                    },
                    "x-kubernetes-validations": [
                        {
                            "rule": "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : (!has(self.values) || size(self.values) == 0)",
                            "message": "operators In and NotIn need at least one value; Exists and DoesNotExist take none",
                            "fieldPath": ".values",
                        },
                    ],
                },
            },
        },
    })
}

fn with_label_map(mut selector: serde_json::Value) -> serde_json::Value {
    let description = selector["properties"]["matchLabels"]["description"].take();
    let mut map = label_map(64, 0);
    map["description"] = description;
    selector["properties"]["matchLabels"] = map;
    selector
}

fn schema(value: serde_json::Value) -> Schema {
    match value {
        serde_json::Value::Object(map) => Schema::from(map),
        _ => Schema::default(),
    }
}

/// `schema_with` for a required `LabelSelector` field.
pub(crate) fn label_selector(_: &mut SchemaGenerator) -> Schema {
    schema(with_label_map(label_selector_value()))
}

/// `schema_with` for an `Option<LabelSelector>` field.
pub(crate) fn optional_label_selector(_: &mut SchemaGenerator) -> Schema {
    let mut selector = with_label_map(label_selector_value());
    selector["nullable"] = true.into();
    schema(selector)
}

/// `schema_with` for the labels of the workload's probing pods (1 to 16 labels).
pub(crate) fn pod_labels(_: &mut SchemaGenerator) -> Schema {
    schema(label_map(16, 1))
}

/// `schema_with` for an optional node selector map (`key: value` node labels, at most 16).
pub(crate) fn optional_node_labels(_: &mut SchemaGenerator) -> Schema {
    let mut map = label_map(16, 0);
    map["nullable"] = true.into();
    schema(map)
}
