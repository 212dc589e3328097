"""llm's own OpenAI async model, from the registry, against loopback servers."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

import llm
import pytest

from llm_async_attachments.testing import samples
from tests.support import LLM_HAS_MESSAGES
from tests.support.scenario import three_turns

ROOT = Path(__file__).resolve().parents[2]
# llm's OpenAI plugin builds a new openai client, loading TLS certificates on the
# event loop, for every prompt: 35-90 ms here, more on a loaded machine. That is
# not attachment I/O, so these tests allow 200 ms, and the file server answers
# after 300 ms: any blocking attachment fetch would still fail them.
pytestmark = pytest.mark.no_leaks(blocking_threshold=0.2)
LATENCY = 0.3


@pytest.fixture
def urls(file_server):
    return (
        file_server.add("/cat.png", samples.png(), content_type="image/png", latency=LATENCY),
        file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf", latency=LATENCY),
    )


async def run_llm_alone(image: str, pdf: str) -> dict:
    """The same scenario in a child process where llm loads no plugins (so not this one)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.support.scenario",
        image,
        pdf,
        env={**os.environ, "LLM_LOAD_PLUGINS": ""},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return json.loads(stdout)


async def test_three_turns_fetch_each_url_once_and_send_identical_requests(
    file_server, openai_server, urls
):
    alone = await run_llm_alone(*urls)
    if LLM_HAS_MESSAGES:  # llm >= 0.36 validates in conversation.prompt(), resends history
        expected = {("HEAD", "/cat.png"): 10, ("HEAD", "/doc.pdf"): 7, ("GET", "/doc.pdf"): 3}
    else:  # llm 0.30's OpenAI plugin drops earlier turns' attachments from the history
        expected = {("HEAD", "/cat.png"): 3, ("HEAD", "/doc.pdf"): 2, ("GET", "/doc.pdf"): 1}
    assert Counter(file_server.requests) == expected
    assert alone["largest_stall_ms"] > LATENCY * 1000  # llm alone blocks on every fetch
    bodies_alone = list(openai_server.bodies)

    file_server.requests.clear()
    openai_server.reset()
    replies = await three_turns(*urls)  # this process: the plugin is loaded; pyleak watches

    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/doc.pdf")]
    assert openai_server.bodies == bodies_alone
    assert len(bodies_alone) == 3 and replies == ["ok"] * 3
    first_turn = bodies_alone[0]["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": urls[0]}} in first_turn


async def test_the_registry_model_keeps_its_class_options_and_key_handling(openai_server):
    model = llm.get_async_model("gpt-4o-mini")
    assert type(model).__name__ == "AsyncChat"
    assert isinstance(model, llm.AsyncKeyModel)
    assert model.model_id == "gpt-4o-mini" and model.needs_key == "openai"
    assert model.Options(temperature=0.5).temperature == 0.5
    response = model.prompt("hi", temperature=0.5)
    assert await response.text() == "ok"
    assert openai_server.bodies[-1]["temperature"] == 0.5
    assert openai_server.headers[-1]["authorization"] == "Bearer sk-loopback"


async def test_audio_urls_are_inlined_for_chat_models(file_server, openai_server):
    from llm.default_plugins.openai_models import AsyncChat

    model = AsyncChat("gpt-4o-audio-preview", vision=True, audio=True)
    llm_async_attachments = pytest.importorskip("llm_async_attachments")
    llm_async_attachments.prepare_before_execute(model)
    wav = file_server.add("/hello.wav", samples.wav(), content_type="audio/wav")
    image = file_server.add("/cat.png", samples.png(), content_type="image/png")
    response = model.prompt(
        "listen", attachments=[llm.Attachment(url=wav), llm.Attachment(url=image)]
    )
    await response.text()
    parts = openai_server.bodies[-1]["messages"][-1]["content"]
    assert parts[1]["type"] == "input_audio"  # downloaded and inlined
    assert parts[2] == {"type": "image_url", "image_url": {"url": image}}
    assert sorted(file_server.requests) == [("GET", "/cat.png"), ("GET", "/hello.wav")]
