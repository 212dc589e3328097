"""The sync→async bridge: llm-markov and test models, under load, cancelled and failing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import json
import multiprocessing
import threading
import traceback
import tracemalloc
from importlib.util import find_spec

import llm
import pytest
from llm.plugins import pm
from pydantic import ValidationError

import llm_async_attachments as laa
from llm_async_attachments.integration.bridge import BUFFER, LAUNCHERS
from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES
from tests.support.sync_models import Recorder, SyncModels, Ticker

HAS_MARKOV = find_spec("llm_markov") is not None
HAS_ALL_MODELS_ASYNC = find_spec("llm_all_models_async") is not None
needs_markov = pytest.mark.skipif(not HAS_MARKOV, reason="llm-markov is not installed")

WORDS = "the cat sat on the mat and the dog sat on the log"


@pytest.fixture
def sync_plugin(monkeypatch, tmp_path):
    """The test models, registered with llm like a sync-only plugin's; no stored keys."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    pm.register(SyncModels(), name="llm-async-attachments-test-sync-models")
    yield
    pm.unregister(name="llm-async-attachments-test-sync-models")


def use(**settings) -> None:
    laa.configure(dataclasses.replace(laa.get_config(), **settings))


@pytest.fixture(autouse=True)
def _bridge_on(strict_guard) -> None:
    """The bridge is opt-in (``LLM_ASYNC_ATTACHMENTS_BRIDGE=1``): these tests turn it on."""
    use(bridge=True)


def bridge_thread(model_id: str) -> threading.Thread:
    (thread,) = [t for t in threading.enumerate() if t.name == f"llm-bridge[{model_id}]"]
    return thread


async def until(condition) -> None:
    """Let other tasks run until ``condition()`` holds."""
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - the condition lives on other threads too
            await asyncio.sleep(0.001)


def waiting() -> int:
    from llm_async_attachments.integration.bridge import _POOL

    return sum(len(queue) for queue in _POOL._waiting.values())


# --- what the async form is ----------------------------------------------------------


@needs_markov
async def test_llm_markov_gets_an_async_form_that_takes_its_options():
    import llm_markov

    model = llm.get_async_model("markov")
    assert isinstance(model, llm.AsyncModel)
    assert (
        type(model).__module__ == "llm_async_attachments.integration.bridge"
    )  # not another bridge
    assert model.Options is llm_markov.Markov.Options
    text = await model.prompt(WORDS, length=6, delay=0).text()
    assert len(text.split()) == 6
    assert set(text.split()) <= set(WORDS.split())
    with pytest.raises(ValidationError, match="length must be >= 2"):
        model.prompt(WORDS, length=1)


async def test_the_async_form_shows_what_the_sync_model_shows(sync_plugin):
    model = llm.get_async_model("tick")  # the sync model's alias
    assert isinstance(model, llm.AsyncModel)
    assert not isinstance(model, llm.AsyncKeyModel)
    assert model.model_id == "ticker"
    assert model.Options is Ticker.Options
    assert (model.can_stream, model.supports_tools, model.supports_schema) == (True, True, True)
    assert model.attachment_types == {"image/png"}
    assert isinstance(model.gate, threading.Event)  # a plugin's own attribute reads through
    assert str(model) == "Ticker (async): ticker"
    keyed = llm.get_async_model("key-ticker")
    assert isinstance(keyed, llm.AsyncKeyModel)
    assert (keyed.needs_key, keyed.key_env_var) == ("ticker", "TICKER_KEY")
    assert type(llm.get_async_model("ticker")) is type(model)  # one class per sync class


async def test_keys_reach_the_sync_key_model(sync_plugin, monkeypatch):
    model = llm.get_async_model("key-ticker")
    assert await model.prompt("x", key="sk-explicit").text() == "key=sk-explicit"
    monkeypatch.setenv("TICKER_KEY", "sk-environment")
    assert await model.prompt("x").text() == "key=sk-environment"
    monkeypatch.delenv("TICKER_KEY")
    with pytest.raises(llm.NeedsKeyException, match="TICKER_KEY"):
        await model.prompt("x").text()


async def test_models_with_an_async_form_of_their_own_keep_it():
    model = llm.get_async_model("echo")
    assert type(model).__module__.startswith("llm_echo")


@pytest.mark.skipif(not HAS_ALL_MODELS_ASYNC, reason="llm-all-models-async is not installed")
async def test_llm_all_models_async_wrappers_give_way_and_are_never_wrapped(sync_plugin):
    model = llm.get_async_model("ticker")
    assert type(model).__module__ == "llm_async_attachments.integration.bridge"
    assert type(model._sync_model) is Ticker
    use(bridge=False)
    assert type(llm.get_async_model("ticker")).__module__ == "llm_all_models_async"


async def test_turning_the_bridge_off_leaves_sync_only_models_alone(sync_plugin):
    use(bridge=False)
    try:
        model = llm.get_async_model("ticker")
    except llm.UnknownModelError:
        return  # llm alone: no async form at all
    assert type(model).__module__ == "llm_all_models_async"


def test_bridge_refuses_models_that_are_not_sync():
    with pytest.raises(TypeError, match="not a sync llm model"):
        laa.bridge_model(llm.get_async_model("echo"))


# --- streaming -----------------------------------------------------------------------


async def test_chunks_and_stream_events_arrive_in_order():
    model = laa.bridge_model(Ticker())
    response = model.prompt("x", chunks=40, reasoning=True)
    text = [f"{i} " for i in range(40)]
    if LLM_HAS_MESSAGES:  # llm >= 0.36: StreamEvents
        events = [(event.type, event.chunk) async for event in response.astream_events()]
        assert events == [e for t in text for e in (("reasoning", f"r{t[:-1]}"), ("text", t))]
    else:
        assert [chunk async for chunk in response] == text
    assert await response.text() == "".join(text)


async def test_a_slow_consumer_holds_memory_constant():
    sync = Ticker()
    model = laa.bridge_model(sync)
    chunks, size = 10_000, 1024
    response = model.prompt("x", chunks=chunks, size=size)
    lag = consumed = 0
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        async for chunk in model.execute(response.prompt, True, response, None):
            assert len(chunk) == size
            consumed += 1
            lag = max(lag, sync.produced - consumed)
            await asyncio.sleep(0)  # slower than the worker
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert consumed == chunks
    assert lag <= BUFFER + 1
    assert peak < 512 * 1024  # the chunks total 10 MiB


# --- the pool ------------------------------------------------------------------------


async def test_prompts_beyond_the_pool_wait_and_all_finish():
    use(bridge_workers=2)
    sync = Ticker()
    model = laa.bridge_model(sync)
    responses = [model.prompt(f"p{i}", chunks=3, delay=0.02) for i in range(10)]
    texts = await asyncio.gather(*(response.text() for response in responses))
    assert texts == ["0 1 2 "] * 10
    assert sync.peak == 2


async def test_waiting_prompts_start_first_come_first_served():
    use(bridge_workers=1)
    sync = Ticker()
    model = laa.bridge_model(sync)
    holder = asyncio.create_task(model.prompt("hold", gated=True).text())
    await until(lambda: sync.starts == ["hold"])
    tasks = []
    for i in range(5):
        tasks.append(asyncio.create_task(model.prompt(f"p{i}").text()))
        await until(lambda i=i: waiting() == i + 1)
    sync.gate.set()
    await asyncio.gather(holder, *tasks)
    assert sync.starts == ["hold", "p0", "p1", "p2", "p3", "p4"]


async def test_one_models_long_prompts_leave_room_for_another_model():
    use(bridge_workers=3, bridge_model_workers=2)
    long, short = Ticker("long"), Ticker("short")
    model = laa.bridge_model(long)
    flood = [asyncio.create_task(model.prompt(f"l{i}", gated=True).text()) for i in range(4)]
    try:
        await until(lambda: waiting() == 2 and long.running == 2)
        # While two long prompts run and two wait:
        assert await laa.bridge_model(short).prompt("s").text() == "0 1 2 "
        assert long.peak == 2
    finally:
        long.gate.set()
        await asyncio.gather(*flood)


async def test_a_free_worker_goes_to_the_model_served_least_recently():
    use(bridge_workers=1)
    log: list[str] = []
    long, short = Ticker("long", log), Ticker("short", log)
    tasks = [asyncio.create_task(laa.bridge_model(long).prompt("l0", gated=True).text())]
    await until(lambda: long.starts == ["l0"])
    for i in (1, 2):
        tasks.append(asyncio.create_task(laa.bridge_model(long).prompt(f"l{i}").text()))
        await until(lambda i=i: waiting() == i)
    tasks.append(asyncio.create_task(laa.bridge_model(short).prompt("s0").text()))
    await until(lambda: waiting() == 3)
    long.gate.set()
    await asyncio.gather(*tasks)
    assert [entry for entry in log if entry.startswith("start")] == [
        "start l0",
        "start s0",
        "start l1",
        "start l2",
    ]


async def test_a_queue_wait_longer_than_the_timeout_fails_clearly():
    use(bridge_workers=1, bridge_queue_timeout=0.05)
    busy = Ticker("busy")
    holder = asyncio.create_task(laa.bridge_model(busy).prompt("hold", gated=True).text())
    await until(lambda: busy.starts == ["hold"])
    response = laa.bridge_model(Ticker("late")).prompt("x")
    with pytest.raises(laa.BridgeQueueTimeout) as caught:
        async with asyncio.timeout(10):  # without the setting it would wait forever
            await response.text()
    assert isinstance(caught.value, TimeoutError)
    assert str(caught.value).startswith(
        "No bridge worker became free for the sync model 'late' within 0.05 s"
    )
    assert "LLM_ASYNC_ATTACHMENTS_BRIDGE_WORKERS" in str(caught.value)
    assert waiting() == 0
    busy.gate.set()
    await holder
    assert await laa.bridge_model(Ticker("late")).prompt("x").text() == "0 1 2 "


async def test_a_worker_that_cannot_start_fails_its_prompt_and_frees_its_slot(monkeypatch):
    use(bridge_workers=1)
    start = threading.Thread.start

    def refuse(thread: threading.Thread) -> None:
        if thread.name == "llm-bridge[refused]":
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        async with asyncio.timeout(10):  # not a hang
            await laa.bridge_model(Ticker("refused")).prompt("x").text()
    assert await laa.bridge_model(Ticker()).prompt("x").text() == "0 1 2 "


async def test_a_burst_of_prompts_is_started_by_a_few_launcher_threads():
    use(bridge_workers=64, bridge_model_workers=64)
    sync = Ticker()
    model = laa.bridge_model(sync)
    texts = await asyncio.gather(
        *(model.prompt(f"p{i}", chunks=2, delay=0.05).text() for i in range(64))
    )
    assert texts == ["0 1 "] * 64
    assert sync.peak > 1
    launchers = [t for t in threading.enumerate() if t.name == "llm-bridge-launcher"]
    assert 1 <= len(launchers) <= LAUNCHERS
    assert all(launcher.daemon for launcher in launchers)


def test_a_child_process_after_fork_starts_bridge_workers_of_its_own():
    assert asyncio.run(laa.bridge_model(Ticker()).prompt("x").text()) == "0 1 2 "
    context = multiprocessing.get_context("fork")
    reader, writer = context.Pipe(duplex=False)

    def child() -> None:
        try:
            writer.send(asyncio.run(laa.bridge_model(Ticker()).prompt("x").text()))
        except BaseException as error:
            writer.send(repr(error))

    process = context.Process(target=child)
    process.start()
    try:
        assert reader.poll(30), "the child's prompt did not finish"
        assert reader.recv() == "0 1 2 "
    finally:
        process.join(10)
    assert process.exitcode == 0


# --- cancellation --------------------------------------------------------------------


async def test_cancelling_the_consumer_closes_the_sync_generator_at_its_next_chunk():
    use(bridge_workers=1)
    sync = Ticker()
    model = laa.bridge_model(sync)
    three = asyncio.Event()

    async def consume() -> None:
        received = 0
        async for _ in model.prompt("x", chunks=10_000, delay=0.02, linger=0.05):
            received += 1
            if received == 3:
                three.set()

    task = asyncio.create_task(consume())
    await three.wait()
    worker = bridge_thread("ticker")
    assert not worker.daemon  # so pyleak would report it, were it left running
    produced_at_cancel = sync.produced
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = laa.bridge_model(Ticker(log=sync.log))  # the same model id: the same slot
    again = asyncio.create_task(after.prompt("again").text())
    assert await asyncio.to_thread(sync.closed.wait, 10)
    assert sync.endings["x"] == "closed"  # by generator.close(): its finally ran
    assert sync.produced - produced_at_cancel <= 1
    assert await again == "0 1 2 "  # the worker is free again...
    # ... once the cancelled generator's clean-up had finished, not before.
    assert sync.log == ["start x", "end x", "start again", "end again"]


@pytest.mark.parametrize("how", ["aclose", "garbage"])
async def test_a_consumer_that_stops_reading_closes_the_sync_generator(how):
    sync = Ticker()
    response = laa.bridge_model(sync).prompt("x", chunks=10_000, delay=0.01)
    if how == "aclose":  # as llm does when a stream of events is closed
        chunks = response.model.execute(response.prompt, True, response, None)
        async with contextlib.aclosing(chunks):
            async for _ in chunks:
                break
    else:
        async for _ in response:
            break
        del response
        gc.collect()
    assert await asyncio.to_thread(sync.closed.wait, 10)
    assert sync.endings == {"x": "closed"}
    assert sync.produced <= BUFFER + 2


async def test_an_error_after_the_consumer_left_is_reported_not_swallowed(monkeypatch):
    reported = []
    monkeypatch.setattr(threading, "excepthook", reported.append)
    model = laa.bridge_model(Ticker())
    response = model.prompt("x", chunks=10_000, delay=0.01, fail_on_close=True)
    chunks = model.execute(response.prompt, True, response, None)
    async with contextlib.aclosing(chunks):
        async for _ in chunks:
            worker = bridge_thread("ticker")
            break
    await asyncio.to_thread(worker.join, 10)
    assert [(args.exc_type, str(args.exc_value)) for args in reported] == [
        (RuntimeError, "ticker clean-up failed")
    ]


def test_a_worker_stops_when_its_event_loop_is_closed_without_closing_it():
    sync = Ticker()
    model = laa.bridge_model(sync)
    loop = asyncio.new_event_loop()
    response = model.prompt("x", chunks=10_000)
    generator = model.execute(response.prompt, True, response, None)
    loop.run_until_complete(anext(generator))
    worker = bridge_thread("ticker")
    loop.close()  # without shutdown_asyncgens(): the generator is never closed
    worker.join(10)
    assert not worker.is_alive()
    assert sync.endings == {"x": "closed"}
    asyncio.run(generator.aclose())


# --- errors --------------------------------------------------------------------------


async def test_exceptions_keep_their_type_message_and_traceback():
    model = laa.bridge_model(Ticker())
    response = model.prompt("x", chunks=5, fail_at=2)
    received = []
    with pytest.raises(ValueError, match=r"^ticker failed at chunk 2$") as caught:
        async for chunk in response:
            received.append(chunk)
    assert received == ["0 ", "1 "]
    frames = traceback.extract_tb(caught.value.__traceback__)
    assert any(f.filename.endswith("sync_models.py") and f.name == "execute" for f in frames)
    with pytest.raises(ValueError, match="not yet awaited"):
        response.text_or_raise()  # not marked done


@pytest.mark.parametrize("failure", ["KeyboardInterrupt", "SystemExit", "GeneratorExit"])
async def test_base_exceptions_in_a_worker_reach_the_consumer_as_an_error(failure):
    model = laa.bridge_model(Ticker())
    response = model.prompt("x", chunks=5, fail_at=2, fail_with=failure)
    async with asyncio.timeout(10):  # a hang fails the test instead of stalling the suite
        with pytest.raises(
            laa.BridgeInterrupted, match=f"raised {failure} on its worker"
        ) as caught:
            await response.text()
    assert type(caught.value.__cause__).__name__ == failure
    assert str(caught.value.__cause__) == "ticker failed at chunk 2"
    assert isinstance(caught.value, RuntimeError)
    with pytest.raises(ValueError, match="not yet awaited"):
        response.text_or_raise()


# --- attachments and conversations ---------------------------------------------------


class Unregistered(Recorder):
    """A sync class llm's registry never saw: only bridge_model() itself prepares for it."""


async def test_attachments_are_prepared_before_the_worker_starts(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    model = laa.bridge_model(Unregistered())
    response = model.prompt("x", attachments=[llm.Attachment(url=url)])
    assert file_server.count() == 0  # no blocking HEAD in prompt()
    seen = json.loads(await response.text())
    assert seen["attachments"] == [["image/png", len(samples.png())]]
    assert seen["thread"] == "llm-bridge[recorder]"
    assert file_server.requests == [("GET", "/cat.png")]  # llm alone: a HEAD, then a GET


async def test_an_attachment_over_the_cap_fails_before_the_worker_starts(file_server):
    use(max_bytes=1024)
    url = file_server.add("/big.png", samples.sized("png", 4096), content_type="image/png")
    sync = Unregistered()
    with pytest.raises(laa.AttachmentTooLarge):
        await laa.bridge_model(sync).prompt("x", attachments=[llm.Attachment(url=url)]).text()
    assert sync.calls == 0


async def test_the_sync_plugin_reads_the_conversation_as_sync_responses():
    conversation = laa.bridge_model(Recorder()).conversation()
    first = await conversation.prompt("one").text()
    seen = json.loads(await conversation.prompt("two").text())
    assert seen["conversation"] == "Conversation"
    assert seen["history"] == [["Response", "one", first]]


# --- llm-markov under load -----------------------------------------------------------


@needs_markov
async def test_llm_markov_prompts_beyond_the_pool_all_finish():
    use(bridge_workers=3)
    model = llm.get_async_model("markov")
    lengths = list(range(2, 18))
    responses = [model.prompt(WORDS, length=n, delay=0.001) for n in lengths]
    texts = await asyncio.gather(*(response.text() for response in responses))
    assert [len(text.split()) for text in texts] == lengths


@needs_markov
async def test_cancelling_llm_markov_stops_its_worker():
    model = llm.get_async_model("markov")
    response = model.prompt(WORDS, length=10_000, delay=0.02)  # 200 s if never stopped
    task = asyncio.create_task(response.text())
    await until(lambda: len(response._chunks) >= 3)
    worker = bridge_thread("markov")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(worker.join, 10)
    assert not worker.is_alive()


# --- configuration -------------------------------------------------------------------


def test_bridge_settings_come_from_the_environment():
    config = laa.Config.from_env(
        {
            "LLM_ASYNC_ATTACHMENTS_BRIDGE": "1",
            "LLM_ASYNC_ATTACHMENTS_BRIDGE_WORKERS": "8",
            "LLM_ASYNC_ATTACHMENTS_BRIDGE_MODEL_WORKERS": "1",
            "LLM_ASYNC_ATTACHMENTS_BRIDGE_QUEUE_TIMEOUT": "2.5",
        }
    )
    assert (config.bridge, config.bridge_workers, config.bridge_model_workers) == (True, 8, 1)
    assert config.bridge_queue_timeout == 2.5
    defaults = laa.Config()
    assert (defaults.bridge, defaults.bridge_workers, defaults.bridge_model_workers) == (
        False,
        512,
        256,
    )
    assert defaults.bridge_queue_timeout is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLM_ASYNC_ATTACHMENTS_BRIDGE", "maybe", "LLM_ASYNC_ATTACHMENTS_BRIDGE='maybe'"),
        ("LLM_ASYNC_ATTACHMENTS_BRIDGE_WORKERS", "0", "WORKERS='0' is not valid: it must be a"),
        ("LLM_ASYNC_ATTACHMENTS_BRIDGE_MODEL_WORKERS", "-1", "WORKERS='-1' is not valid"),
        ("LLM_ASYNC_ATTACHMENTS_BRIDGE_QUEUE_TIMEOUT", "inf", "TIMEOUT='inf' is not valid"),
    ],
)
def test_malformed_bridge_settings_fail_loudly(variable, value, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
        laa.Config.from_env({variable: value})
