"""Starting and stopping the ledger's work with the process."""

from __future__ import annotations

import asyncio
from contextlib import suppress

from sesame.ledger import entries
from sesame.ledger.service import Ledger
from sesame.outbox import repository as outbox
from sesame.runtime import Runtime


async def start_ledger(runtime: Runtime) -> asyncio.Task[None] | None:
    """Every process serves proofs; every process also runs the sequencer loop, of which
    one at a time appends (see ``sesame.ledger.service``)."""
    if not runtime.settings.ledger_enabled:
        return None
    if runtime.ledger is None:
        runtime.ledger = Ledger(runtime)
    ledger: Ledger = runtime.ledger
    await ledger.signer()  # fail early on a misconfigured origin

    def wake(topics: frozenset[str]) -> None:
        if topics & entries.TOPICS:
            ledger.committed()

    stop_listening = outbox.on_commit(wake)
    outbox.set_sealer(runtime.engine, ledger.seal_row)  # sign events as they commit

    def stopped(_: object) -> None:
        stop_listening()
        outbox.set_sealer(runtime.engine, None)

    task = asyncio.create_task(ledger.run())
    task.add_done_callback(stopped)
    return task


async def stop_ledger(task: asyncio.Task[None] | None, runtime: Runtime) -> None:
    if task is None:
        return
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
    if runtime.ledger is not None:
        await runtime.ledger.witnesses.close()
