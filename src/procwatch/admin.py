"""`procwatch admin`: users, plans and API tokens (placeholder, filled in below)."""
