"""NovaPulse console: the web pages a tenant's admins and the platform's operators use instead of curl.

It owns no business data: it signs the user in through the auth service, keeps the session in an encrypted
``HttpOnly`` cookie and calls the services' public HTTP APIs with the user's token.
"""
