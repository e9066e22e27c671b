from . import test_reconcile_widget
