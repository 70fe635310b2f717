"""``Idempotency-Key`` on every POST: the same key and body get the stored answer.

The answer is stored in the same transaction as the work it describes, so either both
exist or neither does: a client that retries after a timeout can never cause the work
twice, and never gets an answer for work that was rolled back. When two requests with one
key race, the loser's transaction fails on the unique (scope, key) constraint, is rolled
back whole, and the loser answers with the winner's stored response.

Keys are scoped to the caller (staff account, API key, resident) so that two clients can
never read each other's answers; a key reused with another body is an error.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from sesame.api.repository import IdempotencyRepository
from sesame.kit.errors import BadRequest, IdempotencyKeyReused
from sesame.models import IdempotencyRecord
from sesame.runtime import Runtime

HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_KEPT_HEADERS = ("content-type", "location")


@dataclass(frozen=True)
class IdempotentRequest:
    scope: str
    key: str
    fingerprint: str


async def describe(request: Request, scope: str) -> IdempotentRequest | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not _VALID_KEY.match(key):
        raise BadRequest("Idempotency-Key must be 1 to 255 printable ASCII characters")
    body = await request.body()
    fingerprint = hashlib.sha256(
        b"\n".join(
            [request.method.encode(), request.url.path.encode(), request.url.query.encode(), body]
        )
    ).hexdigest()
    return IdempotentRequest(scope=scope, key=key, fingerprint=fingerprint)


async def stored_response(
    session: AsyncSession, runtime: Runtime, request: IdempotentRequest
) -> Response | None:
    record = await IdempotencyRepository(session).find(request.scope, request.key)
    if record is None or record.expires_at <= runtime.clock.now():
        return None
    if record.fingerprint != request.fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used with another request; use a new key"
        )
    body = runtime.keys.idempotency.unseal(record.body, associated(request.scope, request.key))
    headers = dict(record.headers)
    headers[REPLAYED_HEADER] = "true"
    return Response(content=body, status_code=record.status_code, headers=headers)


async def store(
    session: AsyncSession, runtime: Runtime, request: IdempotentRequest, response: Response
) -> bool:
    """Record the answer in the current transaction; False if the response has no body to keep."""
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | memoryview):
        return False
    now = runtime.clock.now()
    headers = {k: v for k, v in response.headers.items() if k in _KEPT_HEADERS}
    await IdempotencyRepository(session).add(
        IdempotencyRecord(
            scope=request.scope,
            key=request.key,
            fingerprint=request.fingerprint,
            status_code=response.status_code,
            headers=headers,
            body=runtime.keys.idempotency.seal(bytes(body), associated(request.scope, request.key)),
            created_at=now,
            expires_at=now + timedelta(seconds=runtime.settings.idempotency_ttl_seconds),
        )
    )
    return True


def associated(scope: str, key: str) -> bytes:
    """What a record's sealed body is bound to (re-sealing needs it too)."""
    return f"{scope}\x1f{key}".encode()
