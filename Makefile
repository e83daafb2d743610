# Two commands do everything on a fresh clone (each creates .venv with pip if missing):
#   make demo   data -> train -> export -> bench -> report, on the defaults
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mnistopt-installed

.PHONY: demo test test-all venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# `litert` (PyTorch -> TFLite) and `peers` (NNCF, ExecuTorch) are heavy and optional for
	# users; the project's own machines install them so that every export path and every
	# peer is built and tested.
	$(PY) -m pip install -q -e '.[all,dev,litert,peers]'
	touch $(STAMP)

# data -> train (fast defaults) -> export -> bench -> workspace/reports/bench.{json,md,png};
# steps whose outputs exist are skipped (FORCE=1 redoes them).
demo: $(STAMP)
	$(PY) -m mnistopt demo $(if $(FORCE),--force,)

# Fast tests plus the slow ones that fit CI's budget; `make test-all` runs everything.
# The emulated-ARM test needs `mnistopt arm setup` (qemu + an arm64 sysroot, ~2 min once):
# `make test MARKERS="not gpu"` includes it, as CI does once the setup has succeeded.
MARKERS ?= not arm and not gpu
test: $(STAMP)
	$(PY) -m pytest -q -m "$(MARKERS)"

test-all: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) workspace .pytest_cache
