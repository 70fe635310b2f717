"""Digital keys: who may open which doors, when, and how the doors know."""
