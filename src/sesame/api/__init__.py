"""The HTTP edge: routing with transactions and idempotency, dependencies, error rendering."""
