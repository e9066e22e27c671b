from . import test_install
from . import test_connection_health
