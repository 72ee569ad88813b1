"""Delivering callbacks to the bridge the way the cloud does: POST, wait for the ACK, re-send.

Each callback is a *delivery*: background asyncio tasks sharing one ``httpx.AsyncClient``
POST its JSON body; an attempt is acknowledged when the answer is HTTP 200 and
``schemas.kingdee.is_ack`` accepts the body. Anything else (non-200, non-ACK body, timeout,
connection error) is retried after the next wait of the retry schedule; when the schedule is
exhausted the delivery has ``failed``.

| delivery state | meaning |
|---|---|
| ``pending`` | not yet acknowledged, attempts remain |
| ``acknowledged`` | an attempt got the ACK |
| ``failed`` | every attempt of the schedule went unacknowledged |
| ``dropped`` | never sent (fault ``callback_drop``) |

Deliveries produced together (one issuance) start one after the other, each after the first
attempt of the previous one finished, so their order on the wire is the order given (or its
reverse under ``callback_reorder``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from schemas.kingdee import is_ack
from schemas.money import dumps_exact
from simulator.bills import now_ms
from simulator.stats import CallStats

__all__ = ["CallbackDelivery", "CallbackSender", "OutgoingCallback"]


@dataclass(slots=True)
class OutgoingCallback:
    """A callback to send: where, what, and for which bill."""

    url: str
    body: dict[str, Any]
    tenant: str
    bill_no: str
    bill_id: int
    kind: str  # e.g. "INVOICE.OPEN per_invoice", "BILL.RETURN"
    delay_s: float = 0.0
    duplicate: bool = False
    drop: bool = False


@dataclass(slots=True)
class CallbackDelivery:
    id: int
    url: str
    kind: str
    tenant: str
    bill_no: str
    bill_id: int
    body: bytes
    state: str = "pending"
    attempts: list[dict[str, Any]] = field(default_factory=list)
    first_attempt_done: asyncio.Event = field(default_factory=asyncio.Event)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "kind": self.kind,
            "tenant": self.tenant,
            "billNo": self.bill_no,
            "state": self.state,
            "attempts": list(self.attempts),
            "body": self.body.decode("utf-8"),
        }


DeliveryListener = Callable[[CallbackDelivery, dict[str, Any]], None]


class CallbackSender:
    """Owns the shared client and the delivery tasks; ``start`` and ``stop`` on the loop."""

    def __init__(
        self,
        stats: CallStats,
        schedule: Sequence[float],
        timeout_s: float,
        listener: DeliveryListener | None = None,
    ) -> None:
        self.stats = stats
        self.schedule = tuple(schedule)
        self.timeout_s = timeout_s
        self._listener = listener
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self.recent: deque[CallbackDelivery] = deque(maxlen=2000)

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for delivery in self.recent:
            # Nobody may wait forever for a delivery that will not happen any more.
            delivery.first_attempt_done.set()
        self.recent.clear()

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def send_batch(
        self, callbacks: Sequence[OutgoingCallback], *, reverse: bool = False
    ) -> list[CallbackDelivery]:
        """Start delivering ``callbacks`` in order (or reversed); returns their deliveries."""
        ordered = list(reversed(callbacks)) if reverse else list(callbacks)
        planned: list[tuple[CallbackDelivery, OutgoingCallback]] = []
        for callback in ordered:
            copies = 2 if callback.duplicate else 1
            for _ in range(copies):
                planned.append((self._new_delivery(callback), callback))
            if callback.duplicate:
                self.stats.callbacks["duplicated"] += 1
        self._spawn(self._run_batch(planned))
        return [delivery for delivery, _ in planned]

    def _new_delivery(self, callback: OutgoingCallback) -> CallbackDelivery:
        delivery = CallbackDelivery(
            id=next(self._ids),
            url=callback.url,
            kind=callback.kind,
            tenant=callback.tenant,
            bill_no=callback.bill_no,
            bill_id=callback.bill_id,
            body=dumps_exact(callback.body).encode("utf-8"),
        )
        self.recent.append(delivery)
        return delivery

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, planned: list[tuple[CallbackDelivery, OutgoingCallback]]) -> None:
        for delivery, callback in planned:
            if callback.drop:
                delivery.state = "dropped"
                self.stats.callbacks["dropped"] += 1
                self._notify(delivery, {"event": "callback_dropped"})
                delivery.first_attempt_done.set()
                continue
            self._spawn(self._deliver(delivery, callback.delay_s))
            await delivery.first_attempt_done.wait()

    async def _deliver(self, delivery: CallbackDelivery, delay_s: float) -> None:
        try:
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            waits = iter(self.schedule)
            while True:
                acknowledged = await self._attempt(delivery)
                delivery.first_attempt_done.set()
                if acknowledged:
                    delivery.state = "acknowledged"
                    self.stats.callbacks["acknowledged"] += 1
                    return
                wait = next(waits, None)
                if wait is None:
                    delivery.state = "failed"
                    self.stats.callbacks["failed"] += 1
                    self._notify(delivery, {"event": "callback_failed"})
                    return
                await asyncio.sleep(wait)
        finally:
            delivery.first_attempt_done.set()

    async def _attempt(self, delivery: CallbackDelivery) -> bool:
        assert self._client is not None, "CallbackSender.start() was not awaited"
        number = len(delivery.attempts) + 1
        record: dict[str, Any] = {"attempt": number, "at": now_ms()}
        self.stats.callbacks["sent"] += 1
        try:
            response = await self._client.post(
                delivery.url,
                content=delivery.body,
                headers={"content-type": "application/json; charset=utf-8"},
            )
        except httpx.HTTPError as exc:
            record.update(status=None, acknowledged=False, error=type(exc).__name__)
        else:
            acknowledged = response.status_code == 200 and is_ack(response.content)
            record.update(
                status=response.status_code,
                acknowledged=acknowledged,
                answer=response.text[:200],
            )
        delivery.attempts.append(record)
        if not record["acknowledged"]:
            self.stats.callbacks["not_acknowledged"] += 1
        self._notify(delivery, {"event": "callback_attempt", **record})
        return bool(record["acknowledged"])

    def _notify(self, delivery: CallbackDelivery, detail: dict[str, Any]) -> None:
        if self._listener is not None:
            self._listener(delivery, detail)
