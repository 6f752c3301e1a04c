# The two commands of README.md: `make run` and `make test`. Both set up .venv themselves.
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' && echo $$p && break; done)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run mcp test lint bench clean browser wrk

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Atelier needs Python 3.11 or newer on PATH" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"

# Reinstall whenever pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@ $(VENV)/.runtime

# `make run PORT=9000 HOST=127.0.0.2 ARGS="--root-contract adgen"`: the same as `atelier serve` with those flags.
run: $(VENV)/.runtime
	$(BIN)/atelier serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(ARGS)

mcp: $(VENV)/.runtime
	$(BIN)/atelier mcp

# The web pages are tested in a real headless Chromium that Playwright (a dev extra) drives through
# executable_path, never `playwright install`: Debian's chromium, plus libatomic1, which the Node.js
# inside Playwright's wheel links against and chromium does not pull in. Installed where we can (CI
# runs as root); with no Chromium the browser tests are skipped.
browser:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing=" chromium"; \
	if command -v dpkg-query >/dev/null 2>&1 && ! dpkg-query -W -f='$${Status}' libatomic1 2>/dev/null | grep -q "ok installed"; then \
	  missing="$$missing libatomic1"; fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the browser tests (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } \
	      || echo "could not install$$missing: the browser tests will be skipped or fail" >&2; \
	  else \
	    echo "not installed, and cannot be installed here:$$missing; the browser tests will be skipped or fail" >&2; \
	  fi; \
	fi

# bench/http_run_status.py drives its load with wrk (Debian's package), a C client that leaves the CPU
# to the servers it measures. Installed where we can (as root, with apt-get); without it the benchmark
# falls back to its Python client, whose figures are lower bounds.
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing wrk for bench/http_run_status.py (apt-get)"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
	      || echo "could not install wrk: bench/http_run_status.py uses its Python client" >&2; \
	  else \
	    echo "wrk is not installed, and cannot be installed here: bench/http_run_status.py uses its Python client" >&2; \
	  fi; }

test: $(VENV)/.dev browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n auto --maxprocesses=4 --dist loadfile

BENCHES = bench/engine_throughput.py \
  bench/mcp_cold_start.py \
  bench/mcp_tool_context.py \
  bench/comfyui_keep_busy.py \
  bench/http_run_status.py \
  bench/upscale_memory.py \
  bench/character_upload.py \
  bench/character_upload_http.py \
  bench/aitoolkit_progress.py \
  bench/preview_training.py \
  bench/pod_print_files.py \
  bench/pod_publish_calls.py \
  bench/ledger_scale.py \
  bench/studio_gallery.py \
  bench/pg_event_latency.py

# Every benchmark runs, even after one misses its goal; the target fails at the end, naming them.
bench: $(VENV)/.dev wrk browser
	@missed=""; for script in $(BENCHES); do \
	  echo "== $$script"; $(BIN)/python $$script || missed="$$missed $$script"; done; \
	if [ -n "$$missed" ]; then echo "goals missed by:$$missed" >&2; exit 1; fi

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
