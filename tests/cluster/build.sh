#!/usr/bin/env bash
# Builds what a real single node needs besides the control plane, pinned and cached by version:
# kubelet and kube-proxy (through the control-plane build, same Kubernetes version), containerd
# 2.x with its runc shim and ctr, runc (cgo, seccomp), CoreDNS and a static pause program. Debian
# supplies the CNI plugins, iptables, conntrack, iproute2 and the tools the scripts use (jq,
# curl, openssl, strip); the Debian runc (1.1.5) is too old
# for containerd 2.3, so runc is built at the version containerd's own CI uses.
#
# Usage: build.sh        Prints two lines: the Kubernetes binary dir, then the node binary dir.
# shellcheck source=tests/go-build-common.sh
source "$(dirname "$0")/../go-build-common.sh" cluster || exit 1

CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.3.4}"
RUNC_VERSION="${RUNC_VERSION:-v1.4.3}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.12.1}"

out_root="$target_dir/cluster"
bin_dir="$out_root/containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION-coredns-$COREDNS_VERSION"
tools=(containerd containerd-shim-runc-v2 ctr runc coredns pause)

debian_packages() {
  local missing=()
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v ip >/dev/null || missing+=(iproute2)
  [[ -f /usr/include/seccomp.h ]] || missing+=(libseccomp-dev)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v jq >/dev/null || missing+=(jq)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v strip >/dev/null || missing+=(binutils)
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# `go install module@version` builds in module mode from the proxy, pinned by go.sum there; each
# project resolves its own dependency graph, so none can raise another's.
go_install() {
  local name="$1" pkg="$2"; shift 2
  [[ -x "$bin_dir/$name" ]] && return 0
  log "building $name ($pkg)"
  GOBIN="$work/bin" go install -trimpath "$@" "$pkg"
  install_bin "$work/bin/$name" "$name"
}

build_pause() {
  [[ -x "$bin_dir/pause" ]] && return 0
  log "building pause"
  local m="$work/pause"; mkdir -p "$m"
  cat >"$m/go.mod" <<'MOD'
module local.test/netslo-pause

go 1.26
MOD
  # The sandbox's first process: holds the pod's namespaces, reaps orphans, exits on a signal.
  cat >"$m/main.go" <<'GO'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
GO
  (cd "$m" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/bin/pause" .)
  install_bin "$work/bin/pause" pause
}

debian_packages
kube_dir="$(KUBE_NODE=1 bash "$repo_root/tests/control-plane/build.sh" | tail -1)"

if cache_is_warm "$out_root"; then
  log "cached in $bin_dir"
else
  begin_build
  # `go install module@version` builds each project with its own published go.mod and go.sum:
  # no -mod override there (cgo is chosen per binary below).
  export GOFLAGS=
  containerd_ld="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
  for t in containerd containerd-shim-runc-v2 ctr; do
    CGO_ENABLED=0 go_install "$t" "github.com/containerd/containerd/v2/cmd/$t@$CONTAINERD_VERSION" \
      -tags no_btrfs -ldflags "$containerd_ld"
  done
  # runc's nsenter is C, and seccomp filters come from libseccomp.
  CGO_ENABLED=1 go_install runc "github.com/opencontainers/runc@$RUNC_VERSION" \
    -tags seccomp -ldflags "-s -w -X main.version=${RUNC_VERSION#v}"
  CGO_ENABLED=0 go_install coredns "github.com/coredns/coredns@$COREDNS_VERSION" -ldflags "-s -w"
  build_pause
  finish_build
fi
echo "$kube_dir"
echo "$bin_dir"
