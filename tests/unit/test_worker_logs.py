"""Worker log formatters: extras kept as fields, secrets masked."""

from __future__ import annotations

import json
import logging

import pytest

from worker.logs import ConsoleFormatter, JsonFormatter, configure_logging


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


def test_configure_logging_puts_every_logger_of_the_process_on_one_structured_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    # As in a fresh `fapiao api` process (uvicorn started with log_config=None); servers that
    # other tests ran in this process may have configured uvicorn's logger their own way.
    # Both "uvicorn.error" and its parent "uvicorn" (uvicorn's own default configuration puts
    # a handler there and stops propagation).
    uvicorn_loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("uvicorn")]
    saved_uvicorn = [(list(lg.handlers), lg.propagate, lg.level) for lg in uvicorn_loggers]
    for lg in uvicorn_loggers:
        lg.handlers, lg.propagate = [], True
        lg.setLevel(logging.NOTSET)
    try:
        configure_logging("json", "INFO")
        # uvicorn's loggers carry no handlers of their own when log_config=None.
        logging.getLogger("uvicorn.error").info(
            "callback stored", extra={"bill_no": "B-1", "tenant": "demo"}
        )
        logging.getLogger("producers.http").debug("below the level")
        configure_logging("console", logging.WARNING)
        logging.getLogger("producers.http").warning("token=s3cr3t-value refused")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for lg, (handlers, propagate, level) in zip(uvicorn_loggers, saved_uvicorn, strict=True):
            lg.handlers, lg.propagate = handlers, propagate
            lg.setLevel(level)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    entry = json.loads(lines[0])
    assert (entry["logger"], entry["bill_no"], entry["tenant"]) == ("uvicorn.error", "B-1", "demo")
    assert "WARNING producers.http" in lines[1]
    assert "s3cr3t-value" not in lines[1]


def test_lines_inside_a_task_carry_its_bill_no_tenant_and_document_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    import celery._state

    request = SimpleNamespace(
        id="t-1", kwargs={"document_id": 7, "bill_no": "B-7", "tenant": "demo", "other": 1}
    )
    task = SimpleNamespace(name="fapiao.push", request=request)
    monkeypatch.setattr(celery._state, "get_current_task", lambda: task)
    entry = json.loads(JsonFormatter().format(record("pushed")))
    assert entry["task"] == "fapiao.push"
    assert entry["task_id"] == "t-1"
    assert (entry["bill_no"], entry["tenant"], entry["document_id"]) == ("B-7", "demo", 7)
    assert "other" not in entry
    line = ConsoleFormatter().format(record("pushed"))
    assert "bill_no=B-7" in line and "tenant=demo" in line and "document_id=7" in line


def test_a_task_without_those_keywords_logs_just_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    import celery._state

    task = SimpleNamespace(name="fapiao.sweep", request=SimpleNamespace(id="t-2", kwargs=None))
    monkeypatch.setattr(celery._state, "get_current_task", lambda: task)
    entry = json.loads(JsonFormatter().format(record("swept")))
    assert (entry["task"], entry["task_id"]) == ("fapiao.sweep", "t-2")
    assert "bill_no" not in entry
