# shellcheck shell=bash
# What the Go build scripts share (tests/control-plane/build.sh, tests/otel/build.sh,
# tests/cluster/build.sh). Each builds pinned upstream projects from the Go module proxy into a
# directory named after the versions (`bin_dir`), so a warm run only checks that the binaries
# (`tools`) are there. Sourced first, with the name log lines carry:
#
#   source "$(dirname "$0")/../go-build-common.sh" NAME || exit 1
#
# then, once `bin_dir` and `tools` are set: `cache_is_warm OUT_DIR` (a cold answer holds the
# cache's lock), `begin_build` (Go, its environment, a temp dir `work`), `install_bin` for each
# binary, and `finish_build`.
set -euo pipefail

build_name="${1:?usage: source go-build-common.sh NAME}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC2034 # for the sourcing script
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"

log() { printf '%s build: %s\n' "$build_name" "$*" >&2; }

# shellcheck disable=SC2154 # bin_dir and tools are the sourcing script's
have_all() {
  local t
  for t in "${tools[@]}"; do [[ -x "$bin_dir/$t" ]] || return 1; done
}

# Whether the cache is warm. When it is not, takes the lock file in OUT_DIR first (held until the
# script exits) and looks again: two runs at once (two test binaries, CI and a developer) never
# build into the same cache together; the second waits, then finds the cache warm. A warm cache
# needs no lock, as binaries only get their final names complete (`install_bin`).
cache_is_warm() {
  local out_dir="$1"
  have_all && return 0
  mkdir -p "$out_dir"
  if command -v flock >/dev/null; then
    exec 9>>"$out_dir/.lock"
    flock -n 9 || { log "waiting for another build into $out_dir"; flock 9; }
  else
    log "flock not found: concurrent builds into $out_dir are not serialized"
  fi
  have_all
}

# Go from PATH and the defaults every build uses: the local toolchain, never a downloaded one;
# wrapper modules whose go.mod/go.sum Go may complete; static binaries (CGO_ENABLED=0) unless a
# build says otherwise. Creates `bin_dir` and a temp dir `work`, removed on exit.
begin_build() {
  command -v go >/dev/null || { log "Go is required (https://go.dev/dl); none found on PATH"; exit 1; }
  export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
  mkdir -p "$bin_dir"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/bin"
}

# install_bin PATH NAME: moves a built binary into `bin_dir` as NAME, through NAME.partial in the
# same directory, so the final name appears only once the file is complete (a move from the temp
# dir may be a copy across file systems).
install_bin() {
  mv -f "$1" "$bin_dir/$2.partial"
  mv -f "$bin_dir/$2.partial" "$bin_dir/$2"
}

finish_build() {
  have_all || { log "build finished but binaries are missing in $bin_dir"; exit 1; }
  log "built into $bin_dir"
}
