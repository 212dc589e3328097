"""The worker threads the disk tier runs its SQLite calls on: real threads, real loops."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from llm_async_attachments.store.worker_threads import BATCH_SECONDS, WorkerThreads


class CountingLoop(asyncio.SelectorEventLoop):
    """A loop that counts the callbacks other threads hand it."""

    handed = 0

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> Any:
        self.handed += 1
        return super().call_soon_threadsafe(*args, **kwargs)


def blocked(threads: WorkerThreads) -> tuple[threading.Event, asyncio.Future[None]]:
    """A job that holds ``threads`` (of one) until the event is set."""
    go = threading.Event()
    return go, asyncio.ensure_future(threads.run(go.wait))


async def test_each_caller_gets_its_own_answer_or_error():
    threads = WorkerThreads(2, "test-answers")

    def fail() -> None:
        raise KeyError("missing")

    answers = await asyncio.gather(*(threads.run(lambda n=n: n * n) for n in range(100)))
    assert answers == [n * n for n in range(100)]
    with pytest.raises(KeyError, match="missing"):
        await threads.run(fail)


async def test_a_call_that_raises_stop_iteration_strands_no_other_caller():
    threads = WorkerThreads(1, "test-stop")
    go, holding = blocked(threads)

    def stop() -> None:
        raise StopIteration("spent")

    # Queued behind the job holding the thread, the five run and come back as one batch.
    waiting = [threads.run(lambda n=n: n) for n in range(4)]
    waiting.insert(2, threads.run(stop))
    answers = asyncio.ensure_future(asyncio.gather(*waiting, return_exceptions=True))
    await asyncio.sleep(0)
    go.set()
    await holding
    # (A future refuses StopIteration with a TypeError, which left the batch's other
    # futures unset: without the bound, this would wait for ever.)
    done = await asyncio.wait_for(answers, 60)
    assert done[:2] == [0, 1] and done[3:] == [2, 3]
    assert isinstance(done[2], RuntimeError) and isinstance(done[2].__cause__, StopIteration)


async def test_a_job_cancelled_before_it_starts_never_runs():
    threads = WorkerThreads(1, "test-skip")
    go, holding = blocked(threads)
    ran: list[int] = []
    waiting = [asyncio.ensure_future(threads.run(lambda n=n: ran.append(n))) for n in range(4)]
    await asyncio.sleep(0)  # each job is queued behind the one holding the thread
    waiting[1].cancel()
    waiting[2].cancel()
    await asyncio.sleep(0)  # the cancellations reach their tasks
    go.set()
    await holding
    done = await asyncio.gather(*waiting, return_exceptions=True)
    assert ran == [0, 3]
    assert [isinstance(answer, asyncio.CancelledError) for answer in done] == [
        False,
        True,
        True,
        False,
    ]


async def test_a_job_whose_caller_is_cancelled_while_it_runs_ends_and_is_dropped():
    threads = WorkerThreads(1, "test-drop")
    started, go = threading.Event(), threading.Event()

    def job() -> str:
        started.set()
        go.wait()
        return "answer"

    running = asyncio.ensure_future(threads.run(job))
    assert await asyncio.to_thread(started.wait, 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    go.set()
    assert await threads.run(lambda: "next") == "next"  # the thread goes on


def test_results_of_waiting_jobs_are_handed_back_together():
    # 200 jobs queued behind one that holds the thread: once it lets go, the thread
    # runs them one after the other and hands their results back in a few calls, not
    # one wake-up of the loop each.
    threads = WorkerThreads(1, "test-batch")
    loop = CountingLoop()

    async def main() -> list[int]:
        go, holding = blocked(threads)
        queued = [asyncio.ensure_future(threads.run(lambda n=n: n)) for n in range(200)]
        await asyncio.sleep(0)
        loop.handed = 0
        go.set()
        await holding
        return await asyncio.gather(*queued)

    try:
        assert loop.run_until_complete(main()) == list(range(200))
    finally:
        loop.close()
    assert 0 < loop.handed < 200


async def test_a_long_job_hands_its_result_back_before_the_next_runs():
    # The next job waits for the long one's caller to have its answer: were answers
    # held for the jobs after them, it would wait in vain.
    threads = WorkerThreads(1, "test-long")
    answered = threading.Event()

    async def long_one() -> None:
        await threads.run(lambda: time.sleep(BATCH_SECONDS * 10))
        answered.set()

    first = asyncio.ensure_future(long_one())
    second = asyncio.ensure_future(threads.run(lambda: answered.wait(10)))
    await first
    assert await second


def test_loops_in_several_threads_each_get_their_own_answers():
    threads = WorkerThreads(2, "test-loops")

    def one_loop(number: int) -> list[tuple[int, int]]:
        async def main() -> list[tuple[int, int]]:
            jobs = (threads.run(lambda n=n: (number, n)) for n in range(200))
            return await asyncio.gather(*jobs)

        return asyncio.run(main())

    found: dict[int, list[tuple[int, int]]] = {}
    runners = [
        threading.Thread(target=lambda n=n: found.__setitem__(n, one_loop(n))) for n in range(4)
    ]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join(60)
    assert found == {number: [(number, n) for n in range(200)] for number in range(4)}


def test_a_loop_closed_with_a_job_running_leaves_the_thread_working():
    threads = WorkerThreads(1, "test-closed")
    started, go = threading.Event(), threading.Event()
    failures: list[threading.ExceptHookArgs] = []
    hook, threading.excepthook = threading.excepthook, failures.append

    def job() -> str:
        started.set()
        go.wait()
        return "too late"

    async def leave() -> None:  # as asyncio.run() ends: its tasks cancelled, then closed
        running = asyncio.ensure_future(threads.run(job))
        await asyncio.to_thread(started.wait, 10)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running

    async def next_job() -> str:
        async with asyncio.timeout(10):  # not forever, were the thread gone
            return await threads.run(lambda: "next")

    try:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(leave())
        loop.close()
        go.set()  # its result has no loop to go to
        assert asyncio.run(next_job()) == "next"
    finally:
        threading.excepthook = hook
    assert failures == []
