//! The operator's RBAC in `config/rbac` grants exactly what it needs, checked with the real
//! `kubectl auth can-i` against a real API server: every allowed request, and the dangerous
//! ones it must never be able to make.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed setup step is a failed test

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
    let plane = control_plane::shared().expect("control plane");
    kubectl_ok(
        plane,
        &[
            "apply",
            "-k",
            repo_root().join("config/rbac").to_str().unwrap(),
        ],
    );
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
        &["watch", "pods", "-A"],
        &["watch", "services", "-A"],
        &["watch", "nodes"],
        &["watch", "endpointslices.discovery.k8s.io", "-A"],
        &["watch", "ingresses.networking.k8s.io", "-A"],
        &["list", "deployments.apps", "-A"],
        &["create", "events.events.k8s.io", "-n", "shop"],
        &["patch", "events.events.k8s.io", "-n", "shop"],
        &["create", "tokenreviews.authentication.k8s.io"],
        &["create", "configmaps", "-n", "netslo-system"],
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
        &["update", "connectivitychecks.netslo.io", "-n", "shop"],
        &["delete", "connectivitychecks.netslo.io", "-n", "shop"],
        &["create", "connectivitychecks.netslo.io", "-n", "shop"],
        &["create", "customresourcedefinitions.apiextensions.k8s.io"],
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
