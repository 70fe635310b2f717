"""Who is acting: bound once per request or job, recorded on every domain event.

The API binds the authenticated principal (``sesame.api.deps``); background work binds
``system`` or a device with ``acting_as``. Outside both, the actor is ``system``. An
actor is a small dict of opaque ids and roles, never a name, phone number or token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

SYSTEM: dict[str, Any] = {"kind": "system"}

_actor: ContextVar[dict[str, Any] | None] = ContextVar("sesame_actor", default=None)


def current_actor() -> dict[str, Any]:
    return _actor.get() or SYSTEM


def bind_actor(actor: dict[str, Any]) -> None:
    """For the rest of the current request (its task's context)."""
    _actor.set(actor)


@contextmanager
def acting_as(actor: dict[str, Any]) -> Iterator[None]:
    token = _actor.set(actor)
    try:
        yield
    finally:
        _actor.reset(token)
