"""Moved: see llm_async_attachments.testing.samples."""

from llm_async_attachments.testing.samples import *  # noqa: F403
from llm_async_attachments.testing.samples import SAMPLES, sized  # noqa: F401
