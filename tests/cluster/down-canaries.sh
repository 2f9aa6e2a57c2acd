#!/usr/bin/env bash
# Proves that `cluster.sh down` removes only what `up` made: `plant` (before `up`) gives the
# host what another runtime or CNI on it would have (a kubepods cgroup with a live process,
# KUBE-* and CNI-* chains with rules, a cni-* network namespace); `check` (after `down`) fails
# naming each one that is gone, then removes them all. (Pod log directories are not among
# them: the kubelet itself collects those of pods it does not know.)
set -euo pipefail

# A kubepods cgroup: in the unified hierarchy (cgroup v2), or in the pids one (v1 and hybrid,
# where /sys/fs/cgroup itself is a tmpfs).
if [[ -f /sys/fs/cgroup/cgroup.procs ]]; then
  CGROUP=/sys/fs/cgroup/kubepods/netslo-canary
else
  CGROUP=/sys/fs/cgroup/pids/kubepods/netslo-canary
fi
PIDFILE=/run/netslo-down-canary.pid
# Present if `plant` made the kubepods cgroup (so `remove` takes it away again).
MADE_KUBEPODS=/run/netslo-down-canary.made-kubepods
NETNS=cni-netslo-canary
# table chain
CHAINS=("filter KUBE-NETSLO-CANARY" "nat CNI-NETSLO-CANARY")

plant() {
  [[ -d "${CGROUP%/*}" ]] || touch "$MADE_KUBEPODS"
  mkdir -p "$CGROUP"
  # setsid: the sleeper outlives this script and leaves the caller's process group alone.
  setsid sleep infinity </dev/null >/dev/null 2>&1 &
  echo $! >"$PIDFILE"
  echo "$(cat "$PIDFILE")" >"$CGROUP/cgroup.procs"
  local entry table chain
  for entry in "${CHAINS[@]}"; do
    read -r table chain <<<"$entry"
    iptables -t "$table" -N "$chain"
    iptables -t "$table" -A "$chain" -j RETURN
  done
  ip netns add "$NETNS"
}

check() {
  local -a gone=()
  local pid entry table chain
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null \
    || ! grep -qx "$pid" "$CGROUP/cgroup.procs" 2>/dev/null; then
    gone+=("the cgroup $CGROUP or its process")
  fi
  for entry in "${CHAINS[@]}"; do
    read -r table chain <<<"$entry"
    iptables -t "$table" -S "$chain" 2>/dev/null | grep -qx -- "-A $chain -j RETURN" \
      || gone+=("iptables $table chain $chain or its rule")
  done
  ip netns list | grep -qw "$NETNS" || gone+=("network namespace $NETNS")
  remove
  if ((${#gone[@]})); then
    printf 'down-canaries: cluster.sh down removed what it did not make: %s\n' "${gone[@]}" >&2
    return 1
  fi
  echo "down-canaries: everything cluster.sh down did not make is still there" >&2
}

remove() {
  local pid entry table chain
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    rmdir "$CGROUP" 2>/dev/null && break
    [[ -d "$CGROUP" ]] || break
    sleep 0.2
  done
  [[ -f "$MADE_KUBEPODS" ]] && rmdir "${CGROUP%/*}" 2>/dev/null || true
  rm -f "$MADE_KUBEPODS"
  for entry in "${CHAINS[@]}"; do
    read -r table chain <<<"$entry"
    iptables -t "$table" -F "$chain" 2>/dev/null || true
    iptables -t "$table" -X "$chain" 2>/dev/null || true
  done
  ip netns delete "$NETNS" 2>/dev/null || true
}

case "${1:-}" in
  plant) remove; plant ;;
  check) check ;;
  *) echo "usage: $0 plant|check" >&2; exit 2 ;;
esac
