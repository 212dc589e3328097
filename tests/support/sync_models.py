"""Sync-only test models for the bridge, and an llm plugin that registers them.

Each model records, from its worker thread, what the bridge made it do, so a
test can check what happened on the sync side: how many chunks it produced,
whether its generator's ``finally`` ran and how, how many ran at once.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import llm
from pydantic import Field

from tests.support import LLM_HAS_MESSAGES

FAILURES: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "KeyboardInterrupt": KeyboardInterrupt,
    "SystemExit": SystemExit,
    "GeneratorExit": GeneratorExit,
}


class Ticker(llm.Model):
    """Yields ``"0 "``, ``"1 "``, ...: ``chunks`` of them, ``delay`` seconds apart."""

    model_id = "ticker"
    can_stream = True
    attachment_types = frozenset({"image/png"})
    supports_tools = True
    supports_schema = True

    class Options(llm.Options):
        chunks: int = Field(default=3, ge=0)
        delay: float = 0.0
        size: int = Field(default=0, description="pad each chunk to this many characters")
        fail_at: int | None = None
        fail_with: str = "ValueError"
        gated: bool = Field(default=False, description="wait for model.gate to open first")
        linger: float = Field(default=0.0, description="seconds of clean-up in its finally")
        fail_on_close: bool = Field(default=False, description="clean-up raises when closed")
        reasoning: bool = Field(default=False, description="a reasoning event before each")

    def __init__(self, model_id: str = "ticker", log: list[str] | None = None) -> None:
        self.model_id = model_id
        self.log = [] if log is None else log
        self.gate = threading.Event()
        self.closed = threading.Event()
        self.endings: dict[str, str] = {}  # prompt: finished or closed
        self.produced = 0
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Any:
        options = prompt.options
        with self._lock:
            self.log.append(f"start {prompt.prompt}")
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if options.gated:
                self.gate.wait()
            for i in range(options.chunks):
                if i == options.fail_at:
                    raise FAILURES[options.fail_with](f"{self.model_id} failed at chunk {i}")
                time.sleep(options.delay)
                if options.reasoning and LLM_HAS_MESSAGES:
                    from llm.parts import StreamEvent

                    yield StreamEvent(type="reasoning", chunk=f"r{i}")
                self.produced += 1
                yield str(i).ljust(options.size) if options.size else f"{i} "
            self.endings[prompt.prompt] = "finished"
        except GeneratorExit:
            self.endings[prompt.prompt] = "closed"
            if options.fail_on_close:
                raise RuntimeError(f"{self.model_id} clean-up failed") from None
            raise
        finally:
            time.sleep(options.linger)
            with self._lock:
                self.running -= 1
                self.log.append(f"end {prompt.prompt}")
            self.closed.set()

    @property
    def starts(self) -> list[str]:
        """The prompts it started, in order."""
        return [entry[6:] for entry in self.log if entry.startswith("start ")]


class KeyTicker(llm.KeyModel):
    """Yields the key it was given."""

    model_id = "key-ticker"
    needs_key = "ticker"
    key_env_var = "TICKER_KEY"

    def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any, key: str | None
    ) -> Any:
        yield f"key={key}"


class Recorder(llm.Model):
    """Yields, as JSON, what a sync plugin reads: attachments and conversation history."""

    model_id = "recorder"
    attachment_types = frozenset({"image/png"})

    def __init__(self) -> None:
        self.calls = 0

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any) -> Any:
        self.calls += 1
        history = [
            [type(earlier).__name__, earlier.prompt.prompt, earlier.text()]
            for earlier in (conversation.responses if conversation else ())
        ]
        attachments = [[a.resolve_type(), len(a.content_bytes())] for a in prompt.attachments]
        yield json.dumps(
            {
                "conversation": type(conversation).__name__,
                "history": history,
                "attachments": attachments,
                "thread": threading.current_thread().name,
            }
        )


class SyncModels:
    """An llm plugin registering the sync-only models above, as a plugin would."""

    @llm.hookimpl
    def register_models(self, register: Any) -> None:
        register(Ticker(), aliases=("tick",))
        register(KeyTicker())
        register(Recorder())
