"""Where the system may send a request a user asked for: the egress policy of job callbacks.

A ``callback_url`` is the user's, and the report service POSTs to it with retries from inside the
cluster: without a policy it is a server-side request forgery (the cloud metadata endpoint, the
cluster's own services, the private network).  The policy, from Settings:

- ``https`` only, unless ``callback_allow_http``;
- when ``callback_allowed_hosts`` is set, only those hosts (a name, or ``*.example.com`` for its
  subdomains);
- every address the host resolves to must be public: loopback, private, link-local (metadata),
  shared, multicast, reserved and unspecified addresses are refused unless inside one of the
  ``callback_allowed_networks`` (CIDR; the local stack allows loopback for its demo).

It is applied twice: when a job is submitted (a 400 saying why) and again before each delivery,
on a fresh resolution (a name that resolved to a public address at submission and to a private
one later — DNS rebinding — is refused then).  A refusal never opens a connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# host, port -> its addresses (as text); raises OSError when the name does not resolve.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


class EgressRefused(ValueError):
    """The URL may not be reached; the message says why (shown to the user)."""


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback
    return ip.is_global and not ip.is_multicast


@dataclass(frozen=True)
class EgressPolicy:
    allow_http: bool = False
    hosts: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, s: Settings) -> EgressPolicy:
        return cls(s.callback_allow_http, s.callback_hosts(), s.callback_networks())

    def check_url(self, url: str) -> tuple[str, int]:
        """Scheme, host and allow-list; returns (host, port) to resolve.  No network access."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise EgressRefused(f"scheme {scheme or '(none)'!r}: callbacks are https")
        if scheme == "http" and not self.allow_http:
            raise EgressRefused("http callbacks are not allowed (https only; setting callback_allow_http)")
        if parts.username or parts.password:
            raise EgressRefused("credentials in the callback URL are not allowed")
        host = (parts.hostname or "").lower().rstrip(".")
        if not host:
            raise EgressRefused("the callback URL has no host")
        if self.hosts and not any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in self.hosts):
            raise EgressRefused(f"host {host} is not in callback_allowed_hosts")
        try:
            port = parts.port or (443 if scheme == "https" else 80)
        except ValueError as exc:
            raise EgressRefused(f"bad port: {exc}") from exc
        return host, port

    def check_address(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is not the address
        if _public(ip) or any(ip in net for net in self.networks):
            return
        raise EgressRefused(f"host {host} resolves to {ip}, a non-public address (loopback, private, link-local, "
                            "multicast or reserved); setting callback_allowed_networks allows a network")

    async def check(self, url: str, resolve: Resolver = system_resolver) -> list[str]:
        """Refuse the URL unless the policy allows it and every address of its host is allowed;
        returns those addresses."""
        host, port = self.check_url(url)
        try:
            addresses = [str(ipaddress.ip_address(host))]  # a literal address: nothing to resolve
        except ValueError:
            try:
                addresses = list(await resolve(host, port))
            except OSError as exc:
                raise EgressRefused(f"host {host} does not resolve: {exc}") from exc
        if not addresses:
            raise EgressRefused(f"host {host} has no address")
        for address in addresses:
            self.check_address(host, address)
        return addresses
