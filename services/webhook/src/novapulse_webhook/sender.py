"""One HTTP attempt: POST the signed body to a vetted address, read a bounded answer, never follow
redirects, never hang past the timeout."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from .constants import READ_RESPONSE_BYTES, STORED_RESPONSE_BYTES
from .ssrf import AddressPolicy, GuardedResolver, SsrfError, check_url

_CHECK_CACHE = 10_000
MAX_ERROR_CHARS = 500
MAX_HEADER_CHARS = 200

log = logging.getLogger("novapulse.webhook.sender")


def clean_text(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters and made storable: lone surrogates (aiohttp decodes peer headers
    with ``surrogateescape``; exception texts may quote them) become U+FFFD, since BSON strings must be UTF-8."""
    value = value[:limit]
    try:  # surrogate escapes stand for the peer's raw bytes: recover them, then replace what is not UTF-8
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # other lone surrogates: each becomes U+FFFD characters
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def decode_body(raw: bytes, charset: str | None) -> str:
    """A receiver's answer as text: in its declared ``charset`` (RFC 9110 §8.3.1) when Python knows it as a
    text encoding, else UTF-8; bytes that do not decode become U+FFFD. Never raises."""
    if charset:
        with contextlib.suppress(Exception):  # unknown or non-text codec (``base64``), or one that fails here
            codecs.lookup(charset)
            return clean_text(raw.decode(charset, errors="replace"), len(raw))
    return raw.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class AttemptResult:
    """What the receiver did (or why there was no answer)."""

    status: int | None
    body: str | None
    error: str | None
    duration_ms: float
    retry_after: str | None = None
    refused: bool = False


def _refusal(exc: BaseException) -> SsrfError | None:
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, SsrfError):
            return seen
        seen = getattr(seen, "os_error", None) or seen.__cause__ or seen.__context__
    return None


class Sender:
    """Owns the aiohttp client session; its connector resolves through :class:`GuardedResolver`."""

    def __init__(self, policy: AddressPolicy, dns_timeout: float = 5.0) -> None:
        self.policy = policy
        self._dns_timeout = dns_timeout
        self._session: aiohttp.ClientSession | None = None
        self._checked: dict[str, str | None] = {}

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy, self._dns_timeout),
                limit=0,
                ttl_dns_cache=10,
                enable_cleanup_closed=True,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                trust_env=False,  # no proxy from the environment: the checked address is the one we reach
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing leaks from one endpoint to another
                auto_decompress=False,
            )
            # The delivery code opens its own client span and injects traceparent itself; the generic aiohttp
            # instrumentation would add a second span per attempt and a third of the attempt's CPU cost.
            with contextlib.suppress(Exception):
                from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

                AioHttpClientInstrumentor.uninstrument_session(self._session)
        return self._session

    async def send(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> AttemptResult:
        """POST ``body`` to ``url``; never raises (except on cancellation): every fault of the peer or of the
        network — refused address, timeout after ``timeout`` seconds, bad status line, bad framing or
        content length, undecodable body or headers — is an :class:`AttemptResult` with ``status`` None and
        the reason in ``error``."""
        try:
            return await self._send(url, headers, body, timeout)
        except Exception as exc:  # a fault no narrower clause expected: still a failed attempt, never a crash
            log.exception("unexpected error during a webhook attempt", extra={"url": url})
            return AttemptResult(None, None, clean_text(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS), 0.0)

    async def _send(self, url: str, headers: Mapping[str, str], body: bytes, timeout: float) -> AttemptResult:
        started = time.perf_counter()

        def took() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        if url not in self._checked:  # IP literals are not resolved by aiohttp: check them here
            try:
                check_url(url, self.policy)
                verdict = None
            except SsrfError as exc:
                verdict = str(exc)
            if len(self._checked) > _CHECK_CACHE:
                self._checked.clear()
            self._checked[url] = verdict
        refusal = self._checked[url]
        if refusal is not None:
            return AttemptResult(None, None, f"refused: {refusal}", took(), refused=True)
        try:
            async with asyncio.timeout(timeout):
                async with self._client().post(
                    url,
                    data=body,
                    headers=dict(headers),
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout),
                ) as resp:
                    # Read the answer to its end (or the first 64 KiB) within the same deadline: a body
                    # dripped slowly is a timed-out attempt, a huge one is cut short.
                    raw = bytearray()
                    while len(raw) < READ_RESPONSE_BYTES:
                        chunk = await resp.content.read(READ_RESPONSE_BYTES - len(raw))
                        if not chunk:
                            break
                        raw += chunk
                    try:
                        charset = resp.charset
                    except Exception:  # a Content-Type header that does not parse
                        charset = None
                    text = decode_body(bytes(raw[:STORED_RESPONSE_BYTES]), charset)
                    retry_after = resp.headers.get("Retry-After")
                    if retry_after is not None:
                        retry_after = clean_text(retry_after, MAX_HEADER_CHARS)
                    return AttemptResult(resp.status, text, None, took(), retry_after)
        except TimeoutError:
            return AttemptResult(None, None, f"timed out after {timeout:g}s", took())
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            refused = _refusal(exc)
            if refused is not None:
                return AttemptResult(None, None, f"refused: {refused}", took(), refused=True)
            return AttemptResult(None, None, clean_text(f"{type(exc).__name__}: {exc}", MAX_ERROR_CHARS), took())

    async def close(self) -> None:
        """Close the HTTP client session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
