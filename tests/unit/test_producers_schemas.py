"""The published JSON Schemas: files equal the generated ones and describe what is enforced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from producers.json_schemas import (
    DOCUMENT_SCHEMA_FILE,
    NOTIFICATION_SCHEMA_FILE,
    document_schema,
    notification_schema,
    render,
    write_schema_files,
)
from schemas.erp import HEADER_FIELDS, HEADER_REQUIRED, LINE_FIELDS, InvoiceType
from schemas.money import loads_exact
from store.states import DocumentStatus

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = ROOT / "docs" / "schemas"
SAMPLES = sorted((ROOT / "tests" / "data" / "erp").glob("*.json"))


@pytest.mark.parametrize(
    ("name", "generate"),
    [(DOCUMENT_SCHEMA_FILE, document_schema), (NOTIFICATION_SCHEMA_FILE, notification_schema)],
)
def test_the_schema_files_are_exactly_what_the_code_generates(name: str, generate: Any) -> None:
    on_disk = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert on_disk == render(generate()), (
        f"docs/schemas/{name} is stale: run `python -m producers.json_schemas docs/schemas`"
    )


def test_write_schema_files_writes_both(tmp_path: Path) -> None:
    written = write_schema_files(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(
        [DOCUMENT_SCHEMA_FILE, NOTIFICATION_SCHEMA_FILE]
    )
    assert json.loads(written[0].read_text(encoding="utf-8"))["$schema"].endswith("2020-12/schema")


def test_the_document_schema_has_every_field_the_validator_knows() -> None:
    schema = document_schema()
    assert set(schema["properties"]) == set(HEADER_FIELDS)
    assert set(schema["$defs"]["billDetail"]["properties"]) == set(LINE_FIELDS)
    assert schema["required"] == list(HEADER_REQUIRED)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["invoiceType"]["enum"] == [t.value for t in InvoiceType]
    # a length rule of the validator appears as maxLength
    assert schema["properties"]["billNo"]["maxLength"] == HEADER_FIELDS["billNo"].chars


def _required_and_known(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    problems = [f"missing {name}" for name in schema["required"] if name not in document]
    problems += [f"unknown {name}" for name in document if name not in schema["properties"]]
    if not any(all(name in document for name in option["required"]) for option in schema["anyOf"]):
        problems.append(f"none of {schema['anyOf']}")
    return problems


@pytest.mark.parametrize("sample", SAMPLES, ids=[p.stem for p in SAMPLES])
def test_the_sample_documents_fit_the_schema_structure(sample: Path) -> None:
    schema = document_schema()
    document = loads_exact(sample.read_text(encoding="utf-8"))
    assert _required_and_known(schema, document) == []
    line_schema = schema["$defs"]["billDetail"]
    for line in document["billDetail"]:
        assert _required_and_known(line_schema, line) == []


def test_the_notification_schema_names_every_state() -> None:
    schema = notification_schema()
    states = [state.value for state in DocumentStatus]
    assert schema["properties"]["status"]["enum"] == states
    assert schema["properties"]["event"]["enum"] == [
        *(f"document.{s}" for s in states),
        "invoice.partially_reversed",
        "invoice.reversed",
        "invoice.voided",
    ]
