from . import test_install
from . import test_connection_health
from . import test_sync_engine
from . import test_connect_flow
from . import test_link_journal
from . import test_provider_settings
from . import test_security
from . import test_bridge_service_flow
