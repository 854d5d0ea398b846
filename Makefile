# The two commands a new user needs: `make demo` and `make test`.
# Both call launch/setup first (Debian packages, a CPU libtorch 2.11.0 in ~/.cache/dartsif-dist,
# or your own $LIBTORCH), so they work on a fresh Debian 12 machine with rustup, Python 3 + pip
# and apt.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

setup:
	@launch/setup

# Resolved once per make invocation; a user-provided LIBTORCH is respected.
LIBTORCH_DIR = $(shell launch/setup --print)

demo: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo build --release
	target/release/dartsif-dist search --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo test

build: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo build --release

# Influence-engine benchmarks (minutes; see README "Benchmarks").
bench: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo bench --bench influence

.PHONY: setup demo test build bench
