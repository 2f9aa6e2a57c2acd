//! The alerting rules shipped in `config/alerting/` load in Prometheus's own rule checker
//! (`promtool`, built from the Go module proxy by `tests/otel/build.sh`), and their unit tests
//! pass: a healthy check alerts on nothing, a fast burn pages, a slow burn opens a ticket,
//! recovery ends both. The Grafana dashboard in `config/grafana/` has the panels it promises
//! and every query in it parses in the same Prometheus. That the metric and label names both
//! use are what netslo exports is asserted by `otel_export.rs` against a real collector.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn promtool() -> PathBuf {
    let root = netslo_tests::control_plane::repo_root();
    let build = Command::new("bash")
        .arg(root.join("tests/otel/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("tests/otel/build.sh runs");
    assert!(build.status.success(), "tests/otel/build.sh failed");
    let bin_dir = String::from_utf8(build.stdout).unwrap();
    Path::new(bin_dir.lines().last().unwrap().trim()).join("promtool")
}

fn run(promtool: &Path, args: &[&str]) {
    let root = netslo_tests::control_plane::repo_root();
    let out = Command::new(promtool)
        .args(args)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rules_load_and_their_unit_tests_pass() {
    let promtool = promtool();
    run(
        &promtool,
        &["check", "rules", "config/alerting/netslo-rules.yaml"],
    );
    run(
        &promtool,
        &["test", "rules", "config/alerting/netslo-rules.test.yaml"],
    );
}

#[test]
fn the_dashboard_has_its_panels_and_its_queries_parse() {
    let root = netslo_tests::control_plane::repo_root();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/grafana/netslo-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for shown in [
        "Checks by state",
        "Failing places",
        "SLI",
        "Error budget",
        "Burn rate",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(shown)),
            "no panel {shown:?} in {titles:?}"
        );
    }
    // Grafana's template variables, as Prometheus would see them once Grafana expanded them.
    let expand = |query: &str| {
        query
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*")
            .replace("$check", ".*")
    };
    let mut rules = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("a panel without queries: {panel}"));
        assert!(panel["description"].is_string(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let record = format!(
                "dashboard:panel_{}_{}",
                panel["id"],
                target["refId"].as_str().unwrap()
            );
            rules.push(serde_json::json!({"record": record, "expr": expand(expr)}));
        }
    }
    // Variables query `label_values(<selector>, <label>)`: the selector is PromQL.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _)| selector)
                .unwrap_or_else(|| panic!("not label_values(selector, label): {query}"));
            let record = format!("dashboard:variable_{}", variable["name"].as_str().unwrap());
            rules.push(serde_json::json!({"record": record, "expr": expand(selector)}));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.json");
    let groups = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, groups.to_string()).unwrap();
    run(&promtool(), &["check", "rules", file.to_str().unwrap()]);
}
