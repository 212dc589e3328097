"""The main scenario: llm's own gpt-4o-mini, 3 turns, an image and a PDF URL attachment.

Run in-process by tests, or as ``python -m tests.support.scenario IMAGE_URL PDF_URL``
(printing JSON with the largest event-loop stall and the wall time), so that
"llm alone" can run in a child process with ``LLM_LOAD_PLUGINS=''``. The
caller points llm at a loopback API with ``OPENAI_BASE_URL`` and
``OPENAI_API_KEY``, and sets ``LLM_USER_PATH`` to an empty directory.
"""

from __future__ import annotations

import asyncio
import json
import sys

import llm
import openai

from tests.support.stall import measure

TURNS = 3
MODEL = "gpt-4o-mini"


async def three_turns(image_url: str, pdf_url: str) -> list[str]:
    """Run the conversation; return the model's replies."""
    model = llm.get_async_model(MODEL)
    conversation = model.conversation()
    attachments = [llm.Attachment(url=image_url), llm.Attachment(url=pdf_url)]
    replies = []
    for turn in range(TURNS):
        response = conversation.prompt(
            f"Turn {turn + 1}: what is in these files?",
            attachments=attachments if turn == 0 else None,
        )
        replies.append(await response.text())
    return replies


def warm_up() -> None:
    """Load llm's plugins and the openai client's lazy modules before the clock starts.

    That one-time start-up (hundreds of ms) is the same with or without this
    package and is not what the scenario measures.
    """
    llm.get_async_models()
    client = openai.AsyncOpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    _ = client.chat.completions, client.responses


def main() -> None:
    image_url, pdf_url = sys.argv[1:3]
    warm_up()
    measured = asyncio.run(measure(lambda: three_turns(image_url, pdf_url)))
    print(json.dumps({"largest_stall_ms": measured.largest_stall_ms, "wall_s": measured.wall_s}))


if __name__ == "__main__":
    main()
