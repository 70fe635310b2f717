"""The transactional outbox: domain events are written with the change that causes them."""
