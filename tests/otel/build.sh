#!/usr/bin/env bash
# Builds the pinned observability tools that netslo's tests and alerting rules use, from the Go
# module proxy, each project in its own throwaway wrapper module so that Go's minimal version
# selection cannot raise one project's dependencies to suit the other:
#
#   otelcol-netslo  a minimal OpenTelemetry Collector distribution (tests/otel/collector/main.go):
#                   otlp receiver (gRPC + HTTP), batch processor, debug and file exporters,
#                   env and file config providers
#   promtool        Prometheus' rule checker and rule unit-test runner (cmd/promtool)
#   prometheus      the Prometheus server (cmd/prometheus), which scrapes netslo's /metrics
#                   and evaluates the shipped rules in the tests; built without the web UI's
#                   assets (the `builtinassets` tag needs files the module does not ship), so
#                   its pages are missing while its HTTP API works
#
# Outputs are cached by version: a warm run only checks that the binaries exist.
#
# Usage: build.sh [OUT_DIR]     (default: ${CARGO_TARGET_DIR:-target}/otel)
# Prints the directory holding the binaries on its last line.
# shellcheck source=tests/go-build-common.sh
source "$(dirname "$0")/../go-build-common.sh" otel || exit 1

# One collector release everywhere: the core modules are v0.<n>, their stable siblings v1.<n-94>
# and contrib v0.<n>; contrib's fileexporter is good up to v0.161.0, which fixes the release.
OTELCOL_VERSION="${OTELCOL_VERSION:-v0.161.0}"
OTELCOL_STABLE_VERSION="${OTELCOL_STABLE_VERSION:-v1.67.0}"
OTELCOL_CONTRIB_VERSION="${OTELCOL_CONTRIB_VERSION:-$OTELCOL_VERSION}"
# Prometheus' Go module is v0.3<minor>.<patch> for Prometheus 3.<minor>.<patch>.
PROMETHEUS_MODULE_VERSION="${PROMETHEUS_MODULE_VERSION:-v0.316.0}"
# promtool registers every service-discovery plugin (cloud SDKs, client-go) for `check config`;
# rule checking and rule tests need none of them, and upstream's remove_all_sd tag drops them.
PROMTOOL_TAGS="${PROMTOOL_TAGS:-netgo,remove_all_sd}"

out_root="${1:-$target_dir/otel}"
# The collector's source is in the repo: its hash joins the versions in the cache key.
collector_src="$repo_root/tests/otel/collector/main.go"
src_hash="$(sha256sum "$collector_src" | cut -c1-12)"
bin_dir="$out_root/otelcol-$OTELCOL_VERSION-$OTELCOL_STABLE_VERSION-contrib-$OTELCOL_CONTRIB_VERSION-$src_hash"
bin_dir="$bin_dir-promtool-$PROMETHEUS_MODULE_VERSION-${PROMTOOL_TAGS//,/-}"
tools=(otelcol-netslo promtool prometheus)

if cache_is_warm "$out_root"; then
  log "cached in $bin_dir"
  echo "$bin_dir"
  exit 0
fi
begin_build

build_collector() {
  [[ -x "$bin_dir/otelcol-netslo" ]] && return 0
  log "building otelcol-netslo (collector $OTELCOL_VERSION / $OTELCOL_STABLE_VERSION, contrib $OTELCOL_CONTRIB_VERSION)"
  local start=$SECONDS m="$work/otelcol"
  mkdir -p "$m"
  cp "$collector_src" "$m/"
  local core="go.opentelemetry.io/collector" contrib="github.com/open-telemetry/opentelemetry-collector-contrib"
  cat >"$m/go.mod" <<MOD
module local.test/otelcol-netslo

go 1.26

require (
	$core/component $OTELCOL_STABLE_VERSION
	$core/confmap $OTELCOL_STABLE_VERSION
	$core/confmap/provider/envprovider $OTELCOL_STABLE_VERSION
	$core/confmap/provider/fileprovider $OTELCOL_STABLE_VERSION
	$core/connector $OTELCOL_VERSION
	$core/exporter $OTELCOL_STABLE_VERSION
	$core/exporter/debugexporter $OTELCOL_VERSION
	$core/extension $OTELCOL_STABLE_VERSION
	$core/otelcol $OTELCOL_VERSION
	$core/processor $OTELCOL_STABLE_VERSION
	$core/processor/batchprocessor $OTELCOL_VERSION
	$core/receiver $OTELCOL_STABLE_VERSION
	$core/receiver/otlpreceiver $OTELCOL_VERSION
	$core/service $OTELCOL_VERSION
	$contrib/exporter/fileexporter $OTELCOL_CONTRIB_VERSION
)
MOD
  (cd "$m" && go mod tidy >/dev/null 2>&1 || (cd "$m" && go mod tidy))
  # Minimal version selection must not have lifted any collector module past the release:
  # mixing releases compiles at best and misbehaves at worst.
  local stray
  stray="$(cd "$m" && go list -m -f '{{.Path}} {{.Version}}' all \
    | awk -v a="$OTELCOL_VERSION" -v b="$OTELCOL_STABLE_VERSION" -v c="$OTELCOL_CONTRIB_VERSION" \
        '($1 ~ /^go\.opentelemetry\.io\/collector/ && $2 != a && $2 != b) ||
         ($1 ~ /^github\.com\/open-telemetry\/opentelemetry-collector-contrib/ && $2 != c)')"
  if [[ -n "$stray" ]]; then
    log "collector modules outside the pinned release:"; printf '  %s\n' $stray >&2; exit 1
  fi
  local ld="-s -w -X main.version=$OTELCOL_VERSION-netslo -X main.coreVersion=$OTELCOL_VERSION"
  ld="$ld -X main.stableVersion=$OTELCOL_STABLE_VERSION -X main.contribVersion=$OTELCOL_CONTRIB_VERSION"
  (cd "$m" && go build -trimpath -ldflags "$ld" -o "$work/bin/otelcol-netslo" .)
  install_bin "$work/bin/otelcol-netslo" otelcol-netslo
  "$bin_dir/otelcol-netslo" --version >&2
  log "otelcol-netslo built in $((SECONDS - start)) s"
}

build_prometheus_tool() {
  local tool="$1"
  [[ -x "$bin_dir/$tool" ]] && return 0
  log "building $tool (github.com/prometheus/prometheus $PROMETHEUS_MODULE_VERSION, tags $PROMTOOL_TAGS)"
  local start=$SECONDS m="$work/$tool"
  mkdir -p "$m"
  local info dir commit version
  info="$(go mod download -json "github.com/prometheus/prometheus@$PROMETHEUS_MODULE_VERSION")"
  dir="$(sed -n 's/.*"Dir": "\(.*\)".*/\1/p' <<<"$info")"
  commit="$(sed -n 's/.*"Hash": "\(.*\)".*/\1/p' <<<"$info" | head -1)"
  version="$(cat "$dir/VERSION" 2>/dev/null || echo "${PROMETHEUS_MODULE_VERSION#v0.}")"
  cat >"$m/go.mod" <<MOD
module local.test/netslo-$tool

go 1.26

tool github.com/prometheus/prometheus/cmd/$tool

require github.com/prometheus/prometheus $PROMETHEUS_MODULE_VERSION
MOD
  (cd "$m" && go mod tidy >/dev/null 2>&1 || (cd "$m" && go mod tidy))
  # Upstream's .promu.yml stamps these; `--version` must show the release.
  local p=github.com/prometheus/common/version
  local ld="-s -w -X $p.Version=$version -X $p.Revision=${commit:-$PROMETHEUS_MODULE_VERSION} -X $p.Branch=HEAD"
  ld="$ld -X $p.BuildUser=netslo -X $p.BuildDate=19700101-00:00:00"
  (cd "$m" && go build -trimpath -tags "$PROMTOOL_TAGS" -ldflags "$ld" -o "$work/bin/$tool" \
    "github.com/prometheus/prometheus/cmd/$tool")
  install_bin "$work/bin/$tool" "$tool"
  "$bin_dir/$tool" --version >&2
  log "$tool built in $((SECONDS - start)) s"
}

build_collector
build_prometheus_tool promtool
build_prometheus_tool prometheus
finish_build
echo "$bin_dir"
