# The two commands: `make demo` runs the main job, `make test` runs the whole test suite.
# Both create .venv with pip on first use and reuse it afterwards (re-installed when pyproject.toml changes).
# TORCH pins the CPU build available offline on the project's machines; elsewhere: `make test TORCH=torch`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check "$(TORCH)" -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/smoothguard demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	SMOOTHGUARD_RELIABILITY_SLOW=1 $(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/bench_aggregate.py
