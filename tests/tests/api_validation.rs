//! The API server itself rejects bad ConnectivityChecks and ConnectivityPolicies at apply time,
//! with messages that name the field: every case below is sent to a real kube-apiserver
//! (server-side dry run) and must be refused with the field path and the reason in the message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
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

fn check_cases() -> Vec<Case> {
    let many_targets: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("t{i}"), "external": {"host": "example.com", "port": 443}}))
        .collect();
    vec![
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
    ]
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
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    let ns = TestNamespace::create(plane, "validation").await.unwrap();
    let api = api_for(&client, Some(&ns.name), "ConnectivityCheck");
    let count = run_table(&api, valid_check(), check_cases()).await;
    assert!(
        count >= 30,
        "the table covers at least 30 invalid inputs, has {count}"
    );
}

#[tokio::test]
async fn api_server_rejects_invalid_policies_naming_the_field() {
    let plane = control_plane::shared().expect("control plane");
    let client = plane.client().await.unwrap();
    run_table(
        &api_for(&client, None, "ConnectivityPolicy"),
        valid_policy(),
        policy_cases(),
    )
    .await;
}

#[tokio::test]
async fn source_kind_and_workload_namespace_are_immutable() {
    let plane = control_plane::shared().expect("control plane");
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
