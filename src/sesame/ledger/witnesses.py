"""Asking witnesses to cosign checkpoints (the client side of C2SP tlog-witness).

For each configured witness the log sends ``old <size>``, the consistency proof from that
size, a blank line and the signed checkpoint. ``old`` is the size the witness last
cosigned, as the log remembers it; a witness that remembers another size answers 409
with it, and the log asks once more from there. Every witness is asked concurrently, each
with one timeout for the whole exchange (``SESAME_LEDGER_WITNESS_TIMEOUT_SECONDS``); one
that fails is asked again later, so a slow or dead witness costs a few seconds of one
background task, never a key operation nor the next checkpoint. Only cosignatures that
verify under the witness's configured key are kept. Each exchange's round trip is
measured (``sesame_ledger_witness_round_trip_seconds``): it is part of the time from a
key event to its cosigned checkpoint.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from prometheus_client import Histogram

from sesame.kit.logging import get_logger
from sesame.ledger.note import NoteError, Verifier, parse, verify
from sesame.settings import Settings

log = get_logger("sesame.ledger.witnesses")

ProofFor = Callable[[int], Awaitable[list[bytes]]]
Late = Callable[["Outcome"], Awaitable[None]]

ROUND_TRIP = Histogram(
    "sesame_ledger_witness_round_trip_seconds",
    "One add-checkpoint request to a witness, until its answer (or the timeout)",
    ["witness"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
)


@dataclass(frozen=True)
class Witness:
    url: str
    verifier: Verifier

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class Outcome:
    name: str
    line: str | None  # the verified cosignature line, if any
    size: int | None  # the size the witness now holds for us, if known


class WitnessPool:
    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.witnesses = [
            Witness(w.url.rstrip("/"), Verifier.parse(w.vkey)) for w in settings.ledger_witnesses
        ]
        self.timeout = settings.ledger_witness_timeout_seconds
        self._transport = transport  # tests: witnesses in process
        self._client: httpx.AsyncClient | None = None  # kept: connections are reused
        self._late: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for task in list(self._late):
            task.cancel()
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def configured(self) -> bool:
        return bool(self.witnesses)

    @property
    def verifiers(self) -> list[Verifier]:
        return [w.verifier for w in self.witnesses]

    async def cosign(
        self,
        note: str,
        size: int,
        sizes: dict[str, int],
        proof_for: ProofFor,
        *,
        enough: int | None = None,
        late: Late | None = None,
    ) -> list[Outcome]:
        """Every witness's outcome, once each has answered or timed out — or, with
        ``enough``, as soon as that many cosigned: a witness slower than the quorum then
        delays nothing, and its outcome goes to ``late`` when it comes (within its
        timeout, like any other)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
        client = self._client

        async def ask(witness: Witness) -> Outcome:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._ask(
                        client, witness, note, size, sizes.get(witness.name, 0), proof_for
                    )
            except TimeoutError:
                log.warning("witness_timed_out", witness=witness.name, seconds=self.timeout)
                return Outcome(witness.name, None, None)

        pending = {asyncio.create_task(ask(w)) for w in self.witnesses}
        outcomes: list[Outcome] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                outcomes += [task.result() for task in done]
                if enough is not None and sum(1 for o in outcomes if o.line) >= enough:
                    break
        except BaseException:  # cancelled: so are the requests
            for task in pending:
                task.cancel()
            raise
        for task in pending:
            self._follow(task, late)
        return outcomes

    def _follow(self, task: asyncio.Task[Outcome], late: Late | None) -> None:
        async def follow() -> None:
            try:
                outcome = await task
            except Exception as exc:  # as in a round: logged, and asked again later
                log.warning("witness_failed", error_type=type(exc).__name__)
                return
            if late is not None:
                await late(outcome)

        follower = asyncio.create_task(follow())
        self._late.add(follower)
        follower.add_done_callback(self._late.discard)

    async def _ask(
        self,
        client: httpx.AsyncClient,
        witness: Witness,
        note: str,
        size: int,
        old: int,
        proof_for: ProofFor,
    ) -> Outcome:
        for _ in range(2):  # a second time if the witness remembers another old size
            if old > size:
                log.error("witness_ahead_of_log", witness=witness.name, witness_size=old)
                return Outcome(witness.name, None, None)
            proof = await proof_for(old) if old else []
            body = f"old {old}\n" + "".join(base64.b64encode(h).decode() + "\n" for h in proof)
            sent = time.perf_counter()
            try:
                response = await client.post(
                    f"{witness.url}/add-checkpoint", content=(body + "\n" + note).encode()
                )
            except httpx.HTTPError as exc:
                log.warning("witness_unreachable", witness=witness.name, error=type(exc).__name__)
                return Outcome(witness.name, None, None)
            finally:
                ROUND_TRIP.labels(witness.name).observe(time.perf_counter() - sent)
            if response.status_code == 409 and response.headers.get("content-type", "").startswith(
                "text/x.tlog.size"
            ):
                try:
                    old = int(response.text.strip())
                except ValueError:
                    break
                continue
            if response.status_code != 200:
                log.warning("witness_refused", witness=witness.name, status=response.status_code)
                return Outcome(witness.name, None, None)
            return Outcome(witness.name, _verified_line(note, response.text, witness), size)
        return Outcome(witness.name, None, None)


def _verified_line(note: str, answer: str, witness: Witness) -> str | None:
    """The witness's cosignature from its answer, if it verifies over our checkpoint."""
    text = parse(note).text
    for line in answer.splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            _, verified = verify(text + "\n" + line, [witness.verifier])
        except NoteError:
            continue
        if verified:
            return line if line.endswith("\n") else line + "\n"
    log.warning("witness_cosignature_invalid", witness=witness.name)
    return None
