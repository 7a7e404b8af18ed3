#!/usr/bin/env bash
# `make image`, the offline image build: a static musl release binary built on this host,
# then the Dockerfile's final stage with podman (`--build-arg BINARY_FROM=prebuilt`, so no
# base image is pulled), tagged with the reference config/manager and the chart use, and
# saved as an OCI archive for `ctr images import` / `podman load`.
#
# Facts behind the podman settings: shared/local-node.md (no systemd, no CAP_SYS_RESOURCE:
# cgroupfs, file events, ulimits under the hard limits). Podman runs from a private
# configuration and storage under $DCR_CACHE_DIR/containers, leaving /etc untouched.
#
# Output (stdout, last line): the image reference. Files:
#   target/image/dcr-operator.oci.tar   the image, OCI archive
#   target/image/image.ref              the image reference
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "build-image: $*" >&2; }
start=$(date +%s)

cache="${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}"
triple=x86_64-unknown-linux-musl
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
repository=ghcr.io/dcr-operator/dcr-operator
ref="$repository:$version"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
out=target/image

# Tools: the musl target and C toolchain (ring builds C), podman. Installed once.
if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    say "rustup target add $triple"
    rustup target add "$triple" >&2
fi
missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v podman >/dev/null || missing+=(podman)
if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends "${missing[@]}" >&2
fi

# Podman's private configuration.
conf="$cache/containers"
mkdir -p "$conf/storage" "$conf/run" "$conf/tmp"
cat > "$conf/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$conf/events.log"
CONF
cat > "$conf/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$conf/storage"
runroot = "$conf/run"
CONF
export CONTAINERS_CONF="$conf/containers.conf" CONTAINERS_STORAGE_CONF="$conf/storage.conf"
export TMPDIR="$conf/tmp"

say "cargo build --release --target $triple (commit $commit)"
DCR_GIT_COMMIT="$commit" cargo build --release --locked --quiet --target "$triple" \
    -p dcr-operator --bin dcr-operator >&2
built=$(( $(date +%s) - start ))

rm -rf "$out/rootfs"
mkdir -p "$out/rootfs/etc/ssl/certs"
cp "target/$triple/release/dcr-operator" "$out/rootfs/dcr-operator"
cp /etc/ssl/certs/ca-certificates.crt "$out/rootfs/etc/ssl/certs/"

say "podman build $ref"
podman build --quiet --network=none --pull=never -f Dockerfile \
    --build-arg BINARY_FROM=prebuilt --build-arg TARGETARCH=amd64 --build-arg VERSION="$version" --build-arg GIT_COMMIT="$commit" \
    -t "$ref" . >&2
rm -f "$out/dcr-operator.oci.tar"
podman save --quiet --format oci-archive -o "$out/dcr-operator.oci.tar" "$ref"
echo "$ref" > "$out/image.ref"
say "$ref: binary $(du -h "$out/rootfs/dcr-operator" | cut -f1), archive $(du -h "$out/dcr-operator.oci.tar" | cut -f1); cargo ${built}s, total $(( $(date +%s) - start ))s"
echo "$ref"
