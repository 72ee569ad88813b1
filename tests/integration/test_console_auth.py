"""The console's accounts and sessions at the HTTP level (the browser tests drive the page).

API keys keep working; a session cookie is accepted on /v1 with its CSRF token on unsafe
requests; a viewer only reads; forged, expired or stale sessions are nobody.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from producers.cli import app as cli_app
from producers.console.auth import ConsoleAuth, hash_password, verify_password
from producers.http import create_app
from producers.testing import auth_headers, bridge_settings, build_test_components
from schemas.settings import ConsoleUser, Settings, SettingsError
from store.models import Document, DocumentEvent
from worker.enqueue import RecordingEnqueuer

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SECRET = "console-session-secret-for-tests-91"
PASSWORDS = {"li": "operator-password-1", "wang": "viewer-password-2"}


def _users(**overrides: str) -> list[dict[str, Any]]:
    passwords = {**PASSWORDS, **overrides}
    return [
        {
            "name": name,
            "role": role,
            "password_hash": hash_password(passwords[name], iterations=1000),
        }
        for name, role in (("li", "operator"), ("wang", "viewer"))
    ]


def _client(database_url: str, sessions: sessionmaker[Session], **console: Any) -> TestClient:
    values: dict[str, Any] = {"users": _users(), "session_secret": SECRET}
    values.update(console)
    environment = values.pop("environment", "test")
    settings = bridge_settings(database_url, environment=environment, console=values)
    components = build_test_components(settings, sessions, enqueuer=RecordingEnqueuer())
    return TestClient(create_app(settings, components=components), base_url="https://testserver")


@pytest.fixture
def client(database_url: str, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    with _client(database_url, session_factory) as built:
        yield built


def _login(client: TestClient, name: str, password: str | None = None) -> Any:
    return client.post(
        "/console/login", json={"name": name, "password": password or PASSWORDS[name]}
    )


def _rejected(make_document: Any, bill_no: str = "AUTH-1") -> Document:
    document: Document = make_document(
        status="rejected",
        bill_no=bill_no,
        tenant="demo",
        total_incl_tax=Decimal("106.00"),
        last_error_message="金额不对",
    )
    return document


def _status(sessions: sessionmaker[Session], bill_no: str) -> str:
    with sessions() as session:
        return session.scalars(select(Document.status).where(Document.bill_no == bill_no)).one()


def test_a_session_reads_and_acts_with_its_csrf_token_and_is_recorded_by_name(
    client: TestClient, make_document: Any, session_factory: sessionmaker[Session]
) -> None:
    _rejected(make_document)
    login = _login(client, "li")
    assert login.status_code == 200
    csrf = login.json()["csrf_token"]

    assert client.get("/v1/documents/AUTH-1").json()["status"] == "rejected"
    refused = client.post("/v1/documents/AUTH-1/replay", json={"reason": "x"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf_failed"
    wrong = client.post(
        "/v1/documents/AUTH-1/replay", json={"reason": "x"}, headers={"X-CSRF-Token": "nope"}
    )
    assert wrong.status_code == 403
    assert _status(session_factory, "AUTH-1") == "rejected"

    done = client.post(
        "/v1/documents/AUTH-1/replay", json={"reason": "fixed"}, headers={"X-CSRF-Token": csrf}
    )
    assert done.status_code == 202, done.json()
    with session_factory() as session:
        event = session.scalars(select(DocumentEvent).order_by(DocumentEvent.id.desc())).first()
        assert event is not None
        assert (event.actor, event.reason) == ("console:li", "fixed")


def test_a_viewer_reads_but_every_unsafe_request_is_refused(
    client: TestClient, make_document: Any, session_factory: sessionmaker[Session]
) -> None:
    _rejected(make_document)
    csrf = _login(client, "wang").json()["csrf_token"]

    assert client.get("/v1/documents/AUTH-1").status_code == 200
    for path in ("/v1/documents/AUTH-1/replay", "/v1/documents/AUTH-1/withdraw"):
        answer = client.post(path, json={"reason": "x"}, headers={"X-CSRF-Token": csrf})
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "read_only"
        assert "viewer" in answer.json()["error"]["message"]
    assert _status(session_factory, "AUTH-1") == "rejected"


def test_api_keys_still_work_and_a_wrong_key_is_not_rescued_by_a_cookie(
    client: TestClient, make_document: Any
) -> None:
    _rejected(make_document)
    assert client.get("/v1/documents/AUTH-1", headers=auth_headers()).status_code == 200
    _login(client, "li")
    answer = client.get("/v1/documents/AUTH-1", headers=auth_headers("wrong-key-123456"))
    assert answer.status_code == 401
    session = client.get("/console/session", headers=auth_headers())
    assert session.json()["role"] == "operator"
    assert session.json()["actor"] == "api:key1"


def test_without_credentials_nothing_is_served_or_changed(
    client: TestClient, make_document: Any, session_factory: sessionmaker[Session]
) -> None:
    _rejected(make_document)
    assert client.get("/v1/documents/AUTH-1").status_code == 401
    assert client.post("/v1/documents/AUTH-1/replay").status_code == 401
    assert client.get("/console/session").status_code == 401
    client.cookies.set("fapiao_console", "v1.eyJ1IjoibGkifQ.c2lnbmF0dXJl")
    assert client.get("/v1/documents/AUTH-1").status_code == 401
    assert _status(session_factory, "AUTH-1") == "rejected"


def test_a_wrong_password_or_unknown_name_sets_no_cookie(client: TestClient) -> None:
    for name, password in (("li", "wrong-password"), ("nobody", "whatever-pw")):
        answer = _login(client, name, password)
        assert answer.status_code == 401
        assert answer.json()["error"]["message_zh"] == "账号或密码错误"
        assert "set-cookie" not in answer.headers
    cross_site = client.post(
        "/console/login",
        json={"name": "li", "password": PASSWORDS["li"]},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    form = client.post("/console/login", data={"name": "li", "password": PASSWORDS["li"]})
    assert form.status_code == 415
    assert "set-cookie" not in cross_site.headers and "set-cookie" not in form.headers


def test_the_session_cookie_is_httponly_strict_and_secure_outside_development(
    database_url: str, session_factory: sessionmaker[Session]
) -> None:
    with _client(database_url, session_factory) as client:
        cookie = _login(client, "li").headers["set-cookie"]
    assert re.search(r"(?i)httponly", cookie)
    assert re.search(r"(?i)samesite=strict", cookie)
    assert re.search(r"(?i);\s*secure", cookie)
    with _client(database_url, session_factory, environment="development") as client:
        cookie = _login(client, "li").headers["set-cookie"]
    assert not re.search(r"(?i);\s*secure", cookie)


def test_logout_needs_the_csrf_token_and_deletes_the_cookie(client: TestClient) -> None:
    csrf = _login(client, "li").json()["csrf_token"]
    assert client.post("/console/logout").status_code == 403
    assert client.get("/console/session").status_code == 200
    answer = client.post("/console/logout", headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 200
    assert 'fapiao_console=""' in answer.headers["set-cookie"]
    assert client.get("/console/session").status_code == 401


def _auth(clock: list[float], users: list[dict[str, Any]]) -> ConsoleAuth:
    return ConsoleAuth(
        [ConsoleUser.model_validate(user) for user in users],
        SECRET.encode(),
        max_age_seconds=3600,
        secure_cookie=True,
        clock=lambda: clock[0],
    )


def test_sessions_end_when_they_expire_or_the_password_changes() -> None:
    clock = [1_000_000.0]
    users = _users()
    auth = _auth(clock, users)
    cookie = auth.login("li", PASSWORDS["li"])
    assert cookie is not None
    assert auth.session(cookie) is not None
    assert auth.session(cookie[:-3] + "AAA") is None
    clock[0] += 3601
    assert auth.session(cookie) is None

    clock[0] = 1_000_000.0
    changed = _auth(clock, _users(li="a-new-password-9"))
    assert changed.session(cookie) is None
    removed = _auth(clock, [user for user in users if user["name"] != "li"])
    assert removed.session(cookie) is None


def test_password_hashes_verify_and_refuse() -> None:
    hashed = hash_password("s3cret-pw", iterations=1000)
    assert hashed.startswith("pbkdf2_sha256$1000$")
    assert verify_password("s3cret-pw", hashed)
    assert not verify_password("s3cret-pw ", hashed)
    assert not verify_password("s3cret-pw", "md5$x$y")
    assert not verify_password("s3cret-pw", hashed.replace("$1000$", "$10$"))


def test_hash_password_command_prints_a_usable_account_entry() -> None:
    result = CliRunner().invoke(
        cli_app,
        ["console", "hash-password", "--name", "zhao", "--role", "viewer", "--password-stdin"],
        input="zhao-password-5\n",
    )
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output)
    user = ConsoleUser.model_validate(entry)
    assert (user.name, user.role) == ("zhao", "viewer")
    assert verify_password("zhao-password-5", user.password_hash.get_secret_value())
    empty = CliRunner().invoke(
        cli_app, ["console", "hash-password", "--password-stdin"], input="\n"
    )
    assert empty.exit_code == 1


def test_accounts_from_a_file_and_what_settings_refuse(tmp_path: Path) -> None:
    entry = _users()[0]
    users_file = tmp_path / "console-users.toml"
    users_file.write_text(
        f'[[users]]\nname = "{entry["name"]}"\nrole = "operator"\n'
        f'password_hash = "{entry["password_hash"]}"\n',
        encoding="utf-8",
    )
    settings = Settings(environment="test", console={"users_file": users_file})
    assert [user.name for user in settings.console.load_users()] == ["li"]

    with pytest.raises(SettingsError, match="SESSION_SECRET"):
        ConsoleAuth.from_settings(settings)
    doubled = Settings(environment="test", console={"users_file": users_file, "users": [entry]})
    with pytest.raises(SettingsError, match="appear twice"):
        doubled.console.load_users()
    with pytest.raises(ValueError, match="hash-password"):
        Settings(console={"users": [{**entry, "password_hash": "plain-text-password"}]})
    with pytest.raises(ValueError, match="SESSION_SECRET"):
        Settings(environment="production", console={"session_secret": "changeme"})
    assert Settings().console.flower_url == "http://127.0.0.1:5555"


def test_the_page_and_its_assets_are_served_locally_with_a_strict_policy(
    client: TestClient,
) -> None:
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/"
    page = client.get("/console/")
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert assets and all(url.startswith("/console/static/") for url in assets)
    for url in assets:
        assert client.get(url).status_code == 200, url
    assert not any(
        path.startswith("/console") for path in client.get("/openapi.json").json()["paths"]
    )
