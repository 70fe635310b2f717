"""Confirming an e-mail address: nobody is notified at an address they cannot read.

Registering an address makes the caller's destination inactive (``unconfirmed``) and
mails a code to it; the destination becomes active when its owner enters that code
(``POST /v1/me/notification-destinations/{id}/confirm``). Until then nothing but the code
goes there, and nobody else's registration of the same address is touched.

- The code is eight digits, stored only as a keyed digest (HMAC under a key derived from
  ``SESAME_SECRET_KEY``), valid for ``CODE_TTL``, with at most ``MAX_ATTEMPTS`` wrong
  tries. Registering the address again sends a new code, at most once per
  ``RESEND_AFTER``: a stranger cannot flood an inbox with codes.
- The e-mail that carries it is an ordinary delivery (durable, retried, critical). Its
  stored body holds a placeholder; the code travels sealed in its data and is put in
  only at sending, so the delivery log never shows it.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sesame.kit.db import after_commit
from sesame.kit.ids import new_id
from sesame.kit.keyring import PurposeKeys
from sesame.models import Destination
from sesame.notifications import catalog
from sesame.notifications.repository import NotificationRepository
from sesame.notifications.triggers import delivery_row
from sesame.runtime import Runtime

CATEGORY = "confirmation"
TEMPLATE = "destination.confirm"
UNCONFIRMED = "unconfirmed"
CODE_DIGITS = 8
CODE_TTL = timedelta(minutes=30)
RESEND_AFTER = timedelta(minutes=1)
MAX_ATTEMPTS = 5
_MARK = "{code}"  # left in the stored body, replaced when the message is sent
_SEALED = "sealed_code"


def confirmation_key(runtime: Runtime) -> PurposeKeys:
    return runtime.keys.destination_confirmation


def code_digest(keys: PurposeKeys, address_digest: str, code: str) -> str:
    return keys.digest("destination-confirmation", address_digest, code)


def matches(keys: PurposeKeys, row: Destination, code: str) -> bool:
    """Constant-time, under any secret of the ring: a code mailed just before a change of
    master secret still confirms."""
    if row.confirmation_digest is None:
        return False
    return keys.matches(
        row.confirmation_digest, "destination-confirmation", row.address_digest, code
    )


async def send_code(
    session: AsyncSession,
    runtime: Runtime,
    rows: Sequence[Destination],
    *,
    locale: str,
    now: datetime,
) -> bool:
    """A new code for these rows (one owner's registrations of one address), mailed once.
    False when the last code went out less than ``RESEND_AFTER`` ago: it still stands."""
    sent = [r.confirmation_sent_at for r in rows if r.confirmation_sent_at is not None]
    if sent and now - max(sent) < RESEND_AFTER:
        return False
    key = confirmation_key(runtime)
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    for row in rows:
        row.confirmation_digest = code_digest(key, row.address_digest, code)
        row.confirmation_expires_at = now + CODE_TTL
        row.confirmation_sent_at = now
        row.confirmation_attempts = 0
    first = rows[0]
    language = catalog.locale_of(locale)
    fields = {"code": _MARK, "minutes": int(CODE_TTL.total_seconds() // 60)}
    title, body = catalog.render(TEMPLATE, language, fields)
    transaction_id = f"confirm-{new_id().hex}"
    sealed = key.seal(code.encode(), transaction_id.encode())
    await NotificationRepository(session).add_deliveries(
        [
            delivery_row(
                transaction_id=transaction_id,
                partner_id=first.partner_id,
                event_type=TEMPLATE,
                category=CATEGORY,
                channel="email",
                person_id=first.person_id,
                staff_id=first.staff_id,
                destination_id=first.id,
                locale=language,
                title=title,
                body=body,
                data={_SEALED: base64.b64encode(sealed).decode("ascii")},
                now=now,
            )
        ]
    )

    async def wake_senders() -> None:
        if runtime.notifier is not None:
            runtime.notifier.queued()

    after_commit(session, wake_senders)
    return True


def awaits_confirmation(row: Any) -> bool:
    """A claimed delivery that may go to a destination not yet active: its code."""
    return bool(row.category == CATEGORY and row.destination_reason == UNCONFIRMED)


def reveal(key: PurposeKeys, row: Any) -> tuple[str, dict[str, Any]]:
    """The body to send, with the code put in, and the data without it."""
    data = dict(row.data or {})
    sealed = data.pop(_SEALED, None)
    if sealed is None:
        return str(row.body), data
    code = key.unseal(base64.b64decode(sealed), str(row.transaction_id).encode()).decode()
    return str(row.body).replace(_MARK, code), data
