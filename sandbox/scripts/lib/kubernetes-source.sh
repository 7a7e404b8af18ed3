# Shared by build-control-plane.sh and build-node.sh (sourced, not run): Debian's
# `kubernetes` source package, fetched with a private apt configuration and unpacked, plus
# the build fixes of shared/local-control-plane.md (a: GOPATH mode, c: reflect2, d: version
# ldflags). The caller defines say, die, step and run (run logs a command's output).

K8S_VERSION=v1.20.2
K8S_MAJOR=1
K8S_MINOR=20
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2

# k8s_unpack_source WORK: leaves the source tree in WORK/kubernetes (marker .unpacked);
# does nothing when it is already there.
k8s_unpack_source() {
    local work=$1
    local src_tree="$work/kubernetes" apt_priv="$work/apt" found=0 f orig top
    [[ -f "$src_tree/.unpacked" ]] && return 0
    step "fetching the 'kubernetes' source package (private apt configuration)"
    rm -rf "$apt_priv"
    mkdir -p "$apt_priv/sources.list.d" "$apt_priv/lists/partial" "$apt_priv/cache/archives/partial" "$work/download"
    for f in /etc/apt/sources.list.d/*.sources; do # deb822 files
        [[ -f "$f" ]] || continue
        sed -E 's/^Types:.*$/Types: deb-src/' "$f" >"$apt_priv/sources.list.d/$(basename "$f")"
        found=1
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do # one-line format
        [[ -f "$f" ]] || continue
        grep -E '^[[:space:]]*deb[[:space:]]' "$f" | sed -E 's/^[[:space:]]*deb[[:space:]]/deb-src /' \
            >"$apt_priv/sources.list.d/$(basename "$f" .list)-src.list" || true
        found=1
    done
    [[ $found -eq 1 ]] || die "no apt sources found under /etc/apt"
    local apt_opts=(-o "Dir::Etc::sourcelist=/dev/null" -o "Dir::Etc::sourceparts=$apt_priv/sources.list.d"
        -o "Dir::State::Lists=$apt_priv/lists" -o "Dir::Cache=$apt_priv/cache")
    run apt-get "${apt_opts[@]}" update
    rm -f "$work"/download/*
    (cd "$work/download" && run apt-get "${apt_opts[@]}" source --download-only kubernetes)
    orig=$(ls "$work"/download/kubernetes_*.orig.tar.* 2>/dev/null | sed -n 1p) \
        || die "no kubernetes orig tarball downloaded (see $LOG)"
    [[ -n "$orig" ]] || die "no kubernetes orig tarball downloaded (see $LOG)"
    case "$orig" in
    *1.20.2*) ;;
    *) die "unexpected source version: $(basename "$orig") (this script builds $K8S_VERSION)" ;;
    esac
    step "unpacking $(basename "$orig")"
    rm -rf "$src_tree" "$work/unpack"
    mkdir -p "$work/unpack"
    run tar -xf "$orig" -C "$work/unpack"
    top=$(find "$work/unpack" -mindepth 1 -maxdepth 1 -type d | sed -n 1p)
    [[ -f "$top/cmd/kube-apiserver/apiserver.go" ]] || die "unexpected tarball layout under $work/unpack"
    mv "$top" "$src_tree"
    rm -rf "$work/unpack" "$work/download" "$apt_priv"
    touch "$src_tree/.unpacked"
}

# k8s_go_env WORK: fix c (reflect2) and fix a (GOPATH mode); exports the Go environment
# and sets K8S_PKG_DIR (where to run `go build ./cmd/...`) and K8S_LDFLAGS (fix d).
k8s_go_env() {
    local work=$1
    local src_tree="$work/kubernetes" r2 pkg
    [[ -d "$REFLECT2_SRC" ]] || die "$REFLECT2_SRC missing (golang-github-modern-go-reflect2-dev)"
    # Fix c: the vendored reflect2 v1.0.1 crashes under Go >= 1.18; use Debian's 1.0.2.
    step "fix c: vendor/github.com/modern-go/reflect2 <- Debian's $(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev)"
    r2="$src_tree/vendor/github.com/modern-go/reflect2"
    rm -rf "$r2"
    mkdir -p "$r2"
    find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$r2/" \;

    # Fix a: GOPATH mode, no module proxy.
    export GOPATH="$work/gopath"
    export GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0
    export GOCACHE="$work/gocache"
    mkdir -p "$GOPATH/src/k8s.io"
    ln -sfn "$src_tree" "$GOPATH/src/k8s.io/kubernetes"
    K8S_PKG_DIR="$GOPATH/src/k8s.io/kubernetes"

    # Fix d: version ldflags, so --version and /version report v1.20.2.
    K8S_LDFLAGS="-s -w"
    for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
        K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$K8S_MAJOR -X $pkg.gitMinor=$K8S_MINOR"
        K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    done
}
