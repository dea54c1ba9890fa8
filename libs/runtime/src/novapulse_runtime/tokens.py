"""Access-token verification every service uses: JWTs signed by the auth service, checked against its JWKS.

- The JWKS is fetched lazily, cached, and refetched when a token names an unknown ``kid`` (at most once per
  ``min_refresh_interval``, so garbage ``kid`` values cannot make us hammer the auth service). That GET is
  idempotent, so a transient failure (connection error, timeout, 5xx) is retried in-process with
  ``aiohttp-retry``: :data:`JWKS_ATTEMPTS` attempts, pauses doubling from :data:`JWKS_FIRST_PAUSE`, each
  attempt cut at :data:`JWKS_ATTEMPT_TIMEOUT` and the whole fetch at :data:`JWKS_FETCH_BUDGET` seconds, so
  a request waiting for keys never hangs: past that it is refused as signed by an unknown key (401).
- Only asymmetric algorithms on an allow-list (EdDSA, RS256); the algorithm must match the key's type, so
  ``alg=none`` and HS256-signed-with-the-public-key are refused. ``jku``/``jwk``/``x5u``/``x5c`` headers are
  refused (we never take keys from the token). ``typ`` must be ``at+jwt``; ``iss``, ``aud``, ``exp``, ``iat``,
  ``sub``, ``jti``, ``org`` and ``role`` are required; expired and not-yet-valid tokens are refused
  (RFC 9068 §4, RFC 8725).
- Verified tokens are remembered (:data:`VERIFIED_TOKENS`, per process), as gateways' JWT filters do (Envoy's
  ``jwt_cache_config``): a client sends the same token with every request until it expires, and the
  signature and claim checks of a repeat cost ~0.2 ms of CPU each time. A remembered token is taken again only
  while the key that verified it is still the JWKS's key for its ``kid`` (a refetched or rotated JWKS forgets
  it) and while ``exp`` (with the leeway) has not passed — the only check whose answer changes with time in
  that direction (``nbf`` and ``iat`` once met stay met). The revocation check below runs on every request.
- Revocation: with a :class:`~novapulse_runtime.revocation.RevocationList` (every service's runtime has one),
  a token must name its session (``sid``) and is refused (401) once that session is revoked — honoured
  within one second in every process; a 503 when revocation cannot be checked (see ``revocation.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import ClientResponse, web
from aiohttp_retry import ExponentialRetry, RetryClient

from .problems import ProblemError
from .revocation import RevocationList

if TYPE_CHECKING:
    import jwt

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = ("EdDSA", "RS256")
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - a media type, not a secret
_FORBIDDEN_HEADERS = ("jku", "jwk", "x5u", "x5c", "crit")
_KEY_ALGS = {"OKP": "EdDSA", "RSA": "RS256"}
MAX_TOKEN_BYTES = 8192
VERIFIED_TOKENS = 1024
"""Verified tokens a :class:`TokenVerifier` remembers (at most 8 KiB each); the oldest is forgotten first."""

JWKS_ATTEMPTS = 3
"""Attempts of one JWKS fetch (the first and two retries)."""
JWKS_FIRST_PAUSE = 0.2
"""Seconds between the first and the second attempt; each later pause doubles (0.2 s, 0.4 s)."""
JWKS_ATTEMPT_TIMEOUT = 2.0
"""Seconds one attempt may take (connection, answer and body)."""
JWKS_FETCH_BUDGET = 5.0
"""Seconds a whole fetch, retries and pauses included, may take; a request needing the keys waits no longer."""


class _JwksRetry(ExponentialRetry):
    """Retries a JWKS GET after a connection error, a timeout or a 5xx answer, with pauses of
    ``JWKS_FIRST_PAUSE * 2**(n - 1)`` seconds after attempt n; the answer being retried is closed first so
    its connection goes back to the pool."""

    def __init__(self) -> None:
        # aiohttp-retry pauses start_timeout * factor**n after failed attempt n (n from 1)
        super().__init__(
            attempts=JWKS_ATTEMPTS,
            start_timeout=JWKS_FIRST_PAUSE / 2,
            factor=2.0,
            max_timeout=JWKS_FETCH_BUDGET,
            exceptions={aiohttp.ClientError, TimeoutError},
            methods={"GET"},
            retry_all_server_errors=True,
        )

    def get_timeout(self, attempt: int, response: ClientResponse | None = None) -> float:
        if response is not None:
            response.close()
        return super().get_timeout(attempt, response)


@dataclass(frozen=True)
class Principal:
    """The caller, as the access token says."""

    user_id: str
    org_id: str
    role: str
    amr: tuple[str, ...]
    token_id: str
    expires_at: int
    session_id: str = ""
    """The ``sid`` claim: the auth session (refresh family) the token belongs to."""

    def has_role(self, *roles: str) -> bool:
        return self.role in roles


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(401, detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


class TokenVerifier:
    """Verifies access tokens against the auth service's JWKS and, when given ``revocations``, against the
    revoked sessions. :meth:`verify` returns the :class:`Principal` or raises a 401 (a 503 when revocation
    cannot be checked)."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        min_refresh_interval: float = 30.0,
        cache_ttl: float = 600.0,
        leeway: float = 5.0,
        static_jwks: dict[str, Any] | None = None,
        revocations: RevocationList | None = None,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._min_refresh = min_refresh_interval
        self._ttl = cache_ttl
        self._leeway = leeway
        self._lock = asyncio.Lock()
        self._session: RetryClient | None = None
        self.revocations = revocations
        self._verified: dict[str, tuple[Principal, str, jwt.PyJWK]] = {}
        """Token → (its principal, its ``kid``, the key that verified it); see :data:`VERIFIED_TOKENS`."""
        if static_jwks is not None:
            self._load(static_jwks)
            self._fetched_at = float("inf")

    def _load(self, jwks: dict[str, Any]) -> None:
        import jwt  # imported on first use: PyJWT + cryptography weigh ~10 MB, a bus-only worker needs neither

        keys: dict[str, jwt.PyJWK] = {}
        for raw in jwks.get("keys", []):
            kid, kty = raw.get("kid"), raw.get("kty")
            if not isinstance(kid, str) or kty not in _KEY_ALGS:
                continue
            try:
                keys[kid] = jwt.PyJWK.from_dict(raw, algorithm=_KEY_ALGS[kty])
            except (jwt.PyJWKError, ValueError, TypeError):
                log.warning("skipping unusable JWKS key", extra={"kid": kid})
        self._keys = keys

    async def _refresh(self, force: bool) -> None:
        """Fetch the JWKS (``force``: because a token named an unknown ``kid``), at most once per
        ``min_refresh_interval`` seconds; retried on transient failures and bounded by
        :data:`JWKS_FETCH_BUDGET` seconds (see the module docstring). Never raises: a failed fetch is logged,
        the keys already known are kept, and the next fetch may come 2 s later."""
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if age < self._min_refresh or (not force and age < self._ttl):
                return
            self._fetched_at = time.monotonic()
            if self._session is None:
                self._session = RetryClient(
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=JWKS_ATTEMPT_TIMEOUT)),
                    retry_options=_JwksRetry(),
                    logger=log,
                )
            try:
                async with asyncio.timeout(JWKS_FETCH_BUDGET), self._session.get(self.jwks_url) as resp:
                    if resp.status != 200:
                        raise ValueError(f"JWKS answered {resp.status}")
                    self._load(json.loads(await resp.read()))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("JWKS fetch failed", extra={"url": self.jwks_url, "error": repr(exc)})
                self._fetched_at = time.monotonic() - self._min_refresh + 2.0  # retry soon, not per request

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        if time.monotonic() - self._fetched_at >= self._ttl:
            await self._refresh(force=False)
        key = self._keys.get(kid)
        if key is None:
            await self._refresh(force=True)
            key = self._keys.get(kid)
        return key

    async def verify(self, token: str) -> Principal:
        """Return the token's principal or raise a 401 problem (503: revocation cannot be checked)."""
        known = self._verified.get(token)
        if known is not None:
            who, kid, key = known
            if self._keys.get(kid) is key and who.expires_at > time.time() - self._leeway:
                await self._check_revocation(who.session_id)
                return who
            del self._verified[token]
        who = await self._verify_token(token)
        await self._check_revocation(who.session_id)
        return who

    async def _check_revocation(self, sid: str) -> None:
        if self.revocations is not None:
            if not sid:
                raise _unauthorized("Token names no session")
            if await self.revocations.is_revoked(sid):
                raise _unauthorized("The session of this token was revoked")

    async def _verify_token(self, token: str) -> Principal:
        """The principal of a token whose signature and claims hold (no revocation check), remembered; 401."""
        if not token or len(token) > MAX_TOKEN_BYTES or not token.isascii():
            raise _unauthorized("Missing, oversized or non-ASCII token")
        import jwt  # see _load

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise _unauthorized("Malformed token") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ALLOWED_ALGORITHMS:
            raise _unauthorized("Token algorithm not allowed")
        if any(h in header for h in _FORBIDDEN_HEADERS):
            raise _unauthorized("Token header not allowed")
        if header.get("typ") != ACCESS_TOKEN_TYPE:
            raise _unauthorized("Not an access token")
        if not isinstance(kid, str) or not kid or len(kid) > 128:
            raise _unauthorized("Token has no usable key id")
        key = await self._key(kid)
        if key is None:
            raise _unauthorized("Unknown signing key")
        if key.algorithm_name != alg:
            raise _unauthorized("Token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "jti", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise _unauthorized(f"Invalid token: {type(exc).__name__}") from exc
        nbf = claims.get("nbf")
        if isinstance(nbf, int | float) and nbf > time.time() + self._leeway:
            raise _unauthorized("Token not yet valid")
        org, role, amr = claims.get("org"), claims.get("role"), claims.get("amr", [])
        if not isinstance(org, str) or not isinstance(role, str) or not isinstance(amr, list):
            raise _unauthorized("Token lacks organisation or role")
        sid = claims.get("sid", "")
        if not isinstance(sid, str) or len(sid) > 128:
            raise _unauthorized("Token has an unusable session id")
        if self.revocations is not None and not sid:
            raise _unauthorized("Token names no session")
        who = Principal(
            user_id=str(claims["sub"]),
            org_id=org,
            role=role,
            amr=tuple(str(a) for a in amr),
            token_id=str(claims["jti"]),
            expires_at=int(claims["exp"]),
            session_id=sid,
        )
        if len(self._verified) >= VERIFIED_TOKENS:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = (who, kid, key)
        return who

    async def authenticate(self, request: web.Request) -> Principal:
        """The :data:`~novapulse_runtime.http.Authenticator` for routes declared with ``auth=True``."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ProblemError(
                401, "Send an access token: Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
            )
        return await self.verify(token.strip())

    async def close(self) -> None:
        """Close the revocation list's subscription and the JWKS client session (the session even when the
        first fails)."""
        try:
            if self.revocations is not None:
                await self.revocations.close()
        finally:
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()


PRINCIPAL_KEY = web.RequestKey("principal", Principal)


def principal(request: web.Request) -> Principal:
    """The authenticated caller of a route declared with ``auth=True``."""
    found = request.get(PRINCIPAL_KEY)
    if not isinstance(found, Principal):
        raise ProblemError(401, "Not authenticated")
    return found


def require_role(request: web.Request, *roles: str) -> Principal:
    """The caller, if their role is one of ``roles``; else 403."""
    who = principal(request)
    if not who.has_role(*roles):
        raise ProblemError(403, f"This needs one of the roles: {', '.join(roles)}")
    return who
