# grokscope: `make demo` and `make test` work on a fresh machine.
VENV       ?= .venv
PY         := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install demo test test-fast lint bench clean

# torch first (CPU wheel), then the package, so pip never pulls CUDA wheels.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,ray]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) -m apps.demo

test: install
	$(PY) -m ruff check interp probes apps tests
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: install
	$(PY) -m ruff check interp probes apps tests

bench: install
	$(PY) -m tests.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
