//! The API server itself rejects bad ConnectivityChecks and ConnectivityPolicies at apply time,
//! with messages that name the field: every case below is sent to a real kube-apiserver
//! (server-side dry run) and must be refused with the field path and the reason in the message.

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use netslo_tests::control_plane::{self, TestNamespace};
use serde_json::{Value, json};

/// A valid check that each case breaks in one way.
fn valid_check() -> Value {
    json!({
        "apiVersion": "netslo.io/v1alpha1",
        "kind": "ConnectivityCheck",
        "metadata": {"name": "case"},
        "spec": {
            "source": {"mesh": {}},
            "targets": [
                {"name": "api", "service": {"name": "api", "port": 8080}, "protocol": "HTTP", "http": {"path": "/healthz"}},
                {"name": "egress", "external": {"host": "example.com", "port": 443}, "protocol": "TCP"},
                {"name": "dns", "dns": {"name": "kubernetes.default.svc.cluster.local."}},
            ],
            "schedule": {"interval": "10s", "timeout": "2s", "jitterPercent": 10},
            "objectives": {
                "window": "28d",
                "availability": {"target": "99.9"},
                "latency": {"threshold": "5ms", "target": "99"},
            },
        },
    })
}

fn valid_policy() -> Value {
    json!({
        "apiVersion": "netslo.io/v1alpha1",
        "kind": "ConnectivityPolicy",
        "metadata": {"name": "case"},
        "spec": {
            "external": {"hosts": ["example.com"], "cidrs": ["192.0.2.0/24"], "ports": [443]},
            "limits": {"maxChecks": 10, "minInterval": "5s"},
        },
    })
}

/// Sets the value at a JSON pointer, creating objects on the way; `Value::Null` removes it.
fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let mut node = doc;
    for part in parent.split('/').skip(1) {
        node = match node {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("array index")],
            other => other
                .as_object_mut()
                .expect("object")
                .entry(part)
                .or_insert_with(|| json!({})),
        };
    }
    match (node, value) {
        (Value::Array(items), Value::Null) => {
            items.remove(key.parse::<usize>().expect("array index"));
        }
        (Value::Array(items), value) => items[key.parse::<usize>().expect("array index")] = value,
        (node, Value::Null) => {
            node.as_object_mut().expect("object").remove(key);
        }
        (node, value) => {
            node.as_object_mut()
                .expect("object")
                .insert(key.to_string(), value);
        }
    }
}

struct Case {
    name: &'static str,
    edits: Vec<(&'static str, Value)>,
    /// Every fragment must appear in the API server's message.
    expect: &'static [&'static str],
}

fn case(
    name: &'static str,
    edits: Vec<(&'static str, Value)>,
    expect: &'static [&'static str],
) -> Case {
    Case {
        name,
        edits,
        expect,
    }
}

/// Target 1 becomes an external URL with the protocol left to its default (the URL's scheme).
fn url_case(name: &'static str, url: &str, expect: &'static [&'static str]) -> Case {
    case(
        name,
        vec![
            ("/spec/targets/1/external", json!({"url": url})),
            ("/spec/targets/1/protocol", Value::Null),
        ],
        expect,
    )
}

/// Target 1's external host.
fn host_case(name: &'static str, host: &str) -> Case {
    case(
        name,
        vec![("/spec/targets/1/external/host", json!(host))],
        &["spec.targets[1].external.host", "must be a host name"],
    )
}

/// Target 0 becomes a pods target with this selector.
fn selector_case(name: &'static str, selector: Value, expect: &'static [&'static str]) -> Case {
    case(
        name,
        vec![(
            "/spec/targets/0",
            json!({"name": "api", "pods": {"selector": selector, "port": 8080}}),
        )],
        expect,
    )
}

/// Target 0's HTTP Host header.
fn host_header_case(name: &'static str, host: &str, expect: &'static [&'static str]) -> Case {
    case(
        name,
        vec![("/spec/targets/0/http/host", json!(host))],
        expect,
    )
}

fn workload(fields: Value) -> Value {
    let mut source = json!({"podLabels": {"app": "web"}, "serviceAccountName": "web"});
    for (k, v) in fields.as_object().expect("object") {
        source[k] = v.clone();
    }
    json!({"workload": source})
}

const URL: &str = "spec.targets[1].external.url";
const NUMERIC_HOST: &[&str] = &[URL, "last label is not numeric"];
const SELECTOR: &str = "spec.targets[0].pods.selector";

/// Inputs the API server refuses in each class the schema can check: host spellings, ports,
/// user info and characters in URLs and hosts; label selectors, label keys and values; Host
/// headers; object names; fields that would otherwise be pruned.
fn more_check_cases() -> Vec<Case> {
    vec![
        // URLs: host spellings that are addresses, zones, non-ASCII, user info, ports
        url_case("URL host in hex", "http://0x7f000001/", NUMERIC_HOST),
        url_case("URL host in upper-case hex", "http://0X7F.1/", NUMERIC_HOST),
        url_case("URL host in short IPv4 form", "http://127.1/", NUMERIC_HOST),
        url_case("URL host as decimal", "http://2130706433/", NUMERIC_HOST),
        url_case("URL host in octal", "http://0177.0.0.1/", NUMERIC_HOST),
        url_case(
            "URL host with a zero-padded byte",
            "https://10.0.0.01:8443/",
            NUMERIC_HOST,
        ),
        url_case(
            "URL host with an IPv6 zone id",
            "http://[fe80::1%25eth0]/",
            &[URL, "no zone id"],
        ),
        url_case(
            "URL host IPv6 not canonical",
            "http://[2001:DB8:0::1]/",
            &[URL, "IPv6 address in canonical form"],
        ),
        url_case(
            "URL host IPv4-mapped IPv6",
            "http://[::ffff:127.0.0.1]/",
            &[URL, "IPv6 address in canonical form"],
        ),
        url_case(
            "URL host IPv4 in brackets",
            "http://[127.0.0.1]/",
            &[URL, "IPv6 address in canonical form"],
        ),
        url_case(
            "URL host non-ASCII",
            "http://ex\u{e4}mple.com/",
            &[URL, "printable ASCII"],
        ),
        url_case(
            "URL host percent-encoded",
            "http://%65xample.com/",
            &[URL, "host must be a host name"],
        ),
        url_case(
            "URL with user name only",
            "http://user@example.com/",
            &[URL, "without user info"],
        ),
        url_case(
            "URL with backslash before @",
            "http://example.com\\@evil.example/",
            &[URL, "backslashes"],
        ),
        url_case(
            "URL port above 65535",
            "https://example.com:65536/",
            &[URL, "port must be a number from 1 to 65535"],
        ),
        url_case(
            "URL port 0",
            "https://example.com:0/",
            &[URL, "port must be a number from 1 to 65535"],
        ),
        url_case(
            "URL port with many digits",
            "https://example.com:000000443/",
            &[URL, "port must be a number from 1 to 65535"],
        ),
        url_case(
            "URL IPv6 host port above 65535",
            "https://[2001:db8::1]:70000/",
            &[URL, "port must be a number from 1 to 65535"],
        ),
        url_case(
            "URL port not numeric",
            "https://example.com:https/",
            &[URL, "optionally followed by :port"],
        ),
        url_case(
            "URL with a space in the path",
            "https://example.com/a b",
            &[URL, "printable ASCII"],
        ),
        url_case(
            "URL with a broken percent-escape",
            "https://example.com/%zz",
            &[URL, "percent-escape"],
        ),
        url_case(
            "URL with upper-case scheme",
            "HTTPS://example.com/",
            &[URL, "http:// or https://"],
        ),
        url_case(
            "URL without host",
            "https:///path",
            &[URL, "host must be a host name"],
        ),
        // External hosts
        host_case("external host in long hex", "0x7f000001"),
        host_case("external host in short IPv4 form", "127.1"),
        host_case("external host in octal", "0177.0.0.1"),
        host_case("external host with IPv6 zone", "fe80::1%eth0"),
        host_case("external host IPv4-mapped IPv6", "::ffff:127.0.0.1"),
        host_case("external host non-ASCII", "ex\u{e4}mple.com"),
        host_case("external host with user info", "user@example.com"),
        host_case("external host with port", "example.com:443"),
        host_case("external host in brackets", "[2001:db8::1]"),
        // Label selectors: operators, values, keys
        selector_case(
            "selector with an unknown operator",
            json!({"matchExpressions": [{"key": "app", "operator": "Equals", "values": ["api"]}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].operator",
                "Unsupported value",
            ],
        ),
        selector_case(
            "selector In without values",
            json!({"matchExpressions": [{"key": "app", "operator": "In"}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].values",
                "need at least one value",
            ],
        ),
        selector_case(
            "selector NotIn with an empty list",
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": []}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].values",
                "need at least one value",
            ],
        ),
        selector_case(
            "selector Exists with values",
            json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["api"]}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].values",
                "take none",
            ],
        ),
        selector_case(
            "selector DoesNotExist with values",
            json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist", "values": ["x"]}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].values",
                "take none",
            ],
        ),
        selector_case(
            "selector key with a space",
            json!({"matchExpressions": [{"key": "my app", "operator": "Exists"}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].key",
                "should match",
            ],
        ),
        selector_case(
            "selector key name longer than 63",
            json!({"matchExpressions": [{"key": "a".repeat(64), "operator": "Exists"}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].key",
                "should match",
            ],
        ),
        selector_case(
            "selector key prefix longer than 253",
            json!({"matchExpressions": [{"key": format!("{}/app", "a".repeat(254)), "operator": "Exists"}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].key",
                "at most 253 characters",
            ],
        ),
        selector_case(
            "selector key with two slashes",
            json!({"matchExpressions": [{"key": "example.com/a/b", "operator": "Exists"}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].key",
                "should match",
            ],
        ),
        selector_case(
            "selector value starting with a dash",
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["-api"]}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].values[0]",
                "should match",
            ],
        ),
        selector_case(
            "selector value longer than 63",
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["a".repeat(64)]}]}),
            &[
                "spec.targets[0].pods.selector.matchExpressions[0].values[0]",
                "Too long",
            ],
        ),
        selector_case(
            "matchLabels key with a space",
            json!({"matchLabels": {"my app": "api"}}),
            &[
                "spec.targets[0].pods.selector.matchLabels",
                "must be a label key",
            ],
        ),
        selector_case(
            "matchLabels key with an upper-case prefix",
            json!({"matchLabels": {"Example.com/app": "api"}}),
            &[
                "spec.targets[0].pods.selector.matchLabels",
                "must be a label key",
            ],
        ),
        selector_case(
            "matchLabels key with a trailing dot in the prefix",
            json!({"matchLabels": {"example.com./app": "api"}}),
            &[
                "spec.targets[0].pods.selector.matchLabels",
                "must be a label key",
            ],
        ),
        selector_case(
            "matchLabels value with a space",
            json!({"matchLabels": {"app": "my api"}}),
            &[SELECTOR, "matchLabels", "should match"],
        ),
        case(
            "localhost podSelector with an unknown operator",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "localhost": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Has"}]}, "port": 9090}}),
            )],
            &[
                "spec.targets[0].localhost.podSelector.matchExpressions[0].operator",
                "Unsupported value",
            ],
        ),
        case(
            "mesh target nodeSelector In without values",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "mesh": {"nodeSelector": {"matchExpressions": [{"key": "zone", "operator": "In"}]}}}),
            )],
            &[
                "spec.targets[0].mesh.nodeSelector.matchExpressions[0].values",
                "need at least one value",
            ],
        ),
        case(
            "mesh source nodeSelector bad matchLabels key",
            vec![(
                "/spec/source/mesh/nodeSelector",
                json!({"matchLabels": {"node role": "edge"}}),
            )],
            &[
                "spec.source.mesh.nodeSelector.matchLabels",
                "must be a label key",
            ],
        ),
        case(
            "mesh source zone not a label value",
            vec![("/spec/source/mesh/zones", json!(["us east 1"]))],
            &["spec.source.mesh.zones[0]", "should match"],
        ),
        case(
            "workload podLabels key not a label key",
            vec![(
                "/spec/source",
                workload(json!({"podLabels": {"app/x/y": "web"}})),
            )],
            &["spec.source.workload.podLabels", "must be a label key"],
        ),
        case(
            "workload podLabels value not a label value",
            vec![(
                "/spec/source",
                workload(json!({"podLabels": {"app": "web app"}})),
            )],
            &["spec.source.workload.podLabels", "should match"],
        ),
        case(
            "workload nodeSelector key not a label key",
            vec![(
                "/spec/source",
                workload(json!({"nodeSelector": {"-os": "linux"}})),
            )],
            &["spec.source.workload.nodeSelector", "must be a label key"],
        ),
        // HTTP Host headers
        host_header_case(
            "Host header with a path",
            "example.com/admin",
            &["spec.targets[0].http.host", "no spaces, paths or user info"],
        ),
        host_header_case(
            "Host header with CR LF",
            "example.com\r\nX-Injected: 1",
            &["spec.targets[0].http.host", "no spaces, paths or user info"],
        ),
        host_header_case(
            "Host header with user info",
            "user@example.com",
            &["spec.targets[0].http.host", "no spaces, paths or user info"],
        ),
        host_header_case(
            "Host header with an empty label",
            "example..com",
            &["spec.targets[0].http.host", "no spaces, paths or user info"],
        ),
        host_header_case(
            "Host header port 0",
            "example.com:0",
            &[
                "spec.targets[0].http.host",
                "port must be a number from 1 to 65535",
            ],
        ),
        host_header_case(
            "Host header port above 65535",
            "example.com:65536",
            &[
                "spec.targets[0].http.host",
                "port must be a number from 1 to 65535",
            ],
        ),
        host_header_case(
            "Host header host in hex",
            "0x7f000001:80",
            &["spec.targets[0].http.host", "last label is not numeric"],
        ),
        host_header_case(
            "Host header IPv4 in brackets",
            "[127.0.0.1]:80",
            &[
                "spec.targets[0].http.host",
                "IPv6 address in canonical form",
            ],
        ),
        host_header_case(
            "Host header with an IPv6 zone",
            "[fe80::1%eth0]",
            &["spec.targets[0].http.host", "no spaces, paths or user info"],
        ),
        case(
            "http path with a backslash",
            vec![("/spec/targets/0/http/path", json!("/a\\b"))],
            &["spec.targets[0].http.path", "should match"],
        ),
        // Object names
        case(
            "Service name with a trailing dot",
            vec![("/spec/targets/0/service/name", json!("api."))],
            &["spec.targets[0].service.name", "should match"],
        ),
        case(
            "Service name upper-case",
            vec![("/spec/targets/0/service/name", json!("Api"))],
            &["spec.targets[0].service.name", "should match"],
        ),
        case(
            "Service namespace with a trailing dot",
            vec![("/spec/targets/0/service/namespace", json!("prod."))],
            &["spec.targets[0].service.namespace", "should match"],
        ),
        case(
            "Service port name without a letter",
            vec![
                ("/spec/targets/0/service/port", Value::Null),
                ("/spec/targets/0/service/portName", json!("8080")),
            ],
            &["spec.targets[0].service.portName", "IANA service name"],
        ),
        case(
            "Service port name with a double dash",
            vec![
                ("/spec/targets/0/service/port", Value::Null),
                ("/spec/targets/0/service/portName", json!("http--alt")),
            ],
            &["spec.targets[0].service.portName", "IANA service name"],
        ),
        case(
            "Ingress name with a trailing dot",
            vec![(
                "/spec/targets/0",
                json!({"name": "web", "ingress": {"name": "web."}}),
            )],
            &["spec.targets[0].ingress.name", "should match"],
        ),
        case(
            "Ingress name upper-case",
            vec![(
                "/spec/targets/0",
                json!({"name": "web", "ingress": {"name": "Web"}}),
            )],
            &["spec.targets[0].ingress.name", "should match"],
        ),
        case(
            "pods namespace upper-case",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "pods": {"namespace": "Prod", "selector": {}, "port": 80}}),
            )],
            &["spec.targets[0].pods.namespace", "should match"],
        ),
        case(
            "ConfigMap name with a trailing dot",
            vec![
                ("/spec/targets/0/protocol", json!("HTTPS")),
                (
                    "/spec/targets/0/tls",
                    json!({"caBundle": {"name": "ca.", "key": "ca.crt"}}),
                ),
            ],
            &["spec.targets[0].tls.caBundle.name", "should match"],
        ),
        case(
            "ConfigMap key starting with ..",
            vec![
                ("/spec/targets/0/protocol", json!("HTTPS")),
                (
                    "/spec/targets/0/tls",
                    json!({"caBundle": {"name": "ca", "key": "..data"}}),
                ),
            ],
            &["spec.targets[0].tls.caBundle.key", "ConfigMap key"],
        ),
        case(
            "serviceAccountName with a trailing dot",
            vec![(
                "/spec/source",
                workload(json!({"serviceAccountName": "web."})),
            )],
            &["spec.source.workload.serviceAccountName", "should match"],
        ),
        case(
            "serviceAccountName upper-case",
            vec![(
                "/spec/source",
                workload(json!({"serviceAccountName": "Web"})),
            )],
            &["spec.source.workload.serviceAccountName", "should match"],
        ),
        case(
            "workload namespace with a trailing dot",
            vec![("/spec/source", workload(json!({"namespace": "prod."})))],
            &["spec.source.workload.namespace", "should match"],
        ),
        // Fields that would be pruned
        case(
            "apiServer with a path field",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "apiServer": {"path": "/livez"}}),
            )],
            &["spec.targets[0].apiServer", "must have at most 0"],
        ),
    ]
}

fn check_cases() -> Vec<Case> {
    let many_targets: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("t{i}"), "external": {"host": "example.com", "port": 443}}))
        .collect();
    let mut cases = vec![
        // Objectives
        case(
            "availability above 99.999",
            vec![("/spec/objectives/availability/target", json!("100"))],
            &["spec.objectives.availability.target", "50 to 99.999"],
        ),
        case(
            "availability below 50",
            vec![("/spec/objectives/availability/target", json!("49.9"))],
            &["spec.objectives.availability.target", "50 to 99.999"],
        ),
        case(
            "availability not a number",
            vec![("/spec/objectives/availability/target", json!("high"))],
            &["spec.objectives.availability.target", "should match"],
        ),
        case(
            "availability as a number",
            vec![("/spec/objectives/availability/target", json!(99.9))],
            &[
                "spec.objectives.availability.target",
                "must be of type string",
            ],
        ),
        case(
            "latency target 100",
            vec![("/spec/objectives/latency/target", json!("100"))],
            &["spec.objectives.latency.target", "50 to 99.999"],
        ),
        case(
            "latency threshold below 50us",
            vec![("/spec/objectives/latency/threshold", json!("10us"))],
            &["spec.objectives.latency.threshold", "between 50us and 60s"],
        ),
        case(
            "latency threshold above 60s",
            vec![("/spec/objectives/latency/threshold", json!("2m"))],
            &["spec.objectives.latency.threshold", "between 50us and 60s"],
        ),
        case(
            "latency threshold malformed",
            vec![("/spec/objectives/latency/threshold", json!("5 ms"))],
            &["spec.objectives.latency.threshold", "should match"],
        ),
        case(
            "no objective at all",
            vec![
                ("/spec/objectives/availability", Value::Null),
                ("/spec/objectives/latency", Value::Null),
            ],
            &["spec.objectives", "at least one objective"],
        ),
        case(
            "window outside the allowed set",
            vec![("/spec/objectives/window", json!("90d"))],
            &["spec.objectives.window", "Unsupported value", "\"28d\""],
        ),
        case(
            "unknown budgeting method",
            vec![("/spec/objectives/budgetingMethod", json!("Weighted"))],
            &["spec.objectives.budgetingMethod", "Unsupported value"],
        ),
        case(
            "timeslice without Timeslices",
            vec![("/spec/objectives/timeslice", json!({"duration": "1m"}))],
            &["spec.objectives.timeslice", "budgetingMethod: Timeslices"],
        ),
        case(
            "custom alerting without windows",
            vec![("/spec/objectives/alerting", json!({"profile": "Custom"}))],
            &[
                "spec.objectives.alerting.burnRateWindows",
                "required with profile Custom",
            ],
        ),
        case(
            "burn-rate short window not shorter",
            vec![(
                "/spec/objectives/alerting",
                json!({"profile": "Custom", "burnRateWindows": [{"severity": "Page", "long": "1h", "short": "2h", "budgetPercent": "2"}]}),
            )],
            &[
                "spec.objectives.alerting.burnRateWindows[0].short",
                "shorter than long",
            ],
        ),
        // Schedule
        case(
            "timeout not below interval",
            vec![("/spec/schedule/timeout", json!("10s"))],
            &["spec.schedule.timeout", "shorter than interval"],
        ),
        case(
            "timeout not below the default interval",
            vec![
                ("/spec/schedule/interval", Value::Null),
                ("/spec/schedule/timeout", json!("15s")),
            ],
            &["spec.schedule.timeout", "shorter than interval"],
        ),
        case(
            "interval below 1s",
            vec![
                ("/spec/schedule/interval", json!("500ms")),
                ("/spec/schedule/timeout", json!("100ms")),
            ],
            &["spec.schedule.interval", "between 1s and 1h"],
        ),
        case(
            "interval above 1h",
            vec![("/spec/schedule/interval", json!("2h"))],
            &["spec.schedule.interval", "between 1s and 1h"],
        ),
        case(
            "interval malformed",
            vec![("/spec/schedule/interval", json!("ten seconds"))],
            &["spec.schedule.interval", "should match"],
        ),
        case(
            "timeout above 30s",
            vec![
                ("/spec/schedule/interval", json!("5m")),
                ("/spec/schedule/timeout", json!("45s")),
            ],
            &["spec.schedule.timeout", "between 1ms and 30s"],
        ),
        case(
            "jitter above 50%",
            vec![("/spec/schedule/jitterPercent", json!(80))],
            &["spec.schedule.jitterPercent", "less than or equal to 50"],
        ),
        // Target lists
        case(
            "empty target list",
            vec![("/spec/targets", json!([]))],
            &["spec.targets", "should have at least 1 items"],
        ),
        case(
            "more than 64 targets",
            vec![("/spec/targets", json!(many_targets))],
            &["spec.targets", "must have at most 64 items"],
        ),
        case(
            "duplicate target names",
            vec![("/spec/targets/1/name", json!("api"))],
            &["spec.targets[1]", "Duplicate value"],
        ),
        case(
            "target name not a DNS label",
            vec![("/spec/targets/0/name", json!("Api_1"))],
            &["spec.targets[0].name", "should match"],
        ),
        // Target kinds and protocols
        case(
            "two target kinds in one entry",
            vec![(
                "/spec/targets/0/external",
                json!({"host": "example.com", "port": 80}),
            )],
            &["spec.targets[0]", "exactly one target kind"],
        ),
        case(
            "no target kind",
            vec![("/spec/targets/0/service", Value::Null)],
            &["spec.targets[0]", "exactly one target kind"],
        ),
        case(
            "DNS protocol on a service target",
            vec![
                ("/spec/targets/0/protocol", json!("DNS")),
                ("/spec/targets/0/http", Value::Null),
            ],
            &[
                "spec.targets[0].protocol",
                "protocol DNS is for dns targets",
            ],
        ),
        case(
            "dns target probed with TCP",
            vec![("/spec/targets/2/protocol", json!("TCP"))],
            &[
                "spec.targets[2].protocol",
                "protocol DNS is for dns targets",
            ],
        ),
        case(
            "http settings on a TCP target",
            vec![("/spec/targets/0/protocol", json!("TCP"))],
            &["spec.targets[0].http", "need protocol HTTP or HTTPS"],
        ),
        case(
            "tls settings on plain HTTP",
            vec![(
                "/spec/targets/0/tls",
                json!({"serverName": "api.example.com"}),
            )],
            &["spec.targets[0].tls", "need protocol HTTPS"],
        ),
        case(
            "ICMP to a Service VIP",
            vec![
                ("/spec/targets/0/protocol", json!("ICMP")),
                ("/spec/targets/0/http", Value::Null),
            ],
            &["spec.targets[0].protocol", "protocol ICMP is for"],
        ),
        case(
            "unknown protocol",
            vec![("/spec/targets/1/protocol", json!("QUIC"))],
            &["spec.targets[1].protocol", "Unsupported value"],
        ),
        case(
            "blockedOutcomes on an Allow target",
            vec![("/spec/targets/1/blockedOutcomes", json!(["Timeout"]))],
            &["spec.targets[1].blockedOutcomes", "expect: Deny"],
        ),
        case(
            "unknown expectation",
            vec![("/spec/targets/1/expect", json!("Maybe"))],
            &["spec.targets[1].expect", "Unsupported value"],
        ),
        case(
            "expected status code out of range",
            vec![(
                "/spec/targets/0/http/expectedStatusCodes",
                json!([200, 700]),
            )],
            &[
                "spec.targets[0].http.expectedStatusCodes[1]",
                "less than or equal to 599",
            ],
        ),
        case(
            "http path without a leading slash",
            vec![("/spec/targets/0/http/path", json!("healthz"))],
            &["spec.targets[0].http.path", "should match"],
        ),
        // Ports, hosts, URLs
        case(
            "port 0",
            vec![("/spec/targets/0/service/port", json!(0))],
            &["spec.targets[0].service.port", "greater than or equal to 1"],
        ),
        case(
            "port above 65535",
            vec![("/spec/targets/1/external/port", json!(70000))],
            &[
                "spec.targets[1].external.port",
                "less than or equal to 65535",
            ],
        ),
        case(
            "service with port and portName",
            vec![("/spec/targets/0/service/portName", json!("http"))],
            &["spec.targets[0].service", "exactly one of port"],
        ),
        case(
            "external host with a space",
            vec![("/spec/targets/1/external/host", json!("exa mple.com"))],
            &["spec.targets[1].external.host", "must be a host name"],
        ),
        case(
            "external host in hex IP spelling",
            vec![("/spec/targets/1/external/host", json!("0x7f.1"))],
            &["spec.targets[1].external.host", "must be a host name"],
        ),
        case(
            "external host as decimal IP",
            vec![("/spec/targets/1/external/host", json!("2130706433"))],
            &["spec.targets[1].external.host", "must be a host name"],
        ),
        case(
            "external host with zero-padded IP",
            vec![("/spec/targets/1/external/host", json!("010.0.0.1"))],
            &["spec.targets[1].external.host", "must be a host name"],
        ),
        case(
            "external host too long",
            vec![(
                "/spec/targets/1/external/host",
                json!(format!("{}.com", "a".repeat(250))),
            )],
            &["spec.targets[1].external.host", "Too long"],
        ),
        case(
            "external host without port",
            vec![("/spec/targets/1/external/port", Value::Null)],
            &[
                "spec.targets[1].external.port",
                "required unless the protocol is ICMP",
            ],
        ),
        case(
            "external URL with ftp scheme",
            vec![
                (
                    "/spec/targets/1/external",
                    json!({"url": "ftp://example.com/x"}),
                ),
                ("/spec/targets/1/protocol", json!("HTTP")),
            ],
            &["spec.targets[1].external.url", "http:// or https://"],
        ),
        case(
            "external URL with user info",
            vec![
                (
                    "/spec/targets/1/external",
                    json!({"url": "https://user:pw@example.com/"}),
                ),
                ("/spec/targets/1/protocol", json!("HTTPS")),
            ],
            &["spec.targets[1].external.url", "without user info"],
        ),
        case(
            "external URL scheme not matching protocol",
            vec![
                (
                    "/spec/targets/1/external",
                    json!({"url": "https://example.com/"}),
                ),
                ("/spec/targets/1/protocol", json!("HTTP")),
            ],
            &["spec.targets[1].external.url", "matching the URL's scheme"],
        ),
        case(
            "external with host and url",
            vec![(
                "/spec/targets/1/external/url",
                json!("https://example.com/"),
            )],
            &["spec.targets[1].external", "exactly one of host"],
        ),
        case(
            "dns server not an IP",
            vec![("/spec/targets/2/dns/server", json!("dns.example.com"))],
            &["spec.targets[2].dns.server", "IP address"],
        ),
        case(
            "dns answers with NXDomain",
            vec![
                ("/spec/targets/2/dns/expectedRcode", json!("NXDomain")),
                ("/spec/targets/2/dns/expectedAnswers", json!(["10.0.0.1"])),
            ],
            &[
                "spec.targets[2].dns.expectedAnswers",
                "expectedRcode NoError",
            ],
        ),
        case(
            "unknown DNS record type",
            vec![("/spec/targets/2/dns/recordType", json!("MX"))],
            &["spec.targets[2].dns.recordType", "Unsupported value"],
        ),
        // Sources
        case(
            "two source kinds",
            vec![("/spec/source/external", json!({"agents": ["office"]}))],
            &["spec.source", "exactly one source kind"],
        ),
        case(
            "no source kind",
            vec![("/spec/source", json!({}))],
            &["spec.source", "exactly one source kind"],
        ),
        case(
            "workload without service account",
            vec![(
                "/spec/source",
                json!({"workload": {"podLabels": {"app": "web"}}}),
            )],
            &["spec.source.workload.serviceAccountName", "Required value"],
        ),
        case(
            "workload with too many replicas",
            vec![(
                "/spec/source",
                json!({"workload": {"podLabels": {"app": "web"}, "serviceAccountName": "web", "replicas": 100}}),
            )],
            &["spec.source.workload.replicas", "less than or equal to 32"],
        ),
    ];
    cases.extend(more_check_cases());
    cases
}

fn policy_cases() -> Vec<Case> {
    vec![
        case(
            "policy CIDR with prefix 33",
            vec![("/spec/external/cidrs", json!(["10.0.0.0/33"]))],
            &["spec.external.cidrs", "CIDR with no host bits"],
        ),
        case(
            "policy CIDR with host bits",
            vec![("/spec/external/cidrs", json!(["10.0.0.1/24"]))],
            &["spec.external.cidrs", "CIDR with no host bits"],
        ),
        case(
            "policy host wildcard in the middle",
            vec![("/spec/external/hosts", json!(["api.*.example.com"]))],
            &["spec.external.hosts[0]", "should match"],
        ),
        case(
            "policy port above 65535",
            vec![("/spec/external/ports", json!([65536]))],
            &["spec.external.ports[0]", "less than or equal to 65535"],
        ),
        case(
            "policy min interval below 1s",
            vec![("/spec/limits/minInterval", json!("100ms"))],
            &["spec.limits.minInterval", "between 1s and 1h"],
        ),
        case(
            "policy host in short IPv4 form",
            vec![("/spec/external/hosts", json!(["127.1"]))],
            &["spec.external.hosts", "last label is not numeric"],
        ),
        case(
            "policy host in hex",
            vec![("/spec/external/hosts", json!(["0x7f000001"]))],
            &["spec.external.hosts", "last label is not numeric"],
        ),
        case(
            "policy host as decimal",
            vec![("/spec/external/hosts", json!(["2130706433"]))],
            &["spec.external.hosts", "last label is not numeric"],
        ),
        case(
            "policy host an IPv4 address",
            vec![("/spec/external/hosts", json!(["10.0.0.1"]))],
            &["spec.external.hosts", "grant IP addresses with cidrs"],
        ),
        case(
            "policy host wildcard over a numeric label",
            vec![("/spec/external/hosts", json!(["*.0x7f"]))],
            &["spec.external.hosts", "last label is not numeric"],
        ),
        case(
            "policy host non-ASCII",
            vec![("/spec/external/hosts", json!(["ex\u{e4}mple.com"]))],
            &["spec.external.hosts[0]", "should match"],
        ),
        case(
            "policy host with port",
            vec![("/spec/external/hosts", json!(["example.com:443"]))],
            &["spec.external.hosts[0]", "should match"],
        ),
        case(
            "policy host with user info",
            vec![("/spec/external/hosts", json!(["user@example.com"]))],
            &["spec.external.hosts[0]", "should match"],
        ),
        case(
            "policy host IPv6 with zone",
            vec![("/spec/external/hosts", json!(["fe80::1%eth0"]))],
            &["spec.external.hosts[0]", "should match"],
        ),
        case(
            "policy namespaceSelector unknown operator",
            vec![(
                "/spec/namespaceSelector",
                json!({"matchExpressions": [{"key": "team", "operator": "in", "values": ["a"]}]}),
            )],
            &[
                "spec.namespaceSelector.matchExpressions[0].operator",
                "Unsupported value",
            ],
        ),
        case(
            "policy namespaceSelector In without values",
            vec![(
                "/spec/namespaceSelector",
                json!({"matchExpressions": [{"key": "team", "operator": "In"}]}),
            )],
            &[
                "spec.namespaceSelector.matchExpressions[0].values",
                "need at least one value",
            ],
        ),
        case(
            "policy namespaceSelector bad matchLabels key",
            vec![(
                "/spec/namespaceSelector",
                json!({"matchLabels": {"team name": "a"}}),
            )],
            &["spec.namespaceSelector.matchLabels", "must be a label key"],
        ),
        case(
            "policy namespaceSelector bad matchLabels value",
            vec![(
                "/spec/namespaceSelector",
                json!({"matchLabels": {"team": "a/b"}}),
            )],
            &["spec.namespaceSelector.matchLabels", "should match"],
        ),
        case(
            "policy targetNamespaces selector Exists with values",
            vec![(
                "/spec/targetNamespaces",
                json!({"selector": {"matchExpressions": [{"key": "team", "operator": "Exists", "values": ["a"]}]}}),
            )],
            &[
                "spec.targetNamespaces.selector.matchExpressions[0].values",
                "take none",
            ],
        ),
        case(
            "policy targetNamespaces selector key with a space",
            vec![(
                "/spec/targetNamespaces",
                json!({"selector": {"matchExpressions": [{"key": "a b", "operator": "Exists"}]}}),
            )],
            &[
                "spec.targetNamespaces.selector.matchExpressions[0].key",
                "should match",
            ],
        ),
        case(
            "policy targetNamespaces name with a trailing dot",
            vec![("/spec/targetNamespaces", json!({"names": ["prod."]}))],
            &["spec.targetNamespaces.names[0]", "should match"],
        ),
        case(
            "policy namespace grant empty",
            vec![("/spec/targetNamespaces", json!({}))],
            &["spec.targetNamespaces", "set selector, names or both"],
        ),
    ]
}

fn api_for(client: &kube::Client, namespace: Option<&str>, kind: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("netslo.io", "v1alpha1", kind));
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

async fn dry_run_create(api: &Api<DynamicObject>, doc: &Value) -> Result<(), String> {
    let object: DynamicObject =
        serde_json::from_value(doc.clone()).map_err(|e| format!("not an object: {e}"))?;
    let params = PostParams {
        dry_run: true,
        field_manager: Some("netslo-tests".into()),
    };
    match api.create(&params, &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => Err(status.message.clone()),
        Err(other) => Err(format!("transport error: {other}")),
    }
}

async fn run_table(api: &Api<DynamicObject>, base: Value, cases: Vec<Case>) -> usize {
    dry_run_create(api, &base)
        .await
        .expect("the base object of the table is valid");
    let mut failures = Vec::new();
    let count = cases.len();
    for case in cases {
        let mut doc = base.clone();
        for (pointer, value) in case.edits {
            set(&mut doc, pointer, value);
        }
        match dry_run_create(api, &doc).await {
            Ok(()) => failures.push(format!("{}: accepted", case.name)),
            Err(message) => {
                let missing: Vec<_> = case
                    .expect
                    .iter()
                    .filter(|f| !message.contains(*f))
                    .collect();
                if !missing.is_empty() {
                    failures.push(format!(
                        "{}: message lacks {missing:?}: {message}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

#[tokio::test]
async fn api_server_rejects_invalid_checks_naming_the_field() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "validation").await.unwrap();
    let api = api_for(&client, Some(&ns.name), "ConnectivityCheck");
    let count = run_table(&api, valid_check(), check_cases()).await;
    assert!(
        count >= 130,
        "the table covers at least 130 invalid inputs, has {count}"
    );
}

#[tokio::test]
async fn api_server_rejects_invalid_policies_naming_the_field() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    run_table(
        &api_for(&client, None, "ConnectivityPolicy"),
        valid_policy(),
        policy_cases(),
    )
    .await;
}

/// Valid documents, one edit set each, that the API server must accept: the defaults the field
/// docs promise (protocol from a URL's scheme, HTTPS for apiServer targets, with http and tls
/// settings beside them), SRV names, and the well-formed spellings next to each refused class.
fn valid_check_edits() -> Vec<(&'static str, Vec<(&'static str, Value)>)> {
    let url = |url: &str| {
        vec![
            ("/spec/targets/1/external", json!({"url": url})),
            ("/spec/targets/1/protocol", Value::Null),
        ]
    };
    vec![
        (
            "URL target without protocol",
            url("https://example.com/health"),
        ),
        (
            "http URL target without protocol",
            url("http://example.com:8080/x?y=1"),
        ),
        (
            "URL target without protocol, with http settings",
            vec![
                (
                    "/spec/targets/1/external",
                    json!({"url": "https://example.com/"}),
                ),
                ("/spec/targets/1/protocol", Value::Null),
                (
                    "/spec/targets/1/http",
                    json!({"expectedStatusCodes": [200], "method": "HEAD"}),
                ),
            ],
        ),
        (
            "https URL target without protocol, with tls settings",
            vec![
                (
                    "/spec/targets/1/external",
                    json!({"url": "https://[2001:db8::1]:8443/x"}),
                ),
                ("/spec/targets/1/protocol", Value::Null),
                (
                    "/spec/targets/1/tls",
                    json!({"serverName": "api.example.com"}),
                ),
            ],
        ),
        (
            "apiServer target with http settings",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "apiServer": {}, "http": {"path": "/livez", "expectedStatusCodes": [200]}}),
            )],
        ),
        (
            "apiServer target with tls settings",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "apiServer": {}, "tls": {"caBundle": {"name": "kube-root-ca.crt", "key": "ca.crt"}}}),
            )],
        ),
        (
            "SRV query of an underscore name",
            vec![(
                "/spec/targets/2/dns",
                json!({"name": "_http._tcp.api.default.svc.cluster.local.", "recordType": "SRV"}),
            )],
        ),
        (
            "TXT-style underscore name without trailing dot",
            vec![(
                "/spec/targets/2/dns/name",
                json!("_acme-challenge.example.com"),
            )],
        ),
        (
            "URL with @ in path and query",
            url("https://example.com/users/@me?by=a@b"),
        ),
        (
            "URL with upper-case host and trailing dot",
            url("https://API.Example.com./x"),
        ),
        (
            "URL with canonical IPv4 and top port",
            url("http://10.0.0.1:65535/"),
        ),
        (
            "URL with percent-escapes",
            url("https://example.com/a%20b?q=%2F"),
        ),
        (
            "URL with brackets and braces in the query",
            url("https://example.com/s?f[a]={b}|c^"),
        ),
        ("URL with an empty port", url("https://example.com:/")),
        (
            "URL of a numeric-leading host name",
            url("https://1e100.net/"),
        ),
        (
            "selectors of every operator, prefixed keys and empty values",
            vec![(
                "/spec/targets/0",
                json!({"name": "api", "pods": {"port": 8080, "selector": {
                    "matchLabels": {"app.kubernetes.io/name": "api", "tier": "", "Version_1.x": "A-1_b.2"},
                    "matchExpressions": [
                        {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                        {"key": "track", "operator": "NotIn", "values": ["canary"]},
                        {"key": "example.com/canary", "operator": "DoesNotExist"},
                        {"key": "x", "operator": "Exists", "values": []},
                    ],
                }}}),
            )],
        ),
        (
            "localhost and mesh selectors",
            vec![
                (
                    "/spec/targets/0",
                    json!({"name": "api", "localhost": {"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}, "port": 9090}}),
                ),
                (
                    "/spec/targets/1",
                    json!({"name": "egress", "mesh": {"nodeSelector": {"matchLabels": {"node-role.kubernetes.io/worker": ""}}}}),
                ),
                (
                    "/spec/source/mesh",
                    json!({"zones": ["us-east-1a"], "nodeSelector": {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1a"]}]}}),
                ),
            ],
        ),
        (
            "workload source with prefixed labels and a dotted service account",
            vec![(
                "/spec/source",
                json!({"workload": {"podLabels": {"app.kubernetes.io/name": "web"}, "serviceAccountName": "ci.runner", "nodeSelector": {"kubernetes.io/os": "linux"}}}),
            )],
        ),
        (
            "Host header with a port",
            vec![("/spec/targets/0/http/host", json!("api.example.com:8443"))],
        ),
        (
            "Host header an IPv6 address with a port",
            vec![("/spec/targets/0/http/host", json!("[2001:db8::1]:8443"))],
        ),
        (
            "Host header a fully qualified name",
            vec![("/spec/targets/0/http/host", json!("api.example.com."))],
        ),
        (
            "Service port by name",
            vec![
                ("/spec/targets/0/service/port", Value::Null),
                ("/spec/targets/0/service/portName", json!("http-alt")),
            ],
        ),
        (
            "Ingress with a dotted name",
            vec![(
                "/spec/targets/0",
                json!({"name": "web", "ingress": {"name": "web.v2", "host": "web.example.com"}, "protocol": "HTTPS", "http": {"path": "/"}}),
            )],
        ),
        (
            "http path with query and percent-escapes",
            vec![("/spec/targets/0/http/path", json!("/health?full=1&x=%2F"))],
        ),
        (
            "external IPv6 host",
            vec![("/spec/targets/1/external/host", json!("2001:db8::1"))],
        ),
    ]
}

fn valid_policy_edits() -> Vec<(&'static str, Vec<(&'static str, Value)>)> {
    vec![
        (
            "selectors of every operator",
            vec![
                (
                    "/spec/namespaceSelector",
                    json!({"matchLabels": {"kubernetes.io/metadata.name": "web"}, "matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}),
                ),
                (
                    "/spec/targetNamespaces",
                    json!({"selector": {"matchExpressions": [{"key": "shared", "operator": "Exists"}]}, "names": ["prod"]}),
                ),
            ],
        ),
        (
            "wildcard and numeric-leading host names",
            vec![(
                "/spec/external/hosts",
                json!(["*.example.com", "1e100.net", "api-2.example.com"]),
            )],
        ),
    ]
}

async fn accepts_all(
    api: &Api<DynamicObject>,
    base: Value,
    docs: Vec<(&str, Vec<(&str, Value)>)>,
) -> usize {
    let mut failures = Vec::new();
    let count = docs.len();
    for (name, edits) in docs {
        let mut doc = base.clone();
        for (pointer, value) in edits {
            set(&mut doc, pointer, value);
        }
        if let Err(message) = dry_run_create(api, &doc).await {
            failures.push(format!("{name}: refused: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} valid documents were refused:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

#[tokio::test]
async fn api_server_accepts_valid_documents() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "valid").await.unwrap();
    let checks = accepts_all(
        &api_for(&client, Some(&ns.name), "ConnectivityCheck"),
        valid_check(),
        valid_check_edits(),
    )
    .await;
    let policies = accepts_all(
        &api_for(&client, None, "ConnectivityPolicy"),
        valid_policy(),
        valid_policy_edits(),
    )
    .await;
    assert!(
        checks >= 20 && policies >= 2,
        "{checks} checks, {policies} policies"
    );
}

/// Fields the types do not have. Server-side apply refuses them, naming them, whatever field
/// validation the client asks for (apply builds a typed object from the schema). A plain
/// create or update without `fieldValidation=Strict` prunes them silently: the schema cannot
/// refuse what it prunes, except under `apiServer`, an object that takes no fields, where any
/// field is refused on every path.
#[tokio::test]
async fn unknown_fields_are_refused_not_dropped() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "unknown").await.unwrap();
    let api = api_for(&client, Some(&ns.name), "ConnectivityCheck");
    let apply = |doc: Value, params: PatchParams| {
        let api = api.clone();
        async move {
            match api.patch("case", &params, &Patch::Apply(&doc)).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(status)) => Err(status.message),
                Err(other) => Err(format!("transport error: {other}")),
            }
        }
    };
    let every_validation = || {
        let base = PatchParams::apply("netslo-tests").dry_run();
        [
            base.clone().validation_strict(),
            base.clone().validation_warn(),
            base.validation_ignore(),
        ]
    };

    for params in every_validation() {
        apply(valid_check(), params)
            .await
            .expect("the valid check applies");
    }

    let mut typo = valid_check();
    set(&mut typo, "/spec/targets/0/service/path", json!("/healthz"));
    for params in every_validation() {
        let message = apply(typo.clone(), params)
            .await
            .expect_err("server-side apply refuses an unknown field");
        assert!(
            message.contains("service.path") && message.contains("not declared in schema"),
            "{message}"
        );
    }
    // A create without strict field validation prunes it: the limit of what a schema can do.
    dry_run_create(&api, &typo)
        .await
        .expect("a plain create prunes the unknown field");

    let mut api_server = valid_check();
    set(
        &mut api_server,
        "/spec/targets/0",
        json!({"name": "api", "apiServer": {"path": "/livez"}}),
    );
    for params in every_validation() {
        let message = apply(api_server.clone(), params)
            .await
            .expect_err("apiServer.path refused by apply");
        assert!(message.contains("spec.targets[0].apiServer"), "{message}");
    }
    let message = dry_run_create(&api, &api_server)
        .await
        .expect_err("apiServer.path refused by create");
    assert!(
        message.contains("spec.targets[0].apiServer") && message.contains("at most 0"),
        "{message}"
    );
}

#[tokio::test]
async fn source_kind_and_workload_namespace_are_immutable() {
    let plane = control_plane::shared(control_plane::API_ONLY).expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "immutable").await.unwrap();
    let api = api_for(&client, Some(&ns.name), "ConnectivityCheck");

    let mut check = valid_check();
    set(
        &mut check,
        "/spec/source",
        json!({"workload": {"namespace": ns.name, "podLabels": {"app": "web"}, "serviceAccountName": "web"}}),
    );
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(check.clone()).unwrap(),
        )
        .await
        .expect("valid workload check is created");
    set(
        &mut check,
        "/metadata/resourceVersion",
        json!(created.metadata.resource_version),
    );

    let updates: Vec<(&str, Value, &[&str])> = vec![
        (
            "source kind changed",
            json!({"mesh": {}}),
            &["spec.source", "source kind is immutable"],
        ),
        (
            "workload namespace changed",
            json!({"workload": {"namespace": "elsewhere", "podLabels": {"app": "web"}, "serviceAccountName": "web"}}),
            &["spec.source.workload.namespace", "namespace is immutable"],
        ),
        (
            "workload namespace removed",
            json!({"workload": {"podLabels": {"app": "web"}, "serviceAccountName": "web"}}),
            &["spec.source.workload.namespace", "namespace is immutable"],
        ),
    ];
    for (name, source, expect) in updates {
        let mut doc = check.clone();
        set(&mut doc, "/spec/source", source);
        let object: DynamicObject = serde_json::from_value(doc).unwrap();
        let err = api
            .replace("case", &PostParams::default(), &object)
            .await
            .expect_err(name);
        let kube::Error::Api(status) = err else {
            panic!("{name}: {err}")
        };
        for fragment in expect {
            assert!(
                status.message.contains(fragment),
                "{name}: message lacks {fragment:?}: {}",
                status.message
            );
        }
    }

    // Everything else may change in place.
    let mut doc = check.clone();
    set(&mut doc, "/spec/source/workload/replicas", json!(3));
    set(&mut doc, "/spec/schedule/interval", json!("30s"));
    api.replace(
        "case",
        &PostParams::default(),
        &serde_json::from_value(doc).unwrap(),
    )
    .await
    .expect("mutable fields change in place");
}
