"""NovaPulse notification service: e-mail and in-app notifications triggered by events.

The service's spec (roles ``api`` and ``worker``) is :data:`novapulse_notification.bootstrap.SPEC`.
"""
