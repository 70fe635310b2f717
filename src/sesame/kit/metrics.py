"""Prometheus metrics, correct with one process or several.

With several server workers each process counts on its own; ``sesame serve`` then points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start, and
``render()`` aggregates every worker's figures, so ``GET /metrics`` on any worker tells
the whole truth.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

HTTP_REQUESTS = Counter(
    "sesame_http_requests_total",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "sesame_http_request_duration_seconds",
    "Time from request start to the last byte of the response",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
UNHANDLED_ERRORS = Counter(
    "sesame_unhandled_errors_total", "Exceptions that reached the catch-all handler"
)


def prepare_multiprocess_dir(directory: Path) -> None:
    """Start several workers with an empty shared metrics directory."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)


def render() -> tuple[bytes, str]:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
