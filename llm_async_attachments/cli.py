"""``llm async-attachments``: see what the plugin does, and try the limits on one attachment.

``status`` answers "is my model covered, and how?" without reading plugin
code; ``fetch`` shows what preparing one attachment costs under the active
config, or the error that refuses it, before an app meets either.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import re
import sys
import time
from collections.abc import Collection, Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TextIO

import click
import llm

from . import url_support_setting
from .caps import human
from .config import Config, environment_problems, get_config, kind_of, variable
from .core.prepare import PrepareSummary
from .credentials import Credential
from .errors import AttachmentError, ConfigurationError, redact
from .integration.install import standing_down
from .integration.prepare import prepare_attachments
from .integration.url_support import url_patterns, url_support

if TYPE_CHECKING:
    from click._termui_impl import ProgressBar  # what click.progressbar() returns

__all__ = ["async_attachments"]

_GUARD_MEANING = {
    "raise": "raise inside async model execution, warn elsewhere on an event loop",
    "strict": "raise anywhere on an event loop",
    "warn": "warn anywhere on an event loop",
    "off": "never checked",
}
# A download quicker than this gets no progress bar: it would only flicker.
_SHOW_AFTER = 0.5


@click.group(name="async-attachments")
def async_attachments() -> None:
    """How llm-async-attachments prepares attachments for async models."""


@async_attachments.command()
def status() -> None:
    """Show async models, the limits and the guard mode.

    \b
    kind             native, or bridged (by the named plugin) from a sync model
    prepares         attachments are prepared before its execute() runs
    AsyncAttachment  it opted in with supports_async_attachments = True
    URLs as URLs     types whose URLs go to the model unfetched
                     (supports_attachment_urls, declared or known),
                     then types given to URLs by pattern ("by URL");
                     blank for a model that takes no attachments

    An invalid LLM_ASYNC_ATTACHMENTS_* variable is shown as such, and makes
    the command exit with status 1 after the report.
    """
    reason = standing_down()
    if reason is not None:
        click.echo(f"Standing down: llm differs from what this package relies on ({reason}).")
        click.echo("llm works as if llm-async-attachments were not installed.\n")
    config = get_config(strict=False)
    problems = {problem.setting: problem for problem in environment_problems()}
    header = ("model", "kind", "prepares", "AsyncAttachment", "URLs as URLs")
    models = [_model_row(model, config) for model in llm.get_async_models()]
    click.echo(f"Async models ({len(models)}):")
    _echo_table([header, *models])
    click.echo("\nLimits:")
    rows = []
    for each in dataclasses.fields(config):
        name = variable(each.name)
        shown = _value(each, getattr(config, each.name))
        if name in problems:
            shown = f"INVALID {problems[name].value!r}, {shown} in sync use"
        if each.name != "guard":
            rows.append((each.name, shown, name))
    _echo_table(rows)
    click.echo(f"\nGuard: {config.guard} ({_GUARD_MEANING[config.guard]})")
    if problems:
        first, *others = problems.values()
        for note in others:
            first.add_note(note.args[0])
        raise click.ClickException(_with_notes(first))


@async_attachments.command()
@click.argument("source", metavar="URL|PATH")
def fetch(source: str) -> None:
    """Prepare one attachment, as the plugin would.

    Uses the active limits, then prints the type, the size, the HTTP requests
    made and the time taken. A refused attachment exits with status 1 and the
    reason. Anything with "://" is a URL; anything else a file path. A long
    download shows a progress bar on standard error, if it is a terminal.
    """
    config = _active_config()
    attachment = llm.Attachment(url=source) if "://" in source else llm.Attachment(path=source)
    try:
        summary = asyncio.run(_prepare(attachment, config, sys.stderr))
    except AttachmentError as error:
        raise click.ClickException(str(error)) from None
    content: bytes | None = attachment.content_bytes()  # type: ignore[no-untyped-call]
    kind: str | None = attachment.resolve_type()  # type: ignore[no-untyped-call]
    size = len(content or b"")  # prepared: no I/O
    _echo_table(
        [
            ("source", redact(source)),
            ("type", kind or "unknown"),
            ("size", f"{size} bytes" if size < 1024 else f"{human(size)} ({size} bytes)"),
            ("requests", str(summary.requests)),
            ("time", f"{summary.seconds:.3f} s"),
        ]
    )


async def _prepare(
    attachment: llm.Attachment, config: Config, stream: TextIO, *, show_after: float = _SHOW_AFTER
) -> PrepareSummary:
    """Prepare ``attachment`` fully, with a progress bar of its download on ``stream`` if
    that is a terminal.

    The prompt stand-in has no model, so no URL is passed through unfetched:
    the content is always downloaded, as for most models.
    """
    prompt = SimpleNamespace(attachments=[attachment])  # all prepare reads of a prompt
    url: str | None = attachment.url
    if url is None or not stream.isatty():
        return await prepare_attachments(prompt, config=config)
    bar = _DownloadBar(_name(url), stream, show_after)
    try:
        return await prepare_attachments(prompt, config=config, progress=bar.update)
    finally:
        bar.close()


class _DownloadBar:
    """click's progress bar for one download: bytes, rate and time left (once known).

    Drawn at the first bytes after ``show_after`` seconds, so that a quick
    download does not flicker; without a ``Content-Length``, the bar shows
    activity and the bytes, with no share done or time left.
    """

    def __init__(self, label: str, stream: TextIO, show_after: float) -> None:
        self._label = label
        self._stream = stream
        self._started = time.time()  # the clock click's bar keeps
        self._show_after = show_after
        self._bar: ProgressBar[Any] | None = None

    def update(self, _source: str, received: int, total: int | None) -> None:
        """The download's :data:`~..caps.Progress`: draws the bar, once it is time to."""
        bar = self._bar
        if bar is None:
            if time.time() - self._started < self._show_after:
                return
            bar = self._bar = click.progressbar(
                # click needs a length or an iterable; an endless one leaves the length unknown
                itertools.repeat(None) if total is None else None,
                length=total,
                label=self._label,
                item_show_func=lambda _item: self._bytes_and_rate(),
                width=0,  # the bar takes what the terminal's width leaves
                file=self._stream,
            )
            bar.start = self._started  # its time left counts from the start, as its bytes do
        bar.update(received - bar.pos)

    def close(self) -> None:
        """End the bar's line, if it was drawn."""
        if self._bar is not None:
            self._bar.render_finish()

    def _bytes_and_rate(self) -> str:
        assert self._bar is not None
        received, total = self._bar.pos, self._bar.length
        rate = received / max(time.time() - self._started, 1e-3)
        of = "" if total is None else f" / {human(total)}"
        return f"{human(received)}{of}  {human(int(rate))}/s"


def _name(url: str) -> str:
    """What the progress bar calls a URL: the last segment of its path (or its host), at
    most 24 characters; never an error, whatever the URL."""
    name = re.split(r"[?#]", redact(url))[0].rstrip("/").rpartition("/")[2]
    return name if len(name) <= 24 else f"{name[:21]}..."


def _active_config() -> Config:
    """The config async use would get; an invalid environment variable is a usage error."""
    try:
        return get_config(strict=True)
    except ConfigurationError as error:
        raise click.ClickException(_with_notes(error)) from None


def _with_notes(error: BaseException) -> str:
    return "\n".join([str(error), *getattr(error, "__notes__", ())])


def _model_row(model: Any, config: Config) -> tuple[str, str, str, str, str]:
    from .integration.hook import prepares_attachments  # loaded with the models

    takes_attachments = bool(getattr(model, "attachment_types", None))
    return (
        model.model_id,
        _kind(model),
        _yes_no(prepares_attachments(model)),
        _yes_no(getattr(model, "supports_async_attachments", False)),
        _url_types(url_support(model, config), url_patterns(model, config))
        if takes_attachments
        else "",
    )


def _kind(model: Any) -> str:
    """``native``, or ``bridged (plugin)`` for an async model that runs a sync one.

    Bridges, llm-all-models-async's and this package's alike, keep the sync
    model they run in an attribute; looking for one, rather than for known
    class names, also recognises bridges written after this code.
    """
    held = itertools.chain(vars(type(model)).values(), getattr(model, "__dict__", {}).values())
    if any(isinstance(value, llm.Model | llm.KeyModel) for value in held):
        plugin = type(model).__module__.partition(".")[0].replace("_", "-")
        return f"bridged ({plugin})"
    return "native"


def _url_types(
    declared: bool | str | Collection[str], patterns: url_support_setting.UrlTypes
) -> str:
    """``supports_attachment_urls`` read the way ``UrlPolicy`` reads it, then the types
    given to URLs by pattern (``video/youtube by URL``)."""
    by_url = [f"{kind} by URL" for kind, _ in patterns]
    if declared is True:
        by_type = ["all"]
    elif not declared:
        by_type = [] if by_url else ["none"]
    elif isinstance(declared, str):
        by_type = [declared]
    else:
        by_type = sorted(declared)
    return ", ".join(by_type + by_url)


def _value(field: dataclasses.Field[Any], value: Any) -> str:
    """A config value as people read it; new fields need no change here to show up."""
    if value is None:
        return "none"
    if isinstance(value, str) and kind_of(field).secret:  # a URL with a password in it
        return redact(value)
    if field.name.endswith("_bytes"):
        return human(value)
    if isinstance(value, bool):
        return _yes_no(value)
    if isinstance(value, float) or isinstance(field.default, float):
        return f"{value:g} s"
    if value and isinstance(value, tuple) and all(isinstance(e, Credential) for e in value):
        return ", ".join(f"{each.origin} (value hidden)" for each in value)
    if isinstance(value, tuple) and all(isinstance(entry, tuple) for entry in value):
        return url_support_setting.spell(value) or "-"  # as the environment spells it
    if isinstance(value, tuple):
        return ", ".join(value) or "-"
    return str(value)


def _yes_no(flag: object) -> str:
    return "yes" if flag else "no"


def _echo_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    for row in rows:
        cells = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo(f"  {cells}".rstrip())
