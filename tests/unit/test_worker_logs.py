"""Worker log formatters: extras kept as fields, secrets masked."""

from __future__ import annotations

import json
import logging

from worker.logs import ConsoleFormatter, JsonFormatter


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "worker.services.sweep", logging.WARNING, __file__, 1, message, None, None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_json_lines_carry_the_extra_fields() -> None:
    line = JsonFormatter().format(
        record("documents stuck in a state", status="pushed", age_seconds=90000)
    )
    entry = json.loads(line)
    assert entry["message"] == "documents stuck in a state"
    assert entry["level"] == "warning"
    assert (entry["status"], entry["age_seconds"]) == ("pushed", 90000)


def test_secrets_are_masked_in_both_formats() -> None:
    rec = record("call failed: ?access_token=abc123&x=1", error="appSecret=hunter2hunter2")
    for formatter in (JsonFormatter(), ConsoleFormatter()):
        line = formatter.format(rec)
        assert "abc123" not in line
        assert "hunter2hunter2" not in line


def test_console_appends_key_values() -> None:
    line = ConsoleFormatter().format(record("tenant paused", tenant="demo"))
    assert line.endswith("tenant paused tenant=demo")
