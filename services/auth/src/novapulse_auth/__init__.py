"""NovaPulse auth service: organisations, users, invites, sessions and tokens, JWKS, TOTP MFA.

Run it with ``python -m novapulse_auth api|worker|all``; its :class:`~novapulse_runtime.process.ServiceSpec`
is ``novapulse_auth.bootstrap.SPEC`` (entry point ``novapulse.services``: ``auth``).
"""
