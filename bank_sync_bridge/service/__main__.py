"""``python -m bank_sync_bridge.service``: see :mod:`bank_sync_bridge.service.cli`."""

import sys

from .cli import main

sys.exit(main())
