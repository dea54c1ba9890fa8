"""Calls to the services' public HTTP APIs on behalf of the signed-in user.

Every call carries the user's access token, the request id of the page that made it and the browser's
address (``X-Forwarded-For``, :func:`forwarded_for`: the services' rate limits and lockouts then see the
user, not the console, when the console's and the gateway's addresses are in their ``TRUSTED_PROXIES``).
An access token about to expire, or answered 401, is exchanged once for a new pair with the refresh
token; a refresh the auth service refuses ends the session (:class:`SessionExpired`). Every error answer
becomes :class:`ApiProblem`, whose ``message`` is meant for people (RFC 9457 ``title`` / ``detail`` and each
field error).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from .constants import API_PREFIX
from .session import Session

log = logging.getLogger("novapulse.console.client")

REFRESH_MARGIN = 30.0
"""Seconds before its expiry an access token is refreshed ahead of a call."""
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class ApiProblem(Exception):
    """An API answered an error (``status`` ≥ 400) or could not be reached (``status`` 503)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        errors: list[dict[str, Any]] | None = None,
        retry_after: str = "",
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.retry_after = retry_after

    @property
    def message(self) -> str:
        """One readable sentence (plus each field's fault) for a page."""
        text = self.detail or self.title
        faults = []
        for err in self.errors[:10]:
            where = err.get("field") or ".".join(str(p) for p in err.get("loc", []) if p != "body")
            msg = err.get("message") or err.get("msg") or ""
            faults.append(f"{where}: {msg}" if where else str(msg))
        if faults:
            text = f"{text} — " + "; ".join(faults)
        if self.retry_after:
            text += f" (try again in {self.retry_after} s)"
        return text

    def field_errors(self) -> dict[str, str]:
        """``{field: message}`` for a form to show beside its inputs."""
        out: dict[str, str] = {}
        for err in self.errors:
            field = err.get("field") or ".".join(str(p) for p in err.get("loc", []) if p != "body")
            if field:
                out.setdefault(str(field), str(err.get("message") or err.get("msg") or ""))
        return out


class SessionExpired(Exception):
    """The user's session can no longer be used (refresh refused, or never signed in)."""


class ApiClient:
    """One pooled HTTP client for every service the console is configured for."""

    def __init__(self, urls: dict[str, str], timeout: float, operations_token: str = "") -> None:
        self.urls = urls
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.operations_token = operations_token
        self._http: aiohttp.ClientSession | None = None

    def has(self, service: str) -> bool:
        return service in self.urls

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self.timeout, raise_for_status=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def url(self, service: str, path: str) -> str:
        if service not in self.urls:
            raise ApiProblem(404, "Not available", f"The {service} service is not part of this installation.")
        return f"{self.urls[service]}{API_PREFIX[service]}{path}"

    async def call(
        self,
        request: web.Request,
        service: str,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        anonymous: bool = False,
        operator: bool = False,
        raw: bool = False,
    ) -> Any:
        """Call ``method path`` of ``service`` and return the decoded JSON answer (``None`` for 204).

        :param anonymous: send no token (sign-in, registration).
        :param operator: send ``OPERATIONS_TOKEN`` instead of the user's token (event-bus pages; the page
            must have checked that the user is an operator).
        :param raw: return ``(status, headers, body bytes)`` instead of decoding JSON.
        :raises ApiProblem: an error answer, or the service unreachable (503).
        :raises SessionExpired: the user's tokens can no longer be refreshed.
        """
        session: Session = request["session"]
        headers = {"X-Request-ID": request.get("request_id", "") or "", "Accept": "application/json"}
        if chain := forwarded_for(request):
            headers["X-Forwarded-For"] = chain
        if operator:
            if not self.operations_token:
                raise ApiProblem(404, "Not available", "OPERATIONS_TOKEN is not configured for the console.")
            headers["Authorization"] = f"Bearer {self.operations_token}"
        elif not anonymous:
            if not session.signed_in:
                raise SessionExpired
            if session.access_expires_at - REFRESH_MARGIN < time.time():
                await self.refresh(request, session)
            headers["Authorization"] = f"Bearer {session.access_token}"
        clean = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        status, answer_headers, body = await self._send(method, self.url(service, path), headers, json_body, clean)
        if status == 401 and not anonymous and not operator:
            await self.refresh(request, session)
            headers["Authorization"] = f"Bearer {session.access_token}"
            status, answer_headers, body = await self._send(method, self.url(service, path), headers, json_body, clean)
            if status == 401:
                raise SessionExpired
        if raw:
            return status, answer_headers, body
        if status >= 400:
            raise problem_of(status, answer_headers, body)
        if status == 204 or not body:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise ApiProblem(502, "Bad answer", f"The {service} service answered something that is not JSON.") from exc

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: Any, params: dict[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            async with self.http.request(method, url, headers=headers, json=body, params=params) as resp:
                data = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if len(data) > MAX_ANSWER_BYTES:
                    raise ApiProblem(502, "Answer too large", "The service's answer was larger than the console reads.")
                return resp.status, dict(resp.headers), data
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("service unreachable", extra={"url": url.split("?")[0], "error": repr(exc)[:200]})
            raise ApiProblem(503, "Service unavailable", "A service the page needs did not answer; try again.") from exc

    async def refresh(self, request: web.Request, session: Session) -> None:
        """Exchange the refresh token for a new pair (auth ``POST /refresh``), or raise :class:`SessionExpired`."""
        if not session.refresh_token:
            raise SessionExpired
        headers = {"X-Request-ID": request.get("request_id", "") or ""}
        if chain := forwarded_for(request):
            headers["X-Forwarded-For"] = chain
        status, _h, body = await self._send(
            "POST", self.url("auth", "/refresh"), headers, {"refresh_token": session.refresh_token}, {}
        )
        if status != 200:
            raise SessionExpired
        pair = json.loads(body)
        session.access_token = pair["access_token"]
        session.refresh_token = pair["refresh_token"]
        session.access_expires_at = time.time() + float(pair.get("expires_in", 0))
        request["session_changed"] = True


def forwarded_for(request: web.Request) -> str:
    """The ``X-Forwarded-For`` the console sends: the chain it received with its own peer appended, as a
    proxy does. Behind the gateway the peer is the gateway, so the services (trusting the gateway's and the
    console's addresses, ``TRUSTED_PROXIES``) read right to left past both and find the browser; a chain
    forged by a direct caller stops at that caller's own address."""
    hops = [h.strip() for line in request.headers.getall("X-Forwarded-For", []) for h in line.split(",") if h.strip()]
    if request.remote:
        hops.append(request.remote)
    return ", ".join(hops)


def problem_of(status: int, headers: dict[str, str], body: bytes) -> ApiProblem:
    """An :class:`ApiProblem` from an error answer (RFC 9457 problem+json when it is one)."""
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    found = doc.get("errors")
    errors: list[Any] = found if isinstance(found, list) else []
    return ApiProblem(
        status,
        str(doc.get("title") or f"HTTP {status}"),
        str(doc.get("detail") or ""),
        [e for e in errors if isinstance(e, dict)],
        retry_after=headers.get("Retry-After", ""),
    )
