from . import bridge_service, health, main, webhook
