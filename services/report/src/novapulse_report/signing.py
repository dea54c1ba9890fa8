"""Signed, expiring download links: ``/api/v1/reports/<id>/download?expires=<epoch s>&sig=<hex>``.

``sig`` = HMAC-SHA256 (RFC 2104) under ``REPORT_DOWNLOAD_SECRET`` of ``<report id>.<org id>.<expires>``,
lowercase hex; checked in constant time (``hmac.compare_digest``). A link is minted per request (each
``GET /reports/{id}``) and for the ``report.completed`` mail, so none outlives its purpose.
"""

from __future__ import annotations

import hashlib
import hmac

from .constants import API_PREFIX
from .errors import LinkExpired, LinkInvalid


class LinkSigner:
    """Mints and checks download links with one secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, report_id: str, org_id: str, expires_s: int) -> str:
        message = f"{report_id}.{org_id}.{expires_s}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def path(self, report_id: str, org_id: str, expires_s: int) -> str:
        """The link path of ``report_id``, valid until ``expires_s`` (epoch seconds)."""
        sig = self.signature(report_id, org_id, expires_s)
        return f"{API_PREFIX}/{report_id}/download?expires={expires_s}&sig={sig}"

    def check(self, report_id: str, org_id: str, expires: str, sig: str, now_s: int) -> None:
        """Accept a link or say why not. The signature is checked first, so a link whose expiry was edited
        is refused as tampered, not as expired.

        :raises LinkInvalid: missing or wrong signature, or an expiry that is not an integer (403).
        :raises LinkExpired: a genuine link past its expiry (410).
        """
        if not expires.isdigit() or len(expires) > 12:
            raise LinkInvalid("The download link is not valid")
        expected = self.signature(report_id, org_id, int(expires))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise LinkInvalid("The download link is not valid")
        if int(expires) < now_s:
            raise LinkExpired("The download link has expired; ask for the report again for a new one")
