#!/usr/bin/env bash
# Build (once) what a real local node needs beside the control plane of
# build-control-plane.sh: kubelet, kube-scheduler and kube-proxy v1.20.2 from the same
# Debian `kubernetes` source package, and a pause image (a static musl C program in a
# FROM-scratch image, saved as an OCI archive). Installs the node's runtime from Debian:
# containerd, runc, the CNI plugins, conntrack, iptables, ipset, and podman + musl-tools
# for the pause image.
#
# Facts behind every step: shared/local-node.md.
#
# Result (outside the repo, keyed by version):
#   ${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}/node/v1.20.2/
#       kubelet  kube-scheduler  kube-proxy  pause.oci.tar  .stamp  build.log
# The last line on stdout is that directory; everything else goes to stderr. A second run
# only checks the cache and the packages (about a second). Safe to re-run after an
# interrupted build (binaries and stamp are installed atomically, the stamp last).
#
# Environment:
#   DCR_CACHE_DIR          cache root (default: $HOME/.cache/dcr-operator)
#   DCR_KEEP_BUILD_DIR=1   keep the unpacked source and Go build cache after success
set -euo pipefail

SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/kubernetes-source.sh
source "$SCRIPTS/lib/kubernetes-source.sh"
PAUSE_SRC="$SCRIPTS/../node/pause.c"
PAUSE_IMAGE=localhost/dcr-operator/pause:1
DEB_PACKAGES=(golang-go golang-github-modern-go-reflect2-dev containerd runc containernetworking-plugins
    conntrack iptables ipset musl-tools podman)
COMMANDS=(kubelet kube-scheduler kube-proxy)

CACHE_ROOT="${DCR_CACHE_DIR:-${HOME:-/root}/.cache/dcr-operator}"
NODE_ROOT="$CACHE_ROOT/node"
BIN_DIR="$NODE_ROOT/$K8S_VERSION"
STAMP="$BIN_DIR/.stamp"
WORK="$NODE_ROOT/build-$K8S_VERSION"
LOG="$BIN_DIR/build.log"
START=$(date +%s)

say() { echo "build-node: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

pause_sum() { sha256sum "$PAUSE_SRC" | cut -d' ' -f1; }

packages_ok() {
    local p
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || return 1
    done
}

cache_ok() {
    local c
    [[ -f "$STAMP" && -f "$BIN_DIR/pause.oci.tar" ]] || return 1
    for c in "${COMMANDS[@]}"; do [[ -x "$BIN_DIR/$c" ]] || return 1; done
    grep -qx "version=$K8S_VERSION" "$STAMP" && grep -qx "pause=$(pause_sum)" "$STAMP"
}

if cache_ok && packages_ok; then
    say "cached: $BIN_DIR ($(sed -n 's/^built=//p' "$STAMP"))"
    echo "$BIN_DIR"
    exit 0
fi

if [[ ! -f /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "this script needs a Debian-like system (apt-get, Debian bookworm's 'kubernetes' source package). Run the in-cluster tests against your own cluster instead: DCR_TEST_KUBECONFIG=/path/to/kubeconfig"
fi
[[ $(id -u) -eq 0 ]] || die "this script installs Debian packages and runs containers: run it as root"
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is missing"
[[ -f "$PAUSE_SRC" ]] || die "$PAUSE_SRC missing"

mkdir -p "$NODE_ROOT" "$BIN_DIR"
exec 9>"$NODE_ROOT/.lock"
if ! flock -n 9; then
    say "another build holds $NODE_ROOT/.lock; waiting for it"
    flock 9
fi

: >"$LOG"
step() {
    say "[$(($(date +%s) - START))s] $*"
    echo "=== $(date -Is) $*" >>"$LOG"
}
run() {
    if ! "$@" >>"$LOG" 2>&1; then
        say "FAILED: $*"
        tail -n 40 "$LOG" >&2
        die "see $LOG"
    fi
}

# --- packages (idempotent; needed at run time too) -------------------------------------
if ! packages_ok; then
    step "apt-get update && apt-get install ${DEB_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    run apt-get -o DPkg::Lock::Timeout=600 update
    run apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${DEB_PACKAGES[@]}"
fi
if cache_ok; then # built meanwhile by the lock holder, or only packages were missing
    echo "$BIN_DIR"
    exit 0
fi
say "building ${COMMANDS[*]} $K8S_VERSION and the pause image (3-8 min, ~1.3 GB RAM); log: $LOG"

# --- kubelet, kube-scheduler, kube-proxy -------------------------------------------------
binaries_ok() {
    local c
    for c in "${COMMANDS[@]}"; do [[ -x "$BIN_DIR/$c" ]] || return 1; done
    grep -qx "version=$K8S_VERSION" "$BIN_DIR/.binaries" 2>/dev/null
}
if ! binaries_ok; then
    k8s_unpack_source "$WORK"
    k8s_go_env "$WORK"
    # No `make gen_openapi`: none of these three imports pkg/generated/openapi.
    mkdir -p "$WORK/out"
    for cmd in "${COMMANDS[@]}"; do
        step "go build ./cmd/$cmd ($(go version | awk '{print $3}'))"
        (cd "$K8S_PKG_DIR" && run go build -ldflags "$K8S_LDFLAGS" -o "$WORK/out/$cmd" "./cmd/$cmd")
        v=$("$WORK/out/$cmd" --version 2>&1 | tail -n1)
        [[ "$v" == *"$K8S_VERSION"* ]] || die "$cmd --version says '$v', expected $K8S_VERSION"
    done
    rm -f "$STAMP" "$BIN_DIR/.binaries"
    for cmd in "${COMMANDS[@]}"; do
        cp "$WORK/out/$cmd" "$BIN_DIR/.$cmd.tmp"
        mv -f "$BIN_DIR/.$cmd.tmp" "$BIN_DIR/$cmd"
    done
    echo "version=$K8S_VERSION" >"$BIN_DIR/.binaries"
fi

# --- the pause image ---------------------------------------------------------------------
step "pause image $PAUSE_IMAGE (musl-gcc -static, FROM scratch, podman)"
CTX="$NODE_ROOT/pause-build"
rm -rf "$CTX"
mkdir -p "$CTX"
run musl-gcc -static -Os -s -Wall -Wextra -Werror -o "$CTX/pause" "$PAUSE_SRC"
cat >"$CTX/Containerfile" <<'CF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
CF
# A private podman configuration: /etc stays untouched (traps: shared/local-node.md).
PODMAN_DIR="$NODE_ROOT/containers"
mkdir -p "$PODMAN_DIR"
cat >"$PODMAN_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat >"$PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
CONF
export CONTAINERS_CONF="$PODMAN_DIR/containers.conf" CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
run podman build --network=none -t "$PAUSE_IMAGE" "$CTX"
rm -f "$CTX/pause.oci.tar"
run podman save --format oci-archive -o "$CTX/pause.oci.tar" "$PAUSE_IMAGE"
run podman rmi -f "$PAUSE_IMAGE"
mv -f "$CTX/pause.oci.tar" "$BIN_DIR/pause.oci.tar"
rm -rf "$CTX"

ELAPSED=$(($(date +%s) - START))
{
    echo "version=$K8S_VERSION"
    echo "pause=$(pause_sum)"
    echo "pause_image=$PAUSE_IMAGE"
    echo "built=$(date -Is) in ${ELAPSED}s with $(go version | awk '{print $3}')"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"

if [[ "${DCR_KEEP_BUILD_DIR:-0}" != 1 && -d "$WORK" ]]; then
    chmod -R u+w "$WORK" 2>/dev/null || true
    rm -rf "$WORK"
fi

say "done in ${ELAPSED}s:"
for f in "${COMMANDS[@]}" pause.oci.tar; do
    say "  $f  $(du -h "$BIN_DIR/$f" | cut -f1)"
done
echo "$BIN_DIR"
