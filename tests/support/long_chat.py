"""A long conversation adding a new URL attachment every turn, its memory measured.

Run as a child process (its memory is its own):

    python -m tests.support.long_chat --turns 200 --size 2MiB --model echo

* ``--model echo``: llm-echo's async model, which reads no attachment content;
* ``--model current``: a model that reads the content of each prompt's own
  attachments, never the history's (as many plugins do);
* ``--alone``: llm without this package (``LLM_LOAD_PLUGINS`` is set so that
  only llm-echo loads, and the package is never imported).

The URLs come from a loopback server in this process that makes each body as
it sends it (nothing stored), so the resident set is the conversation's.
Prints JSON: turns that worked, the resident set before and after (MiB), its
growth at its largest after any turn, and the requests the server saw.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
from collections.abc import AsyncGenerator
from typing import Any

import llm

from llm_async_attachments.config import parse_size
from llm_async_attachments.testing.server import FileServer

MiB = 1024 * 1024


class CurrentOnly(llm.AsyncModel):
    """Reads the content of the prompt's own attachments, never the history's."""

    model_id = "current-only"
    attachment_types = frozenset({"image/png", "application/pdf"})

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        yield str(sum(len(a.content_bytes()) for a in prompt.attachments))


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / MiB


async def chat(model: Any, server: FileServer, turns: int, size: int) -> dict[str, Any]:
    conversation = model.conversation()
    gc.collect()
    before = peak = resident_mib()
    done = 0
    series = []
    for turn in range(turns):
        url = server.url(f"/big?size={size}&turn={turn}")
        attachment = llm.Attachment(url=url, type="image/png")
        await conversation.prompt(f"turn {turn}", attachments=[attachment]).text()
        done += 1
        now = resident_mib()
        series.append(round(now - before, 1))
        peak = max(peak, now)
    gc.collect()
    after = resident_mib()
    return {
        "turns_ok": done,
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "rss_growth_mib": round(peak - before, 1),
        "requests": len(server.requests),
        "growth_by_turn_mib": series,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--size", default="2MiB")
    parser.add_argument("--model", choices=("echo", "current"), default="echo")
    parser.add_argument("--alone", action="store_true")
    args = parser.parse_args()
    if args.model == "echo":
        model = llm.get_async_model("echo")
    else:
        model = CurrentOnly()
        if not args.alone:
            import llm_async_attachments as laa

            model = laa.prepare_before_execute(model)
    if args.alone:
        assert "llm_async_attachments.integration.hook" not in __import__("sys").modules
    with FileServer() as server:
        print(json.dumps(asyncio.run(chat(model, server, args.turns, parse_size(args.size)))))


if __name__ == "__main__":
    main()
