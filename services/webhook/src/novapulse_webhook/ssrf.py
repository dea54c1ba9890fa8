"""SSRF guard: which URLs and addresses a webhook may be sent to.

A URL is checked when an endpoint is created or changed, and again before every connection: the host is
resolved here, every address is checked, and the connection goes to an address that was checked (the
aiohttp connector gets :class:`GuardedResolver`, which only ever returns vetted addresses, so there is no
window for DNS rebinding). IP literals, which aiohttp does not resolve, are checked by :func:`check_url`.

Addresses are judged by the IANA special-purpose address registries, not by a hand list:

- IPv4: https://www.iana.org/assignments/iana-ipv4-special-registry/ (RFC 6890)
- IPv6: https://www.iana.org/assignments/iana-ipv6-special-registry/ (RFC 6890)

Each entry has a "Globally Reachable" column (True, False, or N/A). An address inside an entry takes the most
specific entry's value: True may be contacted, False and N/A may not. Python's ``ipaddress.is_global`` follows
these registries only partly, and differently from one Python version to the next (3.11 calls
``64:ff9b:1::/48``, ``5f00::/16`` and ``3fff::/20`` global, and calls ``2001:1::1``, ``2001:3::/32``,
``2001:4:112::/48``, ``2001:20::/28`` and ``2001:30::/28`` private), so :data:`IPV4_SPECIAL` and
:data:`IPV6_SPECIAL` carry the registries' rows themselves. Multicast (``224.0.0.0/4``, RFC 5771;
``ff00::/8``, RFC 4291) is not in those registries and is refused too, and an IPv6 address outside both the
registry and the global unicast space ``2000::/3`` (IANA IPv6 address space registry) is refused. IPv4
embedded in IPv6 (IPv4-mapped ``::ffff:0:0/96``, the NAT64 well-known prefix ``64:ff9b::/96`` of RFC 6052,
6to4 ``2002::/16``) is refused when the IPv4 address it reaches is; beyond that, NAT64 follows its row
(True) and IPv4-mapped and 6to4 follow theirs (False, N/A) unless the IPv4 address is in an opened range.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from novapulse_runtime.settings import Network

from .constants import MAX_URL_LENGTH

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Reachable = Literal["True", "False", "N/A"]

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # RFC 1035 §2.3.1 / RFC 1123 §2.1 (LDH, 1-63)
MAX_HOST_LENGTH = 253  # RFC 1035 §2.3.4: 255 octets on the wire = 253 characters in dotted form


@dataclass(frozen=True)
class SpecialRange:
    """One row of an IANA special-purpose address registry."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    name: str
    rfc: str
    globally_reachable: Reachable


def _rows(rows: list[tuple[str, str, str, Reachable]]) -> tuple[SpecialRange, ...]:
    return tuple(SpecialRange(ipaddress.ip_network(n), name, rfc, g) for n, name, rfc, g in rows)


IPV4_SPECIAL = _rows(
    [
        # (Address Block, Name, RFC, Globally Reachable) — iana-ipv4-special-registry
        ("0.0.0.0/8", '"This network"', "RFC 791", "False"),
        ("0.0.0.0/32", '"This host on this network"', "RFC 1122", "False"),
        ("10.0.0.0/8", "Private-Use", "RFC 1918", "False"),
        ("100.64.0.0/10", "Shared Address Space", "RFC 6598", "False"),
        ("127.0.0.0/8", "Loopback", "RFC 1122", "False"),
        ("169.254.0.0/16", "Link Local", "RFC 3927", "False"),
        ("172.16.0.0/12", "Private-Use", "RFC 1918", "False"),
        ("192.0.0.0/24", "IETF Protocol Assignments", "RFC 6890", "False"),
        ("192.0.0.0/29", "IPv4 Service Continuity Prefix", "RFC 7335", "False"),
        ("192.0.0.8/32", "IPv4 dummy address", "RFC 7600", "False"),
        ("192.0.0.9/32", "Port Control Protocol Anycast", "RFC 7723", "True"),
        ("192.0.0.10/32", "Traversal Using Relays around NAT Anycast", "RFC 8155", "True"),
        ("192.0.0.170/32", "NAT64/DNS64 Discovery", "RFC 8880", "False"),
        ("192.0.0.171/32", "NAT64/DNS64 Discovery", "RFC 8880", "False"),
        ("192.0.2.0/24", "Documentation (TEST-NET-1)", "RFC 5737", "False"),
        ("192.31.196.0/24", "AS112-v4", "RFC 7535", "True"),
        ("192.52.193.0/24", "AMT", "RFC 7450", "True"),
        ("192.88.99.0/24", "Deprecated (6to4 Relay Anycast)", "RFC 7526", "N/A"),
        ("192.88.99.2/32", "6a44-relay anycast address", "RFC 6751", "False"),
        ("192.168.0.0/16", "Private-Use", "RFC 1918", "False"),
        ("192.175.48.0/24", "Direct Delegation AS112 Service", "RFC 7534", "True"),
        ("198.18.0.0/15", "Benchmarking", "RFC 2544", "False"),
        ("198.51.100.0/24", "Documentation (TEST-NET-2)", "RFC 5737", "False"),
        ("203.0.113.0/24", "Documentation (TEST-NET-3)", "RFC 5737", "False"),
        ("240.0.0.0/4", "Reserved", "RFC 1112", "False"),
        ("255.255.255.255/32", "Limited Broadcast", "RFC 919", "False"),
    ]
)
"""The IANA IPv4 Special-Purpose Address Registry (iana-ipv4-special-registry), every row."""

IPV6_SPECIAL = _rows(
    [
        # (Address Block, Name, RFC, Globally Reachable) — iana-ipv6-special-registry
        ("::1/128", "Loopback Address", "RFC 4291", "False"),
        ("::/128", "Unspecified Address", "RFC 4291", "False"),
        ("::ffff:0:0/96", "IPv4-mapped Address", "RFC 4291", "False"),
        ("64:ff9b::/96", "IPv4-IPv6 Translat.", "RFC 6052", "True"),
        ("64:ff9b:1::/48", "IPv4-IPv6 Translat.", "RFC 8215", "False"),
        ("100::/64", "Discard-Only Address Block", "RFC 6666", "False"),
        ("100:0:0:1::/64", "Dummy IPv6 Prefix", "RFC 9780", "False"),
        ("2001::/23", "IETF Protocol Assignments", "RFC 2928", "False"),
        ("2001::/32", "TEREDO", "RFC 4380", "N/A"),
        ("2001:1::1/128", "Port Control Protocol Anycast", "RFC 7723", "True"),
        ("2001:1::2/128", "Traversal Using Relays around NAT Anycast", "RFC 8155", "True"),
        ("2001:1::3/128", "DNS-SD Service Registration Protocol Anycast", "RFC 9665", "True"),
        ("2001:2::/48", "Benchmarking", "RFC 5180", "False"),
        ("2001:3::/32", "AMT", "RFC 7450", "True"),
        ("2001:4:112::/48", "AS112-v6", "RFC 7535", "True"),
        ("2001:10::/28", "Deprecated (previously ORCHID)", "RFC 4843", "N/A"),
        ("2001:20::/28", "ORCHIDv2", "RFC 7343", "True"),
        ("2001:30::/28", "Drone Remote ID Protocol Entity Tags (DETs) Prefix", "RFC 9374", "True"),
        ("2001:db8::/32", "Documentation", "RFC 3849", "False"),
        ("2002::/16", "6to4", "RFC 3056", "N/A"),
        ("2620:4f:8000::/48", "Direct Delegation AS112 Service", "RFC 7534", "True"),
        ("3fff::/20", "Documentation", "RFC 9637", "False"),
        ("5f00::/16", "Segment Routing (SRv6) SIDs", "RFC 9602", "False"),
        ("fc00::/7", "Unique-Local", "RFC 4193", "False"),
        ("fe80::/10", "Link-Local Unicast", "RFC 4291", "False"),
    ]
)
"""The IANA IPv6 Special-Purpose Address Registry (iana-ipv6-special-registry), every row."""

MULTICAST_V4 = ipaddress.ip_network("224.0.0.0/4")  # RFC 5771
MULTICAST_V6 = ipaddress.ip_network("ff00::/8")  # RFC 4291 §2.7
GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")  # RFC 4291 §2.4, IANA IPv6 address space registry
NAT64_WKP = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 §2.1: the low 32 bits are the IPv4 address
SIXTOFOUR = ipaddress.ip_network("2002::/16")  # RFC 3056: bits 16-47 are the IPv4 address


def special_range(ip: IPAddress) -> SpecialRange | None:
    """The most specific registry row containing ``ip`` (None when no row does)."""
    best: SpecialRange | None = None
    for row in IPV4_SPECIAL if ip.version == 4 else IPV6_SPECIAL:
        if ip in row.network and (best is None or row.network.prefixlen > best.network.prefixlen):
            best = row
    return best


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches: IPv4-mapped, NAT64 well-known prefix, or 6to4."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in NAT64_WKP:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIXTOFOUR:
        return ip.sixtofour
    return None


class SsrfError(ValueError):
    """The URL or address may not be the target of a webhook."""


@dataclass(frozen=True)
class AddressPolicy:
    """Refuses addresses that are not globally reachable, except ranges explicitly opened
    (``WEBHOOK_ALLOWED_CIDRS``)."""

    allowed: tuple[Network, ...] = ()
    allow_http: bool = False

    def refusal(self, ip: IPAddress) -> str | None:
        """Why ``ip`` is refused, or None if it may be contacted (see the module docstring for the rules)."""
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return None
        if isinstance(ip, ipaddress.IPv6Address):
            inner = embedded_ipv4(ip)
            if inner is not None:
                why = self.refusal(inner)
                if why:
                    return f"embeds an IPv4 address that {why}"
                if ip in NAT64_WKP:  # "True" in the registry: the translator reaches the embedded address
                    return None
                if any(inner in net for net in self.allowed if net.version == 4):
                    return None  # an opened IPv4 range, written in IPv4-mapped or 6to4 form
                kind = "an IPv4-mapped" if ip.ipv4_mapped is not None else "a 6to4"
                return f"is {kind} address, which the IANA special-purpose registry marks as not globally reachable"
        if ip in (MULTICAST_V4 if ip.version == 4 else MULTICAST_V6):
            return "is a multicast address"
        row = special_range(ip)
        if row is not None:
            if row.globally_reachable == "True":
                return None
            return (
                f"is in {row.network} ({row.name}, {row.rfc}), which the IANA special-purpose address registry "
                "marks as not globally reachable"
            )
        if ip.version == 6 and ip not in GLOBAL_UNICAST_V6:
            return "is outside the IPv6 global unicast space 2000::/3"
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


def check_host_name(host: str, policy: AddressPolicy) -> None:
    """Refuse a host name that is not a valid DNS name. Raises :class:`SsrfError`.

    Rules: ASCII only (internationalised names in their A-label ``xn--`` form, RFC 5890 §2.3.2.1, and such a
    label must decode under IDNA 2003 as Python's codec does); at most 253 characters without the root dot
    (RFC 1035 §2.3.4); every label 1-63 letters, digits or hyphens, not starting or ending
    with a hyphen (RFC 1035 §2.3.1, RFC 1123 §2.1; an empty label such as in ``.localhost`` is refused);
    not all-numeric (``127.1``, ``0x7f000001``), and the last label starts with a letter as every top-level
    domain does (RFC 3696 §2: a TLD is never all-numeric; none delegated starts with a digit); not
    ``localhost`` or a name under it (RFC 6761 §6.3: always
    loopback) unless the policy opens 127.0.0.1.
    """
    if not host.isascii():
        raise SsrfError("the host name is not valid: give an internationalised name in its xn-- (A-label) form")
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > MAX_HOST_LENGTH:
        raise SsrfError(f"the host name is not valid: it must be 1 to {MAX_HOST_LENGTH} characters long")
    labels = name.split(".")
    if all(_NUMERIC_LABEL.match(label) for label in labels):
        raise SsrfError("numeric host forms other than dotted-quad IPv4 are not allowed")
    if not labels[-1][:1].isalpha():
        raise SsrfError("the host name is not valid: its last label must start with a letter (a top-level domain)")
    for label in labels:
        if not label:
            raise SsrfError("the host name is not valid: it has an empty label")
        if len(label) > 63:
            raise SsrfError(f"the host name is not valid: the label {label[:20]}... is longer than 63 characters")
        if not _LABEL.match(label):
            raise SsrfError(f"the host name is not valid: {label!r} is not letters, digits and inner hyphens")
        if label.startswith("xn--"):
            try:
                label.encode("ascii").decode("idna")
            except UnicodeError as exc:
                raise SsrfError(f"the host name is not valid: {label!r} is not a valid A-label ({exc})") from None
    if labels[-1] == "localhost" and policy.refusal(ipaddress.IPv4Address("127.0.0.1")) is not None:
        raise SsrfError("localhost names always reach the loopback interface (RFC 6761)")


def check_url(url: str, policy: AddressPolicy) -> tuple[str, int]:
    """Syntax and scheme rules; returns (host, port). Raises :class:`SsrfError` (a ``ValueError``)."""
    if len(url) > MAX_URL_LENGTH:
        raise SsrfError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise SsrfError("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
        hostname = parts.hostname
    except ValueError as exc:  # bad port (non-numeric, > 65535), bad IPv6 brackets, ...
        raise SsrfError(f"the URL is not valid: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme != "https" and not (scheme == "http" and policy.allow_http):
        raise SsrfError("only https URLs are allowed" if not policy.allow_http else "only http(s) URLs are allowed")
    host = (hostname or "").lower()
    if not host:
        raise SsrfError("the URL has no host")
    if port is not None and not 1 <= port <= 65535:
        raise SsrfError(f"the port must be 1 to 65535 (RFC 6335 §6), not {port}")
    if parts.username is not None or parts.password is not None:
        raise SsrfError("credentials in the URL are not allowed; use custom headers")
    if parts.fragment:
        raise SsrfError("the URL may not have a fragment")
    ip = literal_address(host)
    if ip is None:
        if host.startswith("[") or ":" in host:
            raise SsrfError("the URL's IPv6 address is not valid")
        check_host_name(host, policy)
    else:
        policy.check_address(ip)
    return host, port or (443 if scheme == "https" else 80)


async def resolve(host: str, port: int, policy: AddressPolicy, timeout: float) -> list[IPAddress]:
    """Resolve ``host`` and keep the addresses the policy allows; refuse if none is left.

    :returns: the allowed addresses, in resolver order.
    :raises SsrfError: ``cannot resolve ...`` (DNS failure or timeout after ``timeout`` seconds), ``the host
        name is not valid ...`` (the name cannot be IDNA-encoded), or every address refused.
    """
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
    except (UnicodeError, ValueError) as exc:  # IDNA encoding of the name failed: the name is at fault
        raise SsrfError(f"the host name is not valid: {exc}") from exc
    found: list[IPAddress] = []
    reasons: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        try:
            addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        except ValueError:
            continue  # not an IP address (another family): never a target
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
