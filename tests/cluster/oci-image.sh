#!/usr/bin/env bash
# Packs a directory into a single-layer OCI image archive that `ctr images import` accepts, with
# no registry and no Docker. Deterministic: the same rootfs gives the same digest, so a warm
# cluster re-imports nothing new.
#
# Usage: oci-image.sh ROOTFS NAME OUT.tar ENTRYPOINT [USER]
#   NAME        fully qualified, e.g. registry.k8s.io/pause:3.10.1 (the name the CRI resolves)
#   ENTRYPOINT  JSON array, e.g. '["/pause"]'
#   USER        numeric uid:gid the image runs as by default (optional)
set -euo pipefail

rootfs="$1" name="$2" out="$3" entrypoint="$4" user="${5:-}"
[[ -d "$rootfs" ]] || { echo "oci-image: no rootfs directory $rootfs" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
blobs="$work/img/blobs/sha256"
mkdir -p "$blobs"

# Writes stdin as a blob and prints "<hex digest> <size>".
blob() {
  cat >"$work/blob"
  local digest size
  digest="$(sha256sum "$work/blob" | cut -d' ' -f1)"
  size="$(stat -c %s "$work/blob")"
  mv "$work/blob" "$blobs/$digest"
  echo "$digest $size"
}

# Uncompressed, so the layer's digest is also its diff_id.
read -r layer layer_size < <(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  -C "$rootfs" -cf - . | blob)
[[ -n "$layer" ]] || { echo "oci-image: cannot pack $rootfs" >&2; exit 1; }

read -r config config_size < <(jq -cn --argjson entrypoint "$entrypoint" --arg user "$user" \
  --arg layer "sha256:$layer" '{
    architecture: "amd64", os: "linux",
    config: ({Entrypoint: $entrypoint, Env: ["PATH=/usr/local/bin:/usr/bin:/bin"]}
             + (if $user == "" then {} else {User: $user} end)),
    rootfs: {type: "layers", diff_ids: [$layer]}
  }' | tr -d '\n' | blob)

read -r manifest manifest_size < <(jq -cn \
  --arg config "sha256:$config" --argjson config_size "$config_size" \
  --arg layer "sha256:$layer" --argjson layer_size "$layer_size" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $config_size},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $layer, size: $layer_size}]
  }' | tr -d '\n' | blob)

jq -cn --arg manifest "sha256:$manifest" --argjson size "$manifest_size" --arg name "$name" '{
  schemaVersion: 2,
  mediaType: "application/vnd.oci.image.index.v1+json",
  manifests: [{
    mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $manifest, size: $size,
    platform: {architecture: "amd64", os: "linux"},
    annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $name}
  }]
}' >"$work/img/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/img/oci-layout"

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/img" \
  -cf "$out.partial" oci-layout index.json blobs
mv "$out.partial" "$out"
echo "$out"
