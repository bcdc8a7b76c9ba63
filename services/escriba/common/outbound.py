"""Requests Escriba makes to addresses its callers choose: webhooks and audio by URL.

A caller who can name a URL could otherwise make Escriba reach what only Escriba can reach (the
cluster's services, a cloud metadata endpoint at 169.254.169.254, the pod's loopback). So every such
connection resolves its host through :class:`PolicyResolver`, which refuses private, loopback,
link-local, multicast and reserved addresses unless a network is listed in
``ESCRIBA_OUTBOUND_ALLOWED_NETWORKS``. The check runs on the addresses aiohttp then connects to, for
every hop of a redirect, so neither a redirect nor a DNS answer that changes between a check and the
connection gets past it.
"""

from __future__ import annotations

import ipaddress
import socket
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from escriba.common.errors import InvalidInputError
from escriba.common.settings import at_least, load, positive, setting, settings_class

MAX_URL_CHARS = 2048

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _networks(value: tuple[str, ...]) -> str | None:
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            return f"{item!r} is not a network (CIDR such as 10.0.0.0/8 or 127.0.0.1/32): {exc}"
    return None


@settings_class
@dataclass(frozen=True)
class OutboundSettings:
    allowed_networks: tuple[str, ...] = setting(
        "ESCRIBA_OUTBOUND_ALLOWED_NETWORKS",
        (),
        "comma-separated CIDRs that webhooks and audio URLs may reach although private, loopback or"
        " link-local (e.g. 10.20.0.0/16 for an in-cluster receiver); empty: only public addresses",
        check=_networks,
    )
    connect_timeout_s: float = setting(
        "ESCRIBA_OUTBOUND_CONNECT_TIMEOUT_S",
        5.0,
        "longest wait for a webhook receiver or an audio URL's server to accept the connection (seconds)",
        check=positive,
    )
    max_redirects: int = setting(
        "ESCRIBA_OUTBOUND_MAX_REDIRECTS",
        3,
        "redirects followed for a webhook or an audio URL (each hop is checked like the first)",
        check=at_least(0),
    )

    @classmethod
    def from_env(cls) -> OutboundSettings:
        return load(cls)

    def networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(n, strict=False) for n in self.allowed_networks)


class InvalidUrlError(InvalidInputError):
    reason = "invalid_url"


class BlockedAddressError(InvalidInputError):
    """The URL's host resolves to an address Escriba must not reach for a caller."""

    reason = "blocked_address"


def check_url(url: str, *, what: str, schemes: Sequence[str] = ("https", "http")) -> urllib.parse.SplitResult:
    """The URL split, or :class:`InvalidUrlError` saying what is wrong with it (checked when a task is
    created, so a typo fails the request rather than the task)."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidUrlError(f"{what} is {len(url)} characters long; at most {MAX_URL_CHARS} are allowed")
    if not url.isascii() or not url.isprintable() or any(c.isspace() for c in url):
        raise InvalidUrlError(f"{what} must be printable ASCII without spaces (percent-encode the rest)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in schemes:
        raise InvalidUrlError(f"{what} must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise InvalidUrlError(f"{what} has no host")
    if parts.username or parts.password:
        raise InvalidUrlError(f"{what} must not carry credentials")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise InvalidUrlError(f"{what} has a bad port: {exc}") from exc
    return parts


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_allowed(address: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    """Public addresses, and any in ``allowed``; an IPv4-mapped IPv6 address counts as its IPv4."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in allowed):
        return True
    return address.is_global and not address.is_multicast


class PolicyResolver(AbstractResolver):
    """aiohttp's resolver, minus the addresses the policy refuses (all refused: an error naming them)."""

    def __init__(self, allowed: Sequence[IPNetwork]) -> None:
        self._allowed = tuple(allowed)
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if is_allowed(ipaddress.ip_address(r["host"]), self._allowed)]
        if not kept:
            shown = ", ".join(sorted({r["host"] for r in results}))
            raise BlockedAddressError(
                f"{host} resolves to {shown}: a private, loopback or link-local address this server"
                " does not reach (ESCRIBA_OUTBOUND_ALLOWED_NETWORKS)"
            )
        return kept

    async def close(self) -> None:
        await self._inner.close()


def client_session(
    settings: OutboundSettings, *, total_timeout_s: float, **kwargs: Any
) -> aiohttp.ClientSession:
    """A session whose every connection passes the address policy, with the connect and total limits."""
    connector = aiohttp.TCPConnector(resolver=PolicyResolver(settings.networks()), use_dns_cache=False)
    timeout = aiohttp.ClientTimeout(total=total_timeout_s, sock_connect=settings.connect_timeout_s)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False, **kwargs)


class TooManyRedirectsError(InvalidInputError):
    reason = "too_many_redirects"


async def open_following(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    settings: OutboundSettings,
    **kwargs: Any,
) -> aiohttp.ClientResponse:
    """``session.request`` that follows redirects itself, so each hop is checked: a literal address
    against the policy here (aiohttp connects to those without asking a resolver), a name by the
    session's :class:`PolicyResolver`. Only GET and HEAD follow a 303 or a 301/302 as such; other
    methods keep their method on 307/308 and stop on the rest. The caller releases the response."""
    allowed = settings.networks()
    for _hop in range(settings.max_redirects + 1):
        host = urllib.parse.urlsplit(url).hostname or ""
        literal = _literal_address(host)
        if literal is not None and not is_allowed(literal, allowed):
            raise BlockedAddressError(
                f"{host} is a private, loopback or link-local address this server does not reach"
                " (ESCRIBA_OUTBOUND_ALLOWED_NETWORKS)"
            )
        response = await session.request(method, url, allow_redirects=False, **kwargs)
        location = response.headers.get("Location")
        if response.status not in (301, 302, 303, 307, 308) or not location:
            return response
        response.release()
        target = urllib.parse.urljoin(url, location)
        check_url(target, what="the redirect target")
        if method not in ("GET", "HEAD") and response.status not in (307, 308):
            # A 301/302/303 would turn the request into a GET of another URL: not what was asked.
            raise TooManyRedirectsError(f"{url} answered {response.status}: not followed for {method}")
        url = target
    raise TooManyRedirectsError(f"more than {settings.max_redirects} redirects, the last to {url}")


def blocked_cause(exc: BaseException) -> BlockedAddressError | None:
    """The policy's refusal behind an aiohttp connection error, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, BlockedAddressError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
