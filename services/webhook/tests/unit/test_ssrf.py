"""The SSRF guard: internal addresses refused, numeric host tricks refused, explicit ranges opened."""

from __future__ import annotations

import ipaddress

import pytest

from novapulse_webhook.ssrf import AddressPolicy, SsrfError, check_url, resolve

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
