#!/usr/bin/env bash
# Builds the pinned upstream control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl) from the Go module proxy, each project in its own throwaway wrapper
# module so that Go's minimal version selection cannot raise one project's dependencies to suit
# the other. Outputs are cached by version: a warm run only checks that the binaries exist.
#
# Usage: build.sh [OUT_DIR]     (default: ${CARGO_TARGET_DIR:-target}/control-plane)
# With KUBE_NODE=1 it also builds the node binaries (kubelet, kube-proxy) that `just cluster`
# runs, at the same version (a kubelet must never be newer than its API server).
# Prints the directory holding the binaries on its last line.
# shellcheck source=tests/go-build-common.sh
source "$(dirname "$0")/../go-build-common.sh" control-plane || exit 1

KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"

out_root="${1:-$target_dir/control-plane}"
bin_dir="$out_root/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION"
kube_tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
[[ "${KUBE_NODE:-0}" == 1 ]] && kube_tools+=(kubelet kube-proxy)
tools=(etcd "${kube_tools[@]}")

if cache_is_warm "$out_root"; then
  log "cached in $bin_dir"
  echo "$bin_dir"
  exit 0
fi
begin_build

build_etcd() {
  [[ -x "$bin_dir/etcd" ]] && return 0
  log "building etcd $ETCD_VERSION"
  local m="$work/etcd"; mkdir -p "$m"
  cat >"$m/go.mod" <<MOD
module local.test/netslo-etcd

go 1.26

tool go.etcd.io/etcd/server/v3

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
MOD
  (cd "$m" && go mod tidy >/dev/null 2>&1 || go mod tidy
   go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" \
     -o "$work/bin/etcd" go.etcd.io/etcd/server/v3)
  install_bin "$work/bin/etcd" etcd
}

build_kube() {
  local missing=()
  for t in "${kube_tools[@]}"; do [[ -x "$bin_dir/$t" ]] || missing+=("$t"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "building ${missing[*]} $KUBE_VERSION (cold: tens of minutes on 2 cores)"
  local m="$work/kube"; mkdir -p "$m"
  local staging="v0.${KUBE_VERSION#v1.}"
  local info gomod commit godebug minor
  info="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")"
  gomod="$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$info")"
  commit="$(sed -n 's/.*"Hash": "\(.*\)".*/\1/p' <<<"$info" | head -1)"
  godebug="$(grep '^godebug' "$gomod" || true)"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  {
    echo "module local.test/netslo-k8s"
    echo
    echo "go 1.26"
    echo
    [[ -n "$godebug" ]] && { echo "$godebug"; echo; }
    echo "tool ("
    for t in "${missing[@]}"; do echo "  k8s.io/kubernetes/cmd/$t"; done
    echo ")"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    grep -oE 'k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | cut -d' ' -f1 | sort -u | sed "s|.*|  & => & $staging|"
    echo ")"
  } >"$m/go.mod"
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitCommit=${commit:-unknown}"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$m" && go mod tidy >/dev/null 2>&1 || (cd "$m" && go mod tidy))
  local pkgs=()
  for t in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$t"); done
  (cd "$m" && go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$work/bin/" "${pkgs[@]}")
  for t in "${missing[@]}"; do install_bin "$work/bin/$t" "$t"; done
  "$bin_dir/kube-apiserver" --version >&2 2>/dev/null || true
}

build_etcd
build_kube
finish_build
echo "$bin_dir"
