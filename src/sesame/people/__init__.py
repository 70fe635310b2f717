"""People (residents and guests) and households (a person's membership of a unit)."""
