"""Fixtures of the integration tests that run the worker against the simulator (the
suite-wide ones, database and Redis, are in tests/conftest.py). ``World`` and ``make_world``:
tests/integration/worlds.py.

| fixture              | gives                                                                |
|----------------------|----------------------------------------------------------------------|
| `callbacks`          | a recording callback receiver (the URL the simulator calls back)     |
| `sim`                | a simulator over real HTTP calling `callbacks` (2 lines per invoice) |
| `world`              | a `World` on `sim`: callbacks confirmed by BILL.INVOICE.QUERY        |
| `trusting_world`     | the same, callbacks applied as they come (no confirming query)       |
| `either_world`       | `world` and `trusting_world` (parametrised)                          |
| `declared_world`     | tenants that declare the simulator's default dialect                 |
| `batch_world`        | batches of 4 pushed 3 at a time                                      |
| `wrong_secret_world` | tenant "demo" configured with a wrong app_secret                     |
| `webhook`            | a real ERP webhook endpoint (`Webhook`) that records what it gets    |
| `api_process`        | URL of a healthy `fapiao api` process (tests/integration/processes.py) |

Modules may override `sim` (and so every world) with a fixture of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from producers.testing import write_tenants_toml
from simulator.testing import (
    CallbackRecorder,
    SimulatorHandle,
    recording_callback_receiver,
    running_simulator,
)
from tests.integration.processes import api_env, running_api
from tests.integration.worlds import Webhook, World, WorldFactory, make_world


@pytest.fixture
def callbacks() -> Iterator[CallbackRecorder]:
    with recording_callback_receiver() as recorder:
        yield recorder


@pytest.fixture
def sim(callbacks: CallbackRecorder) -> Iterator[SimulatorHandle]:
    with running_simulator(
        issue_delay=0.05, callback_url=callbacks.url, max_lines_per_invoice=2, seed=11
    ) as handle:
        yield handle


@pytest.fixture
def new_world(
    request: pytest.FixtureRequest,
    callbacks: CallbackRecorder,
    session_factory: sessionmaker[Session],
    database_url: str,
    redis_url: str,
    tmp_path: Path,
) -> Iterator[WorldFactory]:
    """Build a ``World`` (``make_world``'s options) torn down with the test; the simulator is
    the ``sim`` fixture unless one is given (so a test with its own starts no second one)."""
    with ExitStack() as stack:

        def build(
            overrides: dict[str, Any] | None = None,
            *,
            simulator: SimulatorHandle | None = None,
            specs: list[dict[str, Any]] | None = None,
            cloud: dict[str, str] | None = None,
        ) -> World:
            handle = simulator or request.getfixturevalue("sim")
            worlds = make_world(
                handle, callbacks, session_factory, database_url, redis_url, tmp_path,
                overrides, specs, cloud,
            )  # fmt: skip
            stack.callback(lambda: next(worlds, None))  # runs make_world's clean-up
            return next(worlds)

        yield build


@pytest.fixture
def world(new_world: WorldFactory) -> World:
    return new_world()


@pytest.fixture
def trusting_world(new_world: WorldFactory) -> World:
    """Callbacks applied as they come (``FAPIAO_CALLBACKS__CONFIRM_WITH_QUERY=false``)."""
    return new_world({"callbacks": {"confirm_with_query": False}})


@pytest.fixture
def declared_world(new_world: WorldFactory) -> World:
    """Tenants that declare the simulator's default dialect (``[tenants.cloud]``)."""
    from schemas.cloud_contract import Dialect

    return new_world(cloud=Dialect.default().as_dict())


@pytest.fixture(params=["confirming", "trusting"])
def either_world(request: pytest.FixtureRequest) -> World:
    """The default world (callbacks confirmed by BILL.INVOICE.QUERY) and the trusting one."""
    name = "world" if request.param == "confirming" else "trusting_world"
    world: World = request.getfixturevalue(name)
    return world


@pytest.fixture
def batch_world(new_world: WorldFactory) -> World:
    """Small batches (4) pushed 3 at a time, so chunking and overlap are visible."""
    return new_world({"push": {"batch_size": 4, "batch_concurrency": 3}})


@pytest.fixture
def wrong_secret_world(sim: SimulatorHandle, new_world: WorldFactory) -> World:
    specs: list[dict[str, Any]] = [dict(spec) for spec in sim.specs]
    specs[0]["app_secret"] = "sim-this-is-not-the-secret"  # tenant "demo"
    return new_world(specs=specs)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


@pytest.fixture
def api_process(
    database_url: str,
    redis_url: str,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> Iterator[str]:
    """``fapiao api`` on the test database and Redis (emptied after the test), its URL."""
    tenants = write_tenants_toml(tmp_path / "tenants.toml")
    with running_api({**os.environ, **api_env(database_url, redis_url, tenants)}) as api:
        yield api.url
