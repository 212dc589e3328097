"""The address policy for untrusted URLs: every hop, the address actually connected to."""

from __future__ import annotations

import dataclasses
import ipaddress

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.policy import AddressPolicy, kind_of
from llm_async_attachments.testing import samples
from tests.support.hostile import loopback_resolver

LOOPBACK_SPELLINGS = [
    "localhost",
    "127.1",
    "2130706433",
    "0x7f.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "0.0.0.0",
]


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("100.64.0.1", "a shared (CGNAT) address"),
        ("fd00::1", "a unique-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("240.0.0.1", "a reserved address"),
        ("::ffff:127.0.0.1", "an IPv6 form of a loopback address"),
        ("::ffff:10.0.0.1", "an IPv6 form of a private address"),
        ("2002:7f00:1::", "an IPv6 form of a loopback address"),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "a Teredo address embedding a private address"),
        ("93.184.216.34", None),
        ("2606:4700::1111", None),
    ],
)
def test_address_kinds(address, kind):
    assert kind_of(ipaddress.ip_address(address)) == kind


def test_allow_entries_are_hosts_addresses_or_networks():
    policy = AddressPolicy.from_allow(["Files.Internal.", "127.0.0.1", "10.0.0.0/8", "[::1]"])
    assert policy.refusal("files.internal", "10.9.9.9") is None
    assert policy.refusal("anything", "127.0.0.1") is None
    assert policy.refusal("anything", "10.200.0.1") is None
    assert policy.refusal("anything", "::1") is None
    assert policy.refusal("anything", "192.168.0.1") == "a private address"


def config(**changes):
    return dataclasses.replace(laa.get_config(), block_private=True, retries=0, **changes)


async def prepare(url, **changes):
    attachment = llm.Attachment(url=url)
    prompt = llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
    with loopback_resolver():
        await laa.prepare_attachments(prompt, config=config(**changes))
    return attachment


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
async def test_every_spelling_of_loopback_is_refused_before_connecting(file_server, host):
    file_server.add("/cat.png", samples.png(), content_type="image/png")
    port = file_server.base_url.rsplit(":", 1)[1]
    with pytest.raises(laa.AttachmentAddressRefused) as caught:
        await prepare(f"http://{host}:{port}/cat.png")
    assert caught.value.kind in (
        "a loopback address",
        "the unspecified address",
        "an IPv6 form of a loopback address",
    )
    assert "LLM_ASYNC_ATTACHMENTS_ALLOW" in str(caught.value)
    assert file_server.count() == 0


async def test_a_resolver_answering_a_private_address_is_refused():
    with pytest.raises(laa.AttachmentAddressRefused, match=r"10\.1\.2\.3, a private address"):
        await prepare("http://private.test/x.png")


async def test_the_checked_address_is_the_one_connected_to(file_server):
    # trusted.test exists only in the test resolver: reaching the server proves the
    # connection went to the checked address, not to a second lookup of the name.
    file_server.add("/cat.png", samples.png(), content_type="image/png")
    port = file_server.base_url.rsplit(":", 1)[1]
    attachment = await prepare(f"http://trusted.test:{port}/cat.png", allow=("trusted.test",))
    assert attachment.content_bytes() == samples.png()
    assert file_server.hosts == [f"trusted.test:{port}"]  # Host header kept


async def test_an_allowed_host_redirecting_to_a_refused_one_is_refused(file_server):
    file_server.add("/cat.png", samples.png(), content_type="image/png")
    port = file_server.base_url.rsplit(":", 1)[1]
    to = f"http://other.test:{port}/cat.png"
    with pytest.raises(laa.AttachmentAddressRefused, match=r"other\.test resolves to 127\.0\.0\.1"):
        await prepare(f"http://trusted.test:{port}/redirect-to?url={to}", allow=("trusted.test",))
    assert file_server.requests == [("GET", "/redirect-to")]


async def test_allowed_networks_pass(file_server):
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    attachment = await prepare(url, allow=("127.0.0.0/8",))
    assert attachment.resolve_type() == "image/png"


async def test_proxy_variables_are_ignored_while_the_policy_is_on(file_server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    attachment = await prepare(url, allow=("127.0.0.1",))
    assert attachment.content_bytes() == samples.png()


async def test_the_policy_is_off_by_default(file_server):
    assert laa.Config().block_private is False
    url = file_server.add("/cat.png", samples.png(), content_type="image/png")
    attachment = llm.Attachment(url=url)
    await laa.prepare_attachments(
        llm.Prompt("x", llm.get_async_model("echo"), attachments=[attachment])
    )
    assert attachment.resolve_type() == "image/png"
