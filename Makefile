# bcirig — two commands for a newcomer: `make demo` and `make test`.
# Both create (or reuse) .venv, install bcirig into it, and, when run as root on Debian/Ubuntu, install
# the system packages that are missing (AVR toolchain + simavr for the valve firmware, Qt's runtime
# libraries). Without root they print what to install and carry on with what is there.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# octave + octave-instrument-control (octave-cli, tcpclient): tests/acquisition/test_scanimage.py runs the
# ScanImage user function under Octave. Debian 12, as installed here (with recommends): ~220 packages, 530 MB.
# libportaudio2: sounddevice's PortAudio (a rig with [sound] kind = "sounddevice"; tests render to buffers).
APT_PACKAGES := gcc-avr avr-libc simavr libsimavr-dev libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 xvfb octave octave-instrument-control libportaudio2
FIRMWARE := hardware/valve-controller

.PHONY: demo test test-shuffled env sysdeps firmware lint bench clean

# With a display (DISPLAY or WAYLAND_DISPLAY set) the demo opens the operator's console and the mouse's grating;
# without one Qt draws offscreen and the demo runs as a plain terminal session.
demo: env firmware
	@if [ -n "$$DISPLAY$$WAYLAND_DISPLAY" ]; then $(VENV)/bin/bcirig demo; \
	else QT_QPA_PLATFORM=$${QT_QPA_PLATFORM:-offscreen} $(VENV)/bin/bcirig demo; fi

test: env firmware lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_ARGS)

# The suite in a random order (pytest-random-order), to catch tests that depend on what ran before:
# make test-shuffled SEED=123 (CI keeps the fixed order of `make test`).
test-shuffled: env firmware
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider --random-order-bucket=global \
	  --random-order-seed=$${SEED:-$$$$} $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check -q bcirig tests tools
	$(VENV)/bin/mypy --no-error-summary
	@$(VENV)/bin/lint-imports --no-cache > $(VENV)/lint-imports.log 2>&1 || { cat $(VENV)/lint-imports.log; exit 1; }
	@$(PY) tools/import_cycles.py > $(VENV)/import-cycles.log || { cat $(VENV)/import-cycles.log; exit 1; }

bench: env
	$(VENV)/bin/bcirig bench

env: $(STAMP)

$(STAMP): pyproject.toml | sysdeps
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || \
	  { echo "bcirig needs Python >= 3.11; '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Run: make PYTHON=python3.11 ..."; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || \
	  { echo "Could not create a virtual environment. On Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	@echo "Installing bcirig and its Python dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q -e '.[dev,nwb]'; } > $(VENV)/install.log 2>&1 || \
	  { tail -n 30 $(VENV)/install.log; echo "pip install failed; full log: $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "note: not a Debian/Ubuntu system; install the equivalents of:$$missing"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "Installing system packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null) || \
	    { echo "apt-get failed installing:$$missing"; exit 1; }; \
	else \
	  echo "note: missing system packages:$$missing"; \
	  echo "      run: sudo apt-get install$$missing   (firmware tests are skipped until then)"; \
	fi

firmware: sysdeps
	@if command -v avr-gcc >/dev/null 2>&1 && [ -f $(FIRMWARE)/Makefile ]; then \
	  $(MAKE) -s -C $(FIRMWARE); \
	else echo "note: avr-gcc not found; the emulated valve firmware will not be built"; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	@if [ -f $(FIRMWARE)/Makefile ]; then $(MAKE) -s -C $(FIRMWARE) clean; fi
