"""A real Sesame server whose log pipeline raises on any value containing "poison".

Started by test_log_resilience.py: ``python -m tests.kit.poison_server DATABASE_URL PORT``.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

from sesame.app import create_app
from sesame.kit.logging import configure_logging
from sesame.runtime import build_runtime
from sesame.settings import Settings


def poison(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for value in event_dict.values():
        if isinstance(value, str) and "poison" in value:
            raise UnicodeEncodeError("utf-8", value, 0, 1, "a log processor choked")
    return event_dict


def main() -> None:
    database_url, port = sys.argv[1], int(sys.argv[2])
    settings = Settings(env="development", database_url=database_url, gateway_enabled=False)
    configure_logging("info", "json", extra_processors=[poison])
    app = create_app(runtime=build_runtime(settings))
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
