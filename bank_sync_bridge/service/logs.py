"""Structured logs: one JSON object per line, with the request id, and never a secret.

Handlers of the service log through the ``bank_sync_bridge.service`` logger with the fields of
the line in ``extra={"fields": {...}}``; :class:`JsonFormatter` turns each record into one
line. Secrets never reach a record in the first place (signatures, bodies and credentials are
not logged); the formatter is only the shape.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
from datetime import datetime, timezone
from logging.handlers import QueueHandler, QueueListener
from typing import Any, TextIO

LOGGER_NAME = "bank_sync_bridge.service"


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, message and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line of ``record``."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> QueueListener:
    """Send the service's logs, as JSON lines, to ``stream`` (stderr by default).

    Request threads only put records on a queue; one background thread formats and writes
    them, so a slow disk or pipe never adds to a request's latency. Called by the command line
    only (a library never configures logging for its host); stop the returned listener to
    flush at exit.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, handler)
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [QueueHandler(records)]
    logger.setLevel(level.upper())
    logger.propagate = False
    listener.start()
    return listener
