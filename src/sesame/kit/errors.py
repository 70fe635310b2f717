"""The one error tree every layer raises, rendered at the edge as one JSON shape.

Each error carries an HTTP status and a stable machine-readable ``type``; clients branch
on ``type``, never on ``message``. New types may appear, so clients must tolerate unknown
ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class FieldError:
    """One problem with one input field; ``path`` is like ``["body", "phone"]``."""

    path: tuple[str | int, ...]
    message: str
    code: str

    def as_dict(self) -> dict[str, Any]:
        return {"path": list(self.path), "message": self.message, "code": self.code}


# Pydantic prefixes the message of an error a validator raised with its class: the
# reader of an API answer wants the message alone.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def validation_message(error: Any) -> str:
    """The message of one pydantic error (``ValidationError.errors()``), unprefixed."""
    message = str(error.get("msg", "invalid"))
    for prefix in _PYDANTIC_PREFIXES:
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


class SesameError(Exception):
    status: ClassVar[int] = 400
    type: ClassVar[str] = "bad_request"

    def __init__(
        self,
        message: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        keep_changes: bool = False,
        **details: Any,
    ) -> None:
        self.message = message or self.default_message()
        # Commit the request's writes before answering with this error (a failed
        # sign-in must still count the attempt).
        self.keep_changes = keep_changes
        self.errors = errors or []
        self.headers = headers or {}
        self.details = details
        super().__init__(self.message)

    @classmethod
    def default_message(cls) -> str:
        return cls.type.replace("_", " ")


class BadRequest(SesameError):
    status = 400
    type = "bad_request"


class ValidationFailed(SesameError):
    status = 422
    type = "validation_error"


class Unauthorized(SesameError):
    status = 401
    type = "unauthorized"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class InvalidCredentials(Unauthorized):
    type = "invalid_credentials"


class TokenExpired(Unauthorized):
    type = "token_expired"


class Forbidden(SesameError):
    status = 403
    type = "forbidden"


class NotFound(SesameError):
    status = 404
    type = "not_found"


class Conflict(SesameError):
    status = 409
    type = "conflict"


class HasDependents(Conflict):
    type = "has_dependents"


class IdempotencyKeyReused(SesameError):
    status = 422
    type = "idempotency_key_reused"


class RateLimited(SesameError):
    status = 429
    type = "rate_limited"

    def __init__(self, message: str | None = None, *, retry_after: int, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"Retry-After": str(max(1, retry_after))})
        super().__init__(message, retry_after=retry_after, **kwargs)


class ServiceUnavailable(SesameError):
    status = 503
    type = "service_unavailable"


@dataclass
class ErrorBody:
    """The JSON body of every error response."""

    type: str
    status: int
    message: str
    request_id: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "status": self.status,
            "message": self.message,
            "request_id": self.request_id,
        }
        if self.errors:
            body["errors"] = self.errors
        if self.details:
            body["details"] = self.details
        return body
