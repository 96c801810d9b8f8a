# The whole test suite: installs what it needs, lints, then runs every test.
# Slow fault and soak tests (marker `soak`) run too, bounded by KYNAMO_SOAK_SCALE.
PYTHON ?= python3
# The repository root holds a folder named `operator/`: never let `python -m` put the
# working directory ahead of the standard library.
export PYTHONSAFEPATH := 1
KYNAMO_SOAK_SCALE ?= 0.1

.PHONY: install test lint bench

install:
	$(PYTHON) -m pip install -q -e '.[test]'

lint: install
	$(PYTHON) -m ruff check .

test: lint
	KYNAMO_SOAK_SCALE=$(KYNAMO_SOAK_SCALE) $(PYTHON) -m pytest tests -q

bench: install
	$(PYTHON) benchmarks/replication.py
