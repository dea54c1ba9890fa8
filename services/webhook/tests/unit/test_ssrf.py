"""The SSRF guard: internal addresses refused, numeric host tricks refused, explicit ranges opened."""

from __future__ import annotations

import ipaddress
import re

import pytest

from novapulse_webhook.models import URL_PATTERN
from novapulse_webhook.ssrf import (
    IPV4_SPECIAL,
    IPV6_SPECIAL,
    AddressPolicy,
    IPAddress,
    SpecialRange,
    SsrfError,
    check_url,
    resolve,
)

pytestmark = pytest.mark.unit
STRICT = AddressPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",  # cloud metadata
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "0.0.0.0",
        "100.64.0.1",  # shared (CGNAT)
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
        "ff02::1",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert STRICT.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert STRICT.refusal(ipaddress.ip_address(address)) is None


def test_allowed_cidrs_open_only_their_range() -> None:
    policy = AddressPolicy((ipaddress.ip_network("127.0.0.0/8"),), allow_http=True)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) is not None
    assert policy.refusal(ipaddress.ip_address("::1")) is not None


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",  # http not allowed by default
        "ftp://example.com/",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://[::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://2130706433/",  # decimal 127.0.0.1
        "https://0177.0.0.1/",  # octal
        "https://0x7f.0.0.1/",  # hex
        "https://0x7f000001/",
        "https://127.1/",
        "https://user:pw@example.com/",
        "https://exa mple.com/",
        "https://example.com/#frag",
        "https:///path",
        "https://example.com:99999/",
        "https://" + "a" * 3000 + ".com/",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(SsrfError):
        check_url(url, STRICT)


def test_good_urls_pass() -> None:
    assert check_url("https://hooks.example.com/x?y=1", STRICT) == ("hooks.example.com", 443)
    assert check_url("https://8.8.8.8:8443/", STRICT) == ("8.8.8.8", 8443)
    assert check_url("http://example.com/", AddressPolicy(allow_http=True)) == ("example.com", 80)


async def test_names_resolving_to_loopback_are_refused_unless_allowed() -> None:
    with pytest.raises(SsrfError, match="refused"):
        await resolve("localhost", 443, STRICT, 5)
    opened = AddressPolicy((ipaddress.ip_network("127.0.0.0/8"),))
    found = await resolve("localhost", 443, opened, 5)
    assert ipaddress.ip_address("127.0.0.1") in found
    assert all(a.version == 4 for a in found), "::1 is not in the opened range"


def _inside(row: SpecialRange) -> list[IPAddress]:
    """The first and last address of a registry row, and one in the middle."""
    net = row.network
    return [net.network_address, net[net.num_addresses // 2], net.broadcast_address]


@pytest.mark.parametrize("row", [*IPV4_SPECIAL, *IPV6_SPECIAL], ids=lambda r: str(r.network))
def test_every_iana_special_purpose_row_decides_by_its_globally_reachable_column(row: SpecialRange) -> None:
    """Each row of iana-ipv4-special-registry / iana-ipv6-special-registry: True may be contacted, False and
    N/A may not. Addresses covered by a more specific row (192.0.0.9 inside 192.0.0.0/24) follow that row;
    IPv4 embedded in IPv6 (IPv4-mapped, NAT64 64:ff9b::/96) follows the embedded address."""
    rows = IPV4_SPECIAL if row.network.version == 4 else IPV6_SPECIAL
    for ip in _inside(row):
        specific = max((r for r in rows if ip in r.network), key=lambda r: r.network.prefixlen)
        if specific is not row:
            continue
        why = STRICT.refusal(ip)
        if row.network == ipaddress.ip_network("64:ff9b::/96"):
            inner = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            assert (why is None) == (STRICT.refusal(inner) is None), (ip, why)
        elif row.globally_reachable == "True":
            assert why is None, (ip, why)
        else:
            assert why is not None, ip


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        # where Python 3.11's ipaddress.is_global disagrees with the registries
        ("64:ff9b:1::1", False),  # RFC 8215 local-use NAT64: is_global True in 3.11
        ("5f00::1", False),  # SRv6 SIDs (RFC 9602): is_global True in 3.11
        ("3fff::1", False),  # documentation (RFC 9637): is_global True in 3.11
        ("100:0:0:1::1", False),  # dummy prefix (RFC 9780)
        ("2001:1::1", True),  # PCP anycast: is_global False in 3.11
        ("2001:1::2", True),  # TURN anycast
        ("2001:3::1", True),  # AMT
        ("2001:4:112::1", True),  # AS112-v6
        ("2001:20::1", True),  # ORCHIDv2
        ("2001:30::1", True),  # DETs
        ("192.0.0.9", True),  # PCP anycast inside 192.0.0.0/24
        ("192.0.0.8", False),
        ("192.0.0.170", False),
        ("192.88.99.2", False),
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::808:808", True),  # NAT64 of 8.8.8.8
        ("2002:808:808::1", False),  # 6to4: N/A in the registry
        ("2001::1", False),  # Teredo: N/A
        ("4000::1", False),  # outside 2000::/3
        ("::8.8.8.8", False),  # deprecated IPv4-compatible form
        ("ff0e::1", False),  # multicast
        ("2a00:1450:4001::1", True),  # ordinary global unicast
    ],
)
def test_gaps_of_python_is_global_are_closed_by_the_table(address: str, allowed: bool) -> None:
    assert (STRICT.refusal(ipaddress.ip_address(address)) is None) is allowed


@pytest.mark.parametrize(
    "url",
    [
        "https://.localhost/",  # empty label: IDNA UnicodeError before the fix
        "https://" + "a" * 64 + ".example.com/",  # label of 64 characters
        "https://a..b.example.com/",
        "https://-a.example.com/",
        "https://a-.example.com/",
        "https://" + ".".join(["a" * 60] * 5) + "/",  # longer than 253
        "https://xn--zz.example.com/",  # not a valid A-label
        "https://bücher.example/",  # U-label: must be given as xn--
        "https://localhost/",
        "https://api.localhost/",
        "https://example.com:0/",  # port 0
        "https://example.com:65536/",
        "https://example.com:-1/",
        "https://example.com:abc/",
        "https://host.1abc/",  # the top-level label starts with a digit
        "https://under_score.example.com/",
        "https://[::1/",
        "https://[not-an-ip]/",
    ],
)
def test_invalid_names_and_ports_are_refused(url: str) -> None:
    with pytest.raises(SsrfError):
        check_url(url, STRICT)


def test_valid_names_pass() -> None:
    assert check_url("https://xn--bcher-kva.example/", STRICT)[0] == "xn--bcher-kva.example"
    assert check_url("https://" + "a" * 63 + ".example.com:1/", STRICT)[1] == 1
    assert check_url("https://example.com.:65535/", STRICT) == ("example.com.", 65535)


async def test_resolve_turns_idna_failures_into_a_refusal() -> None:
    with pytest.raises(SsrfError, match="not valid"):
        await resolve(".localhost", 443, STRICT, 5)
    with pytest.raises(SsrfError, match="not valid"):
        await resolve("a" * 64 + ".example.com", 443, STRICT, 5)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/",
        "https://a-b.c.example:8443/x?y=1",
        "https://example.com./",
        "https://xn--bcher-kva.example/",
        "https://1.2.3.4/",
        "https://[2606:4700::1111]/",
        "https://[::ffff:8.8.8.8]:8443/",
        "https://.localhost/",
        "https://a..b.example.com/",
        "https://-a.example.com/",
        "https://host.1abc/",
        "https://under_score.example.com/",
        "https://127.1/",
        "https://0x7f000001/",
        "https://2130706433/",
        "https://example.com:0/",
        "https://example.com:65536/",
        "https://[1::2::3]/",
        "https://[aab]/",
    ],
)
def test_the_documented_url_pattern_agrees_with_the_check(url: str) -> None:
    """The OpenAPI pattern (what clients and fuzzers read) and the check the service runs give one answer."""
    open_policy = AddressPolicy(allowed=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
    try:
        check_url(url, open_policy)
        accepted = True
    except SsrfError:
        accepted = False
    assert bool(re.match(URL_PATTERN, url)) is accepted
