"""Broker plumbing shared by the services: stream declarations (I/O lives here, not in contracts)."""
