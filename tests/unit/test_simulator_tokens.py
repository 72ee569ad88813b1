"""Simulator tokens expire for real (simulator.tokens), checked with a fake clock."""

from __future__ import annotations

import re

from simulator.tokens import TokenBook


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_live_until_their_expiry() -> None:
    clock = Clock()
    book = TokenBook(clock)
    app = book.issue("app", "demo", "1900", ttl_s=10)
    access = book.issue("access", "demo", "1900", ttl_s=10)
    assert re.fullmatch(r"[0-9a-f-]{36}", app.token)
    assert re.fullmatch(r"1900_[A-Za-z0-9]{100}", access.token)
    assert access.expire_time_ms == int((clock.now + 10) * 1000)
    assert book.valid(access.token, "access") is access
    assert book.valid(access.token, "app") is None  # kinds do not mix
    clock.now += 10
    assert book.valid(access.token, "access") is None
    assert book.valid(app.token, "app") is None


def test_expire_all_per_tenant() -> None:
    book = TokenBook(Clock())
    demo = book.issue("access", "demo", "1", ttl_s=100)
    shop = book.issue("access", "shop", "2", ttl_s=100)
    assert book.expire_all("demo") == 1
    assert book.valid(demo.token, "access") is None
    assert book.valid(shop.token, "access") is shop
    assert book.expire_all() == 1
    assert book.valid(shop.token, "access") is None


def test_expired_tokens_are_pruned() -> None:
    clock = Clock()
    book = TokenBook(clock)
    old = book.issue("access", "demo", "1", ttl_s=1)
    clock.now += 120
    book.issue("access", "demo", "1", ttl_s=1)  # issuing prunes at most once a minute
    assert len(book) == 1
    assert book.valid(old.token, "access") is None
