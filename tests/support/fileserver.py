"""Moved: see llm_async_attachments.testing.server."""

from llm_async_attachments.testing.server import *  # noqa: F403
from llm_async_attachments.testing.server import FileServer  # noqa: F401
