"""Start-up: loading llm's plugins imports no HTTP client; the first fetch imports it off the loop.

Each check runs in a fresh interpreter: this test process imported everything long ago.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from llm_async_attachments.testing import samples

ROOT = Path(__file__).resolve().parent.parent


def run(code: str) -> dict:
    """Run ``code`` with llm's plugins (this one and llm-echo) and return what it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LLM_LOAD_PLUGINS": "llm-async-attachments,llm-echo",
    }
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


OURS = [
    "llm_async_attachments.http",
    "llm_async_attachments.integration.bridge",
    "llm_async_attachments.integration.hook",
]


def test_loading_llms_plugins_imports_neither_the_http_layer_nor_the_hook():
    loaded = run(
        f"""
        import json, sys
        import llm
        llm.load_plugins()
        patched = getattr(llm.Attachment, "_llm_async_attachments_patched", False)
        print(json.dumps({{
            "patched": patched and hasattr(llm.Attachment, "to_async"),
            "imported": [name for name in {OURS!r} if name in sys.modules],
        }}))
        """
    )
    assert loaded == {"patched": True, "imported": []}


def test_llms_commands_import_neither_prepare_nor_the_configuration():
    # Every llm command loads the plugin (and registers its commands); what they need
    # loads when an attachment is first prepared or read on a loop, or the command runs.
    later = [
        "core.prepare",
        "config",
        "store.shared_responses",
        "store.memory",
        "store.disk_tier",
        "cli",
    ]
    loaded = run(
        f"""
        import json, sys
        import llm.cli
        llm.load_plugins()
        print(json.dumps([name for name in {later!r}
                          if "llm_async_attachments." + name in sys.modules]))
        """
    )
    assert loaded == []


def test_models_are_wrapped_without_the_http_layer():
    loaded = run(
        f"""
        import json, sys
        import llm
        model = llm.get_async_model("echo")
        print(json.dumps({{
            "wrapped": getattr(type(model).execute, "_llm_async_attachments_prepares", False),
            "imported": [name for name in {OURS!r} if name in sys.modules],
        }}))
        """
    )
    assert loaded == {
        "wrapped": True,
        "imported": [
            "llm_async_attachments.integration.bridge",
            "llm_async_attachments.integration.hook",
        ],
    }


def test_the_first_fetch_imports_the_http_layer_on_a_worker_thread(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    fetched = run(
        f"""
        import asyncio, json, sys, threading
        import llm
        import llm_async_attachments as laa

        importers = []

        def audit(event, args):
            # importlib.import_module() raises no audit event; the modules it imports do.
            if event == "import" and args[0] == "llm_async_attachments.http.fetch":
                importers.append(threading.current_thread() is threading.main_thread())

        sys.addaudithook(audit)
        sys.setswitchinterval(0.004)  # the importer lowers it meanwhile, then restores it
        attachment = llm.Attachment(url={url!r})

        async def main():
            prompt = llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
            await asyncio.gather(laa.prepare_attachments(prompt), laa.prepare_attachments(prompt))
            return attachment.content_bytes()

        content = asyncio.run(main())
        print(json.dumps({{
            "on the main thread": importers,
            "switch interval": sys.getswitchinterval(),
            "size": len(content),
        }}))
        """
    )
    assert fetched == {
        "on the main thread": [False],
        "switch interval": 0.004,
        "size": len(samples.png()),
    }
    assert file_server.requests == [("GET", "/cat.png")]
