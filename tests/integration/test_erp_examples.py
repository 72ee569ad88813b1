"""The ERP examples of docs/examples, run for real: the Java (JDK only) and Python (stdlib only)
clients submit docs/examples/document.json to a live ``fapiao api`` process, and their webhook
receivers judge notifications signed by the bridge's own code (``worker.services.notify``)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import API_KEY
from schemas.money import dumps_exact
from store.models import Document
from tests.integration.processes import free_port
from worker.services.notify import signed_headers, standard_webhooks_secret

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
DOCUMENT = EXAMPLES / "document.json"
BILL_NO = "ERP-EXAMPLE-0001"
SECRET = "erp-hook-" + "7c1e9a4f2b6d8e30"


@pytest.fixture(scope="module")
def java_classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("javac (JDK 17+) is not installed: the Java example cannot be compiled")
    out = tmp_path_factory.mktemp("java-example")
    sources = sorted(str(path) for path in (EXAMPLES / "java").glob("*.java"))
    compiled = subprocess.run(
        [javac, "-Xlint:all", "-Werror", "--release", "17", "-d", str(out), *sources],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert compiled.returncode == 0, compiled.stderr
    return out


def _java(classes: Path, *args: str) -> list[str]:
    java = shutil.which("java") or "java"
    return [java, "-cp", str(classes), *args]


def _python(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / "python" / name), *args]


# ------------------------------------------------------------------ submitting


def _submit(command: list[str], api: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FAPIAO_URL": api, "FAPIAO_API_KEY": key}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def _stored(sessions: sessionmaker[Session]) -> list[tuple[str, str, str]]:
    with sessions() as session:
        rows = session.execute(
            select(Document.bill_no, Document.status, Document.total_amount).where(
                Document.bill_no == BILL_NO
            )
        ).all()
    return [(bill_no, status, format(total, "f")) for bill_no, status, total in rows]


def _check_client(
    command: list[str], api_process: str, session_factory: sessionmaker[Session]
) -> None:
    refused = _submit(command, api_process, "not-the-key")
    accepted = _submit(command, api_process, API_KEY)
    again = _submit(command, api_process, API_KEY)

    assert refused.returncode == 2 and refused.stdout.startswith("HTTP 401"), refused
    assert accepted.returncode == 0 and accepted.stdout.startswith("HTTP 202"), accepted
    assert '"outcome":"created"' in accepted.stdout
    # Sending the same document again is safe: the bridge answers "unchanged".
    assert again.returncode == 0 and again.stdout.startswith("HTTP 200"), again
    assert _stored(session_factory) == [(BILL_NO, "draft", "1500.00")]
    view = httpx.get(
        f"{api_process}/v1/documents/{BILL_NO}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert view.status_code == 200 and view.json()["total_amount"] == "1500.00"


def test_java_client_submits_the_example_document(
    java_classes: Path, api_process: str, session_factory: sessionmaker[Session]
) -> None:
    _check_client(_java(java_classes, "FapiaoClient", str(DOCUMENT)), api_process, session_factory)


def test_python_client_submits_the_example_document(
    api_process: str, session_factory: sessionmaker[Session]
) -> None:
    _check_client(_python("fapiao_client.py", str(DOCUMENT)), api_process, session_factory)


# ------------------------------------------------------------------ webhook receivers


def _notification() -> bytes:
    payload = {
        "event": "document.invoiced",
        "documentId": 7,
        "tenant": "demo",
        "sellerTaxpayerId": "91330106MA2H07XK4J",
        "billNo": BILL_NO,
        "revision": 1,
        "status": "invoiced",
        "previousStatus": "pushed",
        "issuedAmount": Decimal("1590.00"),
        "invoices": [{"invoiceNum": "25332000000000000001", "invoiceType": "10xdp"}],
        "reason": "开票成功",
        "occurredAt": "2025-11-06T08:00:00+00:00",
    }
    return dumps_exact(payload).encode("utf-8")


def _signed(
    delivery: str, body: bytes, *, secret: str | None = SECRET, age: int = 0
) -> dict[str, str]:
    return signed_headers(
        event="document.invoiced",
        delivery_id=delivery,
        timestamp=str(int(time.time()) - age),
        body=body,
        secret=secret,
    )


class _Receiver:
    """One example receiver process on a free port."""

    def __init__(self, command: list[str], secret: str) -> None:
        self.port = free_port()
        self.output = ""
        self.process = subprocess.Popen(
            [*command, str(self.port)],
            env={**os.environ, "FAPIAO_WEBHOOK_SECRET": secret},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"receiver did not start: {self.stop()}")
                time.sleep(0.1)

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        url = f"http://127.0.0.1:{self.port}/erp/fapiao-hook"
        return httpx.post(url, content=body, headers=headers, timeout=10).status_code

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.output = self.process.stdout.read() if self.process.stdout else ""
        return self.output


def _check_receiver(handle: _Receiver) -> None:
    body = _notification()
    valid = _signed("41", body)
    tampered_body = body.replace(b"1590.00", b"1.00")
    legacy_only = {k: v for k, v in _signed("42", body).items() if not k.startswith("webhook-")}
    legacy_tampered = {**legacy_only, "X-Fapiao-Delivery": "43"}
    wrong_id = {**_signed("44", body), "webhook-id": "45"}

    answers = {
        "valid": handle.post(body, valid),
        "retry of the same delivery": handle.post(body, valid),
        "tampered body": handle.post(tampered_body, valid),
        "another secret": handle.post(body, _signed("46", body, secret="someone-else-secret")),
        "an hour old": handle.post(body, _signed("47", body, age=3600)),
        "id not the signed one": handle.post(body, wrong_id),
        "unsigned": handle.post(body, _signed("48", body, secret=None)),
        "legacy headers only": handle.post(body, legacy_only),
        "legacy, tampered body": handle.post(tampered_body, legacy_tampered),
    }

    assert answers == {
        "valid": 204,
        "retry of the same delivery": 204,
        "tampered body": 401,
        "another secret": 401,
        "an hour old": 401,
        "id not the signed one": 401,
        "unsigned": 401,
        "legacy headers only": 204,
        "legacy, tampered body": 401,
    }
    output = handle.stop()
    assert output.count("accepted 41 ") == 1 and "duplicate 41" in output, output
    assert "accepted 42 " in output and "1590.00" in output, output


@pytest.fixture
def receivers() -> Iterator[list[_Receiver]]:
    """Receivers a test starts (append); each is stopped after the test."""
    started: list[_Receiver] = []
    yield started
    for handle in started:
        handle.stop()


def test_java_receiver_accepts_only_what_the_bridge_signed(
    java_classes: Path, receivers: list[_Receiver]
) -> None:
    receivers.append(_Receiver(_java(java_classes, "WebhookVerifier"), SECRET))
    _check_receiver(receivers[-1])


def test_python_receiver_accepts_only_what_the_bridge_signed(receivers: list[_Receiver]) -> None:
    receivers.append(_Receiver(_python("webhook_receiver.py"), SECRET))
    _check_receiver(receivers[-1])


def _python_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", EXAMPLES / "python" / "webhook_receiver.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_standard_webhooks_secret_form_verifies_the_same_signature() -> None:
    example = _python_example()
    body = _notification()
    headers = _signed("51", body)
    args = (headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"])

    # A receiver may hold the secret as a Standard Webhooks library wants it.
    assert example.verify(standard_webhooks_secret(SECRET), *args, body)
    assert example.verify(SECRET, *args, body)
    assert not example.verify(standard_webhooks_secret("someone-else-secret"), *args, body)


def test_a_body_dropped_by_an_h2c_upgrade_is_named_as_such(api_process: str) -> None:
    # What Java's HttpClient sends over http:// by default: uvicorn's httptools parser stops at
    # the upgrade and the app sees no body; the answer must say why, not "invalid JSON".
    host, port = api_process.removeprefix("http://").split(":")
    body = DOCUMENT.read_bytes()
    request = (
        f"POST /v1/documents HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        "HTTP2-Settings: AAEAAEAAAAIAAAAA\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line, answer
    assert b'"code":"body_dropped_by_upgrade"' in rest.replace(b" ", b""), answer
    assert b"HTTP_1_1" in rest
