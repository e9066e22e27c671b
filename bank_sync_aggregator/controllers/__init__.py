from . import health, main, webhook
