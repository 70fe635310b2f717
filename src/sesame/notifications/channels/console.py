"""The console channel: for development, and for any channel left unconfigured — the
notification is written to the log (who, what, never a token or address) and counts as
sent. A confirmation code's body is withheld: codes never go to the log."""

from __future__ import annotations

from collections.abc import Sequence

from sesame.kit.logging import get_logger
from sesame.notifications.channels.base import Message, Outcome, Result

log = get_logger("sesame.notifications.console")

SECRET_CATEGORIES = frozenset({"confirmation"})  # bodies that carry a one-time code


class ConsoleChannel:
    def __init__(self, standing_in_for: str) -> None:
        self.name = standing_in_for
        self.sent: list[Message] = []  # kept for inspection in development (last 1,000)

    async def send_many(self, messages: Sequence[Message]) -> list[Result]:
        for message in messages:
            log.info(
                "notification",
                channel=self.name,
                delivery_id=str(message.delivery_id),
                category=message.category,
                locale=message.locale,
                title=message.title,
                body="(withheld)" if message.category in SECRET_CATEGORIES else message.body,
            )
        self.sent = [*self.sent, *messages][-1000:]
        return [Result(Outcome.SENT, provider_id="console") for _ in messages]

    async def aclose(self) -> None:
        return None
