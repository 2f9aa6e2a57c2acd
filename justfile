# netslo development commands. `just` (or `just --list`) lists them, one line each; the comments
# above each recipe say more.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Show the recipes.
[private]
default:
    @just --list --unsorted

# Install what the tests need on a fresh Debian machine (root): iproute2 and iptables for the
# network-namespace tests, and, built from the Go module proxy, the pinned control plane, the
# OpenTelemetry Collector, promtool and Prometheus the observability tests run, the GitOps
# tools' health evaluators (kstatus, Flux's CEL, Argo CD's Lua VM) the gating test runs, Helm,
# and the Prometheus Operator's CRDs (from its Go module) the monitors are validated against.
[doc("Install what the tests need: iproute2, iptables, the Go-built control plane, Collector, Prometheus, GitOps health evaluators, Helm")]
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=()
    command -v ip >/dev/null || missing+=(iproute2)
    command -v iptables >/dev/null || missing+=(iptables)
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "installing ${missing[*]}" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    bash tests/control-plane/build.sh >/dev/null
    bash tests/otel/build.sh >/dev/null
    bash tests/gitops/build.sh >/dev/null
    bash tests/helm/build.sh >/dev/null
    bash tests/prometheus-operator/crds.sh >/dev/null

# The whole product on one machine (root): a real control plane, three stand-in nodes in two
# zones as network namespaces, the operator and agents, the checks in config/samples/demo,
# two faults and their recoveries; everything is removed on exit (also on Ctrl-C).
# `just demo --keep` leaves it running until Ctrl-C and prints how to use kubectl on it.
[doc("The whole product on this machine: control plane, stand-in nodes, operator, agents, two faults (--keep stays up)")]
demo *args: deps
    cargo build --quiet --locked -p netslo-operator -p netslo-agent
    cargo run --quiet --locked -p netslo-tests --example demo -- {{args}}

# Run every test: unit, integration against a real control plane, and real-network tests
# (network namespaces and iptables: run as root). The integration suite (one binary) runs four
# tests at a time: they mostly wait on real probe windows and the API server, not the CPU.
[doc("Every test: unit, the real control plane, real networks (root)")]
test: deps
    #!/usr/bin/env bash
    set -uo pipefail
    failed=0
    cargo test --workspace --exclude netslo-tests --locked --lib --bins --tests --no-fail-fast || failed=1
    RUST_TEST_THREADS=4 cargo test -p netslo-tests --locked --lib --bins --tests --no-fail-fast || failed=1
    exit $failed

# Formatting and lints, as CI checks them.
[doc("Formatting and clippy, as CI checks them")]
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    # The fuzz targets live outside the workspace: they must still build against it.
    cargo check --quiet --locked --manifest-path fuzz/Cargo.toml --bins

# Regenerate the CRD YAML in config/crd from the Rust types.
[doc("Regenerate config/crd from the Rust types")]
generate:
    cargo run -q --locked -p netslo-crds --bin crdgen > config/crd/netslo.io.yaml

# Fail if the committed CRD YAML differs from what the types generate.
[doc("Fail if config/crd differs from what the types generate")]
check-generated:
    cargo test -q --locked -p netslo-crds --test golden

# Fuzz every parser that reads untrusted bytes (agent result batches, assignments, addresses,
# stored SLO windows, probed servers' HTTP and DNS responses) for a bounded time each. cargo-fuzz passes flags stable rustc accepts
# only with RUSTC_BOOTSTRAP; without a sanitizer (`-s none`) no nightly runtime is needed:
# the code has no `unsafe`, and what the fuzzer looks for is panics and runaway allocation.
[doc("Fuzz every parser of untrusted bytes for SECONDS each")]
fuzz seconds="20":
    #!/usr/bin/env bash
    set -euo pipefail
    command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2 --quiet
    cd fuzz
    export RUSTC_BOOTSTRAP=1
    for target in $(cargo fuzz list); do
        echo "fuzz: $target for {{seconds}} s" >&2
        # Valid inputs to start from (fuzz/seeds), so the fuzzer gets past the parsers.
        corpora=("corpus/$target")
        [[ -d "seeds/$target" ]] && corpora+=("seeds/$target")
        mkdir -p "corpus/$target"
        cargo fuzz run -s none -O "$target" "${corpora[@]}" -- \
            -max_total_time={{seconds}} -seed=1 -rss_limit_mb=2048 -malloc_limit_mb=512 \
            -max_len=65536 -print_final_stats=1
    done

# Benchmarks; each prints `name: value unit` lines beside a reference measured in the same run.
# The last is the fault matrix on real networks (root): per fault, the time to the settled
# verdict, its ratio to the bound (two probe intervals plus 5 s) and the verdict's changes
# while the fault held.
[doc("Benchmarks: `name: value unit` lines beside a reference from the same run")]
bench: deps
    cargo bench --locked -p netslo-agent -p netslo-operator -p netslo-tests
    cargo build --quiet --locked -p netslo-operator -p netslo-agent
    cargo test --quiet --locked -p netslo-tests --test integration -- operator_faults --nocapture --test-threads 3 2>/dev/null | grep -E '^fault_[a-z0-9_]+: '

# A real control plane (etcd, kube-apiserver, kube-controller-manager) with the CRDs
# installed: `just control-plane up` prints the kubeconfig path; `just control-plane down`.
[doc("A real control plane with the CRDs: up prints a kubeconfig, down removes it")]
control-plane action="up": deps
    cargo run -q --locked -p netslo-tests --bin netslo-control-plane -- {{action}}

# Release builds of both binaries.
[doc("Release builds of both binaries")]
build:
    cargo build --release --locked -p netslo-operator -p netslo-agent

# A real single node on this machine (root): etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd + runc, bridge CNI, kubelet, kube-proxy and CoreDNS, built from the
# Go module proxy and Debian (cached), with netslo's image imported. `just cluster up` prints
# the kubeconfig path; `just cluster down` removes everything it created.
[doc("A real single node on this machine (root): up | down | status")]
cluster action="up":
    #!/usr/bin/env bash
    set -euo pipefail
    [[ "{{action}}" == up ]] && cargo build --quiet --locked -p netslo-operator -p netslo-agent
    bash tests/cluster/cluster.sh {{action}}

# The end-to-end suite on a real node (root): installs netslo with `kubectl apply -k
# config/default` and proves every connectivity area with real pods, then installs it again
# with the Helm chart; the node is removed after.
[doc("The end-to-end suite on a real node, installed as users do (root)")]
e2e:
    #!/usr/bin/env bash
    set -euo pipefail
    # What another runtime or CNI on this host would have, which `down` must leave alone.
    bash tests/cluster/down-canaries.sh plant
    finish() {
        local status=$?
        bash tests/cluster/cluster.sh down || status=1
        bash tests/cluster/down-canaries.sh check || status=1
        exit $status
    }
    trap finish EXIT
    cargo build --quiet --locked -p netslo-operator -p netslo-agent
    kubeconfig="$(bash tests/cluster/cluster.sh up | tail -1)"
    NETSLO_E2E_KUBECONFIG="$kubeconfig" \
        cargo test --locked -p netslo-tests --test e2e_cluster -- --ignored --nocapture

# netslo's image (both binaries, release build) as an OCI archive: target/netslo-image.tar.
[doc("netslo's image (both binaries) as an OCI archive: target/netslo-image.tar")]
image:
    cargo build --release --locked -p netslo-operator -p netslo-agent
    bash tests/cluster/netslo-image.sh "${CARGO_TARGET_DIR:-target}/release" "${CARGO_TARGET_DIR:-target}/netslo-image.tar"
