#!/usr/bin/env bash
# netslo's container image as an OCI archive: both binaries (the entrypoint is the agent; the
# operator and the e2e test servers, `netslo-agent echo`, run from the same image), the shared
# libraries they link, and a non-root user. Import it with `ctr -n k8s.io images import`, or
# push it with any OCI tool (skopeo, crane, oras).
#
# Usage: netslo-image.sh NETSLO_BIN_DIR OUT.tar      (image name: $NETSLO_IMAGE)
set -euo pipefail

netslo_bin="$1" archive="$2"
here="$(cd "$(dirname "$0")" && pwd)"
NETSLO_IMAGE="${NETSLO_IMAGE:-ghcr.io/netslo/netslo:0.1.0}"
NONROOT=65532
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# netslo: the Rust binaries link glibc dynamically, so the image carries exactly the shared
# objects ldd names (and the loader), plus a passwd entry for the non-root user.
rootfs="$work/netslo"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
for binary in netslo-operator netslo-agent; do
  [[ -x "$netslo_bin/$binary" ]] || { echo "images: $netslo_bin/$binary is missing (cargo build first)" >&2; exit 1; }
  # Debug info is most of a debug build's size and nothing in a pod reads it.
  strip --strip-debug -o "$rootfs/usr/local/bin/$binary" "$netslo_bin/$binary"
  ldd "$netslo_bin/$binary" | grep -oE '/[^ ]+' | while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/:/sbin/nologin\n' \
  "$NONROOT" "$NONROOT" >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:%d:\n' "$NONROOT" >"$rootfs/etc/group"
bash "$here/oci-image.sh" "$rootfs" "$NETSLO_IMAGE" "$archive" \
  '["/usr/local/bin/netslo-agent"]' "$NONROOT:$NONROOT"
