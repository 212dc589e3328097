"""Every error copies and pickles; an AttachmentError's copy for another caller has no notes."""

from __future__ import annotations

import copy
import inspect
import pickle

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments import errors

FIELDS = {
    "source": "https://example.com/x.png",
    "limit": 10,
    "size": 20,
    "status_code": 404,
    "address": "127.0.0.1",
    "kind": "a loopback address",
    "attachment": llm.Attachment(url="https://example.com/x.png"),
    "method": "content_bytes",
    "setting": "LLM_ASYNC_ATTACHMENTS_MAX_BYTES",
    "value": "64XB",
}
CLASSES = [
    cls
    for cls in (getattr(errors, name) for name in errors.__all__)
    if inspect.isclass(cls) and not issubclass(cls, Warning)
]


def make(cls: type[Exception]) -> Exception:
    wanted = inspect.signature(cls).parameters
    return cls("the message", **{name: FIELDS[name] for name in wanted if name != "message"})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda error: pickle.loads(pickle.dumps(error))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_every_error_class_copies_and_pickles_with_its_fields_and_notes(cls, duplicate):
    error = make(cls)
    error.add_note("a note")
    twin = duplicate(error)
    assert type(twin) is cls and twin is not error
    assert twin.args == error.args == ("the message",)
    assert vars(twin) == vars(error)
    assert twin.__notes__ == ["a note"]


@pytest.mark.parametrize(
    "cls", [c for c in CLASSES if issubclass(c, laa.AttachmentError)], ids=lambda c: c.__name__
)
def test_an_attachment_errors_copy_for_another_caller_has_no_notes(cls):
    try:
        try:
            raise OSError("underneath")
        except OSError as cause:
            raise make(cls) from cause
    except laa.AttachmentError as raised:
        error = raised
    error.add_note("Also failed: someone else's URL")
    twin = error.copy()
    assert type(twin) is cls and twin is not error
    assert str(twin) == str(error)
    assert vars(twin) == {k: v for k, v in vars(error).items() if k != "__notes__"}
    assert not hasattr(twin, "__notes__") and twin.__traceback__ is None
    assert twin.__cause__ is error.__cause__
    twin.add_note("mine")
    assert error.__notes__ == ["Also failed: someone else's URL"]
