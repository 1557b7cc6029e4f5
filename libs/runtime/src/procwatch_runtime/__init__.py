"""Process plumbing every service shares: structured logging and the connection settings."""
