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


def test_a_refresh_slower_than_the_lock_timeout_still_fetches_once(
    redis: fakeredis.FakeRedis,
) -> None:
    """A slow cloud (getAppToken + login near their HTTP timeouts) must not break single-flight."""
    import threading
    import time

    server = redis.connection_pool.connection_kwargs["server"]
    calls = 0
    guard = threading.Lock()

    def slow_fetch() -> AccessToken:
        nonlocal calls
        with guard:
            calls += 1
        time.sleep(1.0)  # far longer than the lock timeout below
        now_ms = int(time.time() * 1000)
        return AccessToken("tok-slow", expires_ms=now_ms + 7_200_000, issued_ms=now_ms)

    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        client = fakeredis.FakeRedis(server=server)  # one "process" each
        cache = TokenCache(
            client, refresh_margin=timedelta(0), lock_timeout=0.2, blocking_timeout=5.0
        )
        try:
            results.append(cache.get("acme", slow_fetch))
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert results == ["tok-slow"] * 6
    assert calls == 1


def test_the_process_copy_serves_without_redis_until_the_margin(
    redis: fakeredis.FakeRedis,
) -> None:
    """Two processes: the second's fresh copy is used as is; once due, it reads Redis, where
    the first process's refresh is found (no second fetch)."""
    clock = Clock()
    issuer = Issuer(clock)
    first = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    second = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    assert first.get("acme", issuer) == "tok-1"
    assert second.get("acme", issuer) == "tok-1"  # read from Redis, now its own copy
    redis.delete("fapiao:token:acme")
    assert second.get("acme", issuer) == "tok-1"  # the copy: Redis was not asked
    assert issuer.calls == 1
    clock.now += 7200 - 299  # inside the margin for both
    assert first.get("acme", issuer) == "tok-2"
    assert second.get("acme", issuer) == "tok-2"  # due: Redis has the first one's refresh
    assert issuer.calls == 2


def test_a_stale_process_copy_is_dropped_on_the_expired_answer(
    redis: fakeredis.FakeRedis,
) -> None:
    """The cloud refused the token this process still holds (another process already replaced
    it): ``invalidate`` drops the copy, and the retry takes Redis's token, no new fetch."""
    clock = Clock()
    issuer = Issuer(clock)
    first = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    second = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    stale = second.get("acme", issuer)
    assert first.get("acme", issuer) == stale == "tok-1"
    assert first.invalidate("acme", stale) is True  # the first process's expired answer
    assert first.get("acme", issuer) == "tok-2"
    assert second.get("acme", issuer) == stale  # its copy is still "fresh" by the clock
    assert second.invalidate("acme", stale) is False  # Redis holds tok-2: kept there
    assert second.get("acme", issuer) == "tok-2"
    assert issuer.calls == 2
    # A late report of the old token leaves the new copy alone.
    assert second.invalidate("acme", stale) is False
    assert second.get("acme", issuer) == "tok-2"
    assert issuer.calls == 2


def test_a_copy_refused_while_redis_still_holds_it_is_refreshed_once(
    redis: fakeredis.FakeRedis,
) -> None:
    clock = Clock()
    issuer = Issuer(clock)
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    stale = cache.get("acme", issuer)
    assert cache.invalidate("acme", stale) is True
    assert cache.peek("acme") is None
    assert cache.get("acme", issuer) == "tok-2"
    assert issuer.calls == 2
    assert cache.refreshes == 2


def test_threads_sharing_a_cache_keep_the_newest_copy(redis: fakeredis.FakeRedis) -> None:
    """Many threads failing with the same token: one refresh, and every thread then holds the
    new token (a late reader of the old one cannot put it back)."""
    import threading

    clock = Clock()
    issuer = Issuer(clock)
    cache = TokenCache(redis, refresh_margin=timedelta(minutes=5), clock=clock)
    stale = cache.get("acme", issuer)
    barrier = threading.Barrier(8)
    seen: list[str] = []

    def call() -> None:
        barrier.wait()
        cache.invalidate("acme", stale)
        seen.append(cache.get("acme", issuer))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert seen == ["tok-2"] * 8
    assert issuer.calls == 2
    assert cache.get("acme", issuer) == "tok-2"
