#!/usr/bin/env bash
# Builds the node's images as OCI archives (nothing is pulled): the pause sandbox, CoreDNS, and
# netslo's own image (netslo-image.sh).
#
# Usage: images.sh NODE_BIN_DIR NETSLO_BIN_DIR OUT_DIR
# Prints one archive path per line.
set -euo pipefail

node_bin="$1" netslo_bin="$2" out="$3"
here="$(cd "$(dirname "$0")" && pwd)"
PAUSE_IMAGE="${PAUSE_IMAGE:-registry.k8s.io/pause:3.10.1}"
COREDNS_IMAGE="${COREDNS_IMAGE:-registry.k8s.io/coredns/coredns:v1.12.1}"
NONROOT=65532

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Static Go binaries: the binary alone is the image.
static_image() {
  local binary="$1" name="$2" archive="$3"; shift 3
  local rootfs="$work/$(basename "$archive" .tar)"
  mkdir -p "$rootfs"
  install -m 0755 "$binary" "$rootfs/$(basename "$binary")"
  bash "$here/oci-image.sh" "$rootfs" "$name" "$archive" "[\"/$(basename "$binary")\"]" "$@"
}

static_image "$node_bin/pause" "$PAUSE_IMAGE" "$out/pause.tar"
static_image "$node_bin/coredns" "$COREDNS_IMAGE" "$out/coredns.tar" "$NONROOT:$NONROOT"

bash "$here/netslo-image.sh" "$netslo_bin" "$out/netslo.tar"
