"""The SMS channel: a notification sent as a text message, through the same sender as
sign-in codes (``sesame.auth.sms``). The address is the person's phone; it is handed to
the sender and never logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sesame.kit.errors import ServiceUnavailable
from sesame.notifications.channels.base import Message, Outcome, Result


class SmsChannel:
    name = "sms"

    def __init__(self, sender: Any) -> None:
        self._sender = sender  # an ``SmsSender``: one message at a time, its own timeout

    async def send_many(self, messages: Sequence[Message]) -> list[Result]:
        results = []
        for message in messages:
            try:
                await self._sender.send(message.address, message.body)
            except ServiceUnavailable:
                results.append(Result(Outcome.RETRY, "sms_unavailable"))
            else:
                results.append(Result(Outcome.SENT))
        return results

    async def aclose(self) -> None:
        return None  # the sender belongs to the runtime, which closes it
