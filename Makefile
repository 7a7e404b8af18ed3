# dcr-operator: every target here really runs. CI (.ci/run) calls `make lint`, then the
# README's two commands as written: `make demo DEMO_ARGS=--once` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
DCR_CACHE_DIR ?= $(HOME)/.cache/dcr-operator
export DCR_CACHE_DIR
# Tools installed by `make tools` (kubectl, helm, kubernetes-validate) come first on PATH.
export PATH := $(DCR_CACHE_DIR)/tools/bin:$(PATH)

.PHONY: help build test lint fmt crds tools control-plane node cluster demo bench image plugin oidc-sandbox

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

demo: tools control-plane ## The sandbox: operator + local control plane + Graph emulator, samples applied (Ctrl-C stops)
	$(CARGO) build --quiet -p dcr-operator -p sandbox --bin dcr-operator --bin sandbox
	./target/debug/sandbox $(DEMO_ARGS)

build: ## Build the operator and the sandbox binaries
	$(CARGO) build --workspace --all-targets

test: tools control-plane node image oidc-sandbox ## Run every test (unit, schema, manifests, emulator, control plane, node, image, in-cluster installs)
	$(CARGO) test --workspace --no-fail-fast

# The benchmarks (#[ignore]d in `make test`), each printing its figures into target/bench/:
# - tests/scale.rs: 1,000 new Applications at Graph's documented throttling limits, 2 s
#   replication lag, 1% 503s; scale.json and scale.svg (Ready over time against the optimum).
#   `DCR_BENCH_APPS=10000` for the large run.
# - tests/soak.rs: 200 Applications under random Graph 429s and 503s and an apiserver
#   restart, checking convergence and zero leaks; soak.json. `DCR_SOAK_APPS=20` for a short run.
# Debug profile on purpose: a release build of the workspace took 28 min on the 2-core dev
# machine (`cargo test --release --no-run`, measured, load ~8) while the debug artifacts are
# the ones `make test` already built, and the wall times are bound by Graph's limits, the
# replication lag and the apiserver, not by the operator's CPU (54 s of CPU in 8 min of a
# 200-Application soak).
bench: tools control-plane ## Benchmarks: 1,000 Applications at Graph's limits (DCR_BENCH_APPS), then the fault soak
	$(CARGO) test --test scale -- --ignored --nocapture --test-threads=1
	$(CARGO) test --test soak -- --ignored --nocapture --test-threads=1

# The real RFC 7591/7592 server the OIDC tests run against (tests/oidc_*.rs): oidc-provider
# from npm, pinned by sandbox/oidc/package-lock.json; npm's cache lives outside the repo.
oidc-sandbox: ## Install the OIDC test server (node-oidc-provider, npm ci) into sandbox/oidc/node_modules
	cd sandbox/oidc && npm ci --no-audit --no-fund --cache "$(DCR_CACHE_DIR)/npm" >/dev/null

image: ## Container image from a static musl build (offline, podman): target/image/dcr-operator.oci.tar
	bash sandbox/scripts/build-image.sh >/dev/null

plugin: ## The kubectl plugin, static musl: target/plugin/kubectl-dcr_<version>_linux_amd64.tar.gz and its krew manifest
	bash sandbox/scripts/build-plugin.sh >/dev/null

lint: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/ from the Rust types, and their copy in the Helm chart
	$(CARGO) run --quiet --bin dcr-operator -- crds --out-dir crds
	rm -f charts/dcr-operator/crds/*.yaml
	cp $$(grep -l '^kind: CustomResourceDefinition' crds/*.yaml) charts/dcr-operator/crds/

tools: ## Install kubectl, helm and kubernetes-validate into $(DCR_CACHE_DIR) (once)
	bash sandbox/scripts/install-tools.sh >/dev/null

control-plane: ## Build kube-apiserver and kube-controller-manager v1.20.2 into $(DCR_CACHE_DIR) (once)
	bash sandbox/scripts/build-control-plane.sh >/dev/null

node: ## Build kubelet, kube-scheduler, kube-proxy v1.20.2 and the pause image into $(DCR_CACHE_DIR); install containerd, runc, CNI (once)
	bash sandbox/scripts/build-node.sh >/dev/null

# A local cluster for trying the operator as a pod: control plane + node, the operator image
# (`make image`, target/image/dcr-operator.oci.tar) imported under the chart's reference.
IMAGE_REF ?= ghcr.io/dcr-operator/dcr-operator:$(shell awk -F'"' '/^version = /{print $$2; exit}' Cargo.toml)
cluster: tools control-plane node image ## Control plane + a real node with the operator image imported; prints the kubeconfig (Ctrl-C stops)
	$(CARGO) build --quiet -p sandbox --bin control-plane
	./target/debug/control-plane up --node --image $(IMAGE_REF)=target/image/dcr-operator.oci.tar $(CLUSTER_ARGS)
