# The two commands a newcomer needs: `make demo` and `make test`.
# Each creates .venv on first use and installs everything into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch 2.14.1 + torchvision 0.29.1 is the pair that installs (from local disk) and imports here.
TORCH := torch==2.14.1 torchvision==0.29.1
PYTEST := $(PY) -m pytest

.PHONY: venv demo test test-all bench lint format proto clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[device,server,research,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/splitnet demo

test: $(STAMP)
	$(PYTEST) -m "not slow" -q

test-all: $(STAMP)
	$(PYTEST) -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check splitnet tests experiments benchmarks
	$(VENV)/bin/ruff format --check splitnet tests experiments benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format splitnet tests experiments benchmarks

proto: $(STAMP)
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .hypothesis
