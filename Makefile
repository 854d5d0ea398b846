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

# The demo: a small search, then every op scored by magnitude, drop, DARTS-IF and DARTS-IM, and
# how well each predicts the actual effect of removing an op (about 2 minutes after the build).
demo: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo build --release
	target/release/dartsif-dist demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# Every test binary runs even when one fails (--no-fail-fast), so one failure hides nothing.
test: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo test --no-fail-fast

build: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo build --release

# Influence-engine benchmarks (minutes; see README "Benchmarks").
bench: setup
	LIBTORCH=$(LIBTORCH_DIR) cargo bench --bench influence

.PHONY: setup demo test build bench
