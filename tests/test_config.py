"""The config object, its environment spellings, and what an invalid value does."""

import asyncio
import dataclasses
import math
import os
import re
import warnings
from decimal import ROUND_HALF_UP

import llm
import pytest
from hypothesis import given
from hypothesis import strategies as st

import llm_async_attachments as laa
from llm_async_attachments import (
    Config,
    ConfigurationError,
    ConfigurationWarning,
    configure,
    get_config,
    url_support_setting,
)
from llm_async_attachments.config import (
    DURATION_UNITS,
    SIZE_UNITS,
    environment_problems,
    kind_of,
    parse_duration,
    parse_size,
    variable,
)
from llm_async_attachments.credentials import Credential

MiB = 1024 * 1024
FIELDS = [each.name for each in dataclasses.fields(Config)]
FIELD_OF = {each.name: each for each in dataclasses.fields(Config)}


def test_defaults_are_the_documented_ones():
    config = Config()
    assert (config.max_bytes, config.max_total_bytes) == (32 * MiB, 128 * MiB)
    assert (config.concurrency, config.host_concurrency) == (64, 64)
    assert (config.timeout, config.deadline) == (10.0, 60.0)
    assert config.fetch_queue_timeout == 300.0
    assert config.guard == "raise"


def test_every_field_has_an_environment_override():
    environ = {
        "LLM_ASYNC_ATTACHMENTS_MAX_BYTES": "1MiB",
        "LLM_ASYNC_ATTACHMENTS_MAX_TOTAL_BYTES": "4096",
        "LLM_ASYNC_ATTACHMENTS_CONCURRENCY": "3",
        "LLM_ASYNC_ATTACHMENTS_HOST_CONCURRENCY": "2",
        "LLM_ASYNC_ATTACHMENTS_TIMEOUT": "2.5",
        "LLM_ASYNC_ATTACHMENTS_DEADLINE": "30",
        "LLM_ASYNC_ATTACHMENTS_FETCH_QUEUE_TIMEOUT": "500ms",
        "LLM_ASYNC_ATTACHMENTS_GUARD": "Strict",
        "LLM_ASYNC_ATTACHMENTS_RETRIES": "0",
        "LLM_ASYNC_ATTACHMENTS_BLOCK_PRIVATE": "yes",
        "LLM_ASYNC_ATTACHMENTS_ALLOW": "files.test, 10.0.0.0/8,",
        "LLM_ASYNC_ATTACHMENTS_URL_SUPPORT": "proxy=image/*, audio/mpeg; all=*;none=;",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE": "off",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE_WORKERS": "12",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE_MODEL_WORKERS": "3",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE_QUEUE_TIMEOUT": "2m",
        "LLM_ASYNC_ATTACHMENTS_CACHE_BYTES": "64MiB",
        "LLM_ASYNC_ATTACHMENTS_DISK_CACHE_BYTES": "0",
        "LLM_ASYNC_ATTACHMENTS_DISK_CACHE_DIR": "~/attachments",
        "LLM_ASYNC_ATTACHMENTS_SHARED_CACHE_URL": "redis://:pw@127.0.0.1:6379/2",
        "LLM_ASYNC_ATTACHMENTS_CREDENTIALS": " https://Files.test=Bearer a=b ; http://x.test:8080/=k",
        "LLM_ASYNC_ATTACHMENTS_NETRC": "1",
    }
    config = Config.from_env(environ)
    assert config == Config(
        max_bytes=MiB,
        max_total_bytes=4096,
        concurrency=3,
        host_concurrency=2,
        timeout=2.5,
        deadline=30.0,
        fetch_queue_timeout=0.5,
        guard="strict",
        retries=0,
        block_private=True,
        allow=("files.test", "10.0.0.0/8"),
        url_support=(("proxy", ("image/*", "audio/mpeg")), ("all", ("*",)), ("none", ())),
        bridge=False,
        bridge_workers=12,
        bridge_model_workers=3,
        bridge_queue_timeout=120.0,
        cache_bytes=64 * MiB,
        disk_cache_bytes=0,
        disk_cache_dir=os.path.expanduser("~/attachments"),
        shared_cache_url="redis://:pw@127.0.0.1:6379/2",
        credentials=(
            Credential("https://files.test:443", "Bearer a=b"),
            Credential("http://x.test:8080", "k"),
        ),
        netrc=True,
    )
    assert set(FIELDS) == {name.removeprefix("LLM_ASYNC_ATTACHMENTS_").lower() for name in environ}


def test_each_field_is_described_once_with_its_doc_and_kind():
    for each in dataclasses.fields(Config):
        assert set(each.metadata) == {"doc", "kind"}, each.name
        kind = kind_of(each)
        # The example every message shows is itself valid, and so is the default.
        assert kind.valid(kind.parse(kind.example)), each.name
        assert kind.valid(each.default), each.name


def test_empty_variables_mean_the_default():
    assert Config.from_env({"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": " "}) == Config()


# --- sizes and durations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64MB", 64_000_000),
        ("1.5MiB", 1_572_864),
        ("2GiB", 2 * 1024**3),
        ("512kB", 512_000),
        ("100", 100),
        ("100b", 100),
        ("64mb", 64_000_000),
        ("64 MiB", 64 * MiB),
        ("1.1MB", 1_100_000),
        ("0.5", 1),  # rounded to the nearest byte, halves up
        ("2.4", 2),
        (".5KiB", 512),
        ("1.0000001kB", 1000),
    ],
)
def test_sizes_take_decimal_and_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64XB", "MB", "-1", "1e6", "1,5MB", "64 M B", "0x10", "½MB"])
def test_sizes_refuse_what_they_cannot_read(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10", 10.0),
        ("2.5", 2.5),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("500MS", 0.5),
        ("1.5 m", 90.0),
    ],
)
def test_durations_take_seconds_or_a_unit(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "-1", "nan", "inf", "1e3", "s", "2d"])
def test_durations_refuse_what_they_cannot_read(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def cased(unit: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(unit, flips, strict=False))


@given(
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(sorted(SIZE_UNITS)),
    st.lists(st.booleans(), min_size=3, max_size=3),
    st.sampled_from(["", " "]),
)
def test_a_size_is_its_number_times_its_unit_rounded_to_a_byte(number, unit, flips, space):
    number = abs(number)  # no "-0.000"
    text = f"{number}{space}{cased(unit, flips)}"
    expected = (number * SIZE_UNITS[unit]).to_integral_value(ROUND_HALF_UP)
    assert parse_size(text) == int(expected)


@given(st.integers(min_value=1, max_value=2**40), st.sampled_from(["KiB", "MiB", "GiB"]))
def test_whole_binary_sizes_are_exact(number, unit):
    assert parse_size(f"{number}{unit}") == number * SIZE_UNITS[unit.lower()]


@given(st.integers(min_value=0, max_value=10**9))
def test_milliseconds_are_thousandths_of_a_second(milliseconds):
    assert parse_duration(f"{milliseconds}ms") == milliseconds / 1000
    assert parse_duration(f"{milliseconds}") == float(milliseconds)


@given(
    st.decimals(min_value=0, max_value=10**5, places=2, allow_nan=False, allow_infinity=False),
    st.sampled_from(["s", "m", "h"]),
)
def test_durations_scale_by_their_unit(number, unit):
    number = abs(number)
    assert math.isclose(parse_duration(f"{number}{unit}"), float(number * DURATION_UNITS[unit]))


@given(st.sampled_from(FIELDS), st.text(max_size=16))
def test_any_text_in_any_variable_is_a_config_or_a_configuration_error(name, text):
    environ = {variable(name): text}
    try:
        config = Config.from_env(environ)
    except ConfigurationError as error:
        assert error.setting == variable(name)
        assert f", for example {variable(name)}=" in str(error)
        if kind_of(FIELD_OF[name]).secret:  # never repeated, whatever its text
            assert error.value == "(hidden)"
            assert f"{variable(name)} (" in str(error)
        else:
            assert error.value == text.strip()
            assert f"{variable(name)}={text.strip()!r} is not valid: it must be" in str(error)
    else:
        assert isinstance(config, Config)


# --- invalid values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable_name", "value", "expected"),
    [
        (
            "LLM_ASYNC_ATTACHMENTS_MAX_BYTES",
            "lots",
            "LLM_ASYNC_ATTACHMENTS_MAX_BYTES='lots' is not valid: it must be a positive size "
            "in bytes, with an optional unit: kB, MB, GB (powers of 1000) or KiB, MiB, GiB "
            "(powers of 1024), for example LLM_ASYNC_ATTACHMENTS_MAX_BYTES=64MB",
        ),
        (
            "LLM_ASYNC_ATTACHMENTS_CONCURRENCY",
            "0",
            "LLM_ASYNC_ATTACHMENTS_CONCURRENCY='0' is not valid: it must be a positive integer, "
            "for example LLM_ASYNC_ATTACHMENTS_CONCURRENCY=8",
        ),
        (
            "LLM_ASYNC_ATTACHMENTS_TIMEOUT",
            "nan",
            "LLM_ASYNC_ATTACHMENTS_TIMEOUT='nan' is not valid: it must be a positive number of "
            "seconds (10, 2.5), or a number with a unit: ms, s, m or h (500ms, 10s, 2m), "
            "for example LLM_ASYNC_ATTACHMENTS_TIMEOUT=2.5s",
        ),
        (
            "LLM_ASYNC_ATTACHMENTS_URL_SUPPORT",
            "proxy=images",
            "LLM_ASYNC_ATTACHMENTS_URL_SUPPORT='proxy=images' is not valid: it must be "
            "model-id=patterns entries separated by ';', the patterns comma-separated: MIME "
            "patterns (image/png, image/*, or * for every type; nothing after = for no type) "
            "or URL patterns TYPE@REGEX (a regular expression that compiles, with \\; and "
            "\\, for ; and ,), each model once, for example "
            "LLM_ASYNC_ATTACHMENTS_URL_SUPPORT=my-proxy-model=image/*,audio/*;"
            r"gemini/gemini-2.5-flash=video/youtube@^https://(www\.)?youtube\.com/shorts/",
        ),
        (
            "LLM_ASYNC_ATTACHMENTS_GUARD",
            "loud",
            "LLM_ASYNC_ATTACHMENTS_GUARD='loud' is not valid: "
            "it must be one of raise, strict, warn, off",
        ),
    ],
)
def test_invalid_values_name_the_variable_the_value_and_an_example(variable_name, value, expected):
    with pytest.raises(ConfigurationError) as caught:
        Config.from_env({variable_name: value})
    assert expected in str(caught.value)
    assert (caught.value.setting, caught.value.value) == (variable_name, value)


# --- url_support: MIME patterns and URL patterns ---------------------------------------


def test_url_support_reads_url_patterns_beside_mime_patterns():
    environ = {
        "LLM_ASYNC_ATTACHMENTS_URL_SUPPORT": (
            r"gemini/gemini-2.5-flash = video/youtube@^https://(www\.)?youtube\.com/shorts/ ;"
            r"proxy=image/*,video/clip@^https://clips\.test/(a|b)\;c\,d\\;"
            r"cdn=video/mp4@^https://cdn\.test/[a-z]{2\,3}/x=1@2\.mp4$"
        )
    }
    assert Config.from_env(environ).url_support == (
        ("gemini/gemini-2.5-flash", (r"video/youtube@^https://(www\.)?youtube\.com/shorts/",)),
        # \; and \, are the character itself; any other pair (\. and \\) as written
        ("proxy", ("image/*", r"video/clip@^https://clips\.test/(a|b);c,d\\")),
        # the first = ends the model id and the first @ the type: the regex may hold more
        ("cdn", (r"video/mp4@^https://cdn\.test/[a-z]{2,3}/x=1@2\.mp4$",)),
    )


@pytest.mark.parametrize(
    "pattern",
    [
        "video/youtube@^https://(",  # does not compile
        "video/youtube@",  # no regular expression
        "video/*@^https://",  # a URL's type is one type, not a pattern
        "*@^https://",
        "@^https://",
        "video/youtube@[",
    ],
)
def test_an_invalid_url_pattern_is_a_configuration_error(pattern):
    with pytest.raises(ConfigurationError, match=r"Config\.url_support must be a tuple of"):
        Config(url_support=(("gemini", (pattern,)),))
    with pytest.raises(ConfigurationError, match="LLM_ASYNC_ATTACHMENTS_URL_SUPPORT="):
        Config.from_env({"LLM_ASYNC_ATTACHMENTS_URL_SUPPORT": f"gemini={pattern}"})


def test_an_invalid_url_pattern_in_the_environment_warns_once_in_sync_use(monkeypatch):
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_URL_SUPPORT", "gemini=video/youtube@^https://(")
    configure(None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configs = [get_config() for _ in range(3)]

    ours = [w for w in caught if issubclass(w.category, ConfigurationWarning)]
    assert len(ours) == 1
    assert str(ours[0].message).startswith(
        "LLM_ASYNC_ATTACHMENTS_URL_SUPPORT='gemini=video/youtube@^https://(' is not valid"
    )
    assert {c.url_support for c in configs} == {()}  # the default stands in


def _compiles(regex: str) -> bool:
    try:
        re.compile(regex)
    except re.error:
        return False
    return True


def _meaning(pattern: str) -> str:
    r"""What a pattern matches, written one way: ``\;`` and ``;`` are the same character."""
    return re.sub(r"\\.", lambda pair: pair[0][1] if pair[0][1] in ";," else pair[0], pattern)


@given(
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9./-]{0,12}", fullmatch=True),
            st.lists(
                st.one_of(
                    st.sampled_from(["*", "image/*", "audio/mpeg"]),
                    st.from_regex(r"[;,\\a-z.=@(){}0-9]{1,12}", fullmatch=True)
                    .filter(_compiles)
                    .map(lambda regex: f"video/clip@{regex}"),
                ),
                max_size=4,
            ).map(tuple),
        ),
        max_size=3,
        unique_by=lambda pair: pair[0],
    ).map(tuple)
)
def test_url_support_as_status_spells_it_reads_back_the_same(value):
    spelled = url_support_setting.spell(value)
    assert Config.from_env({"LLM_ASYNC_ATTACHMENTS_URL_SUPPORT": spelled}).url_support == tuple(
        (model_id, tuple(map(_meaning, patterns))) for model_id, patterns in value
    )


def test_every_invalid_variable_is_reported_at_once():
    with pytest.raises(ConfigurationError) as caught:
        Config.from_env(
            {"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": "lots", "LLM_ASYNC_ATTACHMENTS_RETRIES": "-1"}
        )
    assert caught.value.setting == "LLM_ASYNC_ATTACHMENTS_MAX_BYTES"
    assert caught.value.__notes__ == [
        "LLM_ASYNC_ATTACHMENTS_RETRIES='-1' is not valid: it must be 0 or a positive "
        "integer, for example LLM_ASYNC_ATTACHMENTS_RETRIES=2"
    ]


def test_direct_construction_is_validated_too():
    with pytest.raises(
        ConfigurationError,
        match=r"Config\.deadline must be a positive number of seconds, not -1 "
        r"\(for example, deadline=2\.5\)",
    ) as caught:
        Config(deadline=-1)
    assert (caught.value.setting, caught.value.value) == ("Config.deadline", -1)


def test_a_configuration_error_is_a_value_error_not_an_attachment_error():
    # An app answering AttachmentError with a 4xx must not blame its users for
    # its own settings; ValueError keeps `except ValueError` around Config(...) working.
    assert issubclass(ConfigurationError, ValueError)
    assert not issubclass(ConfigurationError, laa.AttachmentError)
    assert issubclass(ConfigurationWarning, UserWarning)


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_bytes = 1  # type: ignore[misc]


def test_configure_none_rereads_the_environment(monkeypatch):
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_CONCURRENCY", "5")
    configure(None)
    assert get_config().concurrency == 5
    configure(Config(concurrency=2))
    assert get_config().concurrency == 2


# --- an invalid environment in sync and async use --------------------------------------


@pytest.fixture
def invalid_environment(monkeypatch):
    """LLM_ASYNC_ATTACHMENTS_MAX_BYTES is nonsense, and the environment is read afresh."""
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_MAX_BYTES", "64 megs")
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_CONCURRENCY", "3")
    configure(None)


def test_sync_use_warns_once_and_keeps_the_default(invalid_environment):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configs = [get_config() for _ in range(3)]
        llm.get_model("markov")

    ours = [w for w in caught if issubclass(w.category, ConfigurationWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert "\n" not in message
    assert message.startswith("LLM_ASYNC_ATTACHMENTS_MAX_BYTES='64 megs' is not valid")
    assert "Sync llm goes on with the default (32 MiB)" in message
    # The default stands in for the invalid value only; valid ones still apply.
    assert {(c.max_bytes, c.concurrency) for c in configs} == {(32 * MiB, 3)}


def test_strict_get_config_raises_outside_a_loop_too(invalid_environment):
    with (
        pytest.warns(ConfigurationWarning),
        pytest.raises(ConfigurationError, match="LLM_ASYNC_ATTACHMENTS_MAX_BYTES"),
    ):
        get_config(strict=True)
    assert [p.setting for p in environment_problems()] == ["LLM_ASYNC_ATTACHMENTS_MAX_BYTES"]


def test_an_explicit_config_is_not_affected_by_the_environment(invalid_environment):
    configure(Config(max_bytes=MiB))

    async def on_a_loop() -> Config:
        return get_config()

    assert asyncio.run(on_a_loop()).max_bytes == MiB


async def test_async_use_raises_a_configuration_error(invalid_environment, file_server):
    url = file_server.add("/cat.png", b"\x89PNG\r\n\x1a\n", content_type="image/png")
    with pytest.warns(ConfigurationWarning):
        model = llm.get_async_model("echo")  # loading models is sync llm: it only warns
    prompt = llm.Prompt("x", model, attachments=[llm.Attachment(url=url)])

    with pytest.raises(ConfigurationError, match="LLM_ASYNC_ATTACHMENTS_MAX_BYTES='64 megs'"):
        await laa.prepare_attachments(prompt)
    with pytest.raises(ConfigurationError, match="for example LLM_ASYNC_ATTACHMENTS_MAX"):
        await model.prompt("x", attachments=[llm.Attachment(url=url)]).text()
    with pytest.raises(ConfigurationError):
        await laa.AsyncAttachment(url=url).content_bytes()
    assert file_server.requests == []  # refused before any I/O


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("http://:secret@cache.test:6379/0", "the scheme is not one of redis, rediss, unix"),
        ("redis://:secret@:6379/0", "no host or socket path"),
        ("redis://:secret@cache.test:port/0", "a port that is not a number"),
        ("unix://", "no host or socket path"),
    ],
)
def test_an_invalid_shared_cache_url_never_shows_its_password(value, reason):
    name = "LLM_ASYNC_ATTACHMENTS_SHARED_CACHE_URL"
    with pytest.raises(ConfigurationError) as caught:
        Config.from_env({name: value})
    assert reason in str(caught.value) and "secret" not in str(caught.value)
    assert caught.value.value == "(hidden)"
    with pytest.raises(ConfigurationError) as caught:
        Config(shared_cache_url=value)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.test:6380/2", "unix:///run/r.sock?db=1"]
)
def test_shared_cache_urls_of_each_scheme_are_accepted(url):
    assert Config.from_env({"LLM_ASYNC_ATTACHMENTS_SHARED_CACHE_URL": url}).shared_cache_url == url
