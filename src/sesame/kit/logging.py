"""Structured JSON logs that can never fail a request.

The production system this project follows once died because a new logging middleware
raised on some arguments: the error escaped the error handler, the server crashed and
restarted in a loop, and clients retried into it. Here every log call goes through a
guard: whatever a processor, the renderer, argument interpolation or the write does, the
call returns ``None``, a fallback line goes to stderr and ``sesame_log_failures_total``
counts it. Secrets never reach the output: values under well-known secret keys are
redacted before rendering. Contact details never do either: every string value (the
event, its fields, a rendered traceback) has its phone numbers and e-mail addresses
masked, ``+82******78`` and ``a***@example.com``, whatever the key it sits under.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
import structlog
from prometheus_client import Counter
from structlog.typing import EventDict, Processor, WrappedLogger

LOG_FAILURES = Counter(
    "sesame_log_failures_total", "Log calls that raised and were swallowed", ["method"]
)

SECRET_KEYS = frozenset(
    {
        "password",
        "new_password",
        "pin",
        "code",
        "otp",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "api_key",
        "authorization",
        "cookie",
        "set-cookie",
        "credentials",
    }
)
REDACTED = "[redacted]"
UNMASKABLE = "[unmaskable]"

# E.164-looking numbers (a plus sign, then 8 digits or more) and e-mail addresses,
# wherever they appear in a string; a time zone offset (``+09:00``) is too short to match.
_PHONE = re.compile(r"\+([1-9]\d{7,})")
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@((?:[\w-]+\.)+[\w-]{2,})")
_MASK_DEPTH = 6

_SYNC_METHODS = (
    "debug",
    "info",
    "warning",
    "warn",
    "error",
    "critical",
    "fatal",
    "exception",
    "msg",
    "log",
)
_ASYNC_METHODS = (
    "adebug",
    "ainfo",
    "awarning",
    "awarn",
    "aerror",
    "acritical",
    "afatal",
    "aexception",
    "amsg",
    "alog",
)


def _report_failure(method: str, exc: BaseException) -> None:
    """Count a failed log call and leave a minimal trace; this function never raises."""
    with contextlib.suppress(Exception):  # the metric is best effort by design
        LOG_FAILURES.labels(method=method).inc()
    try:
        line = orjson.dumps(
            {
                "level": "error",
                "event": "log_call_failed",
                "method": method,
                "error_type": type(exc).__name__,
            }
        )
        os.write(2, line + b"\n")
    except Exception:  # noqa: S110 - nothing is left to report to
        pass


def _guard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            _report_failure(method.__name__, exc)
            return None

    return guarded


def _aguard(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(self, *args, **kwargs)
        except Exception as exc:
            _report_failure(method.__name__, exc)
            return None

    return guarded


def safe_logger_class(level: int) -> type:
    """A structlog bound-logger class whose every log method swallows its own failures."""
    base = structlog.make_filtering_bound_logger(level)
    namespace: dict[str, Any] = {}
    for name in _SYNC_METHODS:
        if hasattr(base, name):
            namespace[name] = _guard(getattr(base, name))
    for name in _ASYNC_METHODS:
        if hasattr(base, name):
            namespace[name] = _aguard(getattr(base, name))
    return type("SafeBoundLogger", (base,), namespace)


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if key.lower() in SECRET_KEYS:
            event_dict[key] = REDACTED
        else:
            value = event_dict[key]
            if isinstance(value, Mapping):
                event_dict[key] = {
                    k: (REDACTED if str(k).lower() in SECRET_KEYS else v) for k, v in value.items()
                }
    return event_dict


def mask_contact(text: str) -> str:
    """``text`` with every phone number and e-mail address in it masked."""
    if "+" in text:
        text = _PHONE.sub(lambda m: f"+{m[1][:2]}******{m[1][-2:]}", text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: f"{m[1]}***@{m[2]}", text)
    return text


def _masked(value: Any, depth: int = 0) -> Any:
    kind = type(value)
    if kind is str or isinstance(value, str):
        return mask_contact(str(value))
    if depth >= _MASK_DEPTH:
        return value if kind in (int, float, bool) or value is None else UNMASKABLE
    if isinstance(value, Mapping):
        return {k: _masked(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v, depth + 1) for v in value]
    return value


def mask_personal(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask contact details in every value; a value that cannot be read is replaced, so
    the line is still written and says nothing it should not."""
    for key in list(event_dict):
        try:
            event_dict[key] = _masked(event_dict[key])
        except Exception:
            event_dict[key] = UNMASKABLE
    return event_dict


def _json_default(value: Any) -> str:
    try:
        return mask_contact(str(value))
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


def _render_json_bytes(_: WrappedLogger, __: str, event_dict: EventDict) -> bytes:
    return orjson.dumps(event_dict, default=_json_default, option=orjson.OPT_NON_STR_KEYS)


def _render_json_str(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
    return _render_json_bytes(logger, name, event_dict).decode()


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str = "info",
    fmt: str = "json",
    *,
    extra_processors: Iterable[Processor] = (),
    stream: Any = None,
) -> None:
    """Configure structlog and route the standard library's loggers through the same output.

    ``extra_processors`` run after the built-in enrichment and before redaction; tests use
    them to inject a processor that fails.
    """
    numeric_level = _LEVELS[level]
    out = stream or sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    tail: list[Processor] = [
        *extra_processors,
        redact_secrets,
        structlog.processors.format_exc_info,
        mask_personal,
    ]
    if fmt == "console":
        renderer: Processor = structlog.dev.ConsoleRenderer(colors=False)
        factory: Any = structlog.WriteLoggerFactory(file=out)
        stdlib_renderer: Processor = renderer
    else:
        renderer = _render_json_bytes
        binary_out: Any = getattr(out, "buffer", out)
        factory = structlog.BytesLoggerFactory(file=binary_out)
        stdlib_renderer = _render_json_str

    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=safe_logger_class(numeric_level),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                stdlib_renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    for noisy in (
        "uvicorn.access",
        "sqlalchemy.engine",
        "aiosqlite",
        "asyncio",
        "gmqtt",
        "amqtt",
        "transitions",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True
    # uvicorn installs its own handlers; let them propagate to ours instead.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get_logger(name: str | None = None, **initial: Any) -> Any:
    return structlog.get_logger(name, **initial) if name else structlog.get_logger(**initial)


def bind_context(**values: Any) -> Mapping[str, Any]:
    return structlog.contextvars.bind_contextvars(**values)


def reset_context(tokens: Mapping[str, Any]) -> None:
    structlog.contextvars.reset_contextvars(**tokens)
