//! Rules the generated schemas must follow for the API server to accept them and keep
//! validation cheap: bounded strings and lists (CEL cost estimation rejects unbounded ones
//! that rules touch), no unsigned integer formats (not valid in Kubernetes schemas), and a
//! description on every field (`kubectl explain` is the API's manual).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

use serde_json::Value;

/// Upstream types netslo embeds as they are (metav1.Condition). Label selectors are not among
/// them: netslo gives them its own bounded, validated schema.
fn upstream(path: &str) -> bool {
    path.contains("conditions")
}

fn walk(path: &str, schema: &Value, problems: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    if let Some(format) = obj.get("format").and_then(Value::as_str)
        && format.starts_with("uint")
    {
        problems.push(format!("{path}: format {format}"));
    }
    let ty = obj.get("type").and_then(Value::as_str);
    if !upstream(path) {
        if ty == Some("string")
            && !obj.contains_key("maxLength")
            && !obj.contains_key("enum")
            && !obj.contains_key("format")
        {
            problems.push(format!("{path}: string without maxLength"));
        }
        if ty == Some("array") && !obj.contains_key("maxItems") {
            problems.push(format!("{path}: list without maxItems"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            let child_path = format!("{path}.{name}");
            if !upstream(&child_path) && child.get("description").is_none() {
                problems.push(format!("{child_path}: no description"));
            }
            walk(&child_path, child, problems);
        }
    }
    if let Some(items) = obj.get("items") {
        walk(&format!("{path}[]"), items, problems);
    }
    if let Some(additional) = obj.get("additionalProperties").filter(|a| a.is_object()) {
        walk(&format!("{path}{{}}"), additional, problems);
    }
}

#[test]
fn schemas_are_bounded_signed_and_documented() {
    let mut problems = Vec::new();
    for crd in netslo_crds::crds() {
        let crd = serde_json::to_value(crd).unwrap();
        let name = crd["metadata"]["name"].as_str().unwrap().to_string();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            walk(
                &format!("{name}:spec"),
                &schema["properties"]["spec"],
                &mut problems,
            );
            walk(
                &format!("{name}:status"),
                &schema["properties"]["status"],
                &mut problems,
            );
        }
    }
    assert!(
        problems.is_empty(),
        "schema problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn names_and_subresources_are_what_users_type() {
    let crds = netslo_crds::crds();
    let check = &crds[0];
    assert_eq!(
        check.metadata.name.as_deref(),
        Some("connectivitychecks.netslo.io")
    );
    assert_eq!(check.spec.scope, "Namespaced");
    assert_eq!(
        check.spec.names.short_names.as_deref(),
        Some(&["conncheck".to_string(), "ncc".to_string()][..])
    );
    assert_eq!(
        check.spec.names.categories.as_deref(),
        Some(&["netslo".to_string()][..])
    );
    let version = &check.spec.versions[0];
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<&str> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Ready", "SLI", "Budget", "Reason", "Verdict", "Age"]
    );
    let policy = &crds[1];
    assert_eq!(policy.spec.scope, "Cluster");
}
