#!/usr/bin/env bash
# Build (once) the local Kubernetes control plane used by the tests and the sandbox:
# kube-apiserver and kube-controller-manager v1.20.2, built offline from Debian's
# `kubernetes` source package, plus Debian's etcd.
#
# Facts behind every step: shared/local-control-plane.md (packages, private apt
# configuration for the source, the four build fixes, ldflags).
#
# Result (outside the repo, keyed by version):
#   ${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}/control-plane/v1.20.2/
#       kube-apiserver  kube-controller-manager  etcd -> /usr/bin/etcd  .stamp  build.log
# The last line on stdout is that directory, so `BIN_DIR=$(build-control-plane.sh)` works;
# everything else goes to stderr. A second run only checks the cache and etcd (instant).
# Safe to re-run after an interrupted build (the binaries and the stamp are installed
# atomically, last; the source tree is unpacked afresh when incomplete).
#
# Needs root on a Debian-like system (apt-get). Elsewhere, bring your own cluster:
# DCR_TEST_KUBECONFIG=/path/to/kubeconfig cargo test   (see tests/support/cluster.rs),
# or your own binaries: DCR_CONTROL_PLANE_BIN_DIR=<dir with etcd, kube-apiserver,
# kube-controller-manager>.
#
# Environment:
#   DCR_CACHE_DIR          cache root (default: $HOME/.cache/dcr-operator)
#   DCR_KEEP_BUILD_DIR=1   keep the unpacked source and Go build cache after success
set -euo pipefail

# shellcheck source=lib/kubernetes-source.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/kubernetes-source.sh"
DEB_PACKAGES=(etcd-server golang-go rsync golang-github-modern-go-reflect2-dev)

CACHE_ROOT="${DCR_CACHE_DIR:-${HOME:-/root}/.cache/dcr-operator}"
CP_ROOT="$CACHE_ROOT/control-plane"
BIN_DIR="$CP_ROOT/$K8S_VERSION"
STAMP="$BIN_DIR/.stamp"
WORK="$CP_ROOT/build-$K8S_VERSION"
LOG="$BIN_DIR/build.log"
START=$(date +%s)

say() { echo "build-control-plane: $*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

cache_ok() {
    [[ -f "$STAMP" && -x "$BIN_DIR/kube-apiserver" && -x "$BIN_DIR/kube-controller-manager" ]] \
        && grep -qx "version=$K8S_VERSION" "$STAMP"
}

etcd_path() { command -v etcd 2>/dev/null || { [[ -x /usr/bin/etcd ]] && echo /usr/bin/etcd; }; }

# Fast path: cached binaries and etcd present -> print the bin dir and stop.
if cache_ok && ETCD=$(etcd_path); then
    ln -sfn "$ETCD" "$BIN_DIR/etcd"
    say "cached: $BIN_DIR ($(sed -n 's/^built=//p' "$STAMP"))"
    echo "$BIN_DIR"
    exit 0
fi

# --- preconditions -----------------------------------------------------------------
ALT="Alternatives: run the tests against your own cluster with DCR_TEST_KUBECONFIG=/path/to/kubeconfig, or point DCR_CONTROL_PLANE_BIN_DIR at a directory holding etcd, kube-apiserver and kube-controller-manager $K8S_VERSION (the launcher's flags are those of 1.20)."
if [[ ! -f /etc/debian_version ]] || ! command -v apt-get >/dev/null 2>&1; then
    die "this script needs a Debian-like system (apt-get, Debian bookworm's 'kubernetes' source package). $ALT"
fi
if [[ $(id -u) -ne 0 ]]; then
    die "this script installs Debian packages and must run as root (e.g. sudo $0). $ALT"
fi
command -v flock >/dev/null 2>&1 || die "flock (util-linux) is missing"

mkdir -p "$CP_ROOT" "$BIN_DIR"
# One build at a time (two test runs starting together must not build twice).
exec 9>"$CP_ROOT/.lock"
if ! flock -n 9; then
    say "another build holds $CP_ROOT/.lock; waiting for it"
    flock 9
fi
if cache_ok && ETCD=$(etcd_path); then # built meanwhile by the lock holder
    ln -sfn "$ETCD" "$BIN_DIR/etcd"
    echo "$BIN_DIR"
    exit 0
fi

: >"$LOG"
say "building kube-apiserver and kube-controller-manager $K8S_VERSION (4-6 min, ~1.5 GB RAM)"
say "log: $LOG"
step() {
    say "[$(($(date +%s) - START))s] $*"
    echo "=== $(date -Is) $*" >>"$LOG"
}
run() { # run a command with its output in the log; on failure show the log's tail
    if ! "$@" >>"$LOG" 2>&1; then
        say "FAILED: $*"
        tail -n 40 "$LOG" >&2
        die "see $LOG"
    fi
}

# --- packages ------------------------------------------------------------------------
step "apt-get update && apt-get install ${DEB_PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
run apt-get update
run apt-get install -y --no-install-recommends "${DEB_PACKAGES[@]}"
ETCD=$(etcd_path) || die "etcd not found after installing etcd-server"
[[ -d "$REFLECT2_SRC" ]] || die "$REFLECT2_SRC missing (golang-github-modern-go-reflect2-dev)"
command -v go >/dev/null 2>&1 || die "go not found after installing golang-go"

# --- source and Go environment (shared with build-node.sh) --------------------------
k8s_unpack_source "$WORK"
k8s_go_env "$WORK"
SRC_TREE="$WORK/kubernetes"

# Fix b: generate pkg/generated/openapi/zz_generated.openapi.go.
OPENAPI="$SRC_TREE/pkg/generated/openapi/zz_generated.openapi.go"
if [[ ! -f "$SRC_TREE/.openapi-generated" || ! -s "$OPENAPI" ]]; then # marker: not a half-written file
    step "fix b: make gen_openapi"
    rm -f "$OPENAPI" "$SRC_TREE/.openapi-generated"
    for f in "$SRC_TREE"/_output/bin/openapi-gen "$SRC_TREE"/_output/local/bin/*/*/openapi-gen; do
        if [[ -e "$f" && ! -s "$f" ]]; then rm -f "$f"; fi # stale 0-byte binary from a failed run
    done
    (cd "$K8S_PKG_DIR" && run make gen_openapi)
    [[ -s "$OPENAPI" ]] || die "make gen_openapi did not produce $OPENAPI"
    touch "$SRC_TREE/.openapi-generated"
fi

mkdir -p "$WORK/out"
for cmd in kube-apiserver kube-controller-manager; do
    step "go build ./cmd/$cmd ($(go version | awk '{print $3}'))"
    (cd "$K8S_PKG_DIR" && run go build -ldflags "$K8S_LDFLAGS" -o "$WORK/out/$cmd" "./cmd/$cmd")
done

step "checking versions"
for cmd in kube-apiserver kube-controller-manager; do
    v=$("$WORK/out/$cmd" --version 2>&1 | tail -n1)
    [[ "$v" == *"$K8S_VERSION"* ]] || die "$cmd --version says '$v', expected $K8S_VERSION"
done

# Install atomically, stamp last.
rm -f "$STAMP"
for cmd in kube-apiserver kube-controller-manager; do
    cp "$WORK/out/$cmd" "$BIN_DIR/.$cmd.tmp"
    mv -f "$BIN_DIR/.$cmd.tmp" "$BIN_DIR/$cmd"
done
ln -sfn "$ETCD" "$BIN_DIR/etcd"
ELAPSED=$(($(date +%s) - START))
{
    echo "version=$K8S_VERSION"
    echo "built=$(date -Is) in ${ELAPSED}s with $(go version | awk '{print $3}')"
} >"$STAMP.tmp"
mv -f "$STAMP.tmp" "$STAMP"

if [[ "${DCR_KEEP_BUILD_DIR:-0}" != 1 ]]; then
    chmod -R u+w "$WORK" 2>/dev/null || true # Go's module cache files are read-only
    rm -rf "$WORK"
fi

say "done in ${ELAPSED}s:"
for f in kube-apiserver kube-controller-manager; do
    say "  $f  $(du -h "$BIN_DIR/$f" | cut -f1)  $("$BIN_DIR/$f" --version 2>&1 | tail -n1)"
done
say "  etcd -> $ETCD  ($("$ETCD" --version 2>/dev/null | sed -n 1p))"
echo "$BIN_DIR"
