"""The delivery worker's endpoint cache: endpoints and organisations' enabled endpoints, loaded once however
many ask at once (single flight), and trusted only while the organisation's endpoint version is current.

Read-your-writes: a cached entry carries the organisation's endpoint version (see versions.py) and is used
only while that version is still current, so an event that happens after an API write answered sees the
write (new endpoint, new filter, rotated secret, disabled, headers, rate limit). Without Redis the version is
unknown and entries live ``ENDPOINT_CACHE_TTL`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from novapulse_runtime.documents import Doc

from .constants import ENDPOINT_CACHE_TTL
from .repository import Repository
from .versions import EndpointVersions

CACHE_MAX_ENTRIES = 10_000


def make_room(cache: dict[str, Any]) -> None:
    """Bound a TTL cache (values ``(expires, ...)``, monotonic seconds): drop expired entries once it is
    full, and everything if that is not enough."""
    if len(cache) < CACHE_MAX_ENTRIES:
        return
    now = time.monotonic()
    for key in [k for k, entry in cache.items() if entry[0] <= now]:
        del cache[key]
    if len(cache) >= CACHE_MAX_ENTRIES:
        cache.clear()


class EndpointCache:
    """Endpoints as the worker sees them: one ``GET`` of the organisation's version per look-up, one
    database read per change (see the module docstring)."""

    def __init__(self, repo: Repository, versions: EndpointVersions | None = None) -> None:
        self.repo = repo
        self.versions = versions
        self._endpoints: dict[str, tuple[float, str | None, Doc | None]] = {}  # (expires, version, doc)
        self._orgs: dict[str, tuple[float, str | None, list[Doc]]] = {}
        self._loading: dict[tuple[str, ...], asyncio.Future[Any]] = {}

    async def _version(self, org_id: str) -> str | None:
        return await self.versions.current(org_id) if self.versions is not None else None

    def _fresh(self, hit: tuple[float, str | None, Any] | None, version: str | None) -> bool:
        if hit is None or hit[0] <= time.monotonic():
            return False
        return version is None or hit[1] == version

    async def endpoint(self, endpoint_id: str, org_id: str | None = None) -> Doc | None:
        """An endpoint, as current as the organisation's endpoint version (one database read however many
        ask at once); ``org_id`` is the organisation the caller expects it in (None: no version check).
        ``None`` when it does not exist. A miss with ``org_id`` is served from the organisation's enabled
        endpoints (cached, else read in one query); only an endpoint not among them (disabled, deleted,
        another organisation's) is read on its own."""
        version = await self._version(org_id) if org_id else None
        hit = self._endpoints.get(endpoint_id)
        if self._fresh(hit, version) and hit is not None:
            doc: Doc | None = hit[2]
            return doc
        if org_id:
            # Reload the organisation's enabled endpoints (one query, shared by every attempt that missed)
            # rather than this one endpoint: when the entries of an organisation with many endpoints expire
            # together, their attempts would otherwise read them back one find_one each.
            for found in await self._org_endpoints(org_id, version):
                if found["_id"] == endpoint_id:
                    org_hit = self._orgs.get(org_id)
                    if org_hit is not None:  # as fresh as the list it came from
                        self._endpoints[endpoint_id] = (org_hit[0], org_hit[1], found)
                    return found
        doc = await self._single_flight(("ep", endpoint_id, version or ""), self._load_endpoint(endpoint_id, version))
        return doc

    async def _load_endpoint(self, endpoint_id: str, version: str | None) -> Doc | None:
        doc = await self.repo.endpoint(endpoint_id)
        make_room(self._endpoints)
        self._endpoints[endpoint_id] = (time.monotonic() + ENDPOINT_CACHE_TTL, version, doc)
        return doc

    async def org_endpoints(self, org_id: str) -> list[Doc]:
        """An organisation's enabled endpoints, cached like :meth:`endpoint`."""
        return await self._org_endpoints(org_id, await self._version(org_id))

    async def _org_endpoints(self, org_id: str, version: str | None) -> list[Doc]:
        hit = self._orgs.get(org_id)
        if self._fresh(hit, version) and hit is not None:
            cached: list[Doc] = hit[2]
            return cached
        docs: list[Doc] = await self._single_flight(("org", org_id, version or ""), self._load_org(org_id, version))
        return docs

    async def _load_org(self, org_id: str, version: str | None) -> list[Doc]:
        docs = await self.repo.org_endpoints(org_id)
        expires = time.monotonic() + ENDPOINT_CACHE_TTL
        make_room(self._orgs)
        make_room(self._endpoints)
        self._orgs[org_id] = (expires, version, docs)
        for d in docs:
            self._endpoints[d["_id"]] = (expires, version, d)
        return docs

    async def _single_flight(self, key: tuple[str, ...], load: Coroutine[Any, Any, Any]) -> Any:
        running = self._loading.get(key)
        if running is not None and not running.done():
            load.close()
            return await asyncio.shield(running)
        task = asyncio.ensure_future(load)
        self._loading[key] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._loading.pop(key, None)

    def forget(self, endpoint_id: str) -> None:
        """Drop the cached endpoint (the worker changed it)."""
        self._endpoints.pop(endpoint_id, None)

    async def changed(self, endpoint: Doc) -> None:
        """After the worker changed ``endpoint`` (disabled it): forget it here and tell every worker (a new
        endpoint version for its organisation)."""
        self.forget(endpoint["_id"])
        if self.versions is not None:
            await self.versions.bump(endpoint["org_id"])
