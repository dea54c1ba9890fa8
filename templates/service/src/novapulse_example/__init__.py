"""NovaPulse example service: the template every service starts from (docs/adding-a-service.md).

Organisation members keep short notes; the service keeps its own projection of the organisation's members
from auth's ``user.registered`` events, and a worker deletes notes past their retention. Nothing is
imported here: importing the package never wires or connects anything.
"""
