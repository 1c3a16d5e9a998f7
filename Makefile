# Nimbus — the two commands: `make dev` and `make test`.
# Both install what is missing, are idempotent and clean up after themselves.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_VENV := .venv
export NIMBUS_PYTHON := $(CURDIR)/$(PYTHON_VENV)/bin/python
DEV_DIR := .dev
PVE_SIM_LISTEN ?= 127.0.0.1:8006

.PHONY: help dev test lint fmt bench chaos deps web

help:
	@echo "make dev    start the development stack (pve-sim with state under $(DEV_DIR)/); Ctrl-C stops it"
	@echo "make test   install what is missing, check fmt and clippy, run every test"
	@echo "make lint   cargo fmt --check and clippy -D warnings"
	@echo "make bench  run the benchmarks in load-tests/ (prints figures and ratios)"
	@echo "make chaos  the chaos soak: creates under injected faults, then an accounting (CHAOS_ARGS=\"--duration 120\")"
	@echo "make web    build the portal into web/dist (prints its first-load size against the budget)"

## Installs what is missing: Debian packages, the Python venv for third-party client tests, cargo-nextest.
deps:
	@infra/scripts/install-deps.sh

dev: deps
	@infra/scripts/dev.sh

test: deps lint
	@infra/scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench: deps
	@infra/scripts/bench.sh

## Minutes long, so not part of `make bench`: see load-tests in the README.
CHAOS_ARGS ?=
chaos: deps
	cargo build --release -p nimbus-load-tests -p nimbus-api -p nimbus-worker --bins
	"$$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/chaos-soak" $(CHAOS_ARGS)

## The portal (web/) into web/dist; `make dev` and `make test` build it too.
web: deps
	@infra/scripts/build-web.sh
