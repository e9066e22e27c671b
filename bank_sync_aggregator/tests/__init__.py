from . import test_install
from . import test_connection_health
from . import test_sync_engine
from . import test_webhooks_controller
