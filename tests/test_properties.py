"""Property-based tests: MIME normalisation and patterns, config parsing, cap arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from llm_async_attachments import AttachmentsTotalTooLarge, AttachmentTooLarge, Config
from llm_async_attachments.caps import Budget, human
from llm_async_attachments.core.plan import UrlPolicy
from llm_async_attachments.mime import matches, normalise

TOKEN = st.text("abcdefghijklmnopqrstuvwxyz0123456789+-.", min_size=1, max_size=20)
MIME = st.builds(lambda a, b: f"{a}/{b}", TOKEN, TOKEN)


@given(MIME, st.text(max_size=30), st.sampled_from(["", " ", "  "]))
def test_parameters_case_and_spaces_never_change_the_type(mime, parameters, space):
    header = f"{space}{mime.upper()}{space};{parameters}"
    assert normalise(header) == normalise(mime)


@given(st.text(max_size=200))
def test_normalise_returns_a_plain_lowercase_type_or_nothing(header):
    result = normalise(header)
    assert result is None or (
        result == result.lower()
        and result.count("/") == 1
        and ";" not in result
        and "," not in result
        and result.isascii()
        and " " not in result
    )


@given(st.text(max_size=60))
def test_normalise_is_idempotent(header):
    once = normalise(header)
    assert once is None or normalise(once) == once


@given(MIME)
def test_a_type_matches_itself_its_family_and_everything(mime):
    major = mime.split("/")[0]
    assert matches(mime, [mime]) and matches(mime, [f"{major}/*"]) and matches(mime, ["*/*"])


@given(MIME, st.lists(MIME, max_size=5))
def test_matching_is_exactly_membership_without_wildcards(mime, patterns):
    assert matches(mime, patterns) == (mime in patterns)


@given(MIME, st.lists(MIME, max_size=5))
def test_url_policy_agrees_with_matches(mime, patterns):
    assert UrlPolicy(patterns).accepts(mime) == matches(mime, patterns)
    assert UrlPolicy(True).accepts(mime) and not UrlPolicy(False).accepts(mime)


@given(st.integers(min_value=1, max_value=2**40), st.sampled_from(["", "b", "KiB", "MiB", "GiB"]))
def test_sizes_parse_with_any_unit(number, unit):
    factor = {"": 1, "b": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}[unit]
    environ = {"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": f"{number}{unit}"}
    assert Config.from_env(environ).max_bytes == number * factor


@given(st.text(max_size=12).filter(lambda raw: raw.strip() and not raw.strip().isdigit()))
def test_garbage_sizes_are_refused_naming_the_variable(raw):
    environ = {"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": raw}
    try:
        config = Config.from_env(environ)
    except ValueError as error:
        assert "LLM_ASYNC_ATTACHMENTS_MAX_BYTES" in str(error)
    else:  # a valid spelling such as "2 KiB" or "+3"
        assert config.max_bytes >= 1


@given(st.lists(st.text(" ,abc.:/0123456789", max_size=12), max_size=6))
def test_allow_lists_parse_to_their_non_empty_entries(entries):
    environ = {"LLM_ASYNC_ATTACHMENTS_ALLOW": ",".join(entries)}
    expected = tuple(e.strip() for e in ",".join(entries).split(",") if e.strip())
    try:
        assert Config.from_env(environ).allow == expected
    except ValueError as error:  # an entry with an inner space
        assert any(" " in e for e in expected) and "LLM_ASYNC_ATTACHMENTS" in str(error)


@given(
    st.integers(min_value=1, max_value=10_000),
    st.integers(min_value=1, max_value=30_000),
    st.lists(st.lists(st.integers(min_value=0, max_value=3_000), max_size=8), max_size=6),
)
def test_caps_hold_exactly(max_bytes, max_total, items):
    budget = Budget(max_bytes, max_total)
    accepted = 0
    for chunks in items:
        meter = budget.meter("item")
        try:
            for chunk in chunks:
                meter.add(chunk)
        except AttachmentsTotalTooLarge:
            assert budget.used > max_total
            return
        except AttachmentTooLarge:
            assert meter.count > max_bytes
            continue
        assert meter.count == sum(chunks) <= max_bytes
        accepted += meter.count
        assert accepted <= max_total


@given(st.integers(min_value=0, max_value=2**50))
def test_declared_sizes_are_refused_iff_over_a_cap(size):
    budget = Budget(1 << 20, 1 << 22)
    if size <= 1 << 20:
        budget.meter("x").declare(size, "Content-Length")
    else:
        with pytest.raises(AttachmentTooLarge):
            budget.meter("x").declare(size, "Content-Length")


@given(st.integers(min_value=0, max_value=2**50))
@example(1280)  # 1.25 KiB: rounds to "1.2", exactly half a digit off
def test_human_sizes_read_back(size):
    text = human(size)
    number, unit = text.split(" ")
    factor = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
    # One decimal place: off by at most half a unit of the last digit (plus float error).
    assert abs(float(number) * factor - size) <= 0.05 * factor * (1 + 1e-9)
