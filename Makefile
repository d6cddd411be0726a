# Two entry points for newcomers: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# llama-cpp-python builds llama.cpp from source (CPU only); pip caches the wheel in ~/.cache/pip.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF -DGGML_BLAS=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install lint test test-fast demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src

## The whole suite, as CI runs it (everything but the GPU tests).
test: install lint
	$(PY) -m pytest -m "not gpu" --doctest-modules src tests

## Day to day: skip merge/convert/quantize and server tests.
test-fast: install
	$(PY) -m pytest -m "not slow and not gpu and not ollama" src tests --doctest-modules

demo: install
	PYTHONPATH=tests $(PY) -m support.demo

clean:
	rm -rf $(VENV) demo-output
