"""The OpenAPI document: current in docs/openapi.json, typed, true to the real answers; and
/docs, /redoc served with local assets only."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from producers.api_models import (
    BatchAnswer,
    DocumentView,
    ErrorAnswer,
    HealthAnswer,
    OperatorAnswer,
    SubmitAnswer,
)
from producers.http import create_app
from producers.openapi import openapi_document, render
from producers.testing import (
    add_view_history,
    auth_headers,
    bill_json,
    bridge_settings,
    build_test_components,
    make_bill,
)
from schemas.erp import HEADER_FIELDS, LINE_FIELDS
from store.claims import claim_for_push
from store.lifecycle import transition
from store.states import Event
from worker.enqueue import RecordingEnqueuer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ROOT = Path(__file__).resolve().parents[2]
H = auth_headers()


@pytest.fixture
def client(database_url: str, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    settings = bridge_settings(database_url)
    components = build_test_components(settings, session_factory, enqueuer=RecordingEnqueuer())
    with TestClient(create_app(settings, components=components)) as test_client:
        yield test_client


def described(model: type[BaseModel], body: Any) -> BaseModel:
    """``body`` read by ``model``, failing on a member the model does not describe."""
    value = model.model_validate(body)
    undescribed: list[str] = []

    def walk(item: Any, where: str) -> None:
        if isinstance(item, BaseModel):
            undescribed.extend(f"{where}.{key}" for key in item.model_extra or {})
            for name in type(item).model_fields:
                walk(getattr(item, name), f"{where}.{name}")
        elif isinstance(item, list):
            for index, element in enumerate(item):
                walk(element, f"{where}[{index}]")
        elif isinstance(item, dict):
            for key, element in item.items():
                walk(element, f"{where}.{key}")

    walk(value, model.__name__)
    assert not undescribed, f"answer members missing from {model.__name__}: {undescribed}"
    return value


# ------------------------------------------------------------------ the document


def test_docs_openapi_json_is_current() -> None:
    committed = (ROOT / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == render(openapi_document()), (
        "docs/openapi.json is stale: run `python -m producers.openapi docs/openapi.json`"
    )


def test_the_document_does_not_depend_on_settings(client: TestClient) -> None:
    assert client.get("/openapi.json").json() == openapi_document()


def test_the_request_body_is_the_erp_document_in_its_three_forms() -> None:
    spec = openapi_document()
    body = spec["paths"]["/v1/documents"]["post"]["requestBody"]["content"]["application/json"]
    single, array, wrapped = body["schema"]["oneOf"]
    ref = {"$ref": "#/components/schemas/ErpDocument"}
    assert single == ref and array["items"] == ref
    assert wrapped["properties"]["documents"]["items"] == ref
    schemas = spec["components"]["schemas"]
    document, line = schemas["ErpDocument"], schemas["ErpBillDetail"]
    assert set(document["properties"]) == set(HEADER_FIELDS)
    assert set(line["properties"]) == set(LINE_FIELDS)
    assert {"billNo", "billDate", "invoiceType", "billDetail"} <= set(document["required"])
    assert document["properties"]["billDetail"]["items"] == {
        "$ref": "#/components/schemas/ErpBillDetail"
    }
    # Every reference in the document resolves inside it.
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs <= set(schemas), refs - set(schemas)


def test_every_v1_route_documents_its_answers_and_none_is_fastapis_422() -> None:
    paths = openapi_document()["paths"]
    expected = {
        ("/v1/documents", "post"): {"200", "202", "207", "400", "401", "409", "413", "422", "503"},
        ("/v1/documents/{bill_no}", "get"): {"200", "400", "401", "404", "409", "503"},
        ("/v1/documents/{bill_no}/withdraw", "post"): {"200", "202", "400", "401", "404", "409"},
        ("/v1/documents/{bill_no}/replay", "post"): {"200", "202", "400", "401", "404", "409"},
        ("/healthz", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, statuses - set(responses))
        for status, answer in responses.items():
            schema = answer["content"]["application/json"]["schema"]
            assert schema, (path, status)
            assert "HTTPValidationError" not in json.dumps(schema)
    invalid = paths["/v1/documents"]["post"]["responses"]["422"]["content"]["application/json"]
    assert invalid["schema"] == {"$ref": "#/components/schemas/SubmitAnswer"}
    schemas = openapi_document()["components"]["schemas"]
    assert set(schemas["Issue"]["properties"]) >= {"path", "rule", "message", "message_zh", "hint"}
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message", "message_zh"}


# ------------------------------------------------------------------ true to the answers


def _post(client: TestClient, body: Any) -> Any:
    return client.post("/v1/documents", content=bill_json(body), headers=H)


def test_submission_answers_are_described_by_their_models(client: TestClient) -> None:
    accepted = _post(client, make_bill("OA-1"))
    unchanged = _post(client, make_bill("OA-1"))
    conflict = _post(client, make_bill("OA-1", buyerName="另一家公司"))
    invalid = _post(client, make_bill("OA-2", totalAmount=Decimal("1.00")))
    batch = _post(client, {"documents": [make_bill("OA-3"), make_bill("OA-4", billDate="x")]})
    all_good = _post(client, [make_bill("OA-5")])

    assert [r.status_code for r in (accepted, unchanged, conflict, invalid, batch, all_good)] == [
        202,
        200,
        409,
        422,
        207,
        202,
    ]
    for answer in (accepted, unchanged, conflict, invalid):
        described(SubmitAnswer, answer.json())
    issues = invalid.json()["issues"]
    assert issues and {"path", "rule", "message", "message_zh", "hint"} <= set(issues[0])
    for answer in (batch, all_good):
        described(BatchAnswer, answer.json())


def test_error_answers_are_described_by_error_answer(client: TestClient) -> None:
    refusals = [
        client.post("/v1/documents", content=b"{}"),  # 401
        client.post("/v1/documents", content=b"{not json", headers=H),  # 400
        client.post("/v1/documents", content=b"[]", headers=H),  # 400
        client.post("/v1/documents", content=bill_json([{}] * 1001), headers=H),  # 413
        client.get("/v1/documents/NOPE", headers=H),  # 404
        client.post("/v1/documents/NOPE/replay", headers=H),  # 404
    ]
    assert [r.status_code for r in refusals] == [401, 400, 400, 413, 404, 404]
    for answer in refusals:
        described(ErrorAnswer, answer.json())


def test_view_withdraw_replay_and_health_are_described(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    document_id = _post(client, make_bill("OV-1")).json()["document_id"]
    with session_factory() as session:
        assert claim_for_push(session, document_id, lease_seconds=60) is not None
        transition(session, document_id, Event.accepted, actor="test", reason="pushed")
        add_view_history(session, document_id)
        session.commit()
    _post(client, make_bill("OV-2"))

    view = client.get("/v1/documents/OV-1", headers=H)
    withdrawn = client.post("/v1/documents/OV-2/withdraw", json={"reason": "客户取消"}, headers=H)
    not_replayable = client.post("/v1/documents/OV-1/replay", headers=H)
    health = client.get("/healthz")

    assert view.status_code == 200
    kinds = {entry["kind"] for entry in view.json()["timeline"]}
    assert kinds == {"transition", "cloud_call", "callback", "invoice"}
    described(DocumentView, view.json())
    assert withdrawn.status_code == 200
    described(OperatorAnswer, withdrawn.json())
    assert not_replayable.status_code == 409
    assert described(ErrorAnswer, not_replayable.json()).model_dump()["current_status"] == "pushed"
    assert health.status_code == 200
    described(HealthAnswer, health.json())


# ------------------------------------------------------------------ offline docs


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_pages_load_only_local_assets(client: TestClient, page: str, assets: set[str]) -> None:
    html = client.get(page)

    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert not re.search(r"https?://", html.text), "a page may not load anything from outside"
    urls = set(re.findall(r"""(?:src|href|url)\s*[:=]\s*['"]([^'"]+)['"]""", html.text))
    assert "/openapi.json" in urls
    assert {url.rsplit("/", 1)[-1] for url in urls if url.startswith("/docs/assets/")} == assets
    content_types = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
    for url in urls - {"/openapi.json"}:
        answer = client.get(url)
        assert answer.status_code == 200, url
        assert content_types[Path(url).suffix] in answer.headers["content-type"], url
        assert len(answer.content) > 1000, url
