"""Every message on the broker, and every subject and stream name: defined here only.

No I/O in this package: services import it to parse and build messages.
"""
