"""Test support: loopback servers, sample files, test models, measurements."""

from importlib.util import find_spec

LLM_HAS_MESSAGES = find_spec("llm.parts") is not None
"""llm >= 0.36: prompts take messages= lists of Message parts."""
