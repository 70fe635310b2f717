"""Serving a stand-in: an ASGI app on a free localhost port inside the running event
loop, and ``async with`` for anything that starts and stops."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.types import ASGIApp


class Served:
    """``async with`` for a stand-in with ``start()`` and ``stop()``."""

    async def start(self) -> Any:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signal handlers alone.

    Several of these run at once inside the test loop; uvicorn's own handling would
    save and restore SIGINT handlers out of order and leave a stale one behind.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class BackgroundServer:
    """Serve an ASGI app on a free localhost port inside the running event loop."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.base_url = ""

    async def start(self) -> str:
        """Start serving; answers the base URL, e.g. ``http://127.0.0.1:54321``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self._server = _QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                sock.close()
                self._task.result()  # raises what stopped it
                raise RuntimeError("the stand-in server stopped before it started")
            await asyncio.sleep(0.005)
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        await self._task
        self._server = None
        self._task = None
