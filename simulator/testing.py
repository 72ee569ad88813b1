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

(a) ``base_url``, ``base_url_for(tenant)``, ``admin`` (httpx.Client), ``set_faults``,
``stats``, ``bill``, ``bills``, ``expire_tokens``, ``reset``, ``set_callback_url``,
``write_tenants_file``, ``wait_for``, ``stop``.

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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from schemas.tenants import load_tenants
from simulator.app import SimulatorApp, create_app
from simulator.config import SimulatorConfig
from simulator.faults import FaultPlan
from simulator.tenancy import SimTenant, tenants_from_config

__all__ = [
    "SimulatorHandle",
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
        for extra in ("rate_limit_per_second", "erp_webhook_url", "erp_webhook_secret", "paused"):
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

    def reset(self, keep_tokens: bool = False) -> None:
        params = {"keep_tokens": "1"} if keep_tokens else {}
        self.admin.post("/_sim/reset", params=params).raise_for_status()

    def set_callback_url(self, business_system_code: str, url: str | None) -> None:
        body = {"businessSystemCode": business_system_code, "url": url}
        self.admin.put("/_sim/callback-urls", json=body).raise_for_status()

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
    invoice_amount_limit: Decimal | None = None,
    max_lines_per_invoice: int | None = None,
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
        faults=_faults_from(faults),
        seed=seed,
        state_file=Path(state_file) if state_file is not None else None,
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
    admin = httpx.Client(base_url=origin, timeout=10.0)
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
