"""Preferences logic and template rendering (escaping, link filter, subjects on one line)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from novapulse_notification import preferences as prefs
from novapulse_notification.constants import Category, Channel
from novapulse_notification.planning import TEMPLATES
from novapulse_notification.rendering import Renderer, clean, safe_link
from novapulse_notification.settings import NotificationSettings

pytestmark = pytest.mark.unit


def test_defaults_all_on_and_critical_forced():
    merged = prefs.merge({"security": {"email": False}, "reports": {"email": False}, "bogus": {"email": False}})
    assert merged["security"] == {"email": True, "in_app": True}
    assert merged["reports"] == {"email": False, "in_app": True}
    assert "bogus" not in merged


def test_allows():
    stored = {"reports": {"email": False, "in_app": True}, "security": {"email": False}}
    assert not prefs.allows(stored, Category.REPORTS, Channel.EMAIL, critical=False)
    assert prefs.allows(stored, Category.REPORTS, Channel.IN_APP, critical=False)
    assert prefs.allows(stored, Category.SECURITY, Channel.EMAIL, critical=False)
    assert prefs.allows(stored, Category.REPORTS, Channel.EMAIL, critical=True)


def test_turned_off_critical():
    assert prefs.turned_off_critical({"security": {"email": False, "in_app": True}}) == ["security.email"]
    assert prefs.turned_off_critical({"reports": {"email": False}}) == []


def test_safe_link():
    assert safe_link("https://x.test/a") == "https://x.test/a"
    assert safe_link("javascript:alert(1)") == "#"
    assert safe_link(" JaVaScRiPt:alert(1)") == "#"


def test_every_template_renders_with_empty_context():
    renderer = Renderer()
    for name in TEMPLATES:
        out = renderer.render(name, {})
        assert out.subject
        assert "\n" not in out.subject
        assert out.html.lstrip().startswith("<!doctype html>")


def test_workflow_link_cannot_be_javascript_and_message_is_escaped():
    out = Renderer().render(
        "workflow_notice",
        {"data": {"subject": "Hi\r\nBcc: x@y", "message": "<b>bold</b>", "link": "javascript:alert(1)"}},
    )
    assert out.subject == "Hi Bcc: x@y"
    assert 'href="#"' in out.html
    assert "&lt;b&gt;bold&lt;/b&gt;" in out.html


@pytest.mark.parametrize("sender", ["nobody", "A <a@b.test>\r\nBcc: x@y.test", "two words@b.test", ""])
def test_a_sender_that_is_not_one_address_stops_the_process_at_start_up(sender: str):
    with pytest.raises(ValidationError, match="smtp_from"):
        NotificationSettings(redis_url="redis://x", mongo_url="mongodb://x", smtp_from=sender)
    assert NotificationSettings(redis_url="redis://x", mongo_url="mongodb://x", smtp_from="N <n@b.test>").smtp_from


def test_rendered_parts_drop_control_characters():
    assert clean("a\x00b\x1b[1mc\x7fd\te\r\nf") == "ab[1mcd\te\r\nf"
