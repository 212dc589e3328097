"""The cache tiers across real processes: the disk (SQLite) and the fleet (Redis).

Every worker is a fresh interpreter with its own event loop (``tests/support/cache_worker``)
that prepares llm-echo prompts of URL attachments served by this process's loopback
``file_server``, and reports what ``content_bytes()`` returned right after. Each test
starts its own workers, so a worker's first prepare is a new process's first prepare.
The tests are sync: the parent only waits for its workers' answers, and the server's
threads serve them meanwhile. Orders and bodies are seeded; no assertion is on time.
"""

from __future__ import annotations

import base64
import collections
import itertools
import random
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from llm_async_attachments.store import fleet_tier
from llm_async_attachments.store.disk_tier import DATABASE
from tests.support.cache_worker import CacheWorker, broadcast, digest, start_workers, stop_workers

pytest_plugins = ["tests.support.redis_server"]  # its fixtures: redis_server, start_redis

KiB = 1024
PNG = b"\x89PNG\r\n\x1a\n"
URLS = 40
WORKERS = 8
DISK_BYTES = 1024 * 1024 * 1024  # the default disk_cache_bytes
LATENCY = 0.05  # seconds per response: fetches overlap, as they do against a real origin
_paths = itertools.count()


def fresh_path(name: str) -> str:
    """A path no other test serves (the server is the session's)."""
    return f"/across/{next(_paths)}/{name}"


def body_of(seed: str, size: int = 48 * KiB) -> bytes:
    """A PNG-typed body of random bytes, the same for the same seed."""
    return PNG + random.Random(seed).randbytes(size - len(PNG))


def content_hash_etag(body: bytes) -> str:
    """An ETag made from the body's hash: the same content has the same tag, always."""
    return f'"{digest(body)[:16]}"'


@pytest.fixture
def workers() -> Iterator[Any]:
    """Starts fresh worker processes (``workers(count, name)``, all together); they stop
    with the test."""
    started: list[CacheWorker] = []

    def start(count: int, name: str = "worker") -> list[CacheWorker]:
        more = start_workers(count, name)
        started.extend(more)
        return more

    yield start
    stop_workers(started)


def config(directory: Path | None, fleet: str | None = None, **more: Any) -> dict[str, Any]:
    """A worker's config: the disk tier in ``directory`` (``None``: off), the fleet's URL."""
    if directory is None:
        more["disk_cache_bytes"] = 0
    else:
        more["disk_cache_dir"] = str(directory)
    return {"shared_cache_url": fleet, **more}


def served(file_server: Any, count: int, name: str) -> dict[str, bytes]:
    """``count`` URLs of their own bodies, ``Cache-Control: max-age=600``, with latency."""
    urls = {}
    for number in range(count):
        body = body_of(f"{name}-{number}", 32 * KiB)
        url = file_server.add(
            fresh_path(f"{name}{number}.png"),
            body,
            content_type="image/png",
            latency=LATENCY,
            headers=[("Cache-Control", "max-age=600")],
        )
        urls[url] = body
    return urls


def every_url_in_random_order(urls: Sequence[str], count: int, seed: str) -> list[list[list[str]]]:
    """For each of ``count`` workers, every URL once, a prompt each, in an order of its own."""
    rng = random.Random(seed)
    orders = []
    for _ in range(count):
        order = list(urls)
        rng.shuffle(order)
        orders.append([[url] for url in order])
    return orders


def got(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Every attachment a worker's answer reports, after checking that no prepare failed."""
    errors = [prompt["error"] for prompt in answer["prompts"] if "error" in prompt]
    assert not errors, errors
    return [each for prompt in answer["prompts"] for each in prompt["got"]]


def assert_bodies(answers: Sequence[dict[str, Any]], bodies: dict[str, bytes]) -> None:
    """Every attachment in ``answers`` read its own URL's body, whole."""
    for answer in answers:
        for each in got(answer):
            assert each["sha256"] == digest(bodies[each["url"]]), each["url"]


def requests_per_url(file_server: Any, urls: Sequence[str]) -> float:
    return sum(file_server.count(path=url) for url in urls) / len(urls)


def body_read(answer: dict[str, Any]) -> bytes:
    """The bytes ``content_bytes()`` returned for the one attachment of a one-prompt answer."""
    (each,) = got(answer)
    return base64.b64decode(each["body"])


# 1. Wrong bytes: v0 -> v1 -> v0 across two processes.


@pytest.mark.parametrize("tiers", ["disk", "fleet"])
def test_a_content_hash_etag_that_comes_back_never_serves_another_processs_body(
    tiers, file_server, workers, tmp_path, request
):
    """A's record of v0 left its memory (a budget smaller than the body); B replaced the
    shared record with v1; the origin went back to v0, whose ETag is v0's again. A's
    revalidation must not pair v0's ETag with v1's body from the shared tier."""
    if tiers == "disk":  # one machine: A, B and C share one SQLite database
        shared = config(tmp_path / "disk", cache_bytes=16 * KiB)
    else:  # one Redis for machines without a disk tier
        server = request.getfixturevalue("redis_server")
        shared = config(None, server.url, cache_bytes=16 * KiB)
    v0, v1 = body_of("v0"), body_of("v1")
    path = fresh_path("doc.png")

    def origin_serves(body: bytes) -> str:
        return file_server.add(
            path,
            body,
            content_type="image/png",
            headers=[("Cache-Control", "no-cache"), ("ETag", content_hash_etag(body))],
        )

    url = origin_serves(v0)
    a, b = workers(2, "ab")
    assert body_read(a.prepare(shared, [[url]], bodies=True)) == v0
    assert not a.call("in_memory", url=url)  # it left A's memory: only the tier has it

    origin_serves(v1)
    assert body_read(b.prepare(shared, [[url]], bodies=True)) == v1  # B keeps v1 in the tier

    origin_serves(v0)
    assert body_read(a.prepare(shared, [[url]], bodies=True)) == v0
    (c,) = workers(1, "c")
    assert body_read(c.prepare(shared, [[url]], bodies=True)) == v0
    assert body_read(b.prepare(shared, [[url]], bodies=True)) == v0


# 2. Processes share one disk.


def test_processes_on_one_machine_fetch_each_url_once(file_server, workers, tmp_path):
    team = workers(WORKERS)

    def requests_per_url_with(disk: Path | None, name: str) -> float:
        """Every process prepares every one of a fresh set of URLs, in its own order."""
        urls = served(file_server, URLS, name)
        orders = every_url_in_random_order(list(urls), WORKERS, name)
        answers = broadcast(
            team,
            "prepare",
            [{"config": config(disk), "prompts": order, "at_once": 4} for order in orders],
        )
        assert_bodies(answers, urls)
        return requests_per_url(file_server, list(urls))

    assert requests_per_url_with(tmp_path / "disk", "shared") <= 1.1
    # With the disk tier off, each process fetches each URL itself.
    assert requests_per_url_with(None, "alone") > 1


def test_a_new_process_finds_what_another_fetched_without_asking_the_origin(
    file_server, workers, tmp_path
):
    urls = served(file_server, 5, "late")
    (first,) = workers(1, "first")
    assert_bodies([first.prepare(config(tmp_path), [[url] for url in urls])], urls)
    (late,) = workers(1, "late")  # started after; its first prepare reads the disk
    assert_bodies([late.prepare(config(tmp_path), [[url] for url in urls])], urls)
    assert [file_server.count(path=url) for url in urls] == [1] * len(urls)


# 3. A fleet: two machines, one Redis.


def test_two_machines_sharing_redis_fetch_each_url_once(
    file_server, workers, tmp_path, redis_server
):
    team = workers(WORKERS)
    machines = [tmp_path / "machine-1", tmp_path / "machine-2"]
    half = WORKERS // 2

    def run(urls: dict[str, bytes], fleet: str | None, seed: str) -> None:
        orders = every_url_in_random_order(list(urls), WORKERS, seed)
        arguments = [
            {"config": config(machines[index // half], fleet), "prompts": order, "at_once": 4}
            for index, order in enumerate(orders)
        ]
        assert_bodies(broadcast(team, "prepare", arguments), urls)

    urls = served(file_server, URLS, "fleet")
    run(urls, redis_server.url, "fleet")
    assert requests_per_url(file_server, list(urls)) <= 1.1
    client = redis.Redis.from_url(redis_server.url)
    try:
        keys = client.keys(fleet_tier.PREFIX + "*")
        records = [key for key in keys if not key.endswith((b":claim", b":skip"))]
        assert len(records) == URLS
    finally:
        client.close()

    # Without Redis, each machine fetches each URL for itself.
    apart = served(file_server, URLS, "apart")
    run(apart, None, "apart")
    assert requests_per_url(file_server, list(apart)) > 1.1


# 4. Redis goes down mid-run.


def kinds(answers: Sequence[dict[str, Any]]) -> list[str]:
    """The kinds of failure the SharedCacheWarnings in ``answers`` name (``could not X:``)."""
    found = []
    for answer in answers:
        for warning in answer["warnings"]:
            if warning["category"] == "SharedCacheWarning":
                match = re.search(r"could not (.+?): ", warning["message"])
                assert match, warning["message"]
                found.append(match.group(1))
    return found


def test_redis_down_mid_run_prepares_from_the_disk_and_the_origin(
    file_server, workers, tmp_path, start_redis
):
    server = start_redis()
    team = workers(4)  # 0 and 1 on one machine, 2 and 3 on another
    machines = [tmp_path / "machine-1", tmp_path / "machine-2"]

    def run(chosen: Sequence[int], urls: dict[str, bytes], seed: str) -> list[dict[str, Any]]:
        orders = every_url_in_random_order(list(urls), len(chosen), seed)
        arguments = [
            {"config": config(machines[index // 2], server.url), "prompts": order}
            for index, order in zip(chosen, orders, strict=True)
        ]
        answers = broadcast([team[index] for index in chosen], "prepare", arguments)
        assert_bodies(answers, urls)  # no exception, the right bytes
        return answers

    before = served(file_server, 10, "up")
    up = run(range(4), before, "up")
    assert kinds(up) == []
    assert requests_per_url(file_server, list(before)) <= 1.1

    server.stop()
    after = served(file_server, 10, "down")
    down = run([0, 2], after, "down")  # one process of each machine: from the origin
    assert requests_per_url(file_server, list(after)) == 2
    down += run([1, 3], {**before, **after}, "down again")  # the others: from their disk
    assert requests_per_url(file_server, list(after)) == 2
    assert requests_per_url(file_server, list(before)) <= 1.1

    # After the pause, the server is asked again, fails again, and is not warned of again;
    # the claims it cannot take are taken on each machine's disk: a fetch per machine.
    time.sleep(fleet_tier.PAUSE + 0.5)
    later = served(file_server, 10, "later")
    still = run(range(4), later, "later")
    assert requests_per_url(file_server, list(later)) <= 2
    by_worker = {0: down[0], 2: down[1], 1: down[2], 3: down[3]}
    for index in range(4):
        seen = collections.Counter(kinds([by_worker[index], still[index]]))
        assert seen, f"worker {index} was not told that the shared cache failed"
        assert all(count == 1 for count in seen.values()), seen


def test_with_redis_down_the_processes_of_a_machine_still_fetch_each_url_once(
    file_server, workers, tmp_path, start_redis
):
    server = start_redis()
    server.stop()  # configured, and down from the start
    team = workers(WORKERS)
    urls = served(file_server, URLS, "no-fleet")
    orders = every_url_in_random_order(list(urls), WORKERS, "no-fleet")
    arguments = [
        {"config": config(tmp_path / "disk", server.url), "prompts": order, "at_once": 4}
        for order in orders
    ]
    answers = broadcast(team, "prepare", arguments)
    assert_bodies(answers, urls)
    assert all(kinds([answer]) for answer in answers)  # each worker was told
    # The claims the fleet could not take were taken on the disk (without that: 2.2).
    assert requests_per_url(file_server, list(urls)) <= 1.1


# 5. no-store is never shared across processes.


def files_hold(directory: Path, body: bytes) -> bool:
    """Whether a file in ``directory`` (the database, its log) holds any of 16 slices
    of ``body``: SQLite cuts a body across pages, so one slice may straddle two."""
    step = len(body) // 16
    slices = [body[start : start + 32] for start in range(0, step * 16, step)]
    contents = [path.read_bytes() for path in directory.iterdir() if path.is_file()]
    return any(piece in content for piece in slices for content in contents)


def rows_hold(directory: Path, body: bytes) -> bool:
    database = sqlite3.connect(f"file:{directory / DATABASE}?mode=ro", uri=True)
    try:
        return any(body in row[0] for row in database.execute("SELECT body FROM records"))
    finally:
        database.close()


def redis_holds(url: str, body: bytes) -> bool:
    """Whether any value in the server (a string, or a hash's field) holds ``body``."""
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter():
            kind = client.type(key)
            values = client.hgetall(key).values() if kind == b"hash" else [client.get(key)]
            if any(body in (value or b"") for value in values):
                return True
        return False
    finally:
        client.close()


def test_no_store_is_fetched_by_each_process_and_kept_by_none(
    file_server, workers, tmp_path, redis_server
):
    secret, kept = body_of("secret"), body_of("kept")
    secret_url = file_server.add(
        fresh_path("private.png"),
        secret,
        content_type="image/png",
        headers=[("Cache-Control", "no-store")],
    )
    kept_url = file_server.add(  # what the same searches do find
        fresh_path("public.png"),
        kept,
        content_type="image/png",
        headers=[("Cache-Control", "max-age=600")],
    )
    shared = config(tmp_path, redis_server.url)
    a, b = workers(2)
    for worker in (a, b):
        answer = worker.prepare(shared, [[secret_url], [kept_url]])
        assert_bodies([answer], {secret_url: secret, kept_url: kept})
    assert file_server.count(path=secret_url) == 2
    assert file_server.count(path=kept_url) == 1

    assert rows_hold(tmp_path, kept) and files_hold(tmp_path, kept)
    assert not rows_hold(tmp_path, secret) and not files_hold(tmp_path, secret)
    assert redis_holds(redis_server.url, kept)
    assert not redis_holds(redis_server.url, secret)
