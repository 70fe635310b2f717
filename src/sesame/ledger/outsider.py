"""What a residents' council, a partner or an auditor runs: only HTTP or exported files.

- ``verify`` fetches the served checkpoint, checks the log's signature and enough witness
  cosignatures, checks it is consistent with the last checkpoint this verifier accepted
  (kept in a small state file), and checks the inclusion of given entries and receipts.
- ``audit_remote`` / ``audit_tiles`` download every entry up to the checkpoint and replay
  it (``sesame.ledger.audit``). When the recomputed root differs from the signed one, the
  remote audit asks the log for inclusion proofs and bisects to the first entry whose
  bytes no longer match what was signed, and names it.

Nothing here trusts the server beyond what signatures and hashes prove.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sesame.ledger import merkle, tiles
from sesame.ledger.audit import Auditor, Report, Violation
from sesame.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint

PAGE = 1000


class VerificationFailed(Exception):
    """The log failed a check: the message says which and why."""


class LogClient:
    """The ledger's HTTP API, with timeouts and a few retries for transient failures."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> httpx.Response:
        delay = 0.5
        for attempt in range(4):
            try:
                response = self.http.get(path, params=params)
            except httpx.TransportError:
                if attempt == 3:
                    raise
            else:
                if response.status_code < 500 or attempt == 3:
                    if response.status_code == 401:
                        raise VerificationFailed(
                            f"GET {path}: 401: this log is readable when signed in; pass "
                            "--token (an API key or access token) or set SESAME_LEDGER_TOKEN"
                        )
                    if response.status_code >= 400:
                        raise VerificationFailed(
                            f"GET {path}: {response.status_code} {response.text[:200]}"
                        )
                    return response
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def checkpoint(self) -> str:
        return self._get("/v1/ledger/checkpoint").text

    def info(self) -> dict[str, Any]:
        return dict(self._get("/v1/ledger").json())

    def entries(self, start: int, end: int) -> list[bytes]:
        page = self._get("/v1/ledger/entries", start=start, end=end).json()
        return [base64.b64decode(e["body"]) for e in page["entries"]]

    def all_entries(
        self, size: int, progress: Callable[[int], None] | None = None
    ) -> Iterator[bytes]:
        start = 0
        while start < size:
            batch = self.entries(start, min(size, start + PAGE))
            if not batch:
                raise VerificationFailed(f"the log served no entry at {start} of {size}")
            yield from batch
            start += len(batch)
            if progress:
                progress(start)

    def inclusion(self, index: int, size: int) -> list[bytes]:
        proof = self._get("/v1/ledger/proofs/inclusion", index=index, tree_size=size).json()
        return [base64.b64decode(h) for h in proof["hashes"]]

    def consistency(self, first: int, second: int) -> list[bytes]:
        proof = self._get("/v1/ledger/proofs/consistency", first=first, second=second).json()
        return [base64.b64decode(h) for h in proof["hashes"]]


@dataclass
class Trust:
    """What the verifier was told to trust, out of band."""

    log: Verifier
    witnesses: list[Verifier] = field(default_factory=list)
    quorum: int = 0

    def open(self, note: str) -> Checkpoint:
        try:
            checkpoint, cosigned = open_checkpoint(note, self.log, self.witnesses)
        except NoteError as exc:
            raise VerificationFailed(f"checkpoint: {exc}") from exc
        if len(cosigned) < self.quorum:
            raise VerificationFailed(
                f"checkpoint has {len(cosigned)} witness cosignatures; {self.quorum} required"
            )
        return checkpoint


def _load_state(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    return dict(json.loads(path.read_text()))


def _save_state(path: Path | None, checkpoint: Checkpoint, note: str) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(
        json.dumps(
            {
                "origin": checkpoint.origin,
                "size": checkpoint.size,
                "root": base64.b64encode(checkpoint.root).decode(),
                "checkpoint": note,
            },
            indent=2,
        )
    )
    temporary.replace(path)


@dataclass
class Verified:
    checkpoint: Checkpoint
    previous_size: int | None
    entries: list[int] = field(default_factory=list)
    receipts: int = 0


def check_consistent(client: LogClient, old: Checkpoint, new: Checkpoint) -> None:
    if new.size < old.size:
        raise VerificationFailed(f"rollback: the log is at {new.size}, we saw {old.size}")
    if new.size == old.size:
        if new.root != old.root:
            raise VerificationFailed(f"fork: two different roots for size {new.size}")
        return
    proof = client.consistency(old.size, new.size) if old.size else []
    if not merkle.verify_consistency(old.size, new.size, old.root, new.root, proof):
        raise VerificationFailed(
            f"the checkpoint of {new.size} is not consistent with the one of {old.size}"
        )


def verify(
    client: LogClient | None,
    trust: Trust,
    *,
    state: Path | None = None,
    indexes: list[int] = (),  # type: ignore[assignment]
    receipts: list[dict[str, Any]] = (),  # type: ignore[assignment]
) -> Verified:
    remembered = _load_state(state)
    checkpoint: Checkpoint | None = None
    note = ""
    if client is not None:
        note = client.checkpoint()
        checkpoint = trust.open(note)
        if remembered is not None:
            if remembered["origin"] != checkpoint.origin:
                raise VerificationFailed("the state file is for another log")
            old = Checkpoint(
                remembered["origin"], remembered["size"], base64.b64decode(remembered["root"])
            )
            check_consistent(client, old, checkpoint)
        for index in indexes:
            [body] = client.entries(index, index + 1) or [b""]
            proof = client.inclusion(index, checkpoint.size)
            if not merkle.verify_inclusion(
                merkle.leaf_hash(body), index, checkpoint.size, proof, checkpoint.root
            ):
                raise VerificationFailed(f"entry {index} is not in the checkpoint's tree")
    verified = Verified(
        checkpoint=checkpoint or Checkpoint(trust.log.name, 0, merkle.EMPTY_ROOT),
        previous_size=None if remembered is None else int(remembered["size"]),
        entries=list(indexes),
    )
    for document in receipts:
        verified.receipts += verify_receipts(document, trust, client, checkpoint)
    if checkpoint is not None:
        _save_state(state, checkpoint, note)
    return verified


def verify_receipts(
    document: dict[str, Any],
    trust: Trust,
    client: LogClient | None,
    current: Checkpoint | None,
) -> int:
    """Check a receipts document (``GET /v1/keys/{id}/receipts``); returns how many
    receipts carried a proof and verified."""
    if not document.get("checkpoint"):
        raise VerificationFailed("the receipts carry no checkpoint")
    checkpoint = trust.open(document["checkpoint"])
    if client is not None and current is not None and checkpoint.size <= current.size:
        check_consistent(client, checkpoint, current)
    count = 0
    for receipt in document.get("receipts", []):
        body = base64.b64decode(receipt["entry"]["body"])
        proof = receipt.get("proof")
        if proof is None:
            continue
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        if proof["tree_size"] != checkpoint.size or not merkle.verify_inclusion(
            merkle.leaf_hash(body), proof["leaf_index"], checkpoint.size, hashes, checkpoint.root
        ):
            raise VerificationFailed(f"receipt for entry {proof['leaf_index']} does not verify")
        count += 1
    return count


# -- audits ---------------------------------------------------------------------------------


def audit_remote(
    client: LogClient,
    trust: Trust,
    *,
    signatures: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[Checkpoint, Report]:
    checkpoint = trust.open(client.checkpoint())
    auditor = Auditor(trust.log, signatures=signatures)
    for index, body in enumerate(client.all_entries(checkpoint.size, progress)):
        auditor.add(index, body)
    report = auditor.finish(checkpoint.root)
    if not report.root_ok:
        report.violations.insert(
            0, _altered(localize(client, auditor.tree, checkpoint), checkpoint)
        )
    return checkpoint, report


def _altered(index: int | None, checkpoint: Checkpoint) -> Violation:
    if index is None:
        return Violation(-1, "root_mismatch", None, "the entries do not hash to the signed root")
    return Violation(
        index,
        "entry_altered",
        None,
        f"entry {index} differs from what the checkpoint of {checkpoint.size} signed",
    )


def localize(client: LogClient, ours: merkle.Tree, checkpoint: Checkpoint) -> int | None:
    """The first entry whose hash differs from the signed tree, found by comparing our
    subtree hashes with the hashes of the log's inclusion proofs, outermost first, and
    descending into the first subtree that differs: one proof per level at most."""
    size = checkpoint.size
    if size == 0:
        return None
    low, high = 0, size  # the altered entry is in [low, high)
    while high - low > 1:
        proof = client.inclusion(low, size)
        ranges = _sibling_ranges(low, size)
        if len(proof) != len(ranges):
            return None
        for (start, end), theirs in zip(reversed(ranges), reversed(proof), strict=True):
            if low <= start and end <= high and ours.range_hash(start, end) != theirs:
                low, high = start, end
                break
        else:
            return low  # every subtree around it agrees: this entry itself differs
    return low


def _sibling_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges the hashes of an inclusion proof cover, deepest first."""
    ranges = []
    start, end = 0, size
    while end - start > 1:
        k = 1 << ((end - start - 1).bit_length() - 1)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def audit_tiles(
    directory: Path, trust: Trust, *, signatures: bool = False
) -> tuple[Checkpoint, Report]:
    checkpoint = trust.open(tiles.read_checkpoint(directory))
    auditor = Auditor(trust.log, signatures=signatures)
    try:
        for index, body in enumerate(tiles.read_entries(directory, checkpoint.size)):
            auditor.add(index, body)
    except tiles.TilesError as exc:
        raise VerificationFailed(str(exc)) from exc
    report = auditor.finish(checkpoint.root)
    if not report.root_ok:
        try:
            for _ in tiles.verified_entries(directory, checkpoint.size, checkpoint.root):
                pass
        except tiles.TilesError as exc:
            report.violations.insert(0, Violation(-1, "entry_altered", None, str(exc)))
        else:
            report.violations.insert(0, _altered(None, checkpoint))
    return checkpoint, report
