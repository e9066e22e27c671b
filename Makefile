# One entry point for people and CI. `make test` is the test command (README.md, .ci/run).
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: test test-package test-addon lint demo bench

test: test-package test-addon

test-package:
	$(PYTHON) -m pytest -q tests

test-addon:
	tools/addon_tests.sh

lint:
	ruff check .
	ruff format --check .
	pylint --rcfile=.pylintrc bank_sync_aggregator
	oca-checks-odoo-module --no-verbose bank_sync_aggregator

demo:
	$(PYTHON) -m bank_sync_bridge.demo

bench:
	@for b in bench/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done
