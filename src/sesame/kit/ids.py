"""Identifiers: UUIDv7, so that ids sort in creation order and keyset pagination is stable."""

from uuid import UUID

import uuid_utils


def new_id() -> UUID:
    return UUID(bytes=uuid_utils.uuid7().bytes)
