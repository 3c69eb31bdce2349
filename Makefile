# gardener-extension-runtime-kata
SHELL := /usr/bin/env bash
TESTBIN_DIR ?= $(CURDIR)/.testbin
export TESTBIN_DIR

.PHONY: all build testbin test unit lint fmt local bench clean-testbin

all: build

build:
	cargo build --release --locked

## Build etcd, kube-apiserver and helm from Go modules (cached in $(TESTBIN_DIR)).
testbin:
	bash hack/testbin.sh

## Unit + integration tests against a real kube-apiserver.
test: testbin
	cargo test --locked --all-targets

unit:
	cargo test --locked --lib

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

fmt:
	cargo fmt --all

## Run the extension against a local control plane with an example shoot.
local: testbin
	cargo run --locked --example local -- $(ARGS)

clean-testbin:
	rm -rf $(TESTBIN_DIR)

## Seed-scale benchmark of the release binary against the real apiserver (prints Markdown).
bench: testbin
	cargo build --release --locked --bin gardener-extension-runtime-kata --example scale_bench
	./target/release/examples/scale_bench
