"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

Every POST declares ``Idempotency-Key``. A client sends a fresh key with each new request;
schemathesis would send the few short strings it generates first with many different
bodies, and rightly be told ``idempotency_key_reused``. A valid key it generates is
therefore made unique; an invalid one is sent as generated, to be refused.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

_VALID = re.compile(r"^[!-~]{1,255}$")


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and _VALID.match(value):
            headers[name] = f"{value[:200]}-{uuid.uuid4().hex}"
