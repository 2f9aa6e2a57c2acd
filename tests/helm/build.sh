#!/usr/bin/env bash
# Builds Helm (helm.sh/helm/v4, cmd/helm) from the Go module proxy: the chart in config/helm is
# linted, rendered and installed with it. Outputs are cached by version: a warm run only checks
# that the binary exists.
#
# Usage: build.sh [OUT_DIR]     (default: ${CARGO_TARGET_DIR:-target}/helm)
# Prints the directory holding the binary on its last line.
# shellcheck source=tests/go-build-common.sh
source "$(dirname "$0")/../go-build-common.sh" helm || exit 1

HELM_VERSION="${HELM_VERSION:-v4.3.2}"

out_root="${1:-$target_dir/helm}"
bin_dir="$out_root/helm-$HELM_VERSION"
tools=(helm)

if cache_is_warm "$out_root"; then
  log "cached in $bin_dir"
  echo "$bin_dir"
  exit 0
fi
begin_build

start=$SECONDS
log "building helm $HELM_VERSION"
m="$work/helm"
mkdir -p "$m"
cat >"$m/go.mod" <<MOD
module local.test/netslo-helm

go 1.26

tool helm.sh/helm/v4/cmd/helm

require helm.sh/helm/v4 $HELM_VERSION
MOD
(cd "$m" && go mod tidy >/dev/null 2>&1 || (cd "$m" && go mod tidy))
# Upstream's Makefile stamps the version; `helm version` must show the release.
ld="-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean"
(cd "$m" && go build -trimpath -ldflags "$ld" -o "$work/bin/helm" helm.sh/helm/v4/cmd/helm)
install_bin "$work/bin/helm" helm
"$bin_dir/helm" version >&2
log "helm built in $((SECONDS - start)) s"
finish_build
echo "$bin_dir"
