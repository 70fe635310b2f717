"""Sesame: an open, self-hostable smart-access platform."""

__version__ = "0.1.0"
