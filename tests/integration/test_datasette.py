"""Datasette's LLM enrichment, end to end, with the sync-only llm-markov through the bridge.

A real Datasette instance with ``datasette-enrichments-llm``: the test posts
the enrichment form as a signed-in root user, waits for the job and reads the
table back. A job reports ``finished`` even when every row failed, so the
test checks every row's output and ``_enrichment_errors`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator
from importlib.util import find_spec

import pytest
import sqlite_utils

import llm_async_attachments as laa

pytest.importorskip("datasette")
pytest.importorskip("datasette_enrichments_llm")
pytest.importorskip("llm_markov")

import datasette.utils.actions_sql  # noqa: F401 - imported on its first request otherwise,
from datasette.app import Datasette  # on the event loop (100 ms under pytest's rewriting)
from datasette_enrichments.utils import wait_for_job

# datasette-enrichments-llm's own form, not this package's concern.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing SelectField choices as tuples:DeprecationWarning"
)

ROWS = 20
LENGTH = 7  # llm-markov's default is 100 words
WORDS = "the quick brown fox jumps over the lazy dog"


@contextlib.asynccontextmanager
async def running_datasette(tmp_path) -> AsyncIterator[Datasette]:
    """Datasette serving a table of notes, its LLM enrichments set to llm-markov's options."""
    path = tmp_path / "data.db"
    rows = [{"id": i, "text": f"row {i} {WORDS}"} for i in range(ROWS)]
    # The fixture's own file I/O, off the loop: a COMMIT can take 100 ms on a busy disk.
    await asyncio.to_thread(lambda: sqlite_utils.Database(path)["notes"].insert_all(rows, pk="id"))
    markov = {"model": "markov", "options": {"length": LENGTH, "delay": 0.001}}
    plugins = {"datasette-llm": {"purposes": {"enrichments": {"model": markov}}}}
    ds = Datasette([str(path)], config={"plugins": plugins})
    ds.root_enabled = True
    try:
        await ds.invoke_startup()
        yield ds
    finally:
        # Inside the test, so that pyleak sees Datasette's SQL threads end.
        await asyncio.to_thread(ds.close)


async def enrich(ds: Datasette) -> tuple[dict, list[dict], list[dict]]:
    """Run the LLM enrichment over the notes table; the job, its errors and the rows."""
    form = {
        "model": "markov",
        "prompt": "{{ text }}",
        "system_prompt": "",
        "media_url": "",
        "output_column": "summary",
    }
    cookies = {"ds_actor": ds.client.actor_cookie({"id": "root"})}
    response = await ds.client.post("/-/enrich/data/notes/llm", data=form, cookies=cookies)
    assert response.status_code == 302, response.text
    job_id = int(re.search(r"_enrichment_job=(\d+)", response.headers["location"])[1])
    await wait_for_job(ds, job_id, database="data", timeout=60)
    db = ds.get_database("data")
    (job,) = (await db.execute("select * from _enrichment_jobs where id = ?", [job_id])).dicts()
    errors = (await db.execute("select * from _enrichment_errors")).dicts()
    rows = (await db.execute("select id, text, summary from notes order by id")).dicts()
    return job, errors, rows


@pytest.fixture(autouse=True)
def _bridge_on(strict_guard) -> None:
    """As docs/bridge.md says to run Datasette: LLM_ASYNC_ATTACHMENTS_BRIDGE=1."""
    laa.configure(dataclasses.replace(laa.get_config(), bridge=True))


async def test_the_llm_enrichment_fills_every_row_with_a_sync_only_model(tmp_path):
    async with running_datasette(tmp_path) as ds:
        job, errors, rows = await enrich(ds)
    assert errors == []
    assert (job["status"], job["done_count"], job["error_count"]) == ("finished", ROWS, 0)
    assert len(rows) == ROWS
    for row in rows:
        words = row["summary"].split()
        assert len(words) == LENGTH  # the configured option reached llm-markov
        assert set(words) <= set(row["text"].split())


@pytest.mark.skipif(
    find_spec("llm_all_models_async") is None, reason="llm-all-models-async is not installed"
)
async def test_without_the_bridge_every_row_fails_and_the_job_still_finishes(tmp_path):
    """llm-all-models-async's wrapper has no Options: the checks above see it."""
    laa.configure(dataclasses.replace(laa.get_config(), bridge=False))
    async with running_datasette(tmp_path) as ds:
        job, errors, rows = await enrich(ds)
    assert (job["status"], job["error_count"]) == ("finished", ROWS)
    assert len(errors) == ROWS
    assert all("Extra inputs are not permitted" in error["error"] for error in errors)
    assert [row["summary"] for row in rows] == [None] * ROWS
