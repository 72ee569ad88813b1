"""TokenCache against an in-process Redis (fakeredis with Lua): freshness, margin, invalidation."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import fakeredis
import pytest

from worker.tokens import AccessToken, TokenCache


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Issuer:
    """Counts fetches and hands out numbered tokens living ``lifetime_s`` seconds."""

    def __init__(self, clock: Clock, lifetime_s: float = 7200) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.calls = 0

    def __call__(self) -> AccessToken:
        self.calls += 1
        now_ms = int(self.clock() * 1000)
        return AccessToken(
            f"tok-{self.calls}", expires_ms=now_ms + int(self.lifetime_s * 1000), issued_ms=now_ms
        )


@pytest.fixture
def redis() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    yield client
    client.close()


def test_second_get_is_served_from_cache(redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    issuer = Issuer(clock)
    assert cache.get("acme", issuer) == "tok-1"
    assert cache.get("acme", issuer) == "tok-1"
    assert issuer.calls == 1
    assert cache.refreshes == 1


def test_refreshes_proactively_within_the_margin(redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    issuer = Issuer(clock)
    cache.get("acme", issuer)
    clock.now += 7200 - 301  # 5 min + 1 s before expiry: still fresh
    assert cache.get("acme", issuer) == "tok-1"
    clock.now += 2  # inside the margin: refresh before the cloud says "expired"
    assert cache.get("acme", issuer) == "tok-2"
    assert issuer.calls == 2


def test_short_lived_tokens_are_used_for_half_their_life(redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    issuer = Issuer(clock, lifetime_s=10)
    cache.get("acme", issuer)
    clock.now += 4
    assert cache.get("acme", issuer) == "tok-1"
    clock.now += 2
    assert cache.get("acme", issuer) == "tok-2"


def test_invalidate_only_drops_the_token_that_failed(redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    issuer = Issuer(clock)
    stale = cache.get("acme", issuer)
    assert cache.invalidate("acme", stale) is True
    fresh = cache.get("acme", issuer)
    assert fresh == "tok-2"
    # A second worker reporting the same stale token must not throw the fresh one away.
    assert cache.invalidate("acme", stale) is False
    assert cache.get("acme", issuer) == "tok-2"
    assert issuer.calls == 2


def test_tenants_do_not_share_tokens(redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    a, b = Issuer(clock), Issuer(clock)
    assert cache.get("a", a) == "tok-1"
    assert cache.get("b", b) == "tok-1"
    cache.invalidate("a", "tok-1")
    assert cache.peek("a") is None
    peeked = cache.peek("b")
    assert peeked is not None and peeked.value == "tok-1"


def test_a_failing_fetch_caches_nothing(redis: fakeredis.FakeRedis) -> None:
    clock = Clock()
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)

    def broken() -> AccessToken:
        raise RuntimeError("bad secret")

    with pytest.raises(RuntimeError, match="bad secret"):
        cache.get("acme", broken)
    assert cache.peek("acme") is None
    assert cache.refreshes == 0
    # The lock was released: the next fetch is not blocked.
    assert cache.get("acme", Issuer(clock)) == "tok-1"


def test_token_repr_hides_the_secret() -> None:
    token = AccessToken("very-secret", expires_ms=2, issued_ms=1)
    assert "very-secret" not in repr(token)
