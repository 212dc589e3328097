"""Credentials per origin: sent only to their origin, shared with nobody else, never shown."""

from __future__ import annotations

import dataclasses
import warnings
from urllib.parse import quote

import click
import llm
import pytest
from click.testing import CliRunner

import llm_async_attachments as laa
from llm_async_attachments.credentials import Credential, origin_of, parse
from llm_async_attachments.plugin import register_commands
from llm_async_attachments.testing import samples
from tests.support.hostile_server import HostileFileServer
from tests.support.models import Carrier
from tests.support.raw_server import RawServer, response

SECRET = "Bearer s3cr3t-t0ken"


def with_credentials(server, value=SECRET, **changes):
    origin = origin_of(server.base_url)
    credential = Credential(origin, value)
    return dataclasses.replace(laa.get_config(), credentials=(credential,), **changes)


async def prepare(url, config):
    attachment = llm.Attachment(url=url)
    await laa.prepare_attachments(
        llm.Prompt("x", Carrier(), attachments=[attachment]), config=config
    )
    return attachment


async def test_a_credential_goes_to_its_origin(file_server):
    url = file_server.add("/private.png", samples.png(), content_type="image/png")

    attachment = await prepare(url, with_credentials(file_server))

    assert attachment.content_bytes() == samples.png()
    assert file_server.authorizations == [SECRET]


async def test_a_credential_never_follows_a_redirect_to_another_origin(file_server):
    with HostileFileServer() as elsewhere:
        target = elsewhere.add("/moved.png", samples.png(), content_type="image/png")
        url = file_server.url(f"/redirect-to?url={quote(target, safe='')}")

        await prepare(url, with_credentials(file_server))

        assert file_server.authorizations == [SECRET]  # the redirect itself
        assert elsewhere.authorizations == [None]


async def test_another_port_or_scheme_is_another_origin(file_server):
    url = file_server.add("/private.png", samples.png(), content_type="image/png")
    other_port = origin_of(file_server.base_url).rsplit(":", 1)[0] + ":1"
    config = dataclasses.replace(
        laa.get_config(),
        credentials=(
            Credential(other_port, SECRET),
            Credential(origin_of(file_server.base_url).replace("http:", "https:", 1), SECRET),
        ),
    )

    await prepare(url, config)

    assert file_server.authorizations == [None]


async def test_a_response_fetched_with_a_credential_answers_only_that_credential(file_server):
    url = file_server.add(
        "/shared.png",
        samples.png(),
        content_type="image/png",
        headers=[("Cache-Control", "max-age=600")],
    )

    await prepare(url, with_credentials(file_server))
    await prepare(url, with_credentials(file_server))  # the same credential: from the cache
    await prepare(url, with_credentials(file_server, "Bearer another"))
    await prepare(url, laa.get_config())  # no credential at all

    assert file_server.authorizations == [SECRET, "Bearer another", None]


async def test_the_secret_is_never_shown(file_server):
    url = file_server.url("/status/401")
    config = with_credentials(file_server)

    with pytest.raises(laa.AttachmentHTTPStatusError) as raised:
        await prepare(url, config)

    assert SECRET not in str(raised.value)
    assert SECRET not in repr(config) and "'***'" in repr(config)


def test_status_names_the_origin_not_the_value(monkeypatch, tmp_path):
    monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
    credentials = parse(f"https://x.test={SECRET}")
    laa.configure(dataclasses.replace(laa.get_config(), credentials=credentials))
    group = click.Group()
    register_commands(group)

    result = CliRunner().invoke(group, ["async-attachments", "status"])

    assert result.exit_code == 0, result.output
    assert "https://x.test:443 (value hidden)" in result.output
    assert "s3cr3t" not in result.output


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (f"https://x.test {SECRET}", "entry 1 has no '='"),
        (f"ftp://x.test={SECRET}", "entry 1 does not start with an http or https origin"),
        (f"https://x.test/path={SECRET}", "entry 1 does not start with an http or https origin"),
        (f"https://a.test=x;https://user@b.test={SECRET}", "entry 2 does not start with"),
        (f"https://x.test=x;https://X.test:443={SECRET}", "an entry repeats an origin"),
    ],
)
def test_a_bad_entry_is_one_warning_that_never_shows_the_secret(raw, problem, monkeypatch):
    variable = "LLM_ASYNC_ATTACHMENTS_CREDENTIALS"
    with pytest.raises(laa.ConfigurationError) as raised:
        laa.Config.from_env({variable: raw})
    assert problem in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "s3cr3t" not in repr(raised.value.value)

    monkeypatch.setenv(variable, raw)
    laa.configure(None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = laa.get_config(strict=False)  # sync llm: the default, and a warning

    assert config.credentials == ()
    (warning,) = [w for w in caught if issubclass(w.category, laa.ConfigurationWarning)]
    assert problem in str(warning.message) and "s3cr3t" not in str(warning.message)


async def test_netrc_supplies_basic_auth_to_its_host(file_server, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login reader password pa55\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    url = file_server.add("/private.png", samples.png(), content_type="image/png")

    await prepare(url, dataclasses.replace(laa.get_config(), netrc=True))

    assert file_server.authorizations == ["Basic cmVhZGVyOnBhNTU="]  # reader:pa55


async def test_a_credential_never_goes_in_the_clear_through_a_proxy(monkeypatch):
    url = "http://files.example.test/via-proxy.png"
    config = dataclasses.replace(
        laa.get_config(), credentials=(Credential(origin_of(url), SECRET),)
    )

    def answer(head):
        yield response(200, [("Content-Type", "image/png")], samples.png())

    with RawServer(answer) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        await prepare(url, config)
    assert proxy.heads[0].startswith(b"GET http://files.example.test/via-proxy.png HTTP/1.1")
    assert b"s3cr3t" not in proxy.heads[0]
