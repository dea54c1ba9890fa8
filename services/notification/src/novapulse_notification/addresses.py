"""E-mail addresses and display names at the SMTP boundary.

An address comes from an event (``user.registered``, an invitation, a verification request) and may be in any
script. :func:`normalize` turns it into what the relay is given, or raises :class:`InvalidAddress` with the
reason (the delivery is then recorded ``failed`` with that reason; nothing is sent):

- ``local@domain``, exactly one ``@``; the local part at most 64 and the domain at most 255 octets; no
  spaces, control characters (CR/LF: header and envelope injection) or the specials ``<>()[],;:"\\``
  (RFC 5321 §4.1.2 and §4.5.3.1, without the quoted-string form);
- a domain in another script (IDN, ``bücher.example``) is sent as its ASCII form (``xn--bcher-kva.example``,
  Python's ``idna`` codec: nameprep + Punycode, RFC 3490/3492); a domain that has none is refused;
- a local part outside ASCII (``jörg@…``) needs the relay's SMTPUTF8 extension (RFC 6531): the address is
  kept as it is and :attr:`Address.smtputf8` says so; a relay without the extension refuses the mail
  permanently (see ``mailer``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f<>()\[\],;:\"\\]")
MAX_LOCAL_OCTETS = 64
MAX_DOMAIN_OCTETS = 255


class InvalidAddress(ValueError):
    """The address cannot be given to a relay; the message says why."""


@dataclass(frozen=True)
class Address:
    """A usable address: ``local`` as given, ``domain`` as its ASCII A-label form."""

    local: str
    domain: str

    @property
    def addr_spec(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def smtputf8(self) -> bool:
        """Whether the relay must offer SMTPUTF8 (RFC 6531) to carry this address."""
        return not self.local.isascii()


def normalize(address: str) -> Address:
    """``address`` as the relay gets it; raises :class:`InvalidAddress` (never anything else)."""
    if not isinstance(address, str) or not address:
        raise InvalidAddress("empty e-mail address")
    if _FORBIDDEN.search(address):
        raise InvalidAddress("e-mail address contains spaces, control characters or forbidden characters")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or "@" in local:
        raise InvalidAddress("e-mail address needs exactly one @ with text on both sides")
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL_OCTETS:
        raise InvalidAddress(f"local part longer than {MAX_LOCAL_OCTETS} octets")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise InvalidAddress("local part has a leading, trailing or doubled dot")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except (UnicodeError, ValueError) as exc:
            raise InvalidAddress(f"domain is not a valid internationalised domain name: {exc}") from None
    domain = domain.lower()
    labels = domain.split(".")
    if len(domain) > MAX_DOMAIN_OCTETS or any(not label or len(label) > 63 for label in labels):
        raise InvalidAddress("domain has an empty or over-long label")
    if any(not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?", label) for label in labels):
        raise InvalidAddress("domain label with characters other than letters, digits and inner hyphens")
    if not local.isascii():
        try:
            local.encode("utf-8")
        except UnicodeError:
            raise InvalidAddress("local part is not valid Unicode") from None
    return Address(local, domain)
