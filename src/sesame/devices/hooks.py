"""Extension points of the device side, for domains built on it (keys, later others).

Each hook runs where its work must be atomic with the device's: ``attempt_finished`` and
``events`` inside the transaction that records them, ``online`` after a device's
connection is committed. A hook's failure is the transaction's failure, except for
``online`` hooks, which are logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

AttemptFinished = Callable[[AsyncSession, Any], Awaitable[None]]
EventsStored = Callable[[AsyncSession, Sequence[Any]], Awaitable[None]]
DeviceOnline = Callable[[UUID], Awaitable[None]]


@dataclass
class DeviceHooks:
    attempt_finished: list[AttemptFinished] = field(default_factory=list)
    events: list[EventsStored] = field(default_factory=list)
    online: list[DeviceOnline] = field(default_factory=list)
    installed: set[str] = field(default_factory=set)  # domains that registered theirs

    async def finished(self, session: AsyncSession, attempt: Any) -> None:
        for hook in self.attempt_finished:
            await hook(session, attempt)

    async def stored(self, session: AsyncSession, rows: Sequence[Any]) -> None:
        for hook in self.events:
            await hook(session, rows)
