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

K8S_VERSION=v1.20.2
K8S_MAJOR=1
K8S_MINOR=20
DEB_PACKAGES=(etcd-server golang-go rsync golang-github-modern-go-reflect2-dev)
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

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

# --- source, with a private apt configuration (the system's stays untouched) ---------
SRC_TREE="$WORK/kubernetes"
if [[ ! -f "$SRC_TREE/.unpacked" ]]; then
    step "fetching the 'kubernetes' source package (private apt configuration)"
    APT_PRIV="$WORK/apt"
    rm -rf "$APT_PRIV"
    mkdir -p "$APT_PRIV/sources.list.d" "$APT_PRIV/lists/partial" "$APT_PRIV/cache/archives/partial" "$WORK/download"
    found=0
    for f in /etc/apt/sources.list.d/*.sources; do # deb822 files
        [[ -f "$f" ]] || continue
        sed -E 's/^Types:.*$/Types: deb-src/' "$f" >"$APT_PRIV/sources.list.d/$(basename "$f")"
        found=1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do # one-line format
        [[ -f "$f" ]] || continue
        grep -E '^[[:space:]]*deb[[:space:]]' "$f" | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' \
            >"$APT_PRIV/sources.list.d/$(basename "$f" .list)-src.list" || true
        found=1
    done
    [[ $found -eq 1 ]] || die "no apt sources found under /etc/apt"
    APT_OPTS=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$APT_PRIV/sources.list.d"
        -o "Dir::State::Lists=$APT_PRIV/lists" -o "Dir::Cache=$APT_PRIV/cache")
    run apt-get "${APT_OPTS[@]}" update
    rm -f "$WORK"/download/*
    (cd "$WORK/download" && run apt-get "${APT_OPTS[@]}" source --download-only kubernetes)
    ORIG=$(ls "$WORK"/download/kubernetes_*.orig.tar.* 2>/dev/null | sed -n 1p) \
        || die "no kubernetes orig tarball downloaded (see $LOG)"
    [[ -n "$ORIG" ]] || die "no kubernetes orig tarball downloaded (see $LOG)"
    case "$ORIG" in
    *1.20.2*) ;;
    *) die "unexpected source version: $(basename "$ORIG") (this script builds $K8S_VERSION)" ;;
    esac
    step "unpacking $(basename "$ORIG")"
    rm -rf "$SRC_TREE" "$WORK/unpack"
    mkdir -p "$WORK/unpack"
    run tar -xf "$ORIG" -C "$WORK/unpack"
    top=$(find "$WORK/unpack" -mindepth 1 -maxdepth 1 -type d | sed -n 1p)
    [[ -f "$top/cmd/kube-apiserver/apiserver.go" ]] || die "unexpected tarball layout under $WORK/unpack"
    mv "$top" "$SRC_TREE"
    rm -rf "$WORK/unpack" "$WORK/download" "$APT_PRIV"
    touch "$SRC_TREE/.unpacked"
fi

# Fix c: the vendored reflect2 v1.0.1 crashes under Go >= 1.18; use Debian's 1.0.2.
step "fix c: vendor/github.com/modern-go/reflect2 <- Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
R2="$SRC_TREE/vendor/github.com/modern-go/reflect2"
rm -rf "$R2"
mkdir -p "$R2"
find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$R2/" \;

# Fix a: GOPATH mode, no module proxy.
export GOPATH="$WORK/gopath"
export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
export GOCACHE="$WORK/gocache"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$SRC_TREE" "$GOPATH/src/k8s.io/kubernetes"
K8S_PKG_DIR="$GOPATH/src/k8s.io/kubernetes"

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

# Fix d: version ldflags, so /version reports v1.20.2.
LDFLAGS="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
    LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done

mkdir -p "$WORK/out"
for cmd in kube-apiserver kube-controller-manager; do
    step "go build ./cmd/$cmd ($(go version | awk '{print $3}'))"
    (cd "$K8S_PKG_DIR" && run go build -ldflags "$LDFLAGS" -o "$WORK/out/$cmd" "./cmd/$cmd")
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
