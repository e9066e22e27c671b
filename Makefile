# One entry point for people and CI. `make test` is the test command (README.md, .ci/run).
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: test test-package test-addon test-addon-oca test-addon-pytest test-install test-demo lint demo demo-package bench bench-reconcile screenshots

test: test-package test-addon test-addon-oca test-addon-pytest test-install test-demo

test-package:
	$(PYTHON) -m pytest -q tests

test-addon:
	tools/addon_tests.sh

# With OCA's reconciliation widget (account_reconcile_oca, from PyPI): the integration module
# bank_sync_aggregator_reconcile_oca and its tests (tools/oca_addons.sh makes the modules
# available).
test-addon-oca:
	tools/addon_tests.sh --oca

# The addon's tests through pytest-odoo (the fast loop of DEVELOPERS.md), on two classes so that
# the path keeps working; TESTS="..." runs others (pytest arguments).
test-addon-pytest:
	tools/addon_pytest.sh $(TESTS)

# Install, upgrade and uninstall next to languages (French before or after the addon), on real
# databases (about a minute).
test-install:
	$(or $(ODOO_PYTHON),$(PYTHON)) tools/install_check.py

# The README's demo, end to end on a throwaway database, so that it stays true (about a minute).
test-demo:
	tools/demo_check.sh

lint:
	ruff check .
	ruff format --check .
	pylint --rcfile=.pylintrc bank_sync_aggregator bank_sync_aggregator_reconcile_oca
	oca-checks-odoo-module --no-verbose bank_sync_aggregator bank_sync_aggregator_reconcile_oca

# The addon on this machine's Odoo 18: database bank_sync_demo (replaced), bank connected through
# the real HTTP flow, synchronised, left in place (tools/demo.py --help for the options).
demo:
	$(or $(ODOO_PYTHON),$(PYTHON)) tools/demo.py $(DEMO_ARGS)

# The sandbox aggregator through the Python package alone (no Odoo needed).
demo-package:
	$(PYTHON) -m bank_sync_bridge.demo

# Screenshots of the main screens in French (settings, connection, accounts, journal card, run
# history, lines to review, linking screen) into screenshots/ (ignored by git), taken by Odoo's
# test browser on a throwaway database (bank_sync_aggregator/tests/test_screenshots.py).
screenshots:
	BANK_SYNC_SCREENSHOTS=$(CURDIR)/screenshots tools/addon_tests.sh bank_sync_screenshots/bank_sync_aggregator
	@ls screenshots/*.png

bench:
	@for b in bench/bench_*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# Matching imported operations with the books: a year of a company's invoices, bills and the
# operations that pay them, traps included (bench/README.md; about 3 minutes).
bench-reconcile:
	$(or $(ODOO_PYTHON),$(PYTHON)) bench/bench_reconcile.py $(BENCH_ARGS)
