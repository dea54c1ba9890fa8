"""SSRF guard: which URLs and addresses a webhook may be sent to.

A URL is checked when an endpoint is created or changed, and again before every connection: the host is
resolved here, every address is checked, and the connection goes to an address that was checked (the
aiohttp connector gets :class:`GuardedResolver`, which only ever returns vetted addresses, so there is no
window for DNS rebinding). IP literals, which aiohttp does not resolve, are checked by :func:`check_host`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from novapulse_runtime.settings import Network

from .constants import MAX_URL_LENGTH

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
ULA_V6 = ipaddress.ip_network("fc00::/7")
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


class SsrfError(ValueError):
    """The URL or address may not be the target of a webhook."""


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses internal addresses, except ranges explicitly opened (``WEBHOOK_ALLOWED_CIDRS``)."""

    allowed: tuple[Network, ...] = ()
    allow_http: bool = False

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is refused, or None if it may be contacted."""
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            mapped = ip.ipv4_mapped or ip.sixtofour
            if mapped is not None:
                why = self.refusal(mapped)
                return f"embeds an IPv4 address that {why}" if why else None
            if ip in ULA_V6:
                return "is a unique local IPv6 address"
        if ip.is_loopback:
            return "is a loopback address"
        if ip.is_link_local:
            return "is a link-local address (cloud metadata lives here)"
        if ip.is_unspecified:
            return "is the unspecified address"
        if ip.is_multicast:
            return "is a multicast address"
        if isinstance(ip, ipaddress.IPv4Address) and ip in SHARED_V4:
            return "is in the shared address space 100.64.0.0/10"
        if ip.is_private:
            return "is a private address"
        if ip.is_reserved:
            return "is a reserved address"
        if not ip.is_global:
            return "is not a global address"
        return None

    def check_address(self, ip: IPAddress) -> None:
        why = self.refusal(ip)
        if why:
            raise SsrfError(f"{ip} {why}")


def literal_address(host: str) -> IPAddress | None:
    """The address if ``host`` is an IP literal (``[...]`` for IPv6), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(url: str, policy: AddressPolicy) -> tuple[str, int]:
    """Syntax and scheme rules; returns (host, port). Raises :class:`SsrfError`."""
    if len(url) > MAX_URL_LENGTH:
        raise SsrfError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise SsrfError("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SsrfError(f"the URL is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and policy.allow_http):
        raise SsrfError("only https URLs are allowed" if not policy.allow_http else "only http(s) URLs are allowed")
    host = (parts.hostname or "").lower()
    if not host:
        raise SsrfError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise SsrfError("credentials in the URL are not allowed; use custom headers")
    if parts.fragment:
        raise SsrfError("the URL may not have a fragment")
    ip = literal_address(host)
    if ip is None:
        labels = host.rstrip(".").split(".")
        if all(_NUMERIC_LABEL.match(label) for label in labels):
            raise SsrfError("numeric host forms other than dotted-quad IPv4 are not allowed")
        if not re.fullmatch(r"[a-z0-9._-]+", host) or ".." in host:
            raise SsrfError("the host name is not valid")
    else:
        policy.check_address(ip)
    return host, port or (443 if scheme == "https" else 80)


async def resolve(host: str, port: int, policy: AddressPolicy, timeout: float) -> list[IPAddress]:
    """Resolve ``host`` and keep the addresses the policy allows; refuse if none is left."""
    ip = literal_address(host)
    if ip is not None:
        policy.check_address(ip)
        return [ip]
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise SsrfError(f"cannot resolve {host}: {exc}") from exc
    found: list[IPAddress] = []
    reasons: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = policy.refusal(addr)
        if why:
            reasons.append(f"{addr} {why}")
        elif addr not in found:
            found.append(addr)
    if not found:
        raise SsrfError(f"{host} resolves only to refused addresses: {'; '.join(reasons) or 'none'}")
    return found


class GuardedResolver(AbstractResolver):
    """aiohttp resolver returning only addresses the policy allows (the connection uses exactly these)."""

    def __init__(self, policy: AddressPolicy, timeout: float) -> None:
        self.policy = policy
        self.timeout = timeout

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await resolve(host, port, self.policy, self.timeout)
        except SsrfError as exc:
            raise OSError(str(exc)) from exc
        return [
            ResolveResult(
                hostname=host,
                host=str(a),
                port=port,
                family=socket.AF_INET6 if a.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for a in addresses
        ]

    async def close(self) -> None:
        return None
