import dataclasses

import pytest

from llm_async_attachments import Config, configure, get_config

MiB = 1024 * 1024


def test_defaults_are_the_documented_ones():
    config = Config()
    assert (config.max_bytes, config.max_total_bytes) == (32 * MiB, 128 * MiB)
    assert (config.concurrency, config.timeout, config.deadline) == (8, 10.0, 60.0)
    assert config.guard == "raise"


def test_every_field_has_an_environment_override():
    environ = {
        "LLM_ASYNC_ATTACHMENTS_MAX_BYTES": "1MiB",
        "LLM_ASYNC_ATTACHMENTS_MAX_TOTAL_BYTES": "4096",
        "LLM_ASYNC_ATTACHMENTS_CONCURRENCY": "3",
        "LLM_ASYNC_ATTACHMENTS_TIMEOUT": "2.5",
        "LLM_ASYNC_ATTACHMENTS_DEADLINE": "30",
        "LLM_ASYNC_ATTACHMENTS_GUARD": "Strict",
        "LLM_ASYNC_ATTACHMENTS_RETRIES": "0",
        "LLM_ASYNC_ATTACHMENTS_BLOCK_PRIVATE": "yes",
        "LLM_ASYNC_ATTACHMENTS_ALLOW": "files.test, 10.0.0.0/8,",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE": "off",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE_WORKERS": "12",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE_MODEL_WORKERS": "3",
        "LLM_ASYNC_ATTACHMENTS_BRIDGE_QUEUE_TIMEOUT": "2.5",
        "LLM_ASYNC_ATTACHMENTS_FETCH_QUEUE_TIMEOUT": "7",
    }
    config = Config.from_env(environ)
    assert config == Config(
        max_bytes=MiB,
        max_total_bytes=4096,
        concurrency=3,
        timeout=2.5,
        deadline=30.0,
        fetch_queue_timeout=7.0,
        guard="strict",
        retries=0,
        block_private=True,
        allow=("files.test", "10.0.0.0/8"),
        bridge=False,
        bridge_workers=12,
        bridge_model_workers=3,
        bridge_queue_timeout=2.5,
    )
    assert {f.name for f in dataclasses.fields(Config)} == {
        name.removeprefix("LLM_ASYNC_ATTACHMENTS_").lower() for name in environ
    }


def test_empty_variables_mean_the_default():
    assert Config.from_env({"LLM_ASYNC_ATTACHMENTS_MAX_BYTES": " "}) == Config()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("LLM_ASYNC_ATTACHMENTS_MAX_BYTES", "lots", "LLM_ASYNC_ATTACHMENTS_MAX_BYTES='lots'"),
        (
            "LLM_ASYNC_ATTACHMENTS_CONCURRENCY",
            "0",
            "LLM_ASYNC_ATTACHMENTS_CONCURRENCY='0' is not valid: it must be a positive integer",
        ),
        (
            "LLM_ASYNC_ATTACHMENTS_TIMEOUT",
            "nan",
            "LLM_ASYNC_ATTACHMENTS_TIMEOUT='nan' is not valid: it must be a positive number",
        ),
        (
            "LLM_ASYNC_ATTACHMENTS_GUARD",
            "loud",
            "LLM_ASYNC_ATTACHMENTS_GUARD='loud' is not valid: "
            "it must be one of raise, strict, warn, off",
        ),
    ],
)
def test_malformed_environment_values_fail_loudly(variable, value, expected):
    with pytest.raises(ValueError) as caught:
        Config.from_env({variable: value})
    assert expected in str(caught.value)


def test_direct_construction_is_validated_too():
    with pytest.raises(ValueError, match=r"Config\.deadline must be a positive number, not -1"):
        Config(deadline=-1)


def test_config_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().max_bytes = 1  # type: ignore[misc]


def test_configure_none_rereads_the_environment(monkeypatch):
    monkeypatch.setenv("LLM_ASYNC_ATTACHMENTS_CONCURRENCY", "5")
    configure(None)
    assert get_config().concurrency == 5
    configure(Config(concurrency=2))
    assert get_config().concurrency == 2
