"""NovaPulse webhook service: customers' endpoints, Standard Webhooks signing, durable retries with attempt
logs, replay, secret rotation and SSRF-safe delivery. The service is declared in :mod:`.bootstrap`
(``SPEC``)."""
