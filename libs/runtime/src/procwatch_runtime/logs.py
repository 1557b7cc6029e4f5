"""Structured logs: one line per event, `key=value` context after the message.

    log.info("batch committed", extra={"server_id": 12, "batch_size": 200})
    -> 2026-05-24T18:41:00Z INFO procwatch.ingest batch committed server_id=12 batch_size=200

Secrets never reach a log: callers pass ids, never tokens or keys.
"""

from __future__ import annotations

import logging
import sys
import time

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        ts = self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z"
        context = " ".join(
            f"{key}={value!r}" if isinstance(value, str) and " " in value else f"{key}={value}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_")
        )
        line = f"{ts} {record.levelname} {record.name} {record.getMessage()}"
        if context:
            line += " " + context
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request access lines are noise at fleet rates; errors still show.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
