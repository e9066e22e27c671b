from . import health, main, webhook
from . import bridge_service
