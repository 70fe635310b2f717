"""Notifications: channels that carry a delivery to a person or a partner system."""
