#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine (root; cgroup v1 hybrid; no registry, no
# Docker): etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd + runc, the
# bridge CNI plugin, kubelet, kube-proxy (iptables) and CoreDNS, plus an "external" host outside
# the cluster network. Images are built locally and imported; nothing is pulled.
#
#   cluster.sh up       builds (cached) and starts everything; prints the kubeconfig path last
#   cluster.sh down     stops everything and removes what `up` created (idempotent)
#   cluster.sh status   prints the node and system pods
#
# Addresses: the node is 198.51.100.10 (TEST-NET-2, on lo), pods 10.244.0.0/24 on bridge cni0,
# Services 10.96.0.0/16 (kube-dns 10.96.0.10), the external host 198.18.0.10 (benchmarking
# range) in network namespace netslo-ext, named external.netslo.test in cluster DNS.
#
# The node shares the host, so `down` must tell its things from the host's own: pods' cgroups
# are under a parent of this cluster's (/netslo-cluster/kubepods), pods' network namespaces under
# containerd's state dir in $RUN, and `up` records what was there before it started (iptables
# rules, the bridge, pod log entries) for `down` to keep.
set -euo pipefail

NODE_IP=198.51.100.10
NODE_NAME=netslo-node
NODE_ZONE=zone-a
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
EXTERNAL_NS=netslo-ext
EXTERNAL_HOST_IP=198.18.0.1
EXTERNAL_IP=198.18.0.10
ETCD_PORT=12379
# The kubelet's cgroupRoot: pods' cgroups go to /netslo-cluster/kubepods/..., never /kubepods.
CGROUP_PARENT=netslo-cluster
# The CNI network's name (tests/cluster's conflist), which names its entries in libcni's cache.
CNI_NETWORK=netslo
CNI_CACHE=/var/lib/cni/results

repo_root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$repo_root/tests/cluster"
target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
netslo_bin="${NETSLO_BIN_DIR:-$target_dir/debug}"
RUN=/run/netslo-cluster
STATE=/var/lib/netslo-cluster
PKI="$RUN/pki"
KUBECONFIG_ADMIN="$RUN/admin.kubeconfig"
# What the host had before `up` (see host_snapshot); `down` keeps it.
BEFORE="$RUN/before"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Waits up to $1 seconds for a command to succeed.
wait_for() {
  local seconds="$1" what="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${seconds} s (logs: $RUN/logs)"
    sleep 0.5
  done
}

# Starts a process in its own session, logging to $RUN/logs/<name>.log.
start() {
  local name="$1"; shift
  setsid "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/pids/$name"
}

kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# kube-proxy exits when its config file changes under it: rewrite files only on a change.
write_if_changed() {
  local path="$1" content
  content="$(cat)"
  [[ -f "$path" && "$(cat "$path")" == "$content" ]] && return 0
  printf '%s\n' "$content" >"$path"
}

pki() {
  [[ -f "$PKI/ca.crt" ]] && return 0
  mkdir -p "$PKI"
  local key=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${key[@]}" -days 30 -subj "/CN=netslo-cluster-ca" \
    -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  sign() {  # name subject extensions
    printf '%s\n' "$3" >"$PKI/$1.ext"
    openssl req "${key[@]}" -subj "$2" -keyout "$PKI/$1.key" -out "$PKI/$1.csr" 2>/dev/null
    openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
      -days 30 -extfile "$PKI/$1.ext" -out "$PKI/$1.crt" 2>/dev/null
  }
  sign apiserver /CN=kube-apiserver "subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_IP
extendedKeyUsage=serverAuth"
  sign admin "/CN=admin/O=system:masters" "extendedKeyUsage=clientAuth"
  sign kubelet "/CN=system:node:$NODE_NAME/O=system:nodes" "extendedKeyUsage=clientAuth"
  sign kubelet-serving "/CN=$NODE_NAME" "subjectAltName=DNS:$NODE_NAME,IP:$NODE_IP
extendedKeyUsage=serverAuth"
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
  openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
}

kubeconfig() {  # path user
  local ca cert key
  ca="$(base64 -w0 "$PKI/ca.crt")" cert="$(base64 -w0 "$PKI/$2.crt")" key="$(base64 -w0 "$PKI/$2.key")"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: netslo
    cluster: {server: "https://$NODE_IP:6443", certificate-authority-data: "$ca"}
users:
  - name: $2
    user: {client-certificate-data: "$cert", client-key-data: "$key"}
contexts:
  - name: netslo
    context: {cluster: netslo, user: $2}
current-context: netslo
EOF
}

# Records, before `up` changes anything, what `down` must leave: all iptables and ip6tables rules
# (kube-proxy, the kubelet and the CNI plugins add KUBE-*/CNI-* chains to the host's network
# namespace, where nothing else tells them from another cluster's or a tool's), whether the
# bridge and the node address existed, and the entries of the kubelet's fixed log directories.
host_snapshot() {
  [[ -d "$BEFORE" ]] && return 0
  local tmp="$BEFORE.partial" family dir
  rm -rf "$tmp"
  mkdir -p "$tmp"
  for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null || continue
    "$family-save" >"$tmp/$family" 2>/dev/null || rm -f "$tmp/$family"
  done
  ip link show cni0 >/dev/null 2>&1 && : >"$tmp/cni0"
  ip addr show dev lo | grep -q "inet $NODE_IP/" && : >"$tmp/node-address"
  for dir in /var/log/pods /var/log/containers; do
    [[ -d "$dir" ]] && find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort >"$tmp/${dir##*/}"
  done
  mv "$tmp" "$BEFORE"
}

# The cgroup hierarchies (cgroup v1: one per controller, and the unified one in hybrid mode).
cgroup_mounts() { findmnt -rn -t cgroup,cgroup2 -o TARGET | grep '^/sys/fs/cgroup' || true; }

# This cluster's cgroup parent in every hierarchy: the kubelet refuses a cgroupRoot that is
# missing from any, and creates kubepods and the pods' cgroups under it.
cgroup_parent_create() {
  local c mnt f
  if [[ -f /sys/fs/cgroup/cgroup.subtree_control ]]; then
    # cgroup v2: the kubelet requires these controllers in its cgroupRoot, a child of the root.
    for c in cpu cpuset memory pids hugetlb; do
      grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || continue
      echo "+$c" 2>/dev/null >>/sys/fs/cgroup/cgroup.subtree_control || true
    done
  fi
  while read -r mnt; do
    mkdir -p "$mnt/$CGROUP_PARENT"
    # cgroup v1 cpuset: a new cgroup has no CPUs or memory nodes, so no process could join it.
    for f in cpuset.cpus cpuset.mems; do
      [[ -f "$mnt/$f" && -f "$mnt/$CGROUP_PARENT/$f" ]] || continue
      [[ -n "$(cat "$mnt/$CGROUP_PARENT/$f")" ]] || cat "$mnt/$f" >"$mnt/$CGROUP_PARENT/$f"
    done
  done < <(cgroup_mounts)
}

# This cluster's cgroup parent in every hierarchy where it exists.
cgroup_parent_dirs() {
  local mnt
  while read -r mnt; do
    if [[ -d "$mnt/$CGROUP_PARENT" ]]; then echo "$mnt/$CGROUP_PARENT"; fi
  done < <(cgroup_mounts)
}

host_prepare() {
  mkdir -p "$RUN"/{logs,pids,cni,cni-ipam} "$STATE"
  host_snapshot
  cgroup_parent_create
  # Pod-to-pod traffic on the bridge must pass iptables: replies of Service traffic are
  # un-NATed there, and the suite's firewall rules apply there. Both restored by `down`.
  local setting
  for setting in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    [[ -f "$RUN/$setting" ]] || sysctl -n "$setting" >"$RUN/$setting"
    sysctl -qw "$setting=1"
  done
  # Forwarding for the pod bridge and the external host even where the FORWARD policy is DROP
  # (a Docker host): appended, so rules a test inserts still come first. Removed by `down`.
  local dev dir
  for dev in cni0 netslo-ext0; do
    for dir in -i -o; do
      iptables -C FORWARD "$dir" "$dev" -m comment --comment netslo-cluster -j ACCEPT 2>/dev/null ||
        iptables -A FORWARD "$dir" "$dev" -m comment --comment netslo-cluster -j ACCEPT
    done
  done
  # Volume mounts must propagate into containers; PID 1 here is not systemd, which would
  # otherwise make / shared.
  mount --make-rshared /
  ip addr show dev lo | grep -q "inet $NODE_IP/" || ip addr add "$NODE_IP/32" dev lo
  printf 'nameserver %s\n' "$NODE_IP" >"$RUN/resolv.conf"
}

external_host() {
  ip netns list | grep -qw "$EXTERNAL_NS" && return 0
  ip netns add "$EXTERNAL_NS"
  ip link add netslo-ext0 type veth peer name eth0 netns "$EXTERNAL_NS"
  ip addr add "$EXTERNAL_HOST_IP/24" dev netslo-ext0
  ip link set netslo-ext0 up
  ip -n "$EXTERNAL_NS" addr add "$EXTERNAL_IP/24" dev eth0
  ip -n "$EXTERNAL_NS" link set eth0 up
  ip -n "$EXTERNAL_NS" link set lo up
  ip -n "$EXTERNAL_NS" route add default via "$EXTERNAL_HOST_IP"
  # An HTTP and a TCP/UDP echo server outside the cluster network.
  start external ip netns exec "$EXTERNAL_NS" "$netslo_bin/netslo-agent" echo \
    --echo-listen "$EXTERNAL_IP:7" --echo-http-listen "$EXTERNAL_IP:80"
}

control_plane() {
  start etcd "$KUBE_BIN/etcd" --name=netslo --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls="http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster="netslo=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for 30 etcd curl -fsS "http://127.0.0.1:$ETCD_PORT/readyz"

  start kube-apiserver "$KUBE_BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address="$NODE_IP" --secure-port=6443 --advertise-address="$NODE_IP" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/admin.crt" --kubelet-client-key="$PKI/admin.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP
  wait_for 60 kube-apiserver curl -fsS --cacert "$PKI/ca.crt" "https://$NODE_IP:6443/readyz"
  wait_for 30 "namespace default" kubectl get namespace default

  start kube-controller-manager "$KUBE_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_ADMIN" \
    --leader-elect=false --bind-address=127.0.0.1 --root-ca-file="$PKI/ca.crt" \
    --service-account-private-key-file="$PKI/sa.key" --use-service-account-credentials=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key"
  start kube-scheduler "$KUBE_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_ADMIN" \
    --leader-elect=false --bind-address=127.0.0.1
  wait_for 60 kube-controller-manager curl -fsSk https://127.0.0.1:10257/healthz
  wait_for 60 kube-scheduler curl -fsSk https://127.0.0.1:10259/healthz
}

containerd_up() {
  cat >"$RUN/containerd.toml" <<EOF
version = 3
root = "$STATE/containerd"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = 'registry.k8s.io/pause:3.10.1'
[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE, so containers may not lower their OOM score below ours.
  restrict_oom_score_adj = true
  # Pods' network namespaces in our state dir ($RUN/containerd/io.containerd.grpc.v1.cri/netns),
  # not among the host's in /run/netns: cluster.sh down unmounts them with the rest of $RUN.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = '$NODE_BIN/runc'
      Root = '$RUN/runc'
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['/usr/lib/cni']
  conf_dir = '$RUN/cni'
EOF
  cat >"$RUN/cni/10-netslo.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "netslo",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$RUN/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # The shim is found on containerd's PATH.
  start containerd env PATH="$NODE_BIN:$PATH" "$NODE_BIN/containerd" --config "$RUN/containerd.toml"
  wait_for 30 containerd "$NODE_BIN/ctr" --address "$RUN/containerd.sock" version
  for image in "${IMAGES[@]}"; do
    "$NODE_BIN/ctr" --address "$RUN/containerd.sock" -n k8s.io images import --local "$image" >/dev/null
  done
}

kubelet_up() {
  mkdir -p "$STATE/kubelet"
  cat >"$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
healthzBindAddress: 127.0.0.1
containerRuntimeEndpoint: unix://$RUN/containerd.sock
cgroupDriver: cgroupfs
# Pods under this cluster's own cgroup parent (made by host_prepare), which cluster.sh down empties.
cgroupRoot: /$CGROUP_PARENT
cgroupsPerQOS: true
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $RUN/resolv.conf
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  kubeconfig "$RUN/kubelet.kubeconfig" kubelet
  start kubelet "$KUBE_BIN/kubelet" --config="$RUN/kubelet.yaml" --kubeconfig="$RUN/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" --node-ip="$NODE_IP" --hostname-override="$NODE_NAME" \
    --node-labels="topology.kubernetes.io/zone=$NODE_ZONE"
  wait_for 120 "node $NODE_NAME" kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
}

kube_proxy_up() {
  write_if_changed "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $KUBECONFIG_ADMIN}
mode: iptables
clusterCIDR: 10.244.0.0/16
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables: {localhostNodePorts: false}
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  start kube-proxy "$KUBE_BIN/kube-proxy" --config="$RUN/kube-proxy.yaml"
  wait_for 60 kube-proxy curl -fsS http://127.0.0.1:10256/healthz
}

dns_up() {
  sed -e "s|COREDNS_IMAGE|registry.k8s.io/coredns/coredns:v1.12.1|" -e "s|EXTERNAL_IP|$EXTERNAL_IP|" \
    "$here/coredns.yaml" | kubectl apply -f - >/dev/null
  wait_for 120 CoreDNS kubectl -n kube-system rollout status deployment/coredns --timeout=2s
}

up() {
  [[ $EUID -eq 0 ]] || die "run as root (a node mounts, creates network namespaces and iptables rules)"
  local dirs
  mapfile -t dirs < <(bash "$here/build.sh")
  KUBE_BIN="${dirs[0]}" NODE_BIN="${dirs[1]}"
  [[ -x "$netslo_bin/netslo-agent" ]] || die "$netslo_bin/netslo-agent is missing: cargo build -p netslo-operator -p netslo-agent"
  mapfile -t IMAGES < <(bash "$here/images.sh" "$NODE_BIN" "$netslo_bin" "$target_dir/cluster/images")
  if [[ -f "$RUN/pids/kube-proxy" ]] && kill -0 "$(cat "$RUN/pids/kube-proxy")" 2>/dev/null; then
    log "already up"
    echo "$KUBECONFIG_ADMIN"
    return 0
  fi
  down 2>/dev/null
  host_prepare
  pki
  kubeconfig "$KUBECONFIG_ADMIN" admin
  log "control plane"
  control_plane
  log "external host $EXTERNAL_IP"
  external_host
  log "containerd and images"
  containerd_up
  log "kubelet"
  kubelet_up
  log "kube-proxy"
  kube_proxy_up
  log "CoreDNS"
  dns_up
  log "up: export KUBECONFIG=$KUBECONFIG_ADMIN"
  echo "$KUBECONFIG_ADMIN"
}

# Writes the iptables-restore commands (for `--noflush`) that remove what `up` added, from
# `<family>-save` output now (file $2) and before `up` (file $1, or /dev/null if none was taken):
# the KUBE-*/CNI-* chains that were not there before, and the rules that were not there before
# and name a KUBE-*/CNI-* chain (a copy of a rule that was there counts as added). Rules tagged "netslo-cluster" (ours) or "netslo-e2e" (the suite's)
# go in any case. Without a snapshot nothing else can be told from the host's own, and stays.
iptables_added() {
  local have=1
  [[ "$1" == /dev/null ]] && have=0
  awk -v have="$have" '
    FILENAME == ARGV[1] {
      if (/^\*/) t = substr($0, 2)
      else if (/^:/) before_chain[t, substr($1, 2)] = 1
      else if (/^-A /) before_rule[t, $0]++
      next
    }
    /^\*/ { t = substr($0, 2); if (!(t in seen)) { seen[t] = 1; tables[++n] = t }; next }
    /^:/ {
      c = substr($1, 2)
      if (have && $2 == "-" && c ~ /^(KUBE-|CNI-)/ && !((t, c) in before_chain)) {
        added_chain[t, c] = 1; flush[t] = flush[t] "-F " c "\n"; drop[t] = drop[t] "-X " c "\n"
      }
      next
    }
    /^-A / {
      if ((t, $2) in added_chain) next
      if (/netslo-cluster|netslo-e2e/) { del[t] = del[t] "-D" substr($0, 3) "\n"; next }
      if (!have) next
      if (before_rule[t, $0] > 0) { before_rule[t, $0]--; next }
      if (/KUBE-|CNI-/) del[t] = del[t] "-D" substr($0, 3) "\n"
    }
    END {
      for (i = 1; i <= n; i++) {
        t = tables[i]
        if (del[t] flush[t] drop[t] != "") printf "*%s\n%s%s%sCOMMIT\n", t, del[t], flush[t], drop[t]
      }
    }' "$1" "$2"
}

# Removes from iptables and ip6tables what `up` added (see iptables_added): in one transaction
# per table, or, if a line no longer applies (a rule already gone), one line at a time.
iptables_clean() {
  local family before now script line table
  for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null && command -v "$family-restore" >/dev/null || continue
    before="$BEFORE/$family"
    [[ -f "$before" ]] || before=/dev/null
    now="$(mktemp)"
    "$family-save" >"$now" 2>/dev/null || { rm -f "$now"; continue; }
    script="$(iptables_added "$before" "$now")"
    rm -f "$now"
    [[ -n "$script" ]] || continue
    "$family-restore" -w --noflush <<<"$script" 2>/dev/null && continue
    while IFS= read -r line; do
      case "$line" in
        \**) table="${line#\*}" ;;
        COMMIT) ;;
        *) printf '*%s\n%s\nCOMMIT\n' "$table" "$line" | "$family-restore" -w --noflush 2>/dev/null || true ;;
      esac
    done <<<"$script"
  done
}

# libcni caches each pod's network result as <network>-<container id>-<interface>; ours are
# named after this cluster's network. A node brought up by an older cluster.sh kept pods'
# namespaces in /run/netns: those its entries name go too, and no other.
cni_cache_clean() {
  local entry netns
  for entry in "$CNI_CACHE/$CNI_NETWORK"-*; do
    [[ -f "$entry" && "${entry##*/}" =~ ^$CNI_NETWORK-[0-9a-f]{64}- ]] || continue
    netns="$(jq -r '.netns // empty' "$entry" 2>/dev/null || true)"
    case "$netns" in
      /run/netns/cni-* | /var/run/netns/cni-*) ip netns delete "${netns##*/}" 2>/dev/null || true ;;
    esac
    rm -f "$entry"
  done
}

down() {
  local name pid dir entry
  local -a cgroups
  mapfile -t cgroups < <(cgroup_parent_dirs)
  # Pods' processes first (their shims would restart nothing once containerd is gone), then
  # the node and control plane in reverse start order.
  for name in external kube-proxy kubelet; do
    [[ -f "$RUN/pids/$name" ]] && kill "$(cat "$RUN/pids/$name")" 2>/dev/null || true
  done
  pkill -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null || true
  # Only processes in this cluster's cgroups: another runtime's /kubepods is not ours.
  if ((${#cgroups[@]})); then
    for pid in $(find "${cgroups[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u); do
      kill -9 "$pid" 2>/dev/null || true
    done
  fi
  for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [[ -f "$RUN/pids/$name" ]] && kill "$(cat "$RUN/pids/$name")" 2>/dev/null || true
  done
  sleep 1
  for name in external kube-proxy kubelet containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [[ -f "$RUN/pids/$name" ]] && kill -9 "$(cat "$RUN/pids/$name")" 2>/dev/null || true
  done
  pkill -9 -f "containerd-shim-runc-v2 .*-address $RUN/containerd.sock" 2>/dev/null || true
  # Mounts the kubelet and containerd made (volumes, rootfs overlays, sandbox shm, and the pods'
  # network namespaces, which containerd keeps under $RUN).
  findmnt -rn -o TARGET | { grep -E "^($STATE|$RUN)/" || true; } | sort -r | while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done
  # This cluster's cgroups, deepest first, the parent last; killed processes may take a moment
  # to leave them.
  if ((${#cgroups[@]})); then
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      find "${cgroups[@]}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [[ -n "$(cgroup_parent_dirs)" ]] || break
      sleep 0.2
    done
  fi
  cni_cache_clean
  ip netns delete "$EXTERNAL_NS" 2>/dev/null || true
  # cni0 is a common bridge name: removed only if `up` recorded that it made it.
  [[ -d "$BEFORE" && ! -f "$BEFORE/cni0" ]] && ip link delete cni0 2>/dev/null || true
  ip link delete netslo-ext0 2>/dev/null || true
  iptables_clean
  [[ -f "$BEFORE/node-address" ]] || ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
  local setting
  for setting in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables; do
    [[ -f "$RUN/$setting" ]] && sysctl -qw "$setting=$(cat "$RUN/$setting")"
  done
  # The kubelet's log directories are fixed host paths: removed if `up` made them, else only the
  # entries added since.
  for dir in /var/log/pods /var/log/containers; do
    [[ -d "$BEFORE" && -d "$dir" ]] || continue
    if [[ -f "$BEFORE/${dir##*/}" ]]; then
      while IFS= read -r entry; do rm -rf "${dir:?}/$entry"; done < <(find "$dir" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort | comm -23 - "$BEFORE/${dir##*/}")
    else
      rm -rf "$dir"
    fi
  done
  rm -rf "$RUN" "$STATE"
  log "down"
}

status() {
  [[ -f "$KUBECONFIG_ADMIN" ]] || { log "not up"; return 1; }
  KUBE_BIN="$(KUBE_NODE=1 bash "$repo_root/tests/control-plane/build.sh" 2>/dev/null | tail -1)"
  kubectl get nodes -o wide
  kubectl get pods -A -o wide
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
