"""bank_sync_bridge: aggregator clients, sync logic and emulators for bank synchronisation.

The core (everything but :mod:`bank_sync_bridge.service`) depends only on ``requests`` and
``cryptography`` so that it runs inside Odoo 18's pinned environment.
"""

__version__ = "0.1.0"
