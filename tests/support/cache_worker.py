"""Worker processes that prepare URL attachments, for the cache tiers across processes.

Each worker is a fresh interpreter (``python -m tests.support.cache_worker``) with its
own event loop, kept for its whole life (as a real worker's is), and llm-echo's async
model (its class, made directly: no llm plugin is loaded, which saves half a second
per process). The parent drives it over JSON lines on its stdin and stdout with
:class:`CacheWorker`; nothing is prepared until the parent asks, so a new worker's
first prepare is a new process's first prepare (no warm-up behind the test's back).

Commands (each answers one JSON line):

* ``prepare``: ``prompts`` (lists of URLs, one prompt each) prepared with
  ``prepare_attachments(prompt, config=Config(**config))``, ``at_once`` prompts at a
  time; per prompt, what ``content_bytes()`` returned for each attachment right after
  (its SHA-256 and size, and the bytes themselves with ``bodies``), the seconds the
  prepare took and its summary's requests, or the error it raised; and the warnings
  issued meanwhile (category and message).
* ``in_memory``: whether this process holds ``url``'s body in memory now.
* ``stats``: the resident set now and at its peak (KiB), and the pid.

The parent's side starts workers in parallel (:func:`start_workers`), sends a command
to many at once (:func:`broadcast`) and reads each answer within a timeout, so that a
hung worker fails the caller instead of hanging it. Standard library only, besides
llm and the package in the worker.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ""  # none loads: llm-echo's model class is made directly (half a second less)
ANSWER_WITHIN = 120.0  # seconds: far above what any command takes


class WorkerFailed(RuntimeError):
    """A worker died, hung, or could not run a command."""


class CacheWorker:
    """One worker process (see the module docstring); ``name`` shows in failures."""

    def __init__(self, name: str = "worker", env: dict[str, str] | None = None) -> None:
        self.name = name
        self._env = env or {}
        self._process: subprocess.Popen[bytes] | None = None
        self._answers: queue.Queue[bytes | None] = queue.Queue()
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (closed in stop)
            prefix=f"laa-{name}-", suffix=".log", delete=False
        )
        self._ready = False
        self.pid = 0

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        """Start the process; :meth:`wait_ready` waits for its imports."""
        env = {
            **os.environ,
            "LLM_LOAD_PLUGINS": PLUGINS,
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **self._env,
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.cache_worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        stdout = self._process.stdout
        assert stdout is not None
        threading.Thread(
            target=_pump, args=(stdout, self._answers), daemon=True, name=f"{self.name}-answers"
        ).start()
        return self

    def wait_ready(self, within: float = ANSWER_WITHIN) -> None:
        if not self._ready:
            self.pid = self.receive(within)["ready"]
            self._ready = True

    def send(self, op: str, **arguments: Any) -> None:
        """Send a command without waiting for its answer (see :meth:`receive`)."""
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(json.dumps([op, arguments]).encode() + b"\n")
            self._process.stdin.flush()
        except OSError as exc:
            raise WorkerFailed(f"{self.name} took no command: {exc}\n{self.log()}") from None

    def receive(self, within: float = ANSWER_WITHIN) -> Any:
        """The next answer, within ``within`` seconds; :class:`WorkerFailed` otherwise."""
        try:
            line = self._answers.get(timeout=within)
        except queue.Empty:
            raise WorkerFailed(
                f"{self.name} gave no answer in {within:g} s\n{self.log()}"
            ) from None
        if line is None:
            raise WorkerFailed(f"{self.name} exited\n{self.log()}")
        answer = json.loads(line)
        if isinstance(answer, dict) and "crashed" in answer:
            raise WorkerFailed(f"{self.name} could not run the command:\n{answer['crashed']}")
        return answer

    def call(self, op: str, within: float = ANSWER_WITHIN, **arguments: Any) -> Any:
        self.send(op, **arguments)
        return self.receive(within)

    def prepare(
        self, config: dict[str, Any], prompts: Sequence[Sequence[str]], **options: Any
    ) -> Any:
        return self.call("prepare", config=config, prompts=[list(p) for p in prompts], **options)

    def log(self) -> str:
        """The worker's stderr so far (its last 4,000 characters)."""
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace")
        return f"--- {self.name}'s stderr ---\n{text[-4000:]}"

    def close_input(self) -> None:
        """Tell the worker to exit (its stdin ends) without waiting for it."""
        if self._process is not None and self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()

    def stop(self) -> None:
        self.close_input()
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


def _pump(stream: Any, answers: queue.Queue[bytes | None]) -> None:
    for line in stream:
        answers.put(line)
    answers.put(None)


def start_workers(
    count: int, name: str = "worker", env: dict[str, str] | None = None
) -> list[CacheWorker]:
    """``count`` workers, started together and ready (imports done)."""
    workers = [CacheWorker(f"{name}{index}", env) for index in range(count)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: Iterable[CacheWorker]) -> None:
    """Stop ``workers``: all told at once, then each waited for."""
    workers = list(workers)
    for worker in workers:
        worker.close_input()
    for worker in workers:
        worker.stop()


def broadcast(
    workers: Sequence[CacheWorker], op: str, arguments: Sequence[dict[str, Any]]
) -> list[Any]:
    """Send each worker its command at once, then read every answer (in order)."""
    for worker, each in zip(workers, arguments, strict=True):
        worker.send(op, **each)
    return [worker.receive() for worker in workers]


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


# The worker's side: everything below runs in the child process.


def _serve() -> None:
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # nothing else may write to the protocol's stream
    import asyncio

    import llm_echo

    model = llm_echo.EchoAsync()  # what llm.get_async_model("echo") gives, without the lookup
    with asyncio.Runner() as runner:
        protocol.write(json.dumps({"ready": os.getpid()}) + "\n")
        for line in sys.stdin:
            op, arguments = json.loads(line)
            try:
                if op == "prepare":
                    answer: Any = runner.run(_prepare(model, **arguments))
                elif op == "in_memory":
                    answer = _in_memory(arguments["url"])
                elif op == "stats":
                    answer = _stats()
                else:
                    raise ValueError(f"no command {op!r}")
            except Exception:
                import traceback

                answer = {"crashed": traceback.format_exc()}
            protocol.write(json.dumps(answer) + "\n")


async def _prepare(
    model: Any,
    config: dict[str, Any],
    prompts: list[list[str]],
    at_once: int = 1,
    bodies: bool = False,
) -> dict[str, Any]:
    import asyncio
    import gc
    import time
    import warnings

    import llm

    import llm_async_attachments as laa

    settings = laa.Config(**config)
    gate = asyncio.Semaphore(at_once)

    async def one(urls: list[str]) -> dict[str, Any]:
        async with gate:
            attachments = [llm.Attachment(url=url) for url in urls]
            prompt = llm.Prompt("look", model, attachments=attachments)
            started = time.perf_counter()
            try:
                summary = await laa.prepare_attachments(prompt, config=settings)
            except Exception as exc:  # reported: the parent asserts there are none
                return {"error": f"{type(exc).__name__}: {exc}"}
            seconds = time.perf_counter() - started
            got = []
            for attachment in attachments:
                body = attachment.content_bytes()  # prepared: no I/O
                each = {"url": attachment.url, "sha256": digest(body), "size": len(body)}
                if bodies:
                    each["body"] = base64.b64encode(body).decode()
                got.append(each)
            return {"seconds": seconds, "requests": summary.requests, "got": got}

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # the tiers' own once-per-kind is what is tested
        results = await asyncio.gather(*(one(urls) for urls in prompts))
        gc.collect()  # the prompts are gone: their leases end, as in a real worker
    shown = [{"category": w.category.__name__, "message": str(w.message)} for w in seen]
    return {"prompts": results, "warnings": shown}


def _in_memory(url: str) -> bool:
    from llm_async_attachments.store import shared_responses

    return any(
        key[0] == url and entry.blob.data is not None
        for key, entry in list(shared_responses._entries.items())
    )


def _stats() -> dict[str, int]:
    """The worker's resident set now and at its peak. The peak is the kernel's VmHWM,
    not ``getrusage().ru_maxrss``, which Linux carries across ``exec()``: a worker
    started by a large parent would report the parent's size."""
    with open("/proc/self/status") as status:
        sizes = dict(line.split(":", 1) for line in status if line.startswith(("VmRSS", "VmHWM")))
    return {
        "pid": os.getpid(),
        "rss_kib": int(sizes["VmRSS"].split()[0]),
        "peak_rss_kib": int(sizes["VmHWM"].split()[0]),
    }


if __name__ == "__main__":
    _serve()
