"""Run the simulator inside a test: a real uvicorn server on a free loopback port, in a thread.

    with running_simulator(issue_delay=0.05, callback_url=receiver_url) as sim:
        tenants_path = sim.write_tenants_file(tmp_path / "tenants.toml")  # for the bridge
        base = sim.base_url_for("demo")          # http://127.0.0.1:<port>/demo
        sim.set_faults(push_5xx_before=0.5, seed=7)
        sim.admin.post("/_sim/bills/B1/issue")   # httpx.Client on the simulator's origin
        assert sim.stats()["doubleIssue"] == {"live_twice": [], "over_issued": []}

| name | what |
|---|---|
| ``running_simulator(tenants=None, **options)`` | context manager → ``SimulatorHandle`` |
| ``SimulatorHandle`` | the running server: URLs, admin client, faults, stats (a) |
| ``sim_tenant_specs()`` | ``demo`` (3std1…, per-bill callbacks) and ``shop`` (per-invoice) |
| ``write_tenants_toml(path, origin, specs)`` | a tenants TOML, every base URL on ``origin`` |
| ``CloudSession(handle, tenant)`` | raw calls to the cloud: tokens, push, withdraw, query |
| ``make_bill(bill_no, seller, ...)`` | a valid BILL.PUSH bill (dict) with as many lines as asked |
| ``recording_callback_receiver()`` | a real listener recording callbacks (``CallbackRecorder``) |

(a) ``base_url``, ``base_url_for(tenant)``, ``admin`` (httpx.Client), ``set_faults``,
``stats``, ``bill``, ``bills``, ``expire_tokens``, ``reset``, ``set_callback_url``,
``dialect``, ``set_dialect``, ``write_tenants_file``, ``wait_for``, ``stop``; after issuance
(docs/CLOUD-CONTRACT.md §15): ``void``, ``red``, ``quota``, ``set_quota``,
``set_clock_offset``, ``withdraw_behind``, ``plant_bill`` (each raises ``httpx.HTTPStatusError``
on a 4xx, e.g. 409 for a state the action does not apply to).

``running_simulator(quotas={"demo": ("1000.00", "20000.00")})`` starts with credit quotas.

``running_simulator(dialect=...)`` takes a ``Dialect``, a mapping or ``["NAME=VALUE"]``; a
tenant spec may carry ``data_encryption``/``aes_key`` (``CloudSession`` then encodes with AES).

``tenants`` may be a path to a tenants TOML, a ``TenantsFile``, a list of ``TenantConfig`` /
``SimTenant`` / spec dicts, or None (``sim_tenant_specs()``). Only each tenant's *path* matters to
the simulator; the handle rewrites hosts and ports to where it really listens. Nothing is
bound to a fixed port.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from schemas.cloud_contract import Dialect
from schemas.data_codec import codec_for
from schemas.kingdee import CALLBACK_ACK, encode_data, new_request_id
from schemas.money import dumps_exact, loads_exact
from schemas.tenants import load_tenants
from simulator.app import SimulatorApp, create_app
from simulator.config import SimulatorConfig
from simulator.faults import FaultPlan
from simulator.quota import Quota
from simulator.tenancy import SimTenant, tenants_from_config

__all__ = [
    "CallbackRecorder",
    "CloudSession",
    "ReceivedCallback",
    "SimulatorHandle",
    "make_bill",
    "recording_callback_receiver",
    "running_simulator",
    "sim_tenant_specs",
    "write_tenants_toml",
]


def sim_tenant_specs() -> list[dict[str, Any]]:
    """Two test tenants with fresh random secrets (never placeholders)."""
    return [
        {
            "name": "demo",
            "path": "/demo",
            "app_id": "sim-test-demo",
            "app_secret": "sim-" + secrets.token_hex(16),
            "account_id": "1900000000000000001",
            "user": "fapiao-bridge",
            "usertype": "UserName",
            "business_system_code": "3std1TESTERP",
            "seller_tax_ids": ["91310000SIM0000001", "91330106MA2H07XK4J"],
            "auto_invoice": True,
        },
        {
            "name": "shop",
            "path": "/shop",
            "app_id": "sim-test-shop",
            "app_secret": "sim-" + secrets.token_hex(16),
            "account_id": "1900000000000000002",
            "user": "13800000000",
            "usertype": "Mobile",
            "business_system_code": "SHOPERP01",
            "seller_tax_ids": ["91440300SIM0000003", "91440300MA5FXT2K0B"],
            "auto_invoice": True,
        },
    ]


def _spec_of(tenant: SimTenant) -> dict[str, Any]:
    return {
        "name": tenant.name,
        "path": tenant.path,
        "app_id": tenant.app_id,
        "app_secret": tenant.app_secret,
        "account_id": tenant.account_id,
        "user": tenant.user,
        "usertype": tenant.usertype,
        "business_system_code": sorted(tenant.business_system_codes)[0],
        "seller_tax_ids": sorted(tenant.seller_tax_ids),
        "auto_invoice": tenant.auto_invoice,
        "data_encryption": tenant.data_encryption,
        "aes_key": tenant.aes_key,
    }


def _tenant_of(spec: Mapping[str, Any], origin: str) -> SimTenant:
    return SimTenant(
        name=str(spec["name"]),
        base_url=origin + str(spec.get("path", "/" + str(spec["name"]))),
        app_id=str(spec["app_id"]),
        app_secret=str(spec["app_secret"]),
        account_id=str(spec["account_id"]),
        user=str(spec["user"]),
        usertype=str(spec.get("usertype", "Mobile")),
        business_system_codes=frozenset({str(spec["business_system_code"])}),
        seller_tax_ids=frozenset(str(t) for t in spec["seller_tax_ids"]),
        auto_invoice=bool(spec.get("auto_invoice", True)),
        data_encryption=str(spec.get("data_encryption", "base64")),
        aes_key=str(spec.get("aes_key", "")),
    )


def write_tenants_toml(
    path: str | Path, origin: str, specs: Sequence[Mapping[str, Any]] | None = None
) -> Path:
    """Write a tenants TOML whose base URLs are ``origin`` + each tenant's path."""
    target = Path(path)
    blocks: list[str] = ["# Written by simulator.testing for a test run; secrets are random.\n"]
    for spec in specs if specs is not None else sim_tenant_specs():
        base = origin.rstrip("/") + str(spec.get("path", "/" + str(spec["name"])))
        values: dict[str, Any] = {
            "name": spec["name"],
            "base_url": base,
            "app_id": spec["app_id"],
            "app_secret": spec["app_secret"],
            "account_id": spec["account_id"],
            "user": spec["user"],
            "usertype": spec.get("usertype", "Mobile"),
            "business_system_code": spec["business_system_code"],
            "seller_tax_ids": list(spec["seller_tax_ids"]),
            "auto_invoice": bool(spec.get("auto_invoice", True)),
        }
        extras = (
            "rate_limit_per_second",
            "erp_webhook_url",
            "erp_webhook_secret",
            "paused",
            "data_encryption",
            "aes_key",
        )
        for extra in extras:
            if extra == "aes_key" and not spec.get("aes_key"):
                continue
            if extra in spec:
                values[extra] = spec[extra]
        lines = ["[[tenants]]"]
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        blocks.append("\n".join(lines) + "\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(blocks), encoding="utf-8")
    return target


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)


@dataclass
class SimulatorHandle:
    """A running simulator; every method talks to it over real HTTP."""

    host: str
    port: int
    app: SimulatorApp
    specs: list[dict[str, Any]]
    admin: httpx.Client
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def base_url_for(self, tenant: Any) -> str:
        """Base URL (with tenant path) of a tenant given by name, spec, config or SimTenant."""
        name = tenant if isinstance(tenant, str) else _name_of(tenant)
        for spec in self.specs:
            if spec["name"] == name:
                return self.base_url + str(spec["path"])
        raise KeyError(f"the simulator serves no tenant {name!r}")

    def spec(self, name: str) -> dict[str, Any]:
        for spec in self.specs:
            if spec["name"] == name:
                return spec
        raise KeyError(name)

    def write_tenants_file(self, path: str | Path) -> Path:
        """A tenants TOML for the bridge pointing at this simulator's port."""
        return write_tenants_toml(path, self.base_url, self.specs)

    def set_faults(
        self, *, seed: int | None = None, merge: bool = False, **faults: float
    ) -> dict[str, Any]:
        """Replace (or with ``merge`` update) the fault plan; ``seed`` reseeds the dice."""
        body: dict[str, Any] = {"faults": {k: _wire(v) for k, v in faults.items()}}
        if seed is not None:
            body["seed"] = seed
        response = self.admin.request("PATCH" if merge else "PUT", "/_sim/faults", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        return self._get("/_sim/stats")

    def bill(self, bill_no: str, **filters: str) -> dict[str, Any]:
        return self._get(f"/_sim/bills/{bill_no}", params=filters)

    def bills(self, **filters: str) -> list[dict[str, Any]]:
        response = self.admin.get("/_sim/bills", params=filters)
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows

    def expire_tokens(self, tenant: str | None = None) -> int:
        body = {"tenant": tenant} if tenant else {}
        response = self.admin.post("/_sim/tokens/expire", json=body)
        response.raise_for_status()
        return int(response.json()["expired"])

    def dialect(self) -> dict[str, str]:
        """``GET /_sim/dialect``."""
        return self._get("/_sim/dialect")

    def set_dialect(self, **switches: str) -> dict[str, str]:
        """``PUT /_sim/dialect`` with ``switches``; the full new dialect."""
        response = self.admin.put("/_sim/dialect", json=switches)
        response.raise_for_status()
        result: dict[str, str] = response.json()
        return result

    def reset(self, keep_tokens: bool = False) -> None:
        params = {"keep_tokens": "1"} if keep_tokens else {}
        self.admin.post("/_sim/reset", params=params).raise_for_status()

    def set_callback_url(self, business_system_code: str, url: str | None) -> None:
        body = {"businessSystemCode": business_system_code, "url": url}
        self.admin.put("/_sim/callback-urls", json=body).raise_for_status()

    # ------------------------------------------------------------------ after issuance

    def void(
        self, bill_no: str, invoice: str | None = None, *, wait: bool = True, **params: str
    ) -> dict[str, Any]:
        """作废 every issued invoice of ``bill_no`` (or ``invoice``); the bill's detail."""
        body: dict[str, Any] = {"wait": wait, **params}
        if invoice is not None:
            body["invoice"] = invoice
        return self._post(f"/_sim/bills/{bill_no}/void", body)

    def red(
        self,
        bill_no: str,
        invoice: str | None = None,
        amount: str | Decimal | None = None,
        *,
        wait: bool = True,
        **params: str,
    ) -> dict[str, Any]:
        """A clerk's 红冲 of ``invoice`` (or the bill's only one), fully or ``amount`` excl. tax."""
        body: dict[str, Any] = {"wait": wait, **params}
        if invoice is not None:
            body["invoice"] = invoice
        if amount is not None:
            body["amount"] = str(amount)
        return self._post(f"/_sim/bills/{bill_no}/red", body)

    def withdraw_behind(self, bill_no: str, **params: str) -> dict[str, Any]:
        """Withdraw in the cloud without telling the bridge (no callback)."""
        return self._post(f"/_sim/bills/{bill_no}/withdraw", dict(params))

    def plant_bill(
        self,
        bill: Mapping[str, Any],
        tenant: str | None = None,
        business_system_code: str | None = None,
    ) -> dict[str, Any]:
        """Create ``bill`` in the cloud as if someone else pushed it (an orphan)."""
        body: dict[str, Any] = {"bill": dict(bill)}
        if tenant is not None:
            body["tenant"] = tenant
        if business_system_code is not None:
            body["businessSystemCode"] = business_system_code
        return self._post("/_sim/bills", body)

    def quota(self) -> dict[str, Any]:
        """``GET /_sim/quota``: limits, used and left per limited tenant (amounts Decimal)."""
        response = self.admin.get("/_sim/quota")
        response.raise_for_status()
        result: dict[str, Any] = loads_exact(response.content)
        return result

    def set_quota(
        self,
        tenant: str,
        day: str | Decimal | None,
        month: str | Decimal | None = None,
        warn_ratio: str | Decimal | None = None,
    ) -> dict[str, Any]:
        """Give ``tenant`` a day/month quota (yuan incl. tax); ``day=None`` removes it."""
        limits: dict[str, Any] | None = None
        if day is not None:
            limits = {"day": str(day), "month": str(month if month is not None else day)}
            if warn_ratio is not None:
                limits["warn_ratio"] = str(warn_ratio)
        response = self.admin.put("/_sim/quota", content=dumps_exact({tenant: limits}))
        response.raise_for_status()
        result: dict[str, Any] = loads_exact(response.content)
        return result

    def set_clock_offset(self, seconds: float) -> dict[str, Any]:
        """Move the simulator's clock (quota days and months) ``seconds`` from wall time."""
        response = self.admin.put("/_sim/clock", json={"offset_seconds": seconds})
        response.raise_for_status()
        result: dict[str, Any] = loads_exact(response.content)
        return result

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        response = self.admin.post(path, content=dumps_exact(dict(body)))
        response.raise_for_status()
        result: dict[str, Any] = loads_exact(response.content)
        return result

    def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll ``predicate()`` until it returns something truthy (returned) or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            time.sleep(interval)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.should_exit = True
            self._thread.join(timeout=15)
        self.admin.close()

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        response = self.admin.get(path, params=params)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def _name_of(tenant: Any) -> str:
    if isinstance(tenant, Mapping):
        return str(tenant["name"])
    return str(tenant.name)


def _wire(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a fault value is a number, got {value!r}")
    return float(value)


def _specs_from(tenants: Any, environment: str) -> list[dict[str, Any]]:
    if tenants is None:
        return sim_tenant_specs()
    if isinstance(tenants, str | Path):
        tenants = load_tenants(tenants, environment)
    if isinstance(tenants, Sequence) and all(isinstance(t, Mapping) for t in tenants):
        return [dict(t) for t in tenants]
    return [_spec_of(t) for t in tenants_from_config(tenants)]


def _faults_from(faults: FaultPlan | Mapping[str, float] | Sequence[str] | None) -> FaultPlan:
    if faults is None:
        return FaultPlan()
    if isinstance(faults, FaultPlan):
        return faults
    if isinstance(faults, Mapping):
        return FaultPlan().updated(faults)
    return FaultPlan.from_specs(faults)


def _dialect_from(dialect: Dialect | Mapping[str, str] | Sequence[str] | None) -> Dialect:
    if dialect is None:
        return Dialect.default()
    if isinstance(dialect, Dialect):
        return dialect
    if isinstance(dialect, Mapping):
        return Dialect.default().replace(dialect)
    return Dialect.parse(dialect)


@contextmanager
def running_simulator(
    tenants: Any = None,
    *,
    issue_delay: float = 0.05,
    token_ttl: float = 7200.0,
    faults: FaultPlan | Mapping[str, float] | Sequence[str] | None = None,
    callback_url: str | None = None,
    callback_retry_schedule: Sequence[float] = (0.05, 0.1, 0.2),
    callback_timeout: float = 2.0,
    seed: int | None = None,
    state_file: str | Path | None = None,
    lenient_data: bool = False,
    plain_query_data: bool = False,
    dialect: Dialect | Mapping[str, str] | Sequence[str] | None = None,
    invoice_amount_limit: Decimal | None = None,
    max_lines_per_invoice: int | None = None,
    quotas: Mapping[str, tuple[str, str]] | None = None,
    unknown_originals: str = "refused",
    environment: str = "development",
    host: str = "127.0.0.1",
    startup_timeout: float = 15.0,
) -> Iterator[SimulatorHandle]:
    """Start the simulator on a free loopback port in a background thread; stop it on exit."""
    specs = _specs_from(tenants, environment)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = int(sock.getsockname()[1])
    origin = f"http://{host}:{port}"
    config = SimulatorConfig(
        issue_delay=issue_delay,
        token_ttl=token_ttl,
        callback_url=callback_url,
        callback_retry_schedule=tuple(callback_retry_schedule),
        callback_timeout=callback_timeout,
        invoice_amount_limit=invoice_amount_limit,
        max_lines_per_invoice=max_lines_per_invoice,
        lenient_data=lenient_data,
        plain_query_data=plain_query_data,
        dialect=_dialect_from(dialect),
        faults=_faults_from(faults),
        seed=seed,
        state_file=Path(state_file) if state_file is not None else None,
        quotas=tuple(
            (name, Quota(Decimal(day), Decimal(month)))
            for name, (day, month) in (quotas or {}).items()
        ),
        unknown_originals=unknown_originals,
    )
    app = create_app([_tenant_of(spec, origin) for spec in specs], config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            http="httptools",
            loop="asyncio",
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"simulator:{port}", daemon=True
    )
    thread.start()
    # No keep-alive: uvicorn drops an idle connection after 5 s, and a test that waits
    # longer than that between two admin calls could reuse a socket the server is closing
    # at that moment (a ReadError, "connection reset by peer", seen once in CI).
    admin = httpx.Client(
        base_url=origin, timeout=10.0, limits=httpx.Limits(max_keepalive_connections=0)
    )
    handle = SimulatorHandle(host, port, app, specs, admin, server, thread)
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the simulator server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the simulator did not start in time")
            time.sleep(0.01)
        admin.get("/_sim/healthz").raise_for_status()
        yield handle
    finally:
        handle.stop()
        sock.close()


# ---------------------------------------------------------------------- callback receiver

Answer = Callable[[int, bytes], tuple[int, bytes]]
_ACK_BODY = json.dumps(CALLBACK_ACK).encode("utf-8")


@dataclass(frozen=True, slots=True)
class ReceivedCallback:
    """One POST the receiver got: its 0-based arrival index, path, raw body, and our answer."""

    index: int
    path: str
    body: bytes
    status: int
    answer: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


class CallbackRecorder:
    """A real HTTP server (stdlib, threaded) that records callbacks and answers them.

    By default every callback gets HTTP 200 with ``CALLBACK_ACK``; ``answer_with`` replaces
    the answer (``fn(index, body) -> (status, body)``), ``refuse_first(n)`` answers the first
    ``n`` callbacks with a non-ACK body to make the simulator retry.
    """

    def __init__(self, path: str = "/callbacks/kingdee/test") -> None:
        self.path = path
        self.received: list[ReceivedCallback] = []
        self.events: list[str] = []  # arrival markers tests may interleave with their own
        self._count = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._answer: Answer = lambda index, body: (200, _ACK_BODY)
        recorder = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                recorder._record(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"callback-receiver:{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def answer_with(self, answer: Answer) -> None:
        self._answer = answer

    def refuse_first(self, count: int, status: int = 200) -> None:
        """Answer the first ``count`` callbacks with a non-ACK (or ``status``), then ACK."""
        refusal = json.dumps({"success": False, "code": "500", "message": "busy"}).encode()

        def answer(index: int, body: bytes) -> tuple[int, bytes]:
            if index < count:
                return status, refusal
            return 200, _ACK_BODY

        self._answer = answer

    def _record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            index = self._count
            self._count += 1
            arrived = time.monotonic()
            self.events.append("callback")
        # The answer may take its time (timeout tests): never while holding the lock.
        status, answer = self._answer(index, body)
        with self._lock:
            self.received.append(
                ReceivedCallback(index, handler.path, body, status, answer, arrived)
            )
            self.received.sort(key=lambda r: r.index)
            self._arrived.notify_all()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
        except OSError:  # the simulator gave up waiting (timeout tests)
            pass

    def clear(self) -> None:
        """Forget what arrived and answer with the ACK again (between tests)."""
        with self._lock:
            self.received.clear()
            self.events.clear()
            self._count = 0
        self._answer = lambda index, body: (200, _ACK_BODY)

    def mark(self, event: str) -> None:
        """Append a test's own marker to ``events`` (ordering checks)."""
        with self._lock:
            self.events.append(event)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedCallback]:
        """Block until at least ``count`` callbacks arrived; returns all received so far."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.received)} callbacks arrived, {count} expected")
                self._arrived.wait(remaining)
            return list(self.received)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def recording_callback_receiver(
    path: str = "/callbacks/kingdee/test",
) -> Iterator[CallbackRecorder]:
    """Run a ``CallbackRecorder`` on a free loopback port for the duration of the block."""
    recorder = CallbackRecorder(path)
    recorder.start()
    try:
        yield recorder
    finally:
        recorder.stop()


# ---------------------------------------------------------------------- cloud calls


def make_bill(
    bill_no: str,
    seller: str,
    *,
    invoice_type: str = "10xdp",
    lines: int = 1,
    amount: str = "100.00",
    tax_rate: str = "0.13",
    include_tax: bool = False,
    auto_invoice: bool | None = None,
    buyer_tax_id: str = "91310000MA1FL0BENC",
    **header: Any,
) -> dict[str, Any]:
    """A valid bill: ``lines`` goods lines of ``amount`` each, tax computed like the cloud."""
    from schemas.tax import format_tax_rate, line_amounts, parse_tax_rate

    rate = parse_tax_rate(tax_rate)
    details: list[dict[str, Any]] = []
    total = Decimal("0.00")
    for index in range(1, lines + 1):
        value = Decimal(amount)
        amounts = line_amounts(value, rate, include_tax, None)
        details.append(
            {
                "detailId": f"{bill_no}-{index}",
                "lineProperty": 2,
                "goodsName": f"测试商品{index}",
                "revenueCode": "1090511010000000000",
                "taxRate": format_tax_rate(rate),
                "amount": value,
                "taxAmount": amounts.tax,
                "quantity": Decimal("1"),
                "price": value,
                "units": "个",
            }
        )
        total += value
    bill: dict[str, Any] = {
        "billNo": bill_no,
        "billDate": "2025-11-24",
        "invoiceType": invoice_type,
        "includeTaxFlag": "1" if include_tax else "0",
        "totalAmount": total,
        "buyerName": "上海示例贸易有限公司",
        "buyerTaxpayerId": buyer_tax_id,
        "sellerTaxpayerId": seller,
        "sellerName": "上海模拟科技有限公司",
        "drawer": "张三",
        "billDetail": details,
    }
    if auto_invoice is not None:
        bill["autoInvoice"] = "1" if auto_invoice else "0"
    bill.update(header)
    return bill


class CloudSession:
    """Raw HTTP calls to one tenant of a running simulator (tests send malformed ones too).

    ``token_in`` says where the access_token travels: ``"both"`` (query and header
    ``access_token``, as the doc's curl), ``"query"``, ``"header"``, ``"camel"`` (header
    ``accessToken`` only, which the cloud does not read) or ``"none"``.
    """

    def __init__(self, handle: SimulatorHandle, tenant: str) -> None:
        self.handle = handle
        self.spec = handle.spec(tenant)
        self.base = handle.base_url_for(tenant)
        self.client = httpx.Client(timeout=10.0)
        self.access_token: str | None = None
        self.codec = codec_for(
            str(self.spec.get("data_encryption", "base64")), self.spec.get("aes_key") or None
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> CloudSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def app_token_response(self, **overrides: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "appId": self.spec["app_id"],
            "appSecuret": self.spec["app_secret"],
            "accountId": self.spec["account_id"],
        }
        body.update(overrides)
        body = {k: v for k, v in body.items() if v is not None}
        return self.client.post(self.base + "/api/getAppToken.do", json=body)

    def login_response(self, app_token: str, **overrides: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "user": self.spec["user"],
            "apptoken": app_token,
            "accountId": self.spec["account_id"],
            "usertype": self.spec["usertype"],
        }
        body.update(overrides)
        body = {k: v for k, v in body.items() if v is not None}
        return self.client.post(self.base + "/api/login.do", json=body)

    def login(self) -> str:
        """getAppToken + login; remembers and returns the access_token."""
        app = self.app_token_response().json()
        token = str(self.login_response(app["data"]["app_token"]).json()["data"]["access_token"])
        self.access_token = token
        return token

    def gateway(
        self,
        interface: str,
        data: Any,
        *,
        token_in: str = "both",
        token: str | None = None,
        business_system_code: str | None = None,
        encode: bool = True,
        envelope: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """POST openApi; ``envelope`` (if given) is sent as is, else one is built."""
        value = token if token is not None else (self.access_token or self.login())
        if envelope is None:
            envelope = {
                "requestId": new_request_id(),
                "businessSystemCode": business_system_code or self.spec["business_system_code"],
                "interfaceCode": interface,
                "data": encode_data(data, self.codec) if encode else data,
            }
        params: dict[str, str] = {}
        headers = {"content-type": "application/json"}
        if token_in in ("both", "query"):
            params["access_token"] = value
        if token_in in ("both", "header"):
            headers["access_token"] = value
        if token_in == "camel":
            headers["accessToken"] = value
        return self.client.post(
            self.base + "/kapi/app/sim/openApi",
            params=params,
            headers=headers,
            content=dumps_exact(dict(envelope)).encode("utf-8"),
        )

    def push(self, *bills: Mapping[str, Any], **options: Any) -> dict[str, Any]:
        return _json(self.gateway("BILL.PUSH", [dict(b) for b in bills], **options))

    def withdraw(self, *bill_nos: str, seller: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"serialNos": list(bill_nos)}
        if seller:
            data["sellerTaxpayerId"] = seller
        return _json(self.gateway("BILL.WITHDRAW", data))

    def query(self, seller: str, bill_no: str) -> dict[str, Any]:
        data = {"sellerTaxpayerId": seller, "serialNo": bill_no}
        return _json(self.gateway("BILL.INVOICE.QUERY", data))


def _json(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    result: dict[str, Any] = loads_exact(response.content)
    return result
