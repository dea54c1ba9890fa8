"""Templates: Jinja2 files shipped in the package, overridable file by file from ``TEMPLATES_DIR``.

Each template ``<name>`` has ``<name>.subject.txt``, ``<name>.txt`` (plain-text part), ``<name>.html`` (HTML
part) and ``<name>.inapp.txt`` (the in-app notice). HTML is rendered by an environment that escapes every
value (includes of ``.txt`` partials too); the plain-text parts by one that does not. Both are sandboxed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChainableUndefined,
    ChoiceLoader,
    FileSystemLoader,
    PackageLoader,
    TemplateError,
)
from jinja2.sandbox import SandboxedEnvironment

from .constants import MAX_SUBJECT_CHARS

_WS = re.compile(r"\s+")
_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SAFE_SCHEMES = ("https://", "http://", "mailto:")


class RenderError(Exception):
    """A template is missing or failed to render."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    in_app: str


def safe_link(value: Any) -> str:
    """Only web and mail links reach an ``href``; anything else (``javascript:``…) becomes ``#``."""
    text = str(value).strip()
    return text if text.lower().startswith(_SAFE_SCHEMES) else "#"


def clean(value: str) -> str:
    """Rendered text fit for a mail or a notice, whatever the event carried: C0 control characters other than
    tab, CR and LF dropped (NUL is not allowed in a message, RFC 5322 §2.3; escape sequences are not text)
    and lone surrogates, which cannot be encoded in UTF-8, replaced by ``?``."""
    return _CONTROLS.sub("", value).encode("utf-8", "replace").decode("utf-8")


def one_line(value: str, limit: int) -> str:
    """Collapse whitespace (no header injection through CR/LF) and cut to ``limit`` characters."""
    return _WS.sub(" ", value).strip()[:limit]


class Renderer:
    """Renders the four parts of a template with one context."""

    def __init__(self, override_dir: str = "") -> None:
        loaders: list[BaseLoader] = []
        if override_dir:
            loaders.append(FileSystemLoader(override_dir))
        loaders.append(PackageLoader("novapulse_notification", "templates"))
        loader = ChoiceLoader(loaders)
        # auto_reload: a compiled template is reused only while its file's modification time is unchanged, so
        # a template file written in TEMPLATES_DIR is used from the next render on (no stale cache).
        self._html = SandboxedEnvironment(
            loader=loader, autoescape=True, undefined=ChainableUndefined, auto_reload=True
        )
        self._text = SandboxedEnvironment(
            loader=loader, autoescape=False, undefined=ChainableUndefined, auto_reload=True
        )
        for env in (self._html, self._text):
            env.filters["safe_link"] = safe_link

    def has(self, name: str) -> bool:
        try:
            self._text.get_template(f"{name}.subject.txt")
        except TemplateError:
            return False
        return True

    def render(self, name: str, context: Mapping[str, Any]) -> Rendered:
        """Render ``name`` (subject and notice on one line, every part :func:`clean`) or raise
        :class:`RenderError` naming the template and the error — for any failure inside a template."""
        try:
            subject = self._text.get_template(f"{name}.subject.txt").render(context)
            text = self._text.get_template(f"{name}.txt").render(context)
            html = self._html.get_template(f"{name}.html").render(context)
            try:
                in_app = self._text.get_template(f"{name}.inapp.txt").render(context)
            except TemplateError:
                in_app = subject
        except TemplateError as exc:
            raise RenderError(f"template {name!r}: {exc}") from exc
        except Exception as exc:  # an override template doing arithmetic on event data, say
            raise RenderError(f"template {name!r}: {type(exc).__name__}: {exc}") from exc
        return Rendered(
            subject=one_line(clean(subject), MAX_SUBJECT_CHARS),
            text=clean(text).strip() + "\n",
            html=clean(html),
            in_app=one_line(clean(in_app), 1000),
        )


def templates_dir() -> Path:
    """The packaged templates (for documentation and tests)."""
    return Path(__file__).parent / "templates"
