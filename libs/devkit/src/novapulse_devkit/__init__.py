"""NovaPulse development kit: what developers and tests need and production never does.

- :mod:`.servers` — real ``redis-server`` and MongoDB-wire (``nx-27017``) processes on loopback ports;
- :mod:`.stack` — ``make run``: those servers plus every installed service (entry point group
  ``novapulse.services``) with one Ctrl-C to stop;
- :mod:`.testing` — the pytest plugin (session servers, service processes, a token issuer).

No service depends on this package, so no service image installs it (``uv sync --no-dev --package
novapulse-<service>``).
"""
