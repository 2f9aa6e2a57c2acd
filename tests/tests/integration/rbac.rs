//! The operator's RBAC in `config/rbac` grants exactly what it needs, checked with the real
//! `kubectl auth can-i` against a real API server: every allowed request, and the dangerous
//! ones it must never be able to make.

use netslo_tests::control_plane::{self, ControlPlane, repo_root};

const OPERATOR: &str = "system:serviceaccount:netslo-system:netslo-operator";
const AGENT: &str = "system:serviceaccount:netslo-system:netslo-agent";

fn can_i(plane: &ControlPlane, user: &str, args: &[&str]) -> bool {
    let out = plane
        .kubectl()
        .unwrap()
        .args(["auth", "can-i", "--as", user])
        .args(args)
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        answer == "yes" || answer == "no",
        "kubectl auth can-i {args:?}: {answer} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer == "yes"
}

/// Applies `config/rbac` once per test binary: two concurrent client-side applies race to
/// create the same objects.
fn install_rbac(plane: &ControlPlane) {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        kubectl_ok(
            plane,
            &[
                "apply",
                "-k",
                repo_root().join("config/rbac").to_str().unwrap(),
            ],
        );
    });
}

fn kubectl_ok(plane: &ControlPlane, args: &[&str]) {
    let out = plane.kubectl().unwrap().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn operator_rbac_is_least_privilege() {
    let plane = control_plane::shared(module_path!()).expect("control plane");
    install_rbac(plane);
    kubectl_ok(plane, &["create", "namespace", "shop"]);

    let allowed: &[&[&str]] = &[
        &["list", "connectivitychecks.netslo.io", "-A"],
        &["watch", "connectivitychecks.netslo.io", "-A"],
        &["patch", "connectivitychecks.netslo.io", "-n", "shop"],
        &[
            "patch",
            "connectivitychecks.netslo.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
        &[
            "update",
            "connectivitychecks.netslo.io",
            "--subresource=finalizers",
            "-n",
            "shop",
        ],
        &["watch", "connectivitypolicies.netslo.io"],
        &[
            "get",
            "customresourcedefinitions.apiextensions.k8s.io/connectivitychecks.netslo.io",
        ],
        &[
            "watch",
            "customresourcedefinitions.apiextensions.k8s.io/connectivitypolicies.netslo.io",
        ],
        &[
            "watch",
            "customresourcedefinitions.apiextensions.k8s.io/connectivityprobes.netslo.io",
        ],
        // One-shot probes: watched everywhere, answered, deleted an hour after.
        &["watch", "connectivityprobes.netslo.io", "-A"],
        &[
            "patch",
            "connectivityprobes.netslo.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
        &["delete", "connectivityprobes.netslo.io", "-n", "shop"],
        &["watch", "connectivitymatrices.netslo.io", "-A"],
        &[
            "patch",
            "connectivitymatrices.netslo.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
        &["watch", "pods", "-A"],
        &["watch", "services", "-A"],
        &["watch", "nodes"],
        &["watch", "endpointslices.discovery.k8s.io", "-A"],
        &["watch", "ingresses.networking.k8s.io", "-A"],
        &["watch", "servicecidrs.networking.k8s.io"],
        &["list", "deployments.apps", "-A"],
        &["create", "events.events.k8s.io", "-n", "shop"],
        &["patch", "events.events.k8s.io", "-n", "shop"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["create", "configmaps", "-n", "netslo-system"],
        // The channel CA, by name, wherever probe pods or sidecars run.
        &["create", "configmaps/netslo-operator-ca", "-n", "shop"],
        &["patch", "configmaps/netslo-operator-ca", "-n", "shop"],
        &["create", "daemonsets.apps", "-n", "netslo-system"],
        // Leader election: its own Lease, by name; create cannot be limited by name.
        &[
            "get",
            "leases.coordination.k8s.io/netslo-operator",
            "-n",
            "netslo-system",
        ],
        &[
            "update",
            "leases.coordination.k8s.io/netslo-operator",
            "-n",
            "netslo-system",
        ],
        &[
            "create",
            "leases.coordination.k8s.io",
            "-n",
            "netslo-system",
        ],
    ];
    let denied: &[&[&str]] = &[
        &["get", "secrets", "-A"],
        &["get", "secrets", "-n", "netslo-system"],
        &["create", "pods", "--subresource=exec", "-n", "shop"],
        &["create", "pods", "-n", "shop"],
        &["create", "deployments.apps", "-n", "shop"],
        &["create", "daemonsets.apps", "-n", "shop"],
        &["create", "configmaps", "-n", "shop"],
        &["patch", "configmaps/app-settings", "-n", "shop"],
        &["get", "configmaps/netslo-operator-ca", "-n", "shop"],
        &["update", "connectivitychecks.netslo.io", "-n", "shop"],
        &["delete", "connectivitychecks.netslo.io", "-n", "shop"],
        &["create", "connectivitychecks.netslo.io", "-n", "shop"],
        // It answers probes; it never asks one, nor changes what was asked.
        &["create", "connectivityprobes.netslo.io", "-n", "shop"],
        &["patch", "connectivityprobes.netslo.io", "-n", "shop"],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
        // Only its own CRDs, and only to read them.
        &["list", "customresourcedefinitions.apiextensions.k8s.io"],
        &[
            "get",
            "customresourcedefinitions.apiextensions.k8s.io/ingresses.example.com",
        ],
        &[
            "patch",
            "customresourcedefinitions.apiextensions.k8s.io/connectivitychecks.netslo.io",
        ],
        &["impersonate", "serviceaccounts", "-A"],
        &["bind", "clusterroles.rbac.authorization.k8s.io"],
        &["escalate", "clusterroles.rbac.authorization.k8s.io"],
        &[
            "create",
            "rolebindings.rbac.authorization.k8s.io",
            "-n",
            "shop",
        ],
        &["*", "*", "-A"],
        // Nobody else's Lease (kube-controller-manager's, a node's heartbeat), nowhere else.
        &[
            "update",
            "leases.coordination.k8s.io/kube-controller-manager",
            "-n",
            "netslo-system",
        ],
        &[
            "get",
            "leases.coordination.k8s.io/other",
            "-n",
            "netslo-system",
        ],
        &[
            "update",
            "leases.coordination.k8s.io",
            "-n",
            "netslo-system",
        ],
        &["list", "leases.coordination.k8s.io", "-n", "netslo-system"],
        &[
            "delete",
            "leases.coordination.k8s.io/netslo-operator",
            "-n",
            "netslo-system",
        ],
        &[
            "patch",
            "leases.coordination.k8s.io/netslo-operator",
            "-n",
            "netslo-system",
        ],
        &[
            "update",
            "leases.coordination.k8s.io/netslo-operator",
            "-n",
            "kube-system",
        ],
        &["create", "leases.coordination.k8s.io", "-n", "kube-system"],
        &[
            "update",
            "leases.coordination.k8s.io",
            "-n",
            "kube-node-lease",
        ],
    ];
    let wrong: Vec<String> = allowed
        .iter()
        .filter(|args| !can_i(plane, OPERATOR, args))
        .map(|args| format!("operator should be allowed: {args:?}"))
        .chain(
            denied
                .iter()
                .filter(|args| can_i(plane, OPERATOR, args))
                .map(|args| format!("operator must be denied: {args:?}")),
        )
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Running probe pods as a workload's identity needs a grant in that namespace.
    kubectl_ok(
        plane,
        &[
            "create",
            "rolebinding",
            "netslo-workload-agents",
            "-n",
            "shop",
            "--clusterrole=netslo-workload-agents",
            "--serviceaccount=netslo-system:netslo-operator",
        ],
    );
    assert!(can_i(
        plane,
        OPERATOR,
        &["create", "deployments.apps", "-n", "shop"]
    ));
    assert!(can_i(
        plane,
        OPERATOR,
        &["delete", "deployments.apps", "-n", "shop"]
    ));
    assert!(
        !can_i(
            plane,
            OPERATOR,
            &["create", "deployments.apps", "-n", "default"]
        ),
        "the grant is per namespace"
    );

    // Agents need no API access at all.
    for args in [
        &["get", "pods", "-n", "netslo-system"][..],
        &["get", "configmaps", "-n", "netslo-system"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["get", "connectivitychecks.netslo.io", "-A"],
        &[
            "patch",
            "connectivitychecks.netslo.io",
            "--subresource=status",
            "-n",
            "shop",
        ],
    ] {
        assert!(!can_i(plane, AGENT, args), "agent must be denied: {args:?}");
    }
}

/// The resource rules `kubectl auth can-i --list` reports for `user` in `namespace`, as
/// `resource [names] verbs` lines, sorted. The rules every authenticated user has (self
/// reviews, discovery URLs) are left out: they are the cluster's, not netslo's.
fn listed_rules(plane: &ControlPlane, user: &str, namespace: &str) -> Vec<String> {
    let out = plane
        .kubectl()
        .unwrap()
        .args(["auth", "can-i", "--list", "--as", user, "-n", namespace])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rules: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with(' '))
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| !cols[0].starts_with("selfsubject"))
        .map(|cols| {
            // resource, [non-resource URLs] (always [] here), [resource names], [verbs...]
            let rest = cols[2..].join(" ");
            format!("{} {rest}", cols[0])
        })
        .collect();
    rules.sort();
    rules
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// The complete list of what each netslo service account may do, per kind of namespace:
/// exactly the rules documented in `config/rbac`, nothing more.
#[test]
fn each_service_account_has_exactly_the_documented_rules() {
    let plane = control_plane::shared(module_path!()).expect("control plane");
    install_rbac(plane);
    kubectl_ok(plane, &["create", "namespace", "tenant-listed"]);
    kubectl_ok(plane, &["create", "namespace", "granted-listed"]);
    kubectl_ok(
        plane,
        &[
            "create",
            "rolebinding",
            "netslo-workload-agents",
            "-n",
            "granted-listed",
            "--clusterrole=netslo-workload-agents",
            "--serviceaccount=netslo-system:netslo-operator",
        ],
    );

    // Everywhere: read what resolution needs, write check status and Events, review tokens.
    let cluster_wide = [
        "configmaps [netslo-operator-ca] [create patch]",
        "connectivitychecks.netslo.io [] [get list watch patch]",
        "connectivitychecks.netslo.io/finalizers [] [update]",
        "connectivitychecks.netslo.io/status [] [patch]",
        "connectivitypolicies.netslo.io [] [get list watch]",
        "connectivitypolicies.netslo.io/status [] [patch]",
        "connectivitymatrices.netslo.io [] [get list watch delete]",
        "connectivitymatrices.netslo.io/status [] [patch]",
        "connectivityprobes.netslo.io [] [get list watch delete]",
        "connectivityprobes.netslo.io/status [] [patch]",
        // kubectl lists a rule's resource names one per line.
        "customresourcedefinitions.apiextensions.k8s.io [connectivitychecks.netslo.io] [get list watch]",
        "customresourcedefinitions.apiextensions.k8s.io [connectivitypolicies.netslo.io] [get list watch]",
        "customresourcedefinitions.apiextensions.k8s.io [connectivityprobes.netslo.io] [get list watch]",
        "customresourcedefinitions.apiextensions.k8s.io [connectivitymatrices.netslo.io] [get list watch]",
        "deployments.apps [] [get list watch]",
        "endpointslices.discovery.k8s.io [] [list watch]",
        "events.events.k8s.io [] [create patch]",
        "ingresses.networking.k8s.io [] [list watch]",
        "namespaces [] [get list watch]",
        "nodes [] [get list watch]",
        "pods [] [get list watch]",
        "servicecidrs.networking.k8s.io [] [list watch]",
        "services [] [get list watch]",
        "tokenreviews.authentication.k8s.io [] [create]",
    ];
    assert_eq!(
        listed_rules(plane, OPERATOR, "tenant-listed"),
        sorted(&cluster_wide),
        "operator in a tenant namespace"
    );

    // Its own namespace adds the CA and window ConfigMaps, the mesh DaemonSet, its Lease.
    let mut own = cluster_wide.to_vec();
    own.extend([
        "configmaps [] [get list watch create patch delete]",
        "daemonsets.apps [] [get list watch create patch]",
        "leases.coordination.k8s.io [] [create]",
        "leases.coordination.k8s.io [netslo-operator] [get update]",
    ]);
    assert_eq!(
        listed_rules(plane, OPERATOR, "netslo-system"),
        sorted(&own),
        "operator in its own namespace"
    );

    // A namespace that granted workload-identity probes adds writing their Deployments, and
    // only there (kubectl merges the verbs of one resource into one line).
    let mut granted: Vec<&str> = cluster_wide
        .iter()
        .copied()
        .filter(|r| !r.starts_with("deployments.apps "))
        .collect();
    granted.push("deployments.apps [] [get list watch create patch update delete]");
    assert_eq!(
        listed_rules(plane, OPERATOR, "granted-listed"),
        sorted(&granted),
        "operator where workload agents are granted"
    );

    // Agents have no permissions at all, anywhere.
    for namespace in ["netslo-system", "tenant-listed", "granted-listed"] {
        assert_eq!(
            listed_rules(plane, AGENT, namespace),
            Vec::<String>::new(),
            "agent in {namespace}"
        );
    }
}
