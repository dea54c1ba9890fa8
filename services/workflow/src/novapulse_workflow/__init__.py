"""NovaPulse workflow service: organisations define automations — when this event happens, do these steps —
as versioned JSON definitions, and the worker runs them durably (runs and a journal of step attempts in
MongoDB, leases, effect ids derived from ``(run id, step key, generation)``). Nothing is imported here:
importing the package never wires or connects anything.
"""
