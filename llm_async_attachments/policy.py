"""Which network addresses attachment URLs may reach, for URLs nobody here controls.

With ``Config.block_private`` on, a fetch may only connect to globally
routable addresses: loopback, private, link-local, shared (CGNAT),
unique-local, multicast, unspecified and reserved addresses are refused, and
so are IPv6 forms that embed such an IPv4 address (IPv4-mapped, 6to4,
Teredo). ``Config.allow`` exempts hosts, addresses and networks.

The check runs on the address the connection is actually made to: a host is
resolved once per connection, every address it resolves to is checked, and
the socket connects to a checked address, never to the name again. A DNS
answer that changes between check and connect (rebinding) has no window.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpcore

__all__ = ["AddressPolicy", "AddressRefused", "PolicyBackend"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def kind_of(address: IPAddress) -> str | None:
    """What makes an address unfit for untrusted URLs, or ``None`` if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            inner = kind_of(embedded)
            return f"an IPv6 form of {inner}" if inner else None
        if address.teredo is not None:
            server, client = address.teredo
            inner = kind_of(server) or kind_of(client)
            return f"a Teredo address embedding {inner}" if inner else None
    for test, name in (
        ("is_loopback", "a loopback address"),
        ("is_unspecified", "the unspecified address"),
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
    ):
        if getattr(address, test):
            return name
    if address in _SHARED:
        return "a shared (CGNAT) address"
    if isinstance(address, ipaddress.IPv6Address) and address in _UNIQUE_LOCAL:
        return "a unique-local address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")


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


class PolicyBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses the policy allows.

    The TLS handshake and the Host header still use the host name: httpcore
    wraps the socket this returns with ``server_hostname=host``.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except OSError as failure:
            raise httpcore.ConnectError(f"cannot resolve {host}: {failure}") from failure
        for address in addresses:
            kind = self._policy.refusal(host, address)
            if kind is not None:
                raise AddressRefused(host, address, kind)
        error: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as failed:
                error = failed
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(path, path, "a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
