#!/usr/bin/env bash
# End-to-end check of the observability tooling: builds (or reuses) otelcol-netslo and promtool,
# checks and unit-tests the alerting rules, then runs the collector with tests/otel/collector.yaml
# on free loopback ports, posts one OTLP/HTTP JSON metric and waits for it in the file
# exporter's output. Exits non-zero on the first failure.
#
# Usage: check.sh     (needs go, curl and python3; builds into ${CARGO_TARGET_DIR:-target}/otel)
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo_root"
log() { printf 'otel check: %s\n' "$*" >&2; }

bin="$(bash tests/otel/build.sh | tail -n 1)"

"$bin/promtool" check rules config/alerting/netslo-rules.yaml
"$bin/promtool" test rules config/alerting/netslo-rules.test.yaml

run="$(mktemp -d)"
collector_pid=""
cleanup() {
  [[ -n "$collector_pid" ]] && kill "$collector_pid" 2>/dev/null && wait "$collector_pid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
export NETSLO_OTELCOL_GRPC_PORT="$(free_port)" NETSLO_OTELCOL_HTTP_PORT="$(free_port)"
export NETSLO_OTELCOL_OUTPUT="$run/otlp.jsonl"
url="http://127.0.0.1:$NETSLO_OTELCOL_HTTP_PORT/v1/metrics"

"$bin/otelcol-netslo" validate --config tests/otel/collector.yaml
"$bin/otelcol-netslo" --config tests/otel/collector.yaml >"$run/collector.log" 2>&1 &
collector_pid=$!

ready=""
for _ in $(seq 100); do
  # The receiver answers a GET on its POST-only path with 405 once it listens.
  if curl -s -o /dev/null "$url"; then ready=1; break; fi
  kill -0 "$collector_pid" 2>/dev/null || break
  sleep 0.1
done
[[ -n "$ready" ]] || { log "collector did not start"; cat "$run/collector.log" >&2; exit 1; }

now="$(date +%s%N)"
cat >"$run/metric.json" <<JSON
{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"netslo-operator"}}]},
 "scopeMetrics":[{"scope":{"name":"netslo"},"metrics":[{"name":"netslo.slo.events","unit":"{event}",
 "sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"42","startTimeUnixNano":"$now",
 "timeUnixNano":"$now","attributes":[
  {"key":"netslo.check.namespace","value":{"stringValue":"default"}},
  {"key":"netslo.check.name","value":{"stringValue":"otel-check"}},
  {"key":"netslo.objective","value":{"stringValue":"availability"}},
  {"key":"netslo.outcome","value":{"stringValue":"good"}}]}]}}]}]}]}
JSON
status="$(curl -sS -o "$run/response" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
  --data @"$run/metric.json" "$url")"
[[ "$status" == 200 ]] || { log "POST /v1/metrics answered $status: $(cat "$run/response")"; exit 1; }

for _ in $(seq 100); do
  if grep -q '"otel-check"' "$NETSLO_OTELCOL_OUTPUT" 2>/dev/null; then
    log "collector received the metric and wrote it to the file exporter's output"
    exit 0
  fi
  sleep 0.1
done
log "metric not found in $NETSLO_OTELCOL_OUTPUT"
cat "$run/collector.log" >&2
exit 1
