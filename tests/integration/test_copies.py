"""A plugin that copies prepared attachments inside ``execute()`` reads the copies without I/O."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import AsyncGenerator
from typing import Any

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.testing import samples

COPIES = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "replace": lambda attachment: dataclasses.replace(attachment),
}


class Copier(llm.AsyncModel):
    """Copies every attachment of the prompt, then reads the copies as plugins do."""

    model_id = "copier"
    attachment_types = frozenset({"image/png", "application/pdf"})
    how = "copy"

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        copies = [COPIES[self.how](attachment) for attachment in prompt.attachments]
        yield json.dumps(
            [
                [a.resolve_type(), len(a.content_bytes()), len(a.base64_content()), a.id()]
                for a in copies
            ]
        )


@pytest.mark.parametrize("how", sorted(COPIES))
async def test_copies_made_in_execute_read_without_io(file_server, tmp_path, how):
    url = file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf")
    image = tmp_path / "image.png"
    image.write_bytes(samples.png())
    attachments = [llm.Attachment(url=url), llm.Attachment(path=str(image))]
    model = laa.prepare_before_execute(Copier())
    model.how = how

    output = json.loads(await model.prompt("x", attachments=attachments).text())

    pdf, png = samples.pdf(), samples.png()
    assert output == [
        ["application/pdf", len(pdf), len(base64.b64encode(pdf)), attachments[0].id()],
        ["image/png", len(png), len(base64.b64encode(png)), attachments[1].id()],
    ]
    assert file_server.requests == [("GET", "/doc.pdf")]  # the original's one fetch


async def test_a_copy_with_other_fields_is_not_taken_for_the_original(file_server):
    """A copy that was changed is another attachment: the guard stops its blocking read."""
    url = file_server.add("/doc.pdf", samples.pdf(), content_type="application/pdf")
    other = file_server.add("/other.pdf", samples.pdf(), content_type="application/pdf")

    class Changer(Copier):
        async def execute(self, prompt, stream, response, conversation=None):
            changed = dataclasses.replace(prompt.attachments[0], url=other)
            yield str(len(changed.content_bytes()))

    model = laa.prepare_before_execute(Changer())
    with pytest.raises(laa.BlockingAttachmentAccessError, match=r"other\.pdf"):
        await model.prompt("x", attachments=[llm.Attachment(url=url)]).text()
    assert file_server.count("GET", "/other.pdf") == 0
