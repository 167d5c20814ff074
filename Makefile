# nsguard: `make demo` shows the operator at work on a local control plane; `make test` runs every test.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CLUSTER_TOOLS := tests/cluster
# `make demo` and `make cluster-up` share this control plane; `make test` and `make bench` start
# their own, so they never disturb (or stop) the one you are using.
DEV_CLUSTER   := $(CURDIR)/target/cluster
TEST_CLUSTER  := $(CURDIR)/target/test-cluster
CARGO_FLAGS   := --locked

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

.PHONY: demo
demo: build cluster-up ## Bring up the local control plane and watch nsguard harden, drift and heal a namespace.
	@NSGUARD_CLUSTER_DIR=$(DEV_CLUSTER) tests/cluster/demo.sh

.PHONY: test
test: ## Every test, unit and integration, against a local control plane started (and stopped) for the run.
	@NSGUARD_CLUSTER_DIR=$(TEST_CLUSTER) $(CLUSTER_TOOLS)/up.sh
	@$(CLUSTER_TOOLS)/helm.sh >/dev/null && $(CLUSTER_TOOLS)/kstatus.sh >/dev/null # real helm and kstatus: built once, cached
	@status=0; mkdir -p target; \
	NSGUARD_KUBECONFIG=$(TEST_CLUSTER)/kubeconfig cargo test $(CARGO_FLAGS) --lib --bins --tests 2>&1 | tee target/test.log || status=$$?; \
	NSGUARD_CLUSTER_DIR=$(TEST_CLUSTER) $(CLUSTER_TOOLS)/down.sh; \
	awk '/^test result:/ {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test.log; \
	exit $$status

FAULT_CLUSTER := $(CURDIR)/target/fault-cluster

.PHONY: faults
faults: ## Fault tests (API server and etcd restarts) and the cluster-wide tamper guard, on a control plane of their own, one at a time.
	@NSGUARD_CLUSTER_DIR=$(FAULT_CLUSTER) $(CLUSTER_TOOLS)/up.sh
	@status=0; mkdir -p target; \
	NSGUARD_KUBECONFIG=$(FAULT_CLUSTER)/kubeconfig cargo test $(CARGO_FLAGS) --test guard --test faults -- --test-threads=1 2>&1 | tee target/faults.log || status=$$?; \
	NSGUARD_CLUSTER_DIR=$(FAULT_CLUSTER) $(CLUSTER_TOOLS)/down.sh; \
	awk '/^test result:/ {p += $$4; f += $$6} END {printf "fault tests: %d passed, %d failed\n", p, f}' target/faults.log; \
	exit $$status

.PHONY: reliability
reliability: faults ## The fault tests, then their recovery times (RELIABILITY.md) as a table.
	@echo "| measure | seconds |"; echo "| --- | --- |"
	@for f in target/measurements/*.txt; do echo "| $$(basename $$f .txt) | $$(cat $$f) |"; done

BENCH_CLUSTER := $(CURDIR)/target/bench-cluster
BENCH_ARGS    ?=

.PHONY: bench
bench: ## The scale benchmark (not part of `make test`); BENCH_ARGS="--namespaces 1000 --scenarios burst,floor" to choose.
	@NSGUARD_CLUSTER_DIR=$(BENCH_CLUSTER) $(CLUSTER_TOOLS)/up.sh
	@status=0; \
	NSGUARD_KUBECONFIG=$(BENCH_CLUSTER)/kubeconfig cargo bench $(CARGO_FLAGS) --bench scale -- $(BENCH_ARGS) || status=$$?; \
	NSGUARD_CLUSTER_DIR=$(BENCH_CLUSTER) $(CLUSTER_TOOLS)/down.sh; \
	exit $$status

.PHONY: unit
unit: ## Unit tests only (no cluster needed).
	cargo test $(CARGO_FLAGS) --lib --bins

.PHONY: lint
lint: ## rustfmt and clippy, warnings as errors.
	cargo fmt --all -- --check
	cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings

.PHONY: crds
crds: ## Regenerate the CRD YAML (crds/, config/crd/bases/, the chart's crds/) from the Rust types.
	cargo run $(CARGO_FLAGS) --quiet -- crd > crds/hardeningprofiles.nsguard.io.yaml
	cp crds/hardeningprofiles.nsguard.io.yaml config/crd/bases/
	@$(MAKE) --no-print-directory chart-sync

.PHONY: chart-sync
chart-sync: ## Copy the CRD and the tamper guard (config/guard) into charts/nsguard (Helm reads only its chart; a test checks the copies).
	cp crds/hardeningprofiles.nsguard.io.yaml charts/nsguard/crds/
	cp config/guard/namespaces.yaml config/guard/networkpolicies.yaml config/guard/serviceaccounts.yaml \
	  config/guard/pods.yaml charts/nsguard/files/guard/

.PHONY: chart-lint
chart-lint: ## helm lint --strict and helm template of charts/nsguard, with the helm built by tests/cluster/helm.sh.
	@helm=$$($(CLUSTER_TOOLS)/helm.sh); \
	"$$helm" lint --strict charts/nsguard; \
	"$$helm" template nsguard charts/nsguard --namespace nsguard-system >/dev/null && echo "helm template: ok"

.PHONY: build
build: ## Build nsguard (debug).
	cargo build $(CARGO_FLAGS)

.PHONY: control-plane
control-plane: ## Build (or find in the cache) etcd, kube-apiserver, kube-controller-manager and kubectl.
	@$(CLUSTER_TOOLS)/build.sh

.PHONY: helm
helm: ## Build (or find in the cache) helm, from the Go module pinned in tests/cluster/helm; prints its path.
	@$(CLUSTER_TOOLS)/helm.sh

.PHONY: cluster-up
cluster-up: ## Start the local control plane (reuses a running one); kubeconfig in target/cluster/kubeconfig.
	@NSGUARD_CLUSTER_DIR=$(DEV_CLUSTER) $(CLUSTER_TOOLS)/up.sh

.PHONY: cluster-down
cluster-down: ## Stop the local control plane started by cluster-up.
	@NSGUARD_CLUSTER_DIR=$(DEV_CLUSTER) $(CLUSTER_TOOLS)/down.sh

.PHONY: cluster-status
cluster-status: ## Is the local control plane running?
	@NSGUARD_CLUSTER_DIR=$(DEV_CLUSTER) $(CLUSTER_TOOLS)/status.sh
