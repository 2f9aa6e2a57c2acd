#!/usr/bin/env bash
# Fetches the Prometheus Operator's CRDs (ServiceMonitor, PodMonitor, ...) at a pinned release
# from the Go module proxy, into Go's module cache, and prints the directory holding them: the
# tests validate config/prometheus against the real schemas with a real API server.
#
# Usage: crds.sh     Prints the CRD directory on its last line.
set -euo pipefail
# The newest release of the root module the proxy serves here (later ones are refused).
PROMETHEUS_OPERATOR_VERSION="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
command -v go >/dev/null || { echo "prometheus-operator: Go is required" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
info="$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")"
dir="$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$info")"
[[ -n "$dir" && -d "$dir/example/prometheus-operator-crd" ]] || {
  echo "prometheus-operator: no CRDs in the module download: $info" >&2
  exit 1
}
echo "$dir/example/prometheus-operator-crd"
