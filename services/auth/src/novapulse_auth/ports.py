"""Ports: the outgoing dependencies the auth service layer uses, as small protocols.

:class:`Outbox` records events together with the state change that caused them. Its implementation is the
shared bus's outbox (``rt.bus.outbox()``, wired in :mod:`.bootstrap`): ``transaction()`` yields a MongoDB
session (or ``None``), ``add()`` records an event inside it. The unit-test fake lives in the tests
(``tests/fakes_auth.py``).
"""

from __future__ import annotations

from novapulse_runtime.bus.ports import OutboxPort

Outbox = OutboxPort
"""The runtime's outbox port (:class:`novapulse_runtime.bus.ports.OutboxPort`)."""
