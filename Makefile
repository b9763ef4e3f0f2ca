# Two set-up commands for a fresh machine: `make serve` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# llama-cpp-python compiles llama.cpp on install; use both cores.
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: serve test lint install install-test clean bench fuzz soak matrix

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[bench]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

serve: $(VENV)/.installed
	$(VENV)/bin/llm-worker-rbee serve $(ARGS)

# Line coverage of the package (worker subprocesses included: [tool.coverage.run] patch), the
# layers (import-linter's contract in pyproject.toml), and the behaviour inventory against the
# code and the tests (docs/BEHAVIORS.md; the checker is
# devtools/behaviors, outside the installed package). Two test processes, tests handed out
# as each gets free (pytest-xdist's worksteal): 12.5 -> 7.6 minutes on 2 cores.
test: $(VENV)/.installed-test
	$(PY) -m pytest -n 2 --dist worksteal --cov=llm_worker_rbee --cov-report=term --cov-fail-under=90
	$(PY) -m devtools.behaviors check
	$(VENV)/bin/lint-imports

# Benchmarks (about 10 minutes on 2 cores; not part of `make test`): see docs/PERFORMANCE.md.
bench: $(VENV)/.installed-bench
	$(PY) -m bench $(ARGS)

# Schemathesis, long: every phase and 200 examples per operation (docs/RELIABILITY.md).
fuzz: $(VENV)/.installed-test
	$(PY) -m devtools.fuzz $(ARGS)

# 200 clients for 60 s on the fake engine, then on the real model (docs/RELIABILITY.md).
soak: $(VENV)/.installed-test
	$(PY) -m devtools.soak $(ARGS)

# The tests that compare texts, under each llama.cpp CPU-kernel build of the same source: the
# venv's own (native, AVX-512 where the CPU has it) and a baseline AVX2 one (haswell), compiled
# once into .venv/kernels/ (docs/KERNELS.md). `ARGS="-- -x"` passes pytest flags.
matrix: $(VENV)/.installed-test
	$(PY) -m devtools.kernels run $(ARGS)

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check llm_worker_rbee devtools tests scenarios bench
	$(VENV)/bin/ruff format --check llm_worker_rbee devtools tests scenarios bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
