"""Rate limits hold across processes, honour trusted proxies only, and fail open when Redis dies."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from novapulse_devkit.servers import ServerProcess
from novapulse_devkit.testing import ServiceProcess
from novapulse_runtime.ratelimit import client_ip, client_key, client_network
from novapulse_runtime.settings import parse_networks

from .conftest import SAMPLE

pytestmark = pytest.mark.integration

LIMITED = "/api/v1/sample/limited"


async def test_limit_shared_by_two_processes(
    spawn: Callable[..., ServiceProcess], http: aiohttp.ClientSession, names: str
) -> None:
    env = {"SERVICE_NAME": names.replace("t", "s", 1)}
    a = spawn(SAMPLE, "api", env=env)
    b = spawn(SAMPLE, "api", env=env)
    statuses = []
    for i in range(8):
        async with http.get((a if i % 2 else b).url + LIMITED) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert r.headers["RateLimit-Remaining"] == "0"
                assert r.headers["RateLimit-Limit"] == "5"
                assert r.content_type == "application/problem+json"
            else:
                assert int(r.headers["RateLimit-Remaining"]) == 4 - i
    assert statuses == [200] * 5 + [429] * 3


async def test_forwarded_for_only_from_trusted_proxies(
    spawn: Callable[..., ServiceProcess], http: aiohttp.ClientSession, names: str
) -> None:
    untrusted = spawn(SAMPLE, "api", env={"SERVICE_NAME": names + "u"})
    # An untrusted peer cannot buy fresh buckets by forging X-Forwarded-For.
    codes = []
    for i in range(7):
        async with http.get(untrusted.url + LIMITED, headers={"X-Forwarded-For": f"203.0.113.{i}"}) as r:
            codes.append(r.status)
    assert codes.count(429) == 2

    trusted = spawn(SAMPLE, "api", env={"SERVICE_NAME": names + "p", "TRUSTED_PROXIES": "127.0.0.0/8"})
    for i in range(7):
        async with http.get(trusted.url + LIMITED, headers={"X-Forwarded-For": f"203.0.113.{i}"}) as r:
            assert r.status == 200  # each forwarded client has its own bucket
    for _ in range(5):
        async with http.get(trusted.url + LIMITED, headers={"X-Forwarded-For": "198.51.100.7, 127.0.0.1"}) as r:
            assert r.status == 200
    async with http.get(trusted.url + LIMITED, headers={"X-Forwarded-For": "198.51.100.7"}) as r:
        assert r.status == 429


async def test_fail_open_when_redis_dies(
    spawn: Callable[..., ServiceProcess],
    server_factory: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    dep = server_factory("redis")
    svc = spawn(SAMPLE, "api", env={"REDIS_URL": f"redis://127.0.0.1:{dep.port}/0"})
    for _ in range(5):
        async with http.get(svc.url + LIMITED) as r:
            assert r.status == 200
    async with http.get(svc.url + LIMITED) as r:
        assert r.status == 429
    dep.kill()
    for _ in range(10):
        async with http.get(svc.url + LIMITED) as r:
            assert r.status == 200  # never an error to the caller
    async with http.get(svc.url + "/api/v1/metrics") as r:
        text = await r.text()
    assert 'novapulse_rate_limit_fail_open_total{limit="limited-ip"} 10.0' in text
    warnings = [line for line in svc.logs().splitlines() if "rate limiter failing open" in line]
    assert len(warnings) == 1  # logged once per interval, not per request


@pytest.mark.unit
def test_client_network_groups_ipv6_by_prefix_and_unmaps_ipv4() -> None:
    assert client_network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_network("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert client_network("2001:db8:1:2:aaaa::1", 48) == "2001:db8:1::/48"
    assert client_network("2001:db8::1", 128) == "2001:db8::1/128"
    assert client_network("::ffff:203.0.113.5") == "203.0.113.5"  # IPv4-mapped: the IPv4 address
    assert client_network("203.0.113.5") == "203.0.113.5"
    assert client_network("not-an-address") == "not-an-address"


async def test_ipv6_clients_share_their_network_bucket(
    spawn: Callable[..., ServiceProcess], http: aiohttp.ClientSession, names: str
) -> None:
    env = {"SERVICE_NAME": names + "6", "TRUSTED_PROXIES": "127.0.0.0/8"}
    svc = spawn(SAMPLE, "api", env=env)
    # six addresses of one /64: one bucket of 5
    codes = []
    for i in range(6):
        async with http.get(svc.url + LIMITED, headers={"X-Forwarded-For": f"2001:db8:7:7::{i + 1:x}"}) as r:
            codes.append(r.status)
    assert codes == [200] * 5 + [429]
    async with http.get(svc.url + LIMITED, headers={"X-Forwarded-For": "2001:db8:7:8::1"}) as r:
        assert r.status == 200  # the next /64 is another client
    # IPv4-mapped IPv6 and the IPv4 address are one client
    for _ in range(5):
        async with http.get(svc.url + LIMITED, headers={"X-Forwarded-For": "::ffff:198.51.100.9"}) as r:
            assert r.status == 200
    async with http.get(svc.url + LIMITED, headers={"X-Forwarded-For": "198.51.100.9"}) as r:
        assert r.status == 429

    wide = spawn(SAMPLE, "api", env={**env, "SERVICE_NAME": names + "w", "RATE_LIMIT_IPV6_PREFIX": "128"})
    for i in range(6):
        async with http.get(wide.url + LIMITED, headers={"X-Forwarded-For": f"2001:db8:9:9::{i + 1:x}"}) as r:
            assert r.status == 200  # /128 configured: every address its own bucket


class _Peer:
    """The transport side of a request: only the peer address is read."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get_extra_info(self, name: str, default: object = None) -> object:
        return (self.address, 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


@pytest.mark.unit
def test_a_proxy_seen_as_ipv4_mapped_ipv6_is_still_trusted() -> None:
    from aiohttp.test_utils import make_mocked_request

    trusted = parse_networks("127.0.0.0/8")
    headers = {"X-Forwarded-For": "2001:db8:1:2::99"}
    mapped = make_mocked_request("GET", "/", headers=headers, transport=_Peer("::ffff:127.0.0.1"))
    assert client_ip(mapped, trusted) == "2001:db8:1:2::99"
    assert client_key(mapped, trusted) == "2001:db8:1:2::/64"
    stranger = make_mocked_request("GET", "/", headers=headers, transport=_Peer("::ffff:203.0.113.1"))
    assert client_key(stranger, trusted) == "203.0.113.1"  # untrusted peer: its own (unmapped) address
