"""A pytest plugin that .ci/peers.py loads into every run of a peer's suite
(``-p peers_probe``), with and without llm-async-attachments alike.

When the session ends it writes the names of the llm plugins loaded in that
process to the file named by ``$PEERS_PROBE_OUT``, so the "with us" run can prove
that llm really loaded ours, and the baseline that it did not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Record the llm plugins this process loaded (importing llm loads them)."""
    out = os.environ.get("PEERS_PROBE_OUT")
    if not out:
        return
    import llm

    names = sorted({plugin["name"] for plugin in llm.get_plugins()})
    Path(out).write_text(json.dumps(names))
