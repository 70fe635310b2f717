"""Partners: the tenants of a Sesame installation."""
