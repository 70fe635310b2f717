"""Keyset pagination: ``limit`` and an opaque ``cursor`` in, ``items`` and ``next_cursor`` out.

Ids are UUIDv7, so ordering by id is ordering by creation; a cursor is the last id seen,
which stays correct while rows are inserted or deleted between pages (unlike offsets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, Field

from sesame.kit.errors import FieldError, ValidationFailed
from sesame.kit.security import b64url, unb64url

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
# A cursor is a row id's 16 bytes in unpadded base64url; any string of this shape is one.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{22}$"


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as `cursor` to get the next page; null on the last page."
    )


def encode_cursor(last_id: UUID) -> str:
    return b64url(last_id.bytes)


def decode_cursor(cursor: str) -> UUID:
    try:
        raw = unb64url(cursor)
        if len(raw) != 16:
            raise ValueError("wrong length")
        return UUID(bytes=raw)
    except ValueError as exc:
        raise ValidationFailed(
            "invalid cursor",
            errors=[
                FieldError(("query", "cursor"), "not a cursor from this API", "invalid_cursor")
            ],
        ) from exc


def next_cursor(rows: Sequence[Any], limit: int) -> str | None:
    """The cursor after a page, given up to ``limit + 1`` rows fetched in id order."""
    if len(rows) > limit and limit > 0:
        return encode_cursor(rows[limit - 1].id)
    return None
