"""Structured logs for the worker: the ``extra`` of every record is kept, secrets are masked.

| ``FAPIAO_LOG_FORMAT`` | one line per record                                              |
|-----------------------|------------------------------------------------------------------|
| ``json`` (default)    | ``{"ts", "level", "logger", "message", "task", "task_id", …extra}`` |
| ``console``           | ``<time> <LEVEL> <logger>: <message> key=value …``                |

Services log with ``extra={...}`` (document_id, bill_no, tenant, status, …); these formatters
put those fields on the line (inside a task also its ``bill_no`` / ``tenant`` /
``document_id`` keywords) so an alert ("documents stuck in a state", "ERP notification
parked", "tenant paused") can be found by field. Every line goes through
``store.ledger.mask_secrets`` last. Installed on Celery's loggers by ``create_app`` (signals
``after_setup_logger`` / ``after_setup_task_logger``), so ``celery -A worker worker`` logs
this way without further setup. Other processes (``fapiao api``) call
``configure_logging(settings.log_format, settings.log_level)`` once at start.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

from store.ledger import mask_secrets

__all__ = [
    "ConsoleFormatter",
    "JsonFormatter",
    "TaskLinesAtDebug",
    "configure_logging",
    "formatter_for",
    "install_formatter",
    "task_lines_at_debug",
]

# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "data", "color_message"}  # uvicorn adds an ANSI copy


# Task keywords copied onto every line logged inside that task.
_TASK_KEYWORDS: Final = ("bill_no", "tenant", "document_id")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _task_fields(record: logging.LogRecord) -> dict[str, Any]:
    try:
        from celery._state import get_current_task

        task = get_current_task()
    except Exception:  # outside a worker, or Celery not importable
        return {}
    if task is None or task.request is None or task.request.id is None:
        return {}
    fields: dict[str, Any] = {"task": task.name, "task_id": task.request.id}
    kwargs = getattr(task.request, "kwargs", None)
    if isinstance(kwargs, dict):
        # So every line of a task can be found by the bill it works on (Flower, log search).
        for key in _TASK_KEYWORDS:
            value = kwargs.get(key)
            if value not in (None, ""):
                fields[key] = value
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line (module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_task_fields(record))
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(entry, ensure_ascii=False, default=str))


class ConsoleFormatter(logging.Formatter):
    """Human-readable, extras appended as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**_task_fields(record), **_extras(record)}
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return mask_secrets(line)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else ConsoleFormatter()


def install_formatter(logger: logging.Logger, log_format: str) -> None:
    """Give every handler of ``logger`` the formatter of ``log_format``."""
    formatter = formatter_for(log_format)
    for handler in logger.handlers:
        handler.setFormatter(formatter)


def configure_logging(log_format: str, level: str | int = logging.INFO) -> None:
    """Route every logger of this process through one stderr handler in ``log_format``.

    For processes Celery does not set up (the HTTP app): uvicorn's own loggers have no
    handlers when it is started with ``log_config=None``, so they propagate here too.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter_for(log_format))
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())


# Celery's loggers of the per-task "Task … received" / "Task … succeeded in …" lines.
CELERY_TASK_LINE_LOGGERS: Final = ("celery.worker.strategy", "celery.app.trace")


class TaskLinesAtDebug(logging.Filter):
    """Celery's per-task INFO lines of the tasks named become DEBUG lines.

    Celery logs two lines per task at INFO (received, succeeded), each formatted and masked
    (``mask_secrets``): for the tasks every document runs, a line per message that says
    nothing the task's own service lines and Flower do not. They are kept at DEBUG (shown
    with ``--loglevel=DEBUG``); warnings and errors (a failure, a retry) are untouched.
    """

    def __init__(self, task_names: frozenset[str]) -> None:
        super().__init__()
        self.task_names = task_names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO:
            return True
        data = getattr(record, "data", None)
        if not isinstance(data, dict) or data.get("name") not in self.task_names:
            return True
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def task_lines_at_debug(task_names: frozenset[str]) -> None:
    """Install ``TaskLinesAtDebug`` for ``task_names`` on Celery's task-line loggers (once:
    a later call replaces the set)."""
    for name in CELERY_TASK_LINE_LOGGERS:
        logger = logging.getLogger(name)
        for old in [f for f in logger.filters if isinstance(f, TaskLinesAtDebug)]:
            logger.removeFilter(old)
        logger.addFilter(TaskLinesAtDebug(task_names))
