#!/usr/bin/env bash
# Builds netslo-gitops-health (tests/gitops/health/main.go) from the Go module proxy: the health
# evaluators of the GitOps tools users gate rollouts with, their own code at pinned versions:
#
#   kstatus  sigs.k8s.io/cli-utils (Flux `wait`/`healthChecks`, Helm 4 `--wait`)
#   Flux     github.com/fluxcd/pkg/runtime/cel (Kustomization `healthCheckExprs`, Flux >= 2.5)
#   Argo CD  github.com/yuin/gopher-lua, the Lua VM Argo CD runs health checks on
#
# Outputs are cached by version and source: a warm run only checks that the binary exists.
#
# Usage: build.sh [OUT_DIR]     (default: ${CARGO_TARGET_DIR:-target}/gitops)
# Prints the directory holding the binary on its last line.
# shellcheck source=tests/go-build-common.sh
source "$(dirname "$0")/../go-build-common.sh" gitops || exit 1

CLI_UTILS_VERSION="${CLI_UTILS_VERSION:-v0.37.2}"
# The newest runtime that builds with Go 1.26 (later ones need Go 1.27).
FLUX_RUNTIME_VERSION="${FLUX_RUNTIME_VERSION:-v0.117.0}"
GOPHER_LUA_VERSION="${GOPHER_LUA_VERSION:-v1.1.2}"
# What Argo CD encodes a script's returned table with.
GOPHER_JSON_VERSION="${GOPHER_JSON_VERSION:-v0.0.0-20190114024228-97fed8db8427}"

out_root="${1:-$target_dir/gitops}"
src="$repo_root/tests/gitops/health/main.go"
src_hash="$(sha256sum "$src" | cut -c1-12)"
bin_dir="$out_root/cli-utils-$CLI_UTILS_VERSION-flux-runtime-$FLUX_RUNTIME_VERSION-gopher-lua-$GOPHER_LUA_VERSION-$src_hash"
tools=(netslo-gitops-health)

if cache_is_warm "$out_root"; then
  log "cached in $bin_dir"
  echo "$bin_dir"
  exit 0
fi
begin_build

start=$SECONDS
log "building netslo-gitops-health (cli-utils $CLI_UTILS_VERSION, fluxcd/pkg/runtime $FLUX_RUNTIME_VERSION, gopher-lua $GOPHER_LUA_VERSION)"
m="$work/health"
mkdir -p "$m"
cp "$src" "$m/"
cat >"$m/go.mod" <<MOD
module local.test/netslo-gitops-health

go 1.26

require (
	github.com/fluxcd/pkg/runtime $FLUX_RUNTIME_VERSION
	github.com/yuin/gopher-lua $GOPHER_LUA_VERSION
	layeh.com/gopher-json $GOPHER_JSON_VERSION
	sigs.k8s.io/cli-utils $CLI_UTILS_VERSION
)
MOD
(cd "$m" && go mod tidy >/dev/null 2>&1 || (cd "$m" && go mod tidy))
# Minimal version selection must have kept the pinned evaluators.
for pinned in "sigs.k8s.io/cli-utils $CLI_UTILS_VERSION" "github.com/fluxcd/pkg/runtime $FLUX_RUNTIME_VERSION" \
  "github.com/yuin/gopher-lua $GOPHER_LUA_VERSION"; do
  got="$(cd "$m" && go list -m -f '{{.Path}} {{.Version}}' "${pinned% *}")"
  [[ "$got" == "$pinned" ]] || { log "wanted $pinned, the module graph has $got"; exit 1; }
done
(cd "$m" && go build -trimpath -ldflags "-s -w" -o "$work/bin/netslo-gitops-health" .)
install_bin "$work/bin/netslo-gitops-health" netslo-gitops-health
log "netslo-gitops-health built in $((SECONDS - start)) s"
finish_build
echo "$bin_dir"
