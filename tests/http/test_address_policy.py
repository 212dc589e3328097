"""The address policy for untrusted URLs: every hop, the address actually connected to."""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import re

import llm
import pytest

import llm_async_attachments as laa
from llm_async_attachments.http.address_policy import SPECIAL_ADDRESSES, AddressPolicy, kind_of
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


# The table, read independently of address_policy.py's own lookup and of ipaddress's
# is_global/is_private tables: integers, prefixes and the table's rows only.
ROWS = [
    (network.version, int(network.network_address), network.prefixlen, name)
    for network, name in ((ipaddress.ip_network(cidr), name) for cidr, name, _ in SPECIAL_ADDRESSES)
]
IPV4 = 0xFFFF_FFFF


def table_says(address):
    """The name of the most specific row holding ``address``, or None: what the table says."""
    number, bits = int(address), address.max_prefixlen
    best = max(
        (
            (length, name)
            for version, start, length, name in ROWS
            if version == address.version and number >> (bits - length) == start >> (bits - length)
        ),
        default=None,
    )
    return best and best[1]


def carried(address):
    """``(form, IPv4 addresses)`` for IPv6 forms judged by what they carry, else None."""
    if address.version == 4:
        return None
    number = int(address)
    if number >> 32 == 0xFFFF:  # ::ffff:0:0/96, IPv4-mapped
        return "an IPv6 form of", [number & IPV4]
    if number >> 32 == 0x64_FF9B << 64:  # 64:ff9b::/96, NAT64 well-known prefix
        return "an IPv6 form of", [number & IPV4]
    if number >> 112 == 0x2002:  # 2002::/16, 6to4
        return "an IPv6 form of", [(number >> 80) & IPV4]
    if number >> 96 == 0x2001_0000:  # 2001::/32, Teredo: server, then client inverted
        return "a Teredo address embedding", [(number >> 64) & IPV4, ~number & IPV4]
    return None


def expected(address):
    form = carried(address)
    if form is None:
        return table_says(address)
    for inner in form[1]:
        kind = expected(ipaddress.IPv4Address(inner))
        if kind is not None:
            return f"{form[0]} {kind}"
    return None


def test_the_table_is_well_formed():
    # ip_network is strict: a row with host bits set raises.
    networks = [ipaddress.ip_network(cidr) for cidr, _, _ in SPECIAL_ADDRESSES]
    assert len(set(networks)) == len(networks)
    for _, name, rfc in SPECIAL_ADDRESSES:
        assert re.fullmatch(r"(a|an|the) [\w '()/-]+", name), name
        assert re.fullmatch(r"RFC \d+", rfc), rfc


def neighbours(network):
    """The addresses just below and just above ``network``, where there are any."""
    first, last = int(network.network_address), int(network.broadcast_address)
    make = type(network.network_address)
    return [make(n) for n in (first - 1, last + 1) if 0 <= n < 2**network.max_prefixlen]


def in_no_row(address):
    return table_says(address) is None and carried(address) is None


@pytest.mark.parametrize(("cidr", "name"), [row[:2] for row in SPECIAL_ADDRESSES], ids=str)
def test_each_range_is_refused_to_its_edges_and_not_beyond(cidr, name):
    network = ipaddress.ip_network(cidr)
    edges = (network.network_address, network.broadcast_address)
    for edge in edges:
        assert kind_of(edge) is not None, edge
        assert kind_of(edge) == expected(edge), edge
    assert name in [kind_of(edge) for edge in edges]
    for outside in neighbours(network):
        if in_no_row(outside):
            assert kind_of(outside) is None, outside  # public
        else:
            assert kind_of(outside) == expected(outside), outside


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        # is_global on 3.11.7, 3.12.1 and 3.13.0: main connected to them.
        ("fec0::1", "a site-local address"),
        ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "a site-local address"),
        ("3fff::1", "a documentation address"),
        ("192.88.99.1", "a 6to4 relay anycast address"),
        ("192.88.99.2", "a 6a44 relay anycast address"),
        # is_global on 3.11.7 and 3.12.1, is_private on 3.13.0.
        ("192.0.0.192", "an IETF protocol assignment address"),
        ("192.0.0.8", "the IPv4 dummy address"),
        # "Globally reachable" in the registries, refused all the same: anycast services
        # and identifiers.
        ("192.0.0.9", "an anycast service address"),
        ("192.0.0.10", "an anycast service address"),
        ("2001:1::1", "an anycast service address"),
        ("2001:1::2", "an anycast service address"),
        ("2001:1::3", "an anycast service address"),
        ("2001:3::1", "an AMT relay address"),
        ("2001:4:112::1", "an AS112 DNS address"),
        ("2001:20::1", "an ORCHIDv2 address"),
        ("2001:30::1", "a drone remote ID (DET) address"),
        ("192.31.196.1", "an AS112 DNS address"),
        ("192.52.193.1", "an AMT relay address"),
        ("192.175.48.1", "an AS112 DNS address"),
        ("2620:4f:8000::1", "an AS112 DNS address"),
        # Refused on main too (as reserved): now by name.
        ("5f00::1", "a segment routing (SRv6) address"),
        ("100:0:0:1::1", "a dummy address"),
        ("64:ff9b:1::a00:1", "a local-use NAT64 address"),
        ("255.255.255.255", "the limited broadcast address"),
        ("0.1.2.3", "a 'this network' address"),
        # Their public neighbours.
        ("192.0.1.0", None),
        ("3fff:1000::", None),
        ("2001:200::1", None),
        ("192.88.100.0", None),
    ],
)
def test_one_verdict_where_python_releases_disagree(address, kind):
    assert kind_of(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::ffff:8.8.8.8", None),
        ("::ffff:0.0.0.0", "an IPv6 form of the unspecified address"),
        ("::ffff:192.0.0.192", "an IPv6 form of an IETF protocol assignment address"),
        ("64:ff9b::8.8.8.8", None),  # NAT64, well-known prefix: what it carries decides
        ("64:ff9b::10.0.0.1", "an IPv6 form of a private address"),
        ("64:ff9b::169.254.169.254", "an IPv6 form of a link-local address"),
        ("64:ff9b:1::808:808", "a local-use NAT64 address"),  # carried bits not fixed: refused
        ("2002:808:808::1", None),  # 6to4 of 8.8.8.8
        ("2002:a9fe:a9fe::", "an IPv6 form of a link-local address"),
        ("2002:c000:c0::1", "an IPv6 form of an IETF protocol assignment address"),
        ("2001:0:808:808::fefe:fefe", None),  # Teredo: server 8.8.8.8, client 1.1.1.1
        ("2001:0:808:808::f5ff:fffe", "a Teredo address embedding a private address"),
        ("2001:0:a00:1::fefe:fefe", "a Teredo address embedding a private address"),
        ("2001:0:808:808::3fff:fd3f", "a Teredo address embedding a documentation address"),
        ("::127.0.0.1", "an IPv4-compatible address"),  # deprecated: refused whatever it carries
        ("::8.8.8.8", "an IPv4-compatible address"),
        ("::ffff:0:808:808", "a reserved address"),  # IPv4-translated (SIIT), in ::/8
    ],
)
def test_ipv6_forms_carrying_ipv4(address, kind):
    assert kind_of(ipaddress.ip_address(address)) == kind


def seeded_addresses(seed=20251009):
    """A few hundred addresses: in and just outside every row, anywhere, and carried."""
    rng = random.Random(seed)
    addresses = []
    for cidr, _, _ in SPECIAL_ADDRESSES:
        network = ipaddress.ip_network(cidr)
        host_bits = network.max_prefixlen - network.prefixlen
        start = int(network.network_address)
        sibling = start ^ (1 << host_bits) if network.prefixlen else start  # the other half
        for base in (start, sibling):
            addresses.append(type(network.network_address)(base + rng.getrandbits(host_bits)))
    addresses += [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(100)]
    addresses += [ipaddress.IPv6Address(1 << 125 | rng.getrandbits(125)) for _ in range(100)]
    ipv4 = [int(a) for a in addresses if a.version == 4]
    for _ in range(50):
        a, b = rng.choice(ipv4), rng.choice(ipv4)
        addresses += [
            ipaddress.IPv6Address(0xFFFF << 32 | a),
            ipaddress.IPv6Address(0x64_FF9B << 96 | a),
            ipaddress.IPv6Address(0x2002 << 112 | a << 80 | rng.getrandbits(80)),
            ipaddress.IPv6Address(
                0x2001_0000 << 96 | a << 64 | rng.getrandbits(32) << 32 | (~b & IPV4)
            ),
        ]
    return addresses


def test_seeded_addresses_get_the_tables_answer_on_every_python():
    # Compares kind_of with the table, never with ipaddress's is_global/is_private,
    # whose answers for some of these differ between Python patch releases.
    addresses = seeded_addresses()
    assert len(addresses) > 400
    verdicts = [kind_of(address) for address in addresses]
    assert verdicts == [expected(address) for address in addresses]
    refused = sum(verdict is not None for verdict in verdicts)
    assert 100 < refused < len(addresses) - 100  # both verdicts well exercised


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
