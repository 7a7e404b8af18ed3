# dcr-operator: every target here really runs; CI calls `make lint` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
DCR_CACHE_DIR ?= $(HOME)/.cache/dcr-operator
export DCR_CACHE_DIR
# Tools installed by `make tools` (kubectl, helm, kubernetes-validate) come first on PATH.
export PATH := $(DCR_CACHE_DIR)/tools/bin:$(PATH)

.PHONY: help build test lint fmt crds tools control-plane demo

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

demo: tools control-plane ## The sandbox: operator + local control plane + Graph emulator, samples applied (Ctrl-C stops)
	$(CARGO) build --quiet --bin dcr-operator --bin sandbox
	./target/debug/sandbox $(DEMO_ARGS)

build: ## Build the operator and the sandbox binaries
	$(CARGO) build --workspace --all-targets

test: tools control-plane ## Run every test (unit, schema, manifests, emulator, control plane, integration)
	$(CARGO) test --workspace --no-fail-fast

lint: ## Formatting and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

crds: ## Regenerate crds/ from the Rust types
	$(CARGO) run --quiet --bin dcr-operator -- crds --out-dir crds

tools: ## Install kubectl, helm and kubernetes-validate into $(DCR_CACHE_DIR) (once)
	bash sandbox/scripts/install-tools.sh >/dev/null

control-plane: ## Build kube-apiserver and kube-controller-manager v1.20.2 into $(DCR_CACHE_DIR) (once)
	bash sandbox/scripts/build-control-plane.sh >/dev/null
