"""Authentication and authorisation: staff, residents and partner API keys."""
