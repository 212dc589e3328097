"""The fleet tier against a real redis-server: records, claims, failures, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from llm_async_attachments.errors import SharedCacheWarning
from llm_async_attachments.store import fleet_tier
from llm_async_attachments.store.fleet_tier import CONNECTIONS, PREFIX, FleetTier
from llm_async_attachments.store.tier import Claim, Record
from tests.support import warned

if TYPE_CHECKING:
    from tests.support.redis_server import RedisServer

pytest_plugins = ["tests.support.redis_server"]  # its fixtures: redis_server, start_redis

MiB = 1024 * 1024
PASSWORD = "hunter2-s3cret"


def name(key: str) -> str:
    """The Redis key of ``key``'s record."""
    return PREFIX + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def body(key: str, size: int) -> bytes:
    """A body that says which key it is, in every block: a mix-up shows."""
    block = hashlib.sha256(key.encode()).digest()
    return (block * (size // len(block) + 1))[:size]


@contextlib.asynccontextmanager
async def admin(server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the test's own, to look at the server behind the tier's back."""
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose(close_connection_pool=True)


def caught() -> contextlib.AbstractContextManager[list[str]]:
    """The messages of the SharedCacheWarnings issued inside (filled at the end)."""
    return warned(SharedCacheWarning)


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> bool:
    """Whether ``check()`` becomes true within ``within`` seconds (polled; not a timing
    assertion: the bound is far above what it takes)."""
    give_up = time.monotonic() + within
    while not await check():
        if time.monotonic() > give_up:
            return False
        await asyncio.sleep(0.01)
    return True


async def clients(client: Redis) -> int:
    """Connections the server has open, the asking one included."""
    info = await client.info("clients")
    return int(info["connected_clients"])


async def test_round_trip(redis_server):
    tier = FleetTier(redis_server.url)
    key = "https://example.com/a.png?detail=high"
    assert await tier.get(key) is None
    for content in (b"", b"content", body(key, MiB)):
        version = await tier.put(key, content, b"image/png", keep_for=60)
        assert version is not None and re.fullmatch("[0-9a-f]{32}", version)
        assert await tier.get(key) == Record(content, b"image/png", version)
    assert await tier.get("https://example.com/other.png") is None


async def test_keys_are_hashed_under_the_prefix(redis_server):
    tier = FleetTier(redis_server.url)
    keys = ["", "\ud800 lone surrogate", "ünïcode/🙂", "https://example.com/" + "x" * 10_000]
    for number, key in enumerate(keys):
        assert await tier.put(key, str(number).encode(), b"", 60)
    for number, key in enumerate(keys):
        found = await tier.get(key)
        assert found is not None and found.body == str(number).encode()
    async with admin(redis_server) as client:
        assert sorted(await client.keys("*")) == sorted(name(key).encode() for key in keys)


async def test_every_put_makes_a_new_version_and_replaces_the_record(redis_server):
    tier = FleetTier(redis_server.url)
    versions = [await tier.put("k", str(n).encode(), str(n).encode(), 60) for n in range(5)]
    assert None not in versions and len(set(versions)) == 5
    assert await tier.get("k") == Record(b"4", b"4", versions[-1])


async def test_a_refresh_replaces_meta_and_lifetime_only_of_the_version_it_names(redis_server):
    tier = FleetTier(redis_server.url)
    old = await tier.put("k", b"old body", b"old meta", 60)
    new = await tier.put("k", b"new body", b"new meta", 60)
    assert old is not None and new is not None
    async with admin(redis_server) as client:
        assert not await tier.refresh("k", old, b"304 meta", 3600)  # changed meanwhile
        assert await tier.get("k") == Record(b"new body", b"new meta", new)
        assert 0 < await client.pttl(name("k")) <= 60_000

        assert await tier.refresh("k", new, b"304 meta", 3600)
        assert await tier.get("k") == Record(b"new body", b"304 meta", new)
        assert 60_000 < await client.pttl(name("k")) <= 3_600_000

        assert not await tier.refresh("gone", new, b"meta", 60)
        assert not await client.exists(name("gone"))


async def test_a_remove_removes_only_the_version_it_names(redis_server):
    tier = FleetTier(redis_server.url)
    old = await tier.put("k", b"old", b"", 60)
    new = await tier.put("k", b"new", b"", 60)
    assert old is not None and new is not None
    await tier.remove("k", old)
    assert await tier.get("k") == Record(b"new", b"", new)
    await tier.remove("k", new)
    assert await tier.get("k") is None
    await tier.remove("k", new)  # nothing there: nothing happens


async def test_a_record_expires(redis_server):
    tier = FleetTier(redis_server.url)
    assert await tier.put("short", b"body", b"", keep_for=0.2)
    assert await tier.put("long", b"body", b"", keep_for=600)
    async with admin(redis_server) as client:
        assert await client.pttl(name("short")) <= 200

    async def gone() -> bool:
        return await tier.get("short") is None

    assert await eventually(gone)
    assert await tier.get("long") is not None


async def test_a_claim_is_held_until_released(redis_server):
    tier, other = FleetTier(redis_server.url), FleetTier(redis_server.url)
    first = await tier.find_or_claim("k", 30)
    assert first.token is not None and not first.wait
    assert await tier.find_or_claim("k", 30) == Claim(None, True)
    assert await other.find_or_claim("k", 30) == Claim(None, True)  # another process waits too
    await other.release("k", "not its token", mark=False)
    assert await other.find_or_claim("k", 30) == Claim(None, True)
    await tier.release("k", first.token, mark=False)
    second = await other.find_or_claim("k", 30)
    assert second.token not in (None, first.token) and not second.wait


async def test_a_record_is_found_in_the_same_call_and_a_put_ends_the_claim(redis_server):
    tier, other = FleetTier(redis_server.url), FleetTier(redis_server.url)
    claim = await tier.find_or_claim("k", 30)
    assert isinstance(claim, Claim) and claim.token is not None
    version = await tier.put("k", b"body", b"meta", 60)
    async with admin(redis_server) as client:
        assert not await client.exists(name("k") + ":claim")
    assert await other.find_or_claim("k", 30) == Record(b"body", b"meta", version)


async def test_a_dead_holders_claim_expires(redis_server):
    tier = FleetTier(redis_server.url)
    assert (await tier.find_or_claim("k", 0.2)).token is not None  # never released
    async with admin(redis_server) as client:
        assert 0 < await client.pttl(name("k") + ":claim") <= 200

    async def free() -> bool:
        return (await tier.find_or_claim("k", 30)).token is not None

    assert await eventually(free)


async def test_a_key_not_kept_is_not_worth_waiting_for(redis_server, monkeypatch):
    tier, other = FleetTier(redis_server.url), FleetTier(redis_server.url)
    claim = await tier.find_or_claim("k", 30)
    assert claim.token is not None
    await tier.release("k", claim.token, mark=True)
    assert await tier.find_or_claim("k", 30) == Claim(None, False)
    assert await other.find_or_claim("k", 30) == Claim(None, False)
    async with admin(redis_server) as client:
        assert 0 < await client.pttl(name("k") + ":skip") <= 60_000
        assert not await client.exists(name("k") + ":claim")

    version = await tier.put("k", b"body", b"", 60)  # a record ends the mark...
    assert version is not None
    assert await other.find_or_claim("k", 30) == Record(b"body", b"", version)  # ...and is found
    await tier.remove("k", version)
    claim = await other.find_or_claim("k", 30)
    assert isinstance(claim, Claim) and claim.token is not None

    monkeypatch.setattr(fleet_tier, "NOT_WORTH_WAITING", 0.2)
    await other.release("k", claim.token, mark=True)

    async def worth_it() -> bool:
        return (await tier.find_or_claim("k", 30)).token is not None

    assert await eventually(worth_it)  # the mark lapses by itself


async def test_tiers_share_records_and_each_loop_has_a_client_closed_with_it(start_redis):
    server = await asyncio.to_thread(start_redis)
    tier, other = FleetTier(server.url), FleetTier(server.url)
    version = await tier.put("k", b"body", b"meta", 60)
    assert await other.get("k") == Record(b"body", b"meta", version)

    async with admin(server) as client:
        assert await clients(client) == 3  # tier, other, and this one

        async def elsewhere() -> Record | None:
            return await tier.get("k")

        assert await asyncio.to_thread(asyncio.run, elsewhere()) == Record(
            b"body", b"meta", version
        )

        async def closed() -> bool:
            return await clients(client) == 3

        assert await eventually(closed)  # the other loop's client closed with its loop


async def test_a_unix_socket_and_a_database_number(redis_server):
    tier = FleetTier(f"unix://{redis_server.socket}?db=1")
    version = await tier.put("k", b"body", b"meta", 60)
    assert await tier.get("k") == Record(b"body", b"meta", version)
    assert await FleetTier(redis_server.url).get("k") is None  # database 0


def test_the_password_is_never_shown():
    with pytest.raises(ValueError, match="is not a Redis URL") as raised:
        FleetTier(f"http://:{PASSWORD}@example.com/")
    assert PASSWORD not in str(raised.value)
    assert "redis://:***@127.0.0.1:1/0" in repr(FleetTier(f"redis://:{PASSWORD}@127.0.0.1:1/0"))
    for url in (
        f"rediss://user:{PASSWORD}@example.com:6380/2",
        f"unix:///run/redis.sock?db=0&password={PASSWORD}",
    ):
        assert PASSWORD not in repr(FleetTier(url))


async def test_redis_goes_down_and_comes_back(start_redis, monkeypatch):
    server = await asyncio.to_thread(start_redis, password=PASSWORD)
    tier, paused = FleetTier(server.url), FleetTier(server.url)
    assert await tier.put("k", b"body", b"meta", 60)
    assert await paused.get("k") is not None
    await asyncio.to_thread(server.stop)

    monkeypatch.setattr(fleet_tier, "PAUSE", 0.0)  # every call asks the server
    with caught() as messages:
        assert await tier.get("k") is None
        assert await tier.put("k", b"body", b"meta", 60) is None
        assert not await tier.refresh("k", "version", b"meta", 60)
        await tier.remove("k", "version")
        assert await tier.find_or_claim("k", 30) is None  # could not ask: not claimed
        await tier.release("k", "token", mark=True)
    assert len(messages) == 1, messages
    shown = f"redis://:***@127.0.0.1:{server.port}/0"
    assert f"shared cache at {shown} could not connect" in messages[0]
    assert PASSWORD not in messages[0]

    monkeypatch.setattr(fleet_tier, "PAUSE", 3600.0)
    with caught() as messages:
        assert await paused.get("k") is None  # fails, and pauses for an hour
    assert len(messages) == 1 and PASSWORD not in messages[0]
    monkeypatch.setattr(fleet_tier, "PAUSE", 0.2)
    assert await tier.get("k") is None  # fails again, and pauses a moment
    await asyncio.to_thread(server.start)  # empty: persistence is off

    async def works() -> bool:
        return await tier.put("k", b"again", b"meta", 60) is not None

    assert await eventually(works)
    async with admin(server) as client:
        before = (await client.info("stats"))["total_connections_received"]
        assert await paused.get("k") is None  # still paused: not even a connection
        assert (await client.info("stats"))["total_connections_received"] == before
    found = await tier.get("k")
    assert found is not None and found.body == b"again"


class Loopback:
    """A server on 127.0.0.1 that accepts connections, sends ``answer`` and nothing more."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection = self._listener.accept()[0]
                self.accepted.append(connection)
                connection.sendall(self._answer)
            except OSError:
                return

    def close(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        self._thread.join()
        for connection in self.accepted:
            connection.close()


@pytest.mark.parametrize(
    ("answer", "failure"),
    [
        (b"", "could not get an answer in time"),
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "could not talk to the server"),
    ],
    ids=["silent", "not-redis"],
)
async def test_a_server_that_fails_as_a_whole_costs_one_bounded_wait(answer, failure, monkeypatch):
    monkeypatch.setattr(fleet_tier, "PAUSE", 3600.0)
    server = Loopback(answer)
    try:
        tier = FleetTier(f"redis://127.0.0.1:{server.port}/0")
        with caught() as messages:
            assert await tier.get("k") is None
            assert await tier.put("k", b"body", b"meta", 60) is None
            assert await tier.find_or_claim("k", 30) is None
        assert len(messages) == 1 and failure in messages[0], messages
        assert len(server.accepted) == 1  # then paused: no more connections
    finally:
        await asyncio.to_thread(server.close)


async def test_an_out_of_memory_server_keeps_nothing_new_and_is_asked_again(start_redis):
    server = await asyncio.to_thread(start_redis, maxmemory="1")  # every write refused
    tier = FleetTier(server.url)
    async with admin(server) as client:
        await client.config_set("maxmemory", "0")
        old = await tier.put("k", b"old body", b"old meta", 60)
        await client.config_set("maxmemory", "1")
        with caught() as messages:
            assert await tier.put("k", b"new body", b"new meta", 60) is None
            assert await tier.put("other", b"body", b"meta", 60) is None
            assert not await tier.refresh("k", old, b"new meta", 60)
            assert await tier.find_or_claim("k", 30) == Record(b"old body", b"old meta", old)
            assert await tier.find_or_claim("other", 30) is None  # could not claim
            assert await tier.get("other") is None
        assert len(messages) == 1, messages
        assert "could not store a record: command not allowed when used memory" in messages[0]
        assert await tier.get("k") == Record(b"old body", b"old meta", old)  # untouched
        await client.config_set("maxmemory", "0")
    assert await tier.put("k", b"body", b"meta", 60) is not None  # not paused


async def test_the_right_password_works_and_a_wrong_one_is_not_shown(start_redis):
    server = await asyncio.to_thread(start_redis, password=PASSWORD)
    version = await FleetTier(server.url).put("k", b"body", b"meta", 60)
    assert await FleetTier(server.url).get("k") == Record(b"body", b"meta", version)
    wrong = server.url.replace(PASSWORD, "not-the-password")
    for url in (wrong, f"redis://127.0.0.1:{server.port}/0"):
        with caught() as messages:
            assert await FleetTier(url).get("k") is None
        assert len(messages) == 1 and "could not log in" in messages[0], messages
        assert "not-the-password" not in messages[0] and PASSWORD not in messages[0]


async def test_a_key_that_is_not_a_record_reads_as_missing(redis_server):
    tier = FleetTier(redis_server.url)
    async with admin(redis_server) as client:
        await client.hset(name("hash"), mapping={"version": "v", "meta": "m"})  # no body
        await client.set(name("string"), "not a hash")
    with caught() as messages:
        assert await tier.get("hash") is None
        assert await tier.get("string") is None
    assert len(messages) == 2, messages
    assert "could not read a record" in messages[0]
    assert "could not use the server: WRONGTYPE" in messages[1]
    for key in ("hash", "string"):  # a put replaces what was there
        version = await tier.put(key, b"body", b"meta", 60)
        assert await tier.get(key) == Record(b"body", b"meta", version)


async def test_a_storm_of_cancellations_leaves_no_connection_behind(start_redis):
    server = await asyncio.to_thread(start_redis)
    tier = FleetTier(server.url)
    keys = [f"https://example.com/{number}.png" for number in range(20)]
    bodies = {key: body(key, 256 * 1024) for key in keys}  # several reads each
    for key in keys:
        assert await tier.put(key, bodies[key], key.encode(), 600)
    rng = random.Random(1143)
    loop = asyncio.get_running_loop()
    outcomes: list[object] = []
    with caught() as messages:
        for _ in range(5):
            tasks: list[asyncio.Future[object]] = []
            for _ in range(100):
                key = rng.choice(keys)
                if rng.random() < 0.5:
                    task = asyncio.ensure_future(tier.get(key))
                else:
                    task = asyncio.ensure_future(tier.put(key, bodies[key], key.encode(), 600))
                if rng.random() < 0.6:  # the rest run to their end, however loaded the machine
                    loop.call_later(rng.uniform(0, 0.01), task.cancel)
                tasks.append(task)
            outcomes += await asyncio.gather(*tasks, return_exceptions=True)
        # Afterwards every record is whole and every answer is its own: no connection
        # was left with a reply unread, and no slot was lost (or this would hang).
        async with asyncio.timeout(60):
            found = await asyncio.gather(*(tier.get(key) for key in keys * 4))
    assert messages == []
    cancelled = sum(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
    assert 0 < cancelled < len(outcomes)  # the seed cancels some, midway or before, not all
    for key, record in zip(keys * 4, found, strict=True):
        assert record is not None and (record.body, record.meta) == (bodies[key], key.encode())

    async with admin(server) as client:

        async def within_the_pool() -> bool:
            return await clients(client) - 1 <= CONNECTIONS

        assert await eventually(within_the_pool)
