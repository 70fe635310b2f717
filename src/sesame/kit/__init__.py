"""Building blocks that know no domain: database, errors, logging, metrics, time, security.

Domains import ``sesame.kit``; nothing here imports a domain (a test checks it).
"""
