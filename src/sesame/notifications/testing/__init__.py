"""Local stand-ins for notification providers, for tests and development."""
