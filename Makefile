# gardener-extension-runtime-kata
SHELL := /usr/bin/env bash
TESTBIN_DIR ?= $(CURDIR)/.testbin
export TESTBIN_DIR

.PHONY: all build testbin tools test test-node unit lint fmt local bench generate check-generate clean-testbin release

all: build

build:
	cargo build --release --locked

## Build etcd, kube-apiserver, helm and gardener-resource-manager from Go modules (cached in $(TESTBIN_DIR)).
testbin:
	bash hack/testbin.sh

## Host tools the tests use (shellcheck for the devmapper setup script).
tools:
	bash hack/install-tools.sh

## The whole suite: the node VM tests, then unit + integration tests against real kube-apiservers,
## gardener-resource-manager and gardener-apiserver.
test: testbin tools test-node
	bash hack/test.sh

unit:
	cargo test --locked --lib

## The Firecracker node preparation in Debian VMs (qemu, TCG): devmapper script, unit and containerd
## 1.7/2.2 config as gardener-node-agent applies them. Image and binaries are cached in $(TESTBIN_DIR)/node-vm.
test-node: tools
	bash hack/node-vm.sh build
	cargo test --locked --test node_vm -- --test-threads 2

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Run the extension against a local control plane with an example shoot (ARGS=--keep to keep it).
local: testbin
	cargo run --locked --example local -- $(ARGS)

## Benchmarks (print Markdown; results are kept in docs/benchmarks.md): webhook latency, then
## seed-scale reconcile throughput of the release binary against the real apiserver, then both
## webhook servers (seed webhook, garden admission) under hostile load.
bench: testbin
	cargo bench --locked --bench webhook
	cargo build --release --locked --bin gardener-extension-runtime-kata --example scale_bench --example webhook_probe --example admission_probe
	./target/release/examples/scale_bench
	./target/release/examples/webhook_probe
	./target/release/examples/admission_probe

clean-testbin:
	rm -rf $(TESTBIN_DIR)

## Regenerate example/controller-registration.yaml and example/extension.yaml (the default release).
generate:
	bash hack/release.sh --examples

## Fails when the examples are not what `make generate` writes.
check-generate:
	@tmp=$$(mktemp -d) && cp example/controller-registration.yaml example/extension.yaml $$tmp/ && \
	  bash hack/release.sh --examples >/dev/null && \
	  if diff -q $$tmp/controller-registration.yaml example/controller-registration.yaml >/dev/null && \
	     diff -q $$tmp/extension.yaml example/extension.yaml >/dev/null; then rm -rf $$tmp; else \
	  cp $$tmp/*.yaml example/; rm -rf $$tmp; echo "example/ registrations are stale: run 'make generate'"; exit 1; fi

## Release artifacts (chart package, registrations, push steps) in dist/: make release VERSION=vX.Y.Z REGISTRY=...
release: testbin
	bash hack/release.sh
