"""Identifiers: UUIDv7, so that ids sort in creation order and keyset pagination is stable."""

from uuid import UUID

import uuid_utils


def new_id() -> UUID:
    return UUID(bytes=uuid_utils.uuid7().bytes)


def parse_id(text: str) -> UUID | None:
    """The id ``text`` spells in its one canonical form (lower-case, hyphenated, as
    ``str(UUID)`` writes it), else None.

    Where an id is a name — a device's MQTT username and its topics — it is compared as
    text (Mosquitto's ACL, the broker's session lookups), so ``UUID()``'s tolerance of
    upper case, braces or a ``urn:uuid:`` prefix would make several names for one
    device. HTTP path and body ids are values instead: any spelling pydantic accepts
    reads as the same id.
    """
    try:
        parsed = UUID(text)
    except (ValueError, TypeError):
        return None
    return parsed if str(parsed) == text else None
