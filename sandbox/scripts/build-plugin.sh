#!/usr/bin/env bash
# `make plugin`: the kubectl plugin as a static musl release binary (like the image's), packed
# for krew and for plain downloads:
#   target/plugin/kubectl-dcr_<version>_linux_amd64.tar.gz   kubectl-dcr (reproducible: sorted,
#                                                            owner 0, mtime 0, gzip -n)
#   target/plugin/kubectl-dcr_<version>_linux_amd64.tar.gz.sha256
#   target/plugin/dcr.yaml   config/krew/dcr.yaml with the version, the URL and the sha256
# The URL is where the release's archives are published: PLUGIN_URL_BASE (the directory),
# default this repository's release downloads for v<version>.
#
# Output (stdout, last line): the archive's path.
set -euo pipefail
cd "$(dirname "$0")/../.."

say() { echo "build-plugin: $*" >&2; }
triple=x86_64-unknown-linux-musl
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
out=target/plugin
archive="kubectl-dcr_${version}_linux_amd64.tar.gz"
url_base="${PLUGIN_URL_BASE:-https://example.invalid/dcr-operator/releases/download/v$version}"

if ! rustup target list --installed 2>/dev/null | grep -qx "$triple"; then
    say "rustup target add $triple"
    rustup target add "$triple" >&2
fi
if ! command -v musl-gcc >/dev/null; then
    say "apt-get install musl-tools"
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends musl-tools >&2
fi

say "cargo build --release --target $triple --bin kubectl-dcr (commit $commit)"
DCR_GIT_COMMIT="$commit" cargo build --release --locked --quiet --target "$triple" \
    -p dcr-operator --bin kubectl-dcr >&2

stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage"
cp "target/$triple/release/kubectl-dcr" "$stage/kubectl-dcr"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$stage" -cf - kubectl-dcr \
    | gzip -n -9 > "$out/$archive"
sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
echo "$sha  $archive" > "$out/$archive.sha256"
sed -e "/^#/d" -e "s|{{VERSION}}|$version|g" -e "s|{{URL}}|$url_base/$archive|g" -e "s|{{SHA256}}|$sha|g" \
    config/krew/dcr.yaml > "$out/dcr.yaml"
rm -rf "$stage"
say "$out/$archive: $(du -h "$out/$archive" | cut -f1), sha256 $sha; krew manifest $out/dcr.yaml"
echo "$out/$archive"
