"""``fapiao doctor``: is this installation able to work, and if not, what to fix.

| check | ok when | typical fix |
|---|---|---|
| ``settings`` | every ``FAPIAO_*`` variable is valid | the variable named in the message |
| ``tenants`` | the tenants file reads and validates | the file/tenant/field named |
| ``database`` | reachable and migrated to the Alembic head | start it / ``fapiao db upgrade`` |
| ``redis`` | ``FAPIAO_REDIS_URL`` answers PING | start Redis / fix the URL |
| ``broker`` | ``FAPIAO_BROKER_URL`` answers PING (Redis brokers) | start it / fix the URL |
| ``token:<tenant>`` | getAppToken.do + login.do succeed (worker's client) | the setting named |

Token checks call the cloud for real (two calls per tenant, recorded in the ledger when the
database is reachable) and store nothing in the token cache.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from producers.health import Check, check_database, check_redis, redis_client
from schemas.settings import Settings, SettingsError
from schemas.tenants import TenantConfig, TenantsFile, TenantsFileError

__all__ = ["diagnose"]


class _NoLedger:
    """A ``CallLedger`` that records nothing (the database is not reachable)."""

    def begin(self, *, tenant: str, interface: str, request_id: str | None, context: Any) -> None:
        return None

    def finish(
        self,
        entry: int | None,
        *,
        tenant: str,
        interface: str,
        request_id: str | None,
        context: Any,
        outcome: str,
        http_status: int | None,
        error_code: str | None,
        message: str | None,
        latency_ms: int,
    ) -> None:
        return None


def _token_check(tenant: TenantConfig, http: Any, ledger: Any) -> Check:
    from worker.kingdee import (
        CloudConfigError,
        CloudTransientError,
        HttpKingdeeClient,
        fetch_access_token,
    )

    name = f"token:{tenant.name}"
    client = HttpKingdeeClient(tenant, http, ledger=ledger)
    try:
        token = fetch_access_token(client)
    except CloudConfigError as exc:
        return Check(
            name,
            False,
            f"the cloud refused: {exc.reason}",
            "Fix app_id / app_secret / account_id / user / usertype of this tenant in the "
            "tenants file (the message names the one) / 请核对租户的应用ID、密钥、数据中心和用户",
        )
    except CloudTransientError as exc:
        return Check(
            name,
            False,
            f"the cloud could not be asked: {exc.reason}",
            f"Check base_url {tenant.base} and the network / 请检查租户地址与网络",
        )
    except Exception as exc:  # a doctor reports, it does not crash
        return Check(name, False, f"{type(exc).__name__}: {exc}", "See the log for details")
    minutes = max(0, (token.expires_ms - token.issued_ms) // 60000)
    return Check(name, True, f"access_token obtained (valid ~{minutes} min)")


def diagnose(
    load_settings: Callable[[], Settings] = Settings.load,
    *,
    tenants: TenantsFile | None = None,
    tokens: bool = True,
    http: Any | None = None,
) -> list[Check]:
    """Run every check of the module table, in order; later checks skip what failed first."""
    from store.db import make_engine, make_session_factory

    checks: list[Check] = []
    try:
        settings = load_settings()
    except SettingsError as exc:
        return [Check("settings", False, str(exc), "Fix the FAPIAO_* variables named above")]
    checks.append(Check("settings", True, f"environment {settings.environment}"))

    if tenants is None:
        try:
            tenants = settings.load_tenants()
        except TenantsFileError as exc:
            checks.append(
                Check("tenants", False, str(exc), "Fix FAPIAO_TENANTS_FILE or the file named")
            )
    if tenants is not None:
        checks.append(Check("tenants", True, f"{len(tenants.tenants)}: {', '.join(tenants.names)}"))

    engine = make_engine(settings.database_url)
    ledger: Any = _NoLedger()
    try:
        database = check_database(engine)
        checks.append(database)
        if database.ok:
            from worker.ledger import SqlCallLedger

            ledger = SqlCallLedger(make_session_factory(engine))

        clients = [("redis", settings.redis_url)]
        redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
        if redis_broker and settings.broker_url != settings.redis_url:
            clients.append(("broker", settings.broker_url))
        for name, url in clients:
            client = redis_client(url)
            try:
                checks.append(check_redis(client, name))
            finally:
                client.close()

        if tokens and tenants is not None:
            own_http = http is None
            if http is None:
                from worker.kingdee import make_http_client

                http = make_http_client(settings.http)
            try:
                for tenant in tenants.tenants:
                    checks.append(_token_check(tenant, http, ledger))
            finally:
                if own_http:
                    http.close()
    finally:
        engine.dispose()
    return checks
