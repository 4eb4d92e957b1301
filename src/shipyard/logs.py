"""One logging setup for Shipyard's entry points: JSON lines on stderr, written off-thread.

Library code only asks for ``logging.getLogger(__name__)`` and passes what it knows with
``extra=`` (``request_id``, ``endpoint``, ``version`` ...); it never configures logging.
The entry points (the ``shipyard`` command and each serving worker) call
:func:`configure_logging` once. Each record becomes one JSON object on one line::

    {"time": "2026-11-27T10:04:05.123Z", "level": "WARNING", "logger": "shipyard.serving.runtime",
     "message": "shadow v2 failed on request r-1: ...", "process": 4242, "request_id": "r-1",
     "endpoint": "fraud", "version": 2}

Records go through a queue to one writer thread, so a logging call on the event loop costs
the call and a queue put, never a write to a slow or blocked stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json as jsonlib
import logging
import logging.handlers
import queue
import sys
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shipyard.config import Settings

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# third-party loggers that announce routine work at INFO: quieter in Shipyard's processes
QUIET = {
    "alembic": logging.WARNING,  # every migration of a new MLflow SQLite store
    "mlflow.store.db.utils": logging.WARNING,
}

# the attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)

_listener: logging.handlers.QueueListener | None = None
_handler: logging.Handler | None = None


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (ISO 8601, UTC), level, logger, message, extras."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = dt.datetime.fromtimestamp(record.created, dt.UTC)
        document: dict[str, Any] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        document.update(
            (key, value)
            for key, value in record.__dict__.items()
            if key not in _STANDARD and not key.startswith("_")
        )
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        return jsonlib.dumps(document, default=str, ensure_ascii=False)


class _QueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread with their message and traceback already rendered
    (arguments may not survive the thread hop), keeping the ``extra=`` fields."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        prepared = logging.makeLogRecord(record.__dict__)
        prepared.msg = record.getMessage()
        prepared.args = None
        prepared.exc_info = None
        return prepared


def configure_logging(
    settings: Settings | str | int = "INFO",
    *,
    json: bool | None = None,
    stream: IO[str] | None = None,
) -> None:
    """Send every log record of this process to ``stream`` (stderr) as JSON lines (or text).

    ``settings``: the workspace's :class:`~shipyard.config.Settings` (its ``log_level`` and
    ``log_format``) or a level. Call it from entry points only; calling it again replaces
    the previous setup.
    """
    global _listener, _handler

    if isinstance(settings, str | int):
        level: str | int = settings
        as_json = True if json is None else json
    else:
        level = settings.log_level
        as_json = settings.log_format == "json" if json is None else json
    writer = logging.StreamHandler(stream if stream is not None else sys.stderr)
    writer.setFormatter(
        JsonFormatter()
        if as_json
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    _stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    _handler = _QueueHandler(records)
    _listener = logging.handlers.QueueListener(records, writer, respect_handler_level=False)
    _listener.start()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_handler)
    root.setLevel(level)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))


def _stop() -> None:
    """Write what is queued and stop the writer thread (at exit, or before a new setup)."""
    global _listener, _handler

    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    if _listener is not None:
        _listener.stop()
        _listener = None


atexit.register(_stop)


class _DropMatching(logging.Filter):
    def __init__(self, starts_with: str) -> None:
        super().__init__()
        self.starts_with = starts_with

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts_with)


@contextlib.contextmanager
def dropping(logger: str, starts_with: str) -> Iterator[None]:
    """Within the block, drop records of ``logger`` whose message starts with ``starts_with``.

    For one known, irrelevant third-party warning around the one call that emits it; every
    other record of that logger still passes, and the filter is gone after the block.
    """
    target = logging.getLogger(logger)
    drop = _DropMatching(starts_with)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)
