"""Which network addresses attachment URLs may reach, for URLs nobody here controls.

With ``Config.block_private`` on, a fetch may only connect to public addresses:
every address in ``SPECIAL_ADDRESSES`` is refused, and everything else is
public. The table is transcribed from IANA's special-purpose address
registries, plus multicast and the IPv6 space IANA keeps reserved, so the
verdict is the same on every Python release (``ipaddress``'s own
``is_global``/``is_private`` tables differ between patch releases and are not
consulted). IPv6 forms that carry an IPv4 address (IPv4-mapped, NAT64, 6to4,
Teredo) are judged by the IPv4 address they carry. ``Config.allow`` exempts
hosts, addresses and networks.

The check runs on the address the connection is actually made to: a host is
resolved once per connection, every address it resolves to is checked, and
the socket connects to a checked address, never to the name again. A DNS
answer that changes between check and connect (rebinding) has no window.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpcore2

__all__ = ["AddressPolicy", "AddressRefused", "PolicyBackend"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Every address in one of these networks is refused: (network, name for messages, RFC).
# The most specific network holding an address names it; an address in none is public.
#
# Transcribed from IANA's "IPv4 Special-Purpose Address Registry"
# (iana-ipv4-special-registry) and "IPv6 Special-Purpose Address Registry"
# (iana-ipv6-special-registry), RFC 6890, as of 2025-10-09 (the IPv6 registry's last
# update; both read from IANA's CSV files). Every row of both is here, except the four
# IPv6 forms judged by the IPv4 address they carry (_CARRIERS below). Rows marked
# "reachable" are "Globally Reachable: True" in the registry and refused all the
# same: they are anycast service addresses (PCP, TURN, DNS-SD, AMT relays, AS112 DNS
# sinks) or identifiers, never where an attachment lives, and a URL nobody here
# controls has no business reaching them. Rows marked "not in the registry" come from
# the multicast registries and the IPv6 Address Space registry ("Reserved by IETF").
SPECIAL_ADDRESSES: tuple[tuple[str, str, str], ...] = (
    ("0.0.0.0/8", "a 'this network' address", "RFC 791"),
    ("0.0.0.0/32", "the unspecified address", "RFC 1122"),
    ("10.0.0.0/8", "a private address", "RFC 1918"),
    ("100.64.0.0/10", "a shared (CGNAT) address", "RFC 6598"),
    ("127.0.0.0/8", "a loopback address", "RFC 1122"),
    ("169.254.0.0/16", "a link-local address", "RFC 3927"),
    ("172.16.0.0/12", "a private address", "RFC 1918"),
    ("192.0.0.0/24", "an IETF protocol assignment address", "RFC 6890"),
    ("192.0.0.0/29", "an IPv4 service continuity address", "RFC 7335"),
    ("192.0.0.8/32", "the IPv4 dummy address", "RFC 7600"),
    ("192.0.0.9/32", "an anycast service address", "RFC 7723"),  # reachable (PCP)
    ("192.0.0.10/32", "an anycast service address", "RFC 8155"),  # reachable (TURN)
    ("192.0.0.170/32", "a NAT64 discovery address", "RFC 8880"),
    ("192.0.0.171/32", "a NAT64 discovery address", "RFC 8880"),
    ("192.0.2.0/24", "a documentation address", "RFC 5737"),
    ("192.31.196.0/24", "an AS112 DNS address", "RFC 7535"),  # reachable
    ("192.52.193.0/24", "an AMT relay address", "RFC 7450"),  # reachable
    ("192.88.99.0/24", "a 6to4 relay anycast address", "RFC 7526"),  # deprecated
    ("192.88.99.2/32", "a 6a44 relay anycast address", "RFC 6751"),
    ("192.168.0.0/16", "a private address", "RFC 1918"),
    ("192.175.48.0/24", "an AS112 DNS address", "RFC 7534"),  # reachable
    ("198.18.0.0/15", "a benchmarking address", "RFC 2544"),
    ("198.51.100.0/24", "a documentation address", "RFC 5737"),
    ("203.0.113.0/24", "a documentation address", "RFC 5737"),
    ("224.0.0.0/4", "a multicast address", "RFC 5771"),  # not in the registry
    ("240.0.0.0/4", "a reserved address", "RFC 1112"),
    ("255.255.255.255/32", "the limited broadcast address", "RFC 919"),
    ("::/8", "a reserved address", "RFC 4291"),  # not in the registry
    ("::/128", "the unspecified address", "RFC 4291"),
    ("::1/128", "a loopback address", "RFC 4291"),
    ("::/96", "an IPv4-compatible address", "RFC 4291"),  # deprecated; not in the registry
    ("64:ff9b:1::/48", "a local-use NAT64 address", "RFC 8215"),
    ("100::/8", "a reserved address", "RFC 4291"),  # not in the registry
    ("100::/64", "a discard-only address", "RFC 6666"),
    ("100:0:0:1::/64", "a dummy address", "RFC 9780"),
    ("200::/7", "a reserved address", "RFC 4048"),  # not in the registry
    ("400::/6", "a reserved address", "RFC 4291"),  # not in the registry
    ("800::/5", "a reserved address", "RFC 4291"),  # not in the registry
    ("1000::/4", "a reserved address", "RFC 4291"),  # not in the registry
    ("2001::/23", "an IETF protocol assignment address", "RFC 2928"),
    ("2001:1::1/128", "an anycast service address", "RFC 7723"),  # reachable (PCP)
    ("2001:1::2/128", "an anycast service address", "RFC 8155"),  # reachable (TURN)
    ("2001:1::3/128", "an anycast service address", "RFC 9665"),  # reachable (DNS-SD)
    ("2001:2::/48", "a benchmarking address", "RFC 5180"),
    ("2001:3::/32", "an AMT relay address", "RFC 7450"),  # reachable
    ("2001:4:112::/48", "an AS112 DNS address", "RFC 7535"),  # reachable
    ("2001:10::/28", "a deprecated ORCHID address", "RFC 4843"),
    ("2001:20::/28", "an ORCHIDv2 address", "RFC 7343"),  # reachable
    ("2001:30::/28", "a drone remote ID (DET) address", "RFC 9374"),  # reachable
    ("2001:db8::/32", "a documentation address", "RFC 3849"),
    ("2620:4f:8000::/48", "an AS112 DNS address", "RFC 7534"),  # reachable
    ("3fff::/20", "a documentation address", "RFC 9637"),
    ("4000::/3", "a reserved address", "RFC 4291"),  # not in the registry
    ("5f00::/16", "a segment routing (SRv6) address", "RFC 9602"),
    ("6000::/3", "a reserved address", "RFC 4291"),  # not in the registry
    ("8000::/3", "a reserved address", "RFC 4291"),  # not in the registry
    ("a000::/3", "a reserved address", "RFC 4291"),  # not in the registry
    ("c000::/3", "a reserved address", "RFC 4291"),  # not in the registry
    ("e000::/4", "a reserved address", "RFC 4291"),  # not in the registry
    ("f000::/5", "a reserved address", "RFC 4291"),  # not in the registry
    ("f800::/6", "a reserved address", "RFC 4291"),  # not in the registry
    ("fc00::/7", "a unique-local address", "RFC 4193"),
    ("fe00::/9", "a reserved address", "RFC 4291"),  # not in the registry
    ("fe80::/10", "a link-local address", "RFC 4291"),
    ("fec0::/10", "a site-local address", "RFC 3879"),  # deprecated; not in the registry
    ("ff00::/8", "a multicast address", "RFC 4291"),  # not in the registry
)

_IPV4_BITS = 0xFFFF_FFFF

# IPv6 forms that carry IPv4 addresses, checked before the table and judged by what
# they carry: public if every carried address is, else refused as
# f"{form} {kind of the carried address}". Each takes the address as an integer.
_CARRIERS: tuple[tuple[str, str, Callable[[int], tuple[int, ...]]], ...] = (
    ("::ffff:0:0/96", "an IPv6 form of", lambda n: (n & _IPV4_BITS,)),  # mapped, RFC 4291
    ("64:ff9b::/96", "an IPv6 form of", lambda n: (n & _IPV4_BITS,)),  # NAT64, RFC 6052
    ("2002::/16", "an IPv6 form of", lambda n: (n >> 80 & _IPV4_BITS,)),  # 6to4, RFC 3056
    # Teredo, RFC 4380: the server's address, then the client's (stored inverted).
    ("2001::/32", "a Teredo address embedding", lambda n: (n >> 64 & _IPV4_BITS, ~n & _IPV4_BITS)),
)


def _masked(cidr: str) -> tuple[int, int, int]:
    """``(version, network as an integer, netmask as an integer)``."""
    network = ipaddress.ip_network(cidr)
    return network.version, int(network.network_address), int(network.netmask)


# Most specific first, so that the first match is the one that names the address.
_TABLE = tuple(
    (*_masked(cidr), name)
    for cidr, name, _rfc in sorted(
        SPECIAL_ADDRESSES, key=lambda row: -ipaddress.ip_network(row[0]).prefixlen
    )
)
_CARRIER_TABLE = tuple((*_masked(cidr), form, carried) for cidr, form, carried in _CARRIERS)


def kind_of(address: IPAddress) -> str | None:
    """What makes an address unfit for untrusted URLs, or ``None`` if it is public."""
    number = int(address)
    for version, network, mask, form, carried in _CARRIER_TABLE:
        if version == address.version and number & mask == network:
            for inner in carried(number):
                kind = kind_of(ipaddress.IPv4Address(inner))
                if kind is not None:
                    return f"{form} {kind}"
            return None
    for version, network, mask, name in _TABLE:
        if version == address.version and number & mask == network:
            return name
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """``Config.block_private`` and ``Config.allow``, ready to check addresses."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_allow(cls, allow: Sequence[str]) -> AddressPolicy:
        """Parse allow entries: host names, IP addresses and CIDR networks."""
        hosts, networks = set(), []
        for entry in allow:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to ``address`` for ``host`` is refused, or ``None``."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if any(ip in network for network in self.networks):
            return None
        return kind_of(ip)


class AddressRefused(Exception):
    """Raised inside the transport; fetch turns it into ``AttachmentAddressRefused``."""

    def __init__(self, host: str, address: str, kind: str) -> None:
        super().__init__(f"{host} resolves to {address}, {kind}")
        self.host, self.address, self.kind = host, address, kind


async def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in the resolver's order (tests replace this)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class PolicyBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend, connecting only to addresses the policy allows.

    The TLS handshake and the Host header still use the host name: httpcore2
    wraps the socket this returns with ``server_hostname=host``.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore2.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except OSError as failure:
            raise httpcore2.ConnectError(f"cannot resolve {host}: {failure}") from failure
        for address in addresses:
            kind = self._policy.refusal(host, address)
            if kind is not None:
                raise AddressRefused(host, address, kind)
        error: Exception = httpcore2.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as failed:
                error = failed
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore2's interface)
        socket_options: Any = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise AddressRefused(path, path, "a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
