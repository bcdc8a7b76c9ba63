"""Webhooks: a signed POST to the caller's URL when a task ends, delivered at least once."""
