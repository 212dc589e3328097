"""``llm async-attachments status`` and ``fetch``, through click's runner."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import click
import llm
import pytest
from click.testing import CliRunner, Result
from llm.cli import cli as llm_cli
from llm.plugins import pm

import llm_async_attachments as laa
from llm_async_attachments.cli import _name, _prepare
from llm_async_attachments.plugin import register_commands
from llm_async_attachments.testing import samples

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(monkeypatch, tmp_path):
    """Run ``async-attachments ARGS`` on a fresh click group, as llm's CLI would."""
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    group = click.Group()
    register_commands(group)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(group, ["async-attachments", *args])

    return invoke


def row(output: str, model_id: str) -> list[str]:
    """The cells of the status table row of ``model_id``."""
    for line in output.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == model_id:
            return cells
    raise AssertionError(f"no row for {model_id} in:\n{output}")


class Sync(llm.Model):
    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def execute(self, prompt: Any, stream: bool, response: Any, conversation: Any = None) -> Any:
        yield ""


class OptedIn(llm.AsyncModel):
    model_id = "cli-opted-in"
    attachment_types = frozenset({"image/png", "application/pdf"})
    supports_async_attachments = True
    supports_attachment_urls = frozenset({"image/*", "application/pdf"})

    async def execute(
        self, prompt: Any, stream: bool, response: Any, conversation: Any = None
    ) -> AsyncGenerator[str, None]:
        yield ""


class HandMadeBridge(OptedIn):
    """A sync-to-async bridge as any plugin may write one: it keeps the sync model it runs."""

    model_id = "cli-bridge"
    supports_async_attachments = False
    supports_attachment_urls = True

    def __init__(self, sync_model: llm.Model) -> None:
        self.sync_model = sync_model


class OwnExecute(OptedIn):
    """Sets ``execute`` on each instance, which hides the prepared class method."""

    model_id = "cli-own-execute"
    supports_attachment_urls = None

    def __init__(self) -> None:
        self.execute = self._run

    async def _run(self, *args: Any) -> AsyncGenerator[str, None]:
        yield ""


class NoAttachments(OptedIn):
    """Declares URL support, but takes no attachments at all."""

    model_id = "cli-no-attachments"
    attachment_types = frozenset()
    supports_attachment_urls = True


class Models:
    @llm.hookimpl
    def register_models(self, register: Any) -> None:
        register(Sync("cli-opted-in"), OptedIn())
        register(Sync("cli-no-attachments"), NoAttachments())
        register(Sync("cli-bridge"), HandMadeBridge(Sync("cli-bridge")))
        register(Sync("cli-own-execute"), OwnExecute())
        register(Sync("cli-sync-only"))


@pytest.fixture
def models() -> Iterator[None]:
    """Test models registered with llm, as a plugin registers them."""
    plugin = Models()
    pm.register(plugin, name="test-cli-models")
    yield
    pm.unregister(plugin)


def test_status_shows_how_each_async_model_gets_its_attachments(run, models):
    result = run("status")

    assert result.exit_code == 0, result.output
    assert row(result.output, "model") == [
        "model",
        "kind",
        "prepares",
        "AsyncAttachment",
        "URLs as URLs",
    ]
    assert row(result.output, "cli-opted-in") == [
        "cli-opted-in",
        "native",
        "yes",
        "yes",
        "application/pdf, image/*",
    ]
    assert row(result.output, "cli-bridge") == ["cli-bridge", "bridged (tests)", "yes", "no", "all"]
    assert row(result.output, "cli-own-execute") == [
        "cli-own-execute",
        "native",
        "no",
        "yes",
        "none",
    ]


def test_status_shows_llm_openai_models_take_image_urls(run):
    result = run("status")

    assert row(result.output, "gpt-4o-mini")[1:] == ["native", "yes", "no", "image/*"]


def test_status_shows_sync_only_models_as_bridged_by_this_package(run, models):
    laa.configure(laa.Config(guard="strict", bridge=True))  # the bridge is opt-in

    result = run("status")

    assert row(result.output, "cli-sync-only")[1:] == [
        "bridged (llm-async-attachments)",
        "yes",
        "no",
    ]


def test_status_shows_no_url_types_for_models_that_take_no_attachments(run, models):
    result = run("status")

    # Whatever they declare or llm's OpenAI plugin does for others: no attachments, no URLs.
    assert row(result.output, "cli-no-attachments")[1:] == ["native", "yes", "yes"]
    assert row(result.output, "gpt-3.5-turbo")[1:] == ["native", "yes", "no"]


def test_status_recognises_llm_all_models_async_bridges(run, models):
    pytest.importorskip("llm_all_models_async")
    laa.configure(laa.Config(guard="strict", bridge=False))

    result = run("status")

    assert row(result.output, "cli-sync-only")[1] == "bridged (llm-all-models-async)"


def test_status_shows_the_active_limits_and_guard_mode(run):
    laa.configure(laa.Config(max_bytes=4 * 1024 * 1024, deadline=5.0, guard="warn"))

    result = run("status")

    assert result.exit_code == 0, result.output
    assert row(result.output, "max_bytes") == [
        "max_bytes",
        "4 MiB",
        "LLM_ASYNC_ATTACHMENTS_MAX_BYTES",
    ]
    assert row(result.output, "deadline")[1] == "5 s"
    assert row(result.output, "concurrency")[1] == "64"
    assert "Guard: warn (warn anywhere on an event loop)" in result.output


def test_status_spells_url_support_as_the_environment_does(run):
    patterns = ("image/*", r"video/clip@^https://clips\.test/[a-z]{2,3};")
    laa.configure(laa.Config(url_support=(("proxy", patterns), ("none", ()))))

    result = run("status")

    assert result.exit_code == 0, result.output
    spelled = r"proxy=image/*,video/clip@^https://clips\.test/[a-z]{2\,3}\;;none="
    assert row(result.output, "url_support")[1] == spelled
    assert laa.Config.from_env({"LLM_ASYNC_ATTACHMENTS_URL_SUPPORT": spelled}).url_support == (
        ("proxy", patterns),
        ("none", ()),
    )


def test_status_shows_the_types_given_to_urls_by_pattern(run, models):
    patterns = ("image/*", r"video/clip@^https://clips\.test/", "audio/x-talk@^https://talk/")
    configured = (("cli-opted-in", patterns), ("cli-bridge", patterns[1:]))
    laa.configure(laa.Config(url_support=configured))

    result = run("status")

    assert result.exit_code == 0, result.output
    by_url = "video/clip by URL, audio/x-talk by URL"
    assert row(result.output, "cli-opted-in")[4] == f"image/*, {by_url}"
    assert row(result.output, "cli-bridge")[4] == by_url


def test_an_invalid_environment_variable_is_shown_by_status_and_refused_by_fetch(run, monkeypatch):
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_MAX_BYTES", "lots")
    laa.configure(None)

    with pytest.warns(laa.ConfigurationWarning):
        status = run("status")
    fetch = run("fetch", "/tmp")

    assert row(status.stdout, "max_bytes") == [
        "max_bytes",
        "INVALID 'lots', 32 MiB in sync use",
        "LLM_ASYNC_ATTACHMENTS_MAX_BYTES",
    ]
    assert row(status.stdout, "concurrency")[1] == "64"
    for result in (status, fetch):
        assert result.exit_code == 1
        assert result.stderr.startswith("Error: LLM_ASYNC_ATTACHMENTS_MAX_BYTES='lots' is not")
        assert "for example LLM_ASYNC_ATTACHMENTS_MAX_BYTES=64MB" in result.stderr
    assert fetch.stdout == ""


def test_llm_models_with_an_invalid_variable_warns_and_lists_the_models(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_MAX_BYTES", "64 megs")
    laa.configure(None)

    with pytest.warns(laa.ConfigurationWarning) as caught:
        result = CliRunner().invoke(llm_cli, ["models"])

    assert result.exit_code == 0, result.output
    assert "markov" in result.stdout
    assert len([w for w in caught if w.category is laa.ConfigurationWarning]) == 1


def llm_command(*args: str, environ: dict[str, str], tmp_path) -> subprocess.CompletedProcess[str]:
    """Run ``llm ARGS`` in a new process, with this checkout's package and ``environ``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ASYNC_ATTACHMENTS_")}
    env |= {"LLM_USER_PATH": str(tmp_path / "llm-user"), "PYTHONPATH": str(ROOT), **environ}
    return subprocess.run(
        [sys.executable, "-m", "llm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("value", ["64 megs", "64XB", "-1"])
def test_sync_llm_in_a_new_process_prints_one_warning_line_and_works(value, tmp_path):
    environ = {"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": value}

    models = llm_command("models", environ=environ, tmp_path=tmp_path)
    prompt = llm_command(
        "prompt", "-m", "markov", "the cat sat on the mat", environ=environ, tmp_path=tmp_path
    )

    for result in (models, prompt):
        assert result.returncode == 0, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert f"ConfigurationWarning: LLM_ASYNC_ATTACHMENTS_MAX_BYTES={value!r}" in result.stderr
    assert "markov" in models.stdout
    assert prompt.stdout.strip()


def test_sizes_with_units_work_in_a_new_process(tmp_path):
    result = llm_command(
        "async-attachments",
        "status",
        environ={"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": "64MB", "LLM_ASYNC_ATTACHMENTS_DEADLINE": "2m"},
        tmp_path=tmp_path,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert row(result.stdout, "max_bytes")[1] == "61.0 MiB"
    assert row(result.stdout, "deadline")[1] == "120 s"


def test_fetch_url_prints_type_size_and_requests(run, file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")

    result = run("fetch", url)

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "type") == ["type", "image/png"]
    assert row(result.stdout, "size") == ["size", f"{len(samples.png())} bytes"]
    assert row(result.stdout, "requests") == ["requests", "1"]
    assert row(result.stdout, "time")[1].endswith(" s")
    assert file_server.requests == [("GET", "/cat.png")]
    assert result.stderr == ""  # no spinner when stderr is not a terminal


def test_fetch_never_prints_the_password_of_a_url(run, file_server):
    file_server.add("/cat.png", samples.png(), content_type="image/png")
    url = file_server.base_url.replace("http://", "http://reader:s3cret@") + "/cat.png"

    result = run("fetch", url)

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "source") == ["source", url.replace("s3cret", "***")]
    assert "s3cret" not in result.output


def test_fetch_path_reads_the_file_with_no_requests(run, tmp_path):
    path = tmp_path / "report"
    path.write_bytes(samples.sized("pdf", 5000))

    result = run("fetch", str(path))

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "type") == ["type", "application/pdf"]
    assert row(result.stdout, "size") == ["size", "4.9 KiB (5000 bytes)"]
    assert row(result.stdout, "requests") == ["requests", "0"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/status/404", "could not be downloaded: HTTP 404 Not Found. Check the URL."),
        ("/big?size=4096", "too large: its Content-Length is 4096 bytes"),
        ("file:///etc/passwd", "is not an http:// or https:// URL"),
        ("/no/such/file.png", "cannot be read: it does not exist"),
    ],
)
def test_fetch_refusal_exits_1_with_the_error_message(run, file_server, source, message):
    laa.configure(laa.Config(max_bytes=1024, guard="strict"))
    if source.startswith(("/status", "/big")):
        source = file_server.url(source)

    result = run("fetch", source)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: Attachment ")
    assert message in result.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


DRIP = "/drip?size=40&interval=0.04"  # 40 bytes in 1.6 s, one per read


async def test_fetch_on_a_terminal_shows_a_progress_bar_of_bytes_rate_and_time_left(file_server):
    url = file_server.url(DRIP)
    terminal = Terminal()
    attachment = llm.Attachment(url=url)

    summary = await _prepare(attachment, laa.get_config(), terminal, show_after=0)

    assert summary.requests == 1
    assert attachment.content_bytes() == bytes(40)  # prepared: no I/O
    lines = terminal.getvalue().split("\r")
    assert lines[1].startswith("\x1b[?25ldrip  [")  # click hides the cursor; the URL's name
    assert re.search(r"  \d+%  (\d\d:\d\d:\d\d  )?\d+ bytes / 40 bytes  \d+ bytes/s", lines[1])
    assert "00:00:0" in terminal.getvalue()  # the time left, once a second has passed
    # The last line: full, then the cursor shown again and the line ended.
    assert re.search(r"\[#+\]  100%  40 bytes / 40 bytes  \d+ bytes/s *\x1b\[\?25h\n$", lines[-1])


async def test_a_bar_without_a_content_length_shows_the_bytes_and_ends_its_line(file_server):
    url = file_server.url("/endless")  # chunked, no Content-Length, never ends
    terminal = Terminal()
    config = laa.Config(max_bytes=256 * 1024)

    with pytest.raises(laa.AttachmentTooLarge):
        await _prepare(llm.Attachment(url=url), config, terminal, show_after=0)

    last = terminal.getvalue().split("\r")[-1]
    assert re.fullmatch(
        r"\x1b\[\?25lendless  \[[-#]+\]  [\d.]+ KiB  [\d.]+ [KM]iB/s *\x1b\[\?25h\n", last
    )


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://example.com/a/cat.png?size=1#top", "cat.png"),
        ("https://example.com/", "example.com"),
        ("http://reader:s3cret@files.test", "reader:***@files.test"),
        (f"https://example.com/{'x' * 40}.bin", f"{'x' * 21}..."),
        ("https://[::1", "[::1"),  # not a URL fetch would take: its error comes after
    ],
)
def test_the_bar_names_a_url_by_the_end_of_its_path(url, name):
    assert _name(url) == name


async def test_a_quick_fetch_on_a_terminal_draws_no_bar(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    terminal = Terminal()

    await _prepare(llm.Attachment(url=url), laa.get_config(), terminal, show_after=60)

    assert terminal.getvalue() == ""


def test_fetch_piped_prints_the_table_alone_however_long_it_takes(run, file_server):
    result = run("fetch", file_server.url(DRIP))

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert row(result.stdout, "size") == ["size", "40 bytes"]
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "source",
        "type",
        "size",
        "requests",
        "time",
    ]


def test_fetch_on_a_pseudo_terminal_shows_the_bar_then_the_whole_table(file_server, tmp_path):
    url = file_server.url(DRIP)

    output = on_a_terminal("async-attachments", "fetch", url, tmp_path=tmp_path)

    bar, _, table = output.rpartition("\x1b[?25h\n")  # the bar's line ends here
    assert "drip  [" in bar
    assert "100%  40 bytes / 40 bytes" in bar.rpartition("\r")[2]
    assert row(table, "source") == ["source", url]
    assert row(table, "size") == ["size", "40 bytes"]  # read whole
    assert row(table, "requests") == ["requests", "1"]


def on_a_terminal(*args: str, tmp_path: Path) -> str:
    """What ``llm ARGS`` writes in a new process whose output and error are a terminal
    (a pseudo-terminal's; its line ends read back as ``\\n``)."""
    leader, follower = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ASYNC_ATTACHMENTS_")}
    env |= {
        "LLM_USER_PATH": str(tmp_path / "llm-user"),
        "LLM_ASYNC_ATTACHMENTS_DISK_CACHE_DIR": str(tmp_path / "disk"),
        "PYTHONPATH": str(ROOT),
    }
    with subprocess.Popen(
        [sys.executable, "-m", "llm", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    ) as process:
        os.close(follower)
        written = bytearray()
        deadline = time.monotonic() + 60
        while select.select([leader], [], [], max(0, deadline - time.monotonic()))[0]:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            written += chunk
        os.close(leader)
        assert process.wait(timeout=10) == 0, written.decode()
    return written.decode().replace("\r\n", "\n")


def test_llm_command_line_has_the_group(tmp_path, monkeypatch):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path / "llm-user"))

    result = CliRunner().invoke(llm_cli, ["async-attachments", "fetch", __file__])

    assert result.exit_code == 0, result.output
    assert row(result.stdout, "requests") == ["requests", "0"]


def test_status_shows_the_shared_cache_without_its_password(run):
    laa.configure(laa.Config(shared_cache_url="redis://:hunter2@127.0.0.1:6379/0?password=x2"))

    result = run("status")

    assert result.exit_code == 0, result.output
    assert row(result.output, "shared_cache_url")[1] == "redis://:***@127.0.0.1:6379/0?password=***"
    assert "hunter2" not in result.output and "x2" not in result.output
    assert "hunter2" not in repr(laa.get_config())
