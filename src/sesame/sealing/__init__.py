"""What is sealed under the master secret, and moving it to a new one.

``sesame secrets rotate`` re-seals every sealed column under ``SESAME_SECRET_KEY``
(``service.rotate``); the platform's own keys that must never change with the secret
(the VAPID key) are stored here too (``service.platform_key``). The procedure for
operators is in ``docs/operations.md``.
"""
