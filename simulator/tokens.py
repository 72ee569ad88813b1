"""The simulated cloud's tokens: app_token (1.01) and access_token (1.02), which really expire.

| kind | looks like | obtained from | used for |
|---|---|---|---|
| ``app`` | UUID | ``getAppToken.do`` (appId, secret, accountId) | ``login.do`` |
| ``access`` | ``<accountId>_<100 alphanumerics>`` | ``login.do`` (a) | every ``/kapi`` call |

(a) apptoken + user + accountId + usertype.

Expiry is wall-clock (``expire_time`` is epoch milliseconds, as the cloud sends it); a token
past its expiry, unknown, or expired by an operator is refused with the auth-expired answer.
"""

from __future__ import annotations

import secrets
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["TokenBook", "TokenKind", "TokenRecord"]

TokenKind = Literal["app", "access"]

_ALPHANUMERIC = string.ascii_letters + string.digits


@dataclass(slots=True)
class TokenRecord:
    token: str
    kind: TokenKind
    tenant: str
    expires_at: float  # epoch seconds

    @property
    def expire_time_ms(self) -> int:
        return int(self.expires_at * 1000)


class TokenBook:
    """Issued tokens by value; expired ones are pruned lazily."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[str, TokenRecord] = {}
        self._next_prune = 0.0

    def __len__(self) -> int:
        return len(self._tokens)

    def issue(self, kind: TokenKind, tenant: str, account_id: str, ttl_s: float) -> TokenRecord:
        now = self._clock()
        if kind == "app":
            value = str(uuid.uuid4())
        else:
            value = f"{account_id}_" + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(100))
        record = TokenRecord(token=value, kind=kind, tenant=tenant, expires_at=now + ttl_s)
        self._tokens[value] = record
        if now >= self._next_prune:
            self._prune(now)
        return record

    def valid(self, token: str, kind: TokenKind) -> TokenRecord | None:
        """The record if ``token`` is a live token of ``kind``; None when unknown or expired."""
        record = self._tokens.get(token)
        if record is None or record.kind != kind:
            return None
        if record.expires_at <= self._clock():
            return None
        return record

    def expire(self, token: str) -> None:
        record = self._tokens.get(token)
        if record is not None:
            record.expires_at = 0.0

    def expire_all(self, tenant: str | None = None) -> int:
        """Expire every token (of ``tenant`` when given); returns how many were live."""
        now = self._clock()
        count = 0
        for record in self._tokens.values():
            if (tenant is None or record.tenant == tenant) and record.expires_at > now:
                record.expires_at = 0.0
                count += 1
        return count

    def clear(self) -> None:
        self._tokens.clear()

    def _prune(self, now: float) -> None:
        dead = [value for value, record in self._tokens.items() if record.expires_at <= now]
        for value in dead:
            del self._tokens[value]
        self._next_prune = now + 60.0
