# gardener-extension-runtime-kata
SHELL := /usr/bin/env bash
TESTBIN_DIR ?= $(CURDIR)/.testbin
export TESTBIN_DIR

.PHONY: all build testbin tools test unit lint fmt local bench generate check-generate clean-testbin

all: build

build:
	cargo build --release --locked

## Build etcd, kube-apiserver, helm and gardener-resource-manager from Go modules (cached in $(TESTBIN_DIR)).
testbin:
	bash hack/testbin.sh

## Host tools the tests use (shellcheck for the devmapper setup script).
tools:
	bash hack/install-tools.sh

## Unit + integration tests against a real kube-apiserver and gardener-resource-manager.
test: testbin tools
	bash hack/test.sh

unit:
	cargo test --locked --lib

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Run the extension against a local control plane with an example shoot (ARGS=--keep to keep it).
local: testbin
	cargo run --locked --example local -- $(ARGS)

## Benchmarks (print Markdown; results are kept in docs/benchmarks.md): webhook latency, then
## seed-scale reconcile throughput of the release binary against the real apiserver.
bench: testbin
	cargo bench --locked --bench webhook
	cargo build --release --locked --bin gardener-extension-runtime-kata --example scale_bench --example webhook_probe
	./target/release/examples/scale_bench
	./target/release/examples/webhook_probe

clean-testbin:
	rm -rf $(TESTBIN_DIR)

## Regenerate example/controller-registration.yaml from the chart.
generate:
	bash hack/generate-controller-registration.sh

## Fails when example/controller-registration.yaml is not what `make generate` writes.
check-generate:
	@tmp=$$(mktemp) && bash hack/generate-controller-registration.sh $$tmp >/dev/null && \
	  diff -q $$tmp example/controller-registration.yaml >/dev/null || \
	  { echo "example/controller-registration.yaml is stale: run 'make generate'"; rm -f $$tmp; exit 1; }; rm -f $$tmp
