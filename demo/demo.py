"""make demo: a 3-turn conversation's attachment reads, llm alone vs prepared first.

Starts a loopback file server (50 ms latency), then plays the reads an async
plugin does in execute() (resolve_type() for each attachment, then
content_bytes()) for three turns with a PNG and a PDF URL attachment. Prints
HTTP requests and the largest event-loop stall, measured with a 1 ms ticker.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import llm

import llm_async_attachments as laa
from tests.support import samples
from tests.support.fileserver import FileServer
from tests.support.stall import measure

TURNS = 3


async def conversation(urls: list[str], prepared: bool) -> None:
    model = llm.get_async_model("echo")
    conv = model.conversation()
    attachments = [llm.Attachment(url=url) for url in urls]
    for turn in range(TURNS):
        prompt = llm.Prompt(f"turn {turn}", model, attachments=attachments)
        if prepared:
            await laa.prepare_attachments(prompt, conv)
        for attachment in prompt.attachments:  # what a plugin's execute() does
            attachment.resolve_type()
            attachment.content_bytes()
        conv.responses.append(llm.AsyncResponse(prompt, model, stream=False))


def main() -> None:
    llm.get_async_models()
    laa.configure(laa.Config(guard="off"))  # let "llm alone" block, as it does today
    rows = []
    with FileServer() as server:
        urls = [
            server.add(
                "/cat.png", samples.sized("png", 2 << 20), content_type="image/png", latency=0.05
            ),
            server.add(
                "/doc.pdf",
                samples.sized("pdf", 2 << 20),
                content_type="application/pdf",
                latency=0.05,
            ),
        ]
        for label, prepared in (("llm alone", False), ("with llm-async-attachments", True)):
            server.reset()
            for url, body in zip(urls, ("png", "pdf"), strict=True):
                server.add(
                    url.removeprefix(server.base_url),
                    samples.sized(body, 2 << 20),
                    content_type="image/png" if body == "png" else "application/pdf",
                    latency=0.05,
                )
            measured = asyncio.run(measure(functools.partial(conversation, urls, prepared)))
            rows.append((label, server.count(), measured.largest_stall_ms, measured.wall_s))
    print(f"{TURNS}-turn conversation, PNG + PDF URL attachments (2 MiB each, 50 ms latency)\n")
    print(f"{'':28} {'HTTP requests':>14} {'largest stall':>14} {'wall time':>10}")
    for label, requests, stall, wall in rows:
        print(f"{label:28} {requests:>14} {stall:>11.1f} ms {wall:>8.2f} s")


if __name__ == "__main__":
    main()
