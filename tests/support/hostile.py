"""The hostile-input catalogue: every way a server, URL or file can misbehave.

Each :class:`Scenario` names an attachment, the config it runs under and what
must come of it: a typed error whose message contains a phrase, or success.
``tests/http/test_hostile.py`` asserts them; ``benchmarks/hostile.py`` measures
them for ``docs/hostile-inputs.md``. All traffic stays on loopback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import llm

import llm_async_attachments as laa
from llm_async_attachments.http import address_policy as policy
from llm_async_attachments.testing import samples
from tests.support.hostile_server import HostileFileServer
from tests.support.models import Carrier

MiB = 1024 * 1024
# Small limits, so that every scenario fails (or passes) in a few seconds.
BASE = laa.Config(
    max_bytes=MiB,
    max_total_bytes=4 * MiB,
    timeout=1.0,
    deadline=3.0,
    retries=0,
    guard="strict",
)
# Names the test resolver answers for; the real one would not know them.
RESOLVER = {
    "trusted.test": ["127.0.0.1"],
    "other.test": ["127.0.0.1"],
    "private.test": ["10.1.2.3"],
    "mixed.test": ["127.0.0.1", "192.168.0.7"],
}


@dataclass
class Context:
    """What a scenario can point at: two loopback servers and a scratch folder."""

    server: HostileFileServer
    server6: HostileFileServer
    folder: Path
    threads: list[threading.Thread] = field(default_factory=list)

    def port(self) -> int:
        return int(self.server.base_url.rsplit(":", 1)[1])


@dataclass(frozen=True)
class Scenario:
    name: str
    target: Callable[[Context], dict[str, Any]]
    error: type[Exception] | None
    says: str
    config: dict[str, Any] = field(default_factory=dict)
    takes_urls: bool = False  # the model takes URLs as URLs: only the type is fetched
    # A race the scenario cannot fix (a file growing while read): success is also
    # right, as long as no more than the cap was read.
    either_or_success: bool = False

    def config_for(self) -> laa.Config:
        return dataclasses.replace(BASE, **self.config)


def url(path: str) -> Callable[[Context], dict[str, Any]]:
    return lambda ctx: {"url": ctx.server.url(path)}


def _served(path: str, body: bytes, content_type: str) -> Callable[[Context], dict[str, Any]]:
    def target(ctx: Context) -> dict[str, Any]:
        return {"url": ctx.server.add(path, body, content_type=content_type)}

    return target


def _host_url(host: str, path: str) -> Callable[[Context], dict[str, Any]]:
    return lambda ctx: {"url": f"http://{host}:{ctx.port()}{path}"}


def _redirect_between_hosts(ctx: Context) -> dict[str, Any]:
    ctx.server.add("/pic.png", samples.png(), content_type="image/png")
    to = f"http://other.test:{ctx.port()}/pic.png"
    return {"url": f"http://trusted.test:{ctx.port()}/redirect-to?url={to}"}


def _fifo(ctx: Context) -> dict[str, Any]:
    path = ctx.folder / "pipe"
    os.mkfifo(path)
    return {"path": str(path)}


def _symlink_loop(ctx: Context) -> dict[str, Any]:
    path = ctx.folder / "loop"
    path.symlink_to(path)
    return {"path": str(path)}


def _growing(ctx: Context) -> dict[str, Any]:
    path = ctx.folder / "growing.bin"
    path.write_bytes(bytes(MiB // 2))

    def grow() -> None:  # appends past the cap while the attachment is read
        with path.open("ab") as file:
            for _ in range(64):
                file.write(bytes(64 * 1024))
                file.flush()

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    ctx.threads.append(writer)
    return {"path": str(path)}


def _credentials(ctx: Context) -> dict[str, Any]:
    netloc = ctx.server.base_url.removeprefix("http://")
    return {"url": f"http://reader:s3cret@{netloc}/status/401"}


SCENARIOS = [
    Scenario(
        "endless chunked body",
        url("/endless"),
        laa.AttachmentTooLarge,
        "reading stopped after",
    ),
    Scenario(
        "Content-Length over the cap",
        url(f"/big?size={1024 * MiB}"),
        laa.AttachmentTooLarge,
        "Nothing was read",
    ),
    Scenario(
        "body shorter than its Content-Length",
        url("/short?declared=100000&sent=1000"),
        laa.AttachmentFetchError,
        "RemoteProtocolError",
    ),
    Scenario(
        "gzip bomb (64 MiB of zeros)",
        url(f"/gzip-bomb?size={64 * MiB}"),
        laa.AttachmentTooLarge,
        "reading stopped after",
    ),
    Scenario(
        "deflate bomb (64 MiB of zeros)",
        url(f"/deflate-bomb?size={64 * MiB}"),
        laa.AttachmentTooLarge,
        "reading stopped after",
    ),
    Scenario(
        "slow drip, one byte per 0.5 s",
        url("/drip?size=100&interval=0.5"),
        laa.AttachmentTimeout,
        "longer than the 3 s deadline",
    ),
    Scenario(
        "stall after the headers",
        url("/stall-after-headers"),
        laa.AttachmentTimeout,
        "no progress for 1 s",
    ),
    Scenario(
        "connection reset mid-body",
        url("/reset-mid-body?declared=100000&sent=1000"),
        laa.AttachmentFetchError,
        "could not be downloaded",
    ),
    Scenario(
        "HTTP 500",
        url("/status/500"),
        laa.AttachmentHTTPStatusError,
        "HTTP 500 Internal Server Error",
    ),
    Scenario(
        "HTTP 503, no retry policy", url("/flaky?fail=9"), laa.AttachmentHTTPStatusError, "HTTP 503"
    ),
    Scenario(
        "HTTP 503 twice, then 200, with retries", url("/flaky?fail=2"), None, "", {"retries": 2}
    ),
    Scenario(
        "HTTP 502 with Retry-After: 1, then 200",
        url("/flaky?fail=1&status=502&retry_after=1"),
        None,
        "",
        {"retries": 2},
    ),
    Scenario(
        "HTTP 503 with Retry-After past the deadline",
        url("/flaky?fail=9&retry_after=120"),
        laa.AttachmentHTTPStatusError,
        "HTTP 503",
        {"retries": 2},
    ),
    Scenario("redirect loop", url("/redirect-loop"), laa.TooManyRedirects, "redirects in a loop"),
    Scenario(
        "four redirects",
        url("/redirect/3?to=/status/200"),
        laa.TooManyRedirects,
        "more than 3 times",
    ),
    Scenario(
        "redirect to another scheme",
        url("/redirect-scheme"),
        laa.UnsupportedAttachmentURL,
        "redirected to file://",
    ),
    Scenario(
        "allowed host redirecting to a refused one",
        _redirect_between_hosts,
        laa.AttachmentAddressRefused,
        "other.test resolves to 127.0.0.1, a loopback",
        {"block_private": True, "allow": ("trusted.test",)},
    ),
    Scenario(
        "host resolving to a private address",
        _host_url("private.test", "/x"),
        laa.AttachmentAddressRefused,
        "10.1.2.3, a private address",
        {"block_private": True},
    ),
    Scenario(
        "host resolving to public and private addresses",
        _host_url("mixed.test", "/x"),
        laa.AttachmentAddressRefused,
        "192.168.0.7, a private address",
        {"block_private": True, "allow": ("127.0.0.1",)},
    ),
    Scenario("HEAD hangs while GET works", url("/head-hangs"), None, "", takes_urls=True),
    Scenario(
        "HEAD and GET disagree on the type", url("/disagree?head=image/png&get=image/gif"), None, ""
    ),
    Scenario(
        "Content-Length: -1",
        url("/headers/negative-length"),
        laa.AttachmentFetchError,
        "could not be downloaded",
    ),
    Scenario(
        "Content-Length: lots",
        url("/headers/bad-length"),
        laa.AttachmentFetchError,
        "could not be downloaded",
    ),
    Scenario(
        "two different Content-Lengths",
        url("/headers/two-lengths"),
        laa.AttachmentFetchError,
        "could not be downloaded",
    ),
    Scenario(
        "a 40-digit Content-Length",
        url("/headers/huge-length"),
        laa.AttachmentFetchError,
        "bad Content-Length",
    ),
    Scenario("two Content-Types", url("/headers/two-types"), None, ""),
    Scenario(
        "a 60 kB Content-Type (ignored: not a type)",
        url("/headers/huge-type"),
        None,
        "",
    ),
    Scenario(
        "a 1 MB header block",
        url("/headers/huge-block"),
        laa.AttachmentFetchError,
        "could not be downloaded",
    ),
    Scenario("a non-ASCII Content-Type", url("/headers/non-ascii-type"), None, ""),
    Scenario(
        "a space in the host",
        lambda ctx: {"url": "http://exa mple.test/x"},
        laa.UnsupportedAttachmentURL,
        "is not a valid URL",
    ),
    Scenario(
        "an unclosed IPv6 bracket",
        lambda ctx: {"url": "http://[::1/x"},
        laa.UnsupportedAttachmentURL,
        "is not a valid URL",
    ),
    Scenario(
        "no host",
        lambda ctx: {"url": "http:///x.png"},
        laa.UnsupportedAttachmentURL,
        "is not an http:// or https:// URL",
    ),
    Scenario("a non-ASCII path", _served("/caf\u00e9.png", samples.png(), "image/png"), None, ""),
    Scenario(
        "an IPv6 literal",
        lambda ctx: {"url": ctx.server6.add("/six.png", samples.png(), content_type="image/png")},
        None,
        "",
    ),
    Scenario(
        "an IPv6 literal under block_private",
        lambda ctx: {"url": ctx.server6.url("/x")},
        laa.AttachmentAddressRefused,
        "::1, a loopback address",
        {"block_private": True},
    ),
    Scenario("credentials in the URL", _credentials, laa.AttachmentHTTPStatusError, "reader:***@"),
    Scenario(
        "nothing listening",
        lambda ctx: {"url": "http://127.0.0.1:9/x"},
        laa.AttachmentFetchError,
        "ConnectError",
    ),
    Scenario("a FIFO", _fifo, laa.AttachmentPathError, "is a FIFO (named pipe), not a file"),
    Scenario(
        "a symlink loop",
        _symlink_loop,
        laa.AttachmentPathError,
        "Too many levels of symbolic links",
    ),
    Scenario(
        "a truncated gzip body",
        url("/gzip/truncated"),
        laa.AttachmentFetchError,
        "has a truncated gzip body",
    ),
    Scenario(
        "a gzip body with a bad CRC",
        url("/gzip/bad-crc"),
        laa.AttachmentFetchError,
        "a bad CRC-32",
    ),
    Scenario(
        "junk after a gzip member",
        url("/gzip/trailing"),
        laa.AttachmentFetchError,
        "has data after the end of its gzip stream",
    ),
    Scenario(
        "endless zeros after a tiny gzip member",
        url("/gzip/endless"),
        laa.AttachmentTooLarge,
        "still compressed",
    ),
    Scenario(
        "a port out of range",
        lambda ctx: {"url": "http://127.0.0.1:99999/x.png"},
        laa.UnsupportedAttachmentURL,
        "has port 99999, outside 1-65535",
    ),
    Scenario(
        "a lone surrogate in the URL",
        lambda ctx: {"url": ctx.server.url("/\ud800.png")},
        laa.UnsupportedAttachmentURL,
        "cannot be encoded",
    ),
    Scenario(
        "an empty host label, policy on",
        lambda ctx: {"url": "http://a..b.test/x.png"},
        laa.UnsupportedAttachmentURL,
        "has an empty label",
        config={"block_private": True},
    ),
    Scenario(
        "a host label over 63 characters, policy on",
        lambda ctx: {"url": f"http://{'a' * 64}.test/x.png"},
        laa.UnsupportedAttachmentURL,
        "has a label longer than 63 characters",
        config={"block_private": True},
    ),
    Scenario(
        "a redirect to data:",
        url("/redirect-to?url=data:text/html,hi"),
        laa.UnsupportedAttachmentURL,
        "is not an http:// or https:// URL",
    ),
    Scenario(
        "a redirect to javascript:",
        url("/redirect-to?url=javascript:alert(1)"),
        laa.UnsupportedAttachmentURL,
        "is not an http:// or https:// URL",
    ),
    Scenario(
        "a redirect to an unparsable Location",
        url("/redirect-to?url=http://[::1/x"),
        laa.UnsupportedAttachmentURL,
        "which is not a valid URL",
    ),
    Scenario(
        "a NUL byte in a path",
        lambda ctx: {"path": str(ctx.folder / "nul\0byte.png")},
        laa.AttachmentPathError,
        "contains a NUL byte",
    ),
    Scenario(
        "a lone surrogate in a path",
        lambda ctx: {"path": str(ctx.folder / "\ud800.png")},
        laa.AttachmentPathError,
        "cannot be encoded",
    ),
    Scenario(
        "a directory",
        lambda ctx: {"path": str(ctx.folder)},
        laa.AttachmentPathError,
        "is a directory",
    ),
    Scenario(
        "a missing file",
        lambda ctx: {"path": str(ctx.folder / "gone.png")},
        laa.AttachmentPathError,
        "it does not exist",
    ),
    Scenario(
        "/dev/zero",
        lambda ctx: {"path": "/dev/zero"},
        laa.AttachmentTooLarge,
        "reading stopped after 1048577 bytes",
    ),
    Scenario(
        "a file that grows while it is read",
        _growing,
        laa.AttachmentTooLarge,
        "is too large",
        either_or_success=True,
    ),
]


@dataclass(frozen=True)
class Outcome:
    error: BaseException | None
    attachment: Any
    seconds: float
    peak_bytes: int


@contextmanager
def loopback_resolver() -> Iterator[None]:
    """Answer the ``.test`` names above; everything else as the system resolver does."""
    real = policy.resolve

    async def resolve(host: str, port: int) -> list[str]:
        return RESOLVER[host] if host in RESOLVER else await real(host, port)

    policy.resolve = resolve
    try:
        yield
    finally:
        policy.resolve = real


async def run(scenario: Scenario, ctx: Context) -> Outcome:
    """Prepare the scenario's attachment under its config; measure time and peak memory."""
    config = scenario.config_for()
    attachment = llm.Attachment(**scenario.target(ctx))
    model = SimpleNamespace(supports_attachment_urls=scenario.takes_urls)
    prompt = llm.Prompt("x", Carrier(), attachments=[attachment])
    error: BaseException | None = None
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with loopback_resolver():
            async with asyncio.timeout(config.deadline + 5):  # a hang fails, not blocks CI
                await laa.prepare_attachments(prompt, model=model, config=config)
    except laa.AttachmentError as caught:
        error = caught
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        for thread in ctx.threads:
            await asyncio.to_thread(thread.join)
    return Outcome(error, attachment, seconds, peak)
