"""Broker workers' plumbing: streams, the batch pull loop, the ack / nak / dead-letter policy, the outbox
relay, periodic jobs and the worker runtime that runs them (I/O lives here, not in contracts)."""
