"""A C2SP tlog-witness (c2sp.org/tlog-witness): cosign a log's checkpoints, but only those
that extend the last checkpoint this witness cosigned for that log.

A witness is what turns "the log signed it" into "the log cannot show one history to us
and another to someone else": it remembers, per origin, the size and root hash of the
latest checkpoint it cosigned, and cosigns a new one only with an RFC 6962 consistency
proof from that tree. Its one safety property is that the remembered tree never moves
backwards or sideways, so

- the old-size check and the update of the remembered tree are one compare-and-swap: a
  SQLite ``BEGIN IMMEDIATE`` transaction around read, check and write (the race the spec
  describes, where a slow request for size N lands after one for N+K, cannot happen);
- the state file uses WAL with ``synchronous=FULL``, so a cosignature is only returned
  once the new tree is on disk — with ``NORMAL`` a power cut could forget the last
  update and let the witness cosign a fork of what it already vouched for;
- refused requests that carry a valid log signature (a fork at the same size, a proof
  that does not verify) are kept in ``refused`` as possible evidence of log misbehaviour,
  once per origin, reason and checkpoint so that replays cannot fill the disk.

``Witness.add_checkpoint`` holds the whole protocol and answers ``(status, content type,
body)``, so it is tested without HTTP; ``create_app`` is a thin Starlette shell that
bounds the body and runs the blocking SQLite work in a thread.

Spec readings: a non-empty proof with old size 0 is answered 422 (the spec says the proof
MUST be empty, and an empty tree has no other proof that verifies); a note whose trusted
key's signature fails is refused with 403 even if another trusted signature verifies (as
Go's ``note.Open`` does); checkpoints must be in canonical form (what the log signed is
what we parse and store), and sizes must fit in 63 bits (SQLite's integers).

The private key file holds a Go sumdb-style signer key for a cosignature (type 0x04) key:
``PRIVATE+KEY+<name>+<key ID in hex>+<base64(0x04 ‖ Ed25519 seed)>``. Nothing here ever
logs or echoes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from sesame.kit.clock import Clock, SystemClock
from sesame.kit.logging import get_logger
from sesame.ledger import note
from sesame.ledger.merkle import EMPTY_ROOT, HASH_SIZE, verify_consistency
from sesame.ledger.note import COSIGNATURE, ED25519, Checkpoint, NoteError, Signer, Verifier

log = get_logger("sesame.witness")

MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
MAX_TREE_SIZE = 2**63 - 1
SIZE_CONTENT_TYPE = "text/x.tlog.size"
TEXT = "text/plain; charset=utf-8"
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
BUSY_TIMEOUT = 30.0  # seconds a request waits for another's transaction

_OLD_LINE = re.compile(r"old (0|[1-9][0-9]*)")
_KEY_ID = re.compile(r"[0-9a-fA-F]{8}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL CHECK (size >= 0),
    root BLOB NOT NULL CHECK (length(root) = 32)
);
CREATE TABLE IF NOT EXISTS refused (
    id INTEGER PRIMARY KEY,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    checkpoint_sha256 BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    latest_size INTEGER NOT NULL,
    latest_root BLOB NOT NULL,
    request BLOB NOT NULL,
    UNIQUE (origin, reason, checkpoint_sha256)
);
"""


class WitnessError(ValueError):
    """A witness key, key file or configuration that cannot be used."""


# -- the private key file ----------------------------------------------------------------------


def _encode_key(name: str, private: Ed25519PrivateKey) -> str:
    try:
        key_id = Signer(name, private, COSIGNATURE).verifier.id
    except NoteError as exc:
        raise WitnessError(f"invalid witness name {name!r}") from exc
    material = base64.b64encode(bytes([COSIGNATURE]) + private.private_bytes_raw()).decode()
    return f"{PRIVATE_KEY_PREFIX}{name}+{key_id.hex()}+{material}"


def generate_key(name: str) -> str:
    """A new witness private key, as the one-line string ``load_signer`` reads."""
    return _encode_key(name, Ed25519PrivateKey.generate())


def load_signer(text: str) -> Signer:
    """The cosigning key in a ``PRIVATE+KEY+…`` string. Errors never quote the key."""
    text = text.strip()
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise WitnessError("not a witness private key (PRIVATE+KEY+<name>+<id>+<key>)")
    parts = text[len(PRIVATE_KEY_PREFIX) :].split("+", 2)
    if len(parts) != 3 or not _KEY_ID.fullmatch(parts[1]):
        raise WitnessError("a private key is PRIVATE+KEY+<name>+<8 hex digits>+<base64 key>")
    name, hex_id, material = parts
    try:
        raw = base64.b64decode(material, validate=True)
    except binascii.Error:
        raise WitnessError("the private key material is not base64") from None
    if len(raw) != 33 or raw[0] != COSIGNATURE:
        raise WitnessError("only Ed25519 cosignature keys (type 0x04, 32-byte seed) are used")
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(raw[1:]), COSIGNATURE)
    try:
        key_id = signer.verifier.id
    except NoteError:
        raise WitnessError(f"invalid witness name {name!r}") from None
    if key_id.hex() != hex_id.lower():
        raise WitnessError(f"the key ID of {name} does not match its key")
    return signer


def read_key_file(path: str | os.PathLike[str]) -> Signer:
    """The signer in a key file, which others than its owner may not read (like ssh)."""
    path = Path(path)
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise WitnessError(f"{path} is readable by others; run chmod 600 on it")
    return load_signer(path.read_text(encoding="utf-8"))


def ensure_key_file(path: str | os.PathLike[str], name: str) -> Signer:
    """The witness key in ``path``, generated first (mode 0600) if the file is missing.

    The file is created with ``O_EXCL``, so two starting processes cannot each write a key
    and cosign with different ones; an existing key for another name is refused rather
    than silently used under the wrong identity."""
    path = Path(path)
    key = generate_key(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            if hasattr(os, "fchmod"):
                os.fchmod(file.fileno(), 0o600)  # whatever the umask
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        log.info("witness_key_created", path=str(path), name=name)
    signer = read_key_file(path)
    if signer.name != name:
        raise WitnessError(f"{path} holds the key of {signer.name!r}, not {name!r}")
    return signer


def trusted_logs(vkeys: Iterable[str]) -> dict[str, list[Verifier]]:
    """Log verifier keys grouped by origin: a log's key name is its origin line."""
    logs: dict[str, list[Verifier]] = {}
    for vkey in vkeys:
        try:
            verifier = Verifier.parse(vkey)
        except NoteError as exc:
            raise WitnessError(f"bad log key: {exc}") from exc
        if verifier.kind != ED25519:
            raise WitnessError(f"the key of {verifier.name} is not a log (Ed25519) key")
        known = logs.setdefault(verifier.name, [])
        if verifier not in known:
            known.append(verifier)
    return logs


# -- the protocol ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    size: int
    root: bytes


@dataclass(frozen=True)
class Refusal:
    """A refused request that carried a valid log signature: possible misbehaviour."""

    reason: str
    received_at: int
    latest: TreeHead
    request: bytes


@dataclass(frozen=True)
class _Request:
    old: int
    proof: list[bytes]
    note: note.Note
    checkpoint: Checkpoint


class _Reply(Exception):
    """An answer other than a cosignature, raised to leave the checks early."""

    def __init__(self, status: int, message: str, content_type: str = TEXT) -> None:
        super().__init__(message)
        self.status = status
        self.content_type = content_type
        self.body = message.encode()


def _parse(body: bytes) -> _Request:
    """The old size, the proof and the checkpoint, or a 400 naming what is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Reply(400, "the body is not UTF-8\n") from None
    cut = text.find("\n\n")
    if cut < 0:
        raise _Reply(400, "no empty line before the checkpoint\n")
    lines = text[:cut].split("\n")
    match = _OLD_LINE.fullmatch(lines[0])
    if match is None:
        raise _Reply(400, "the first line is 'old <size>', decimal without leading zeros\n")
    old = int(match.group(1))
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise _Reply(400, f"at most {MAX_PROOF_LINES} consistency proof lines\n")
    proof = []
    for line in lines[1:]:
        try:
            node = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise _Reply(400, "a proof line is not base64\n") from None
        if len(node) != HASH_SIZE or base64.b64encode(node).decode() != line:
            raise _Reply(400, "a proof line is one 32-byte hash in base64\n")
        proof.append(node)
    try:
        parsed = note.parse(text[cut + 2 :])
        # A plain ValueError too: Checkpoint.parse lets int() fail on non-ASCII digits.
        checkpoint = Checkpoint.parse(parsed.text)
    except ValueError as exc:
        raise _Reply(400, f"malformed checkpoint: {exc}\n") from None
    if checkpoint.text != parsed.text:
        raise _Reply(400, "the checkpoint is not in canonical form\n")
    if checkpoint.size > MAX_TREE_SIZE or old > MAX_TREE_SIZE:
        raise _Reply(400, "tree sizes above 2^63 - 1 are not supported\n")
    return _Request(old, proof, parsed, checkpoint)


def _check(latest: TreeHead, request: _Request) -> _Reply | None:
    """Why the checkpoint may not replace ``latest``, or None if it may."""
    checkpoint = request.checkpoint
    if request.old != latest.size:
        return _Reply(409, f"{latest.size}\n", SIZE_CONTENT_TYPE)
    if checkpoint.size == latest.size:
        if checkpoint.root != latest.root:
            return _Reply(409, "a different root hash at the size this witness cosigned\n")
        if request.proof:
            return _Reply(422, "the proof between equal sizes is empty\n")
        return None
    if not verify_consistency(
        latest.size, checkpoint.size, latest.root, checkpoint.root, request.proof
    ):
        return _Reply(422, "the consistency proof does not verify\n")
    return None


class Witness:
    """The witness's key, the logs it trusts and its state file; see the module docstring.

    Each call opens its own SQLite connection, so any number of threads (or processes on
    the same file) may call ``add_checkpoint`` at once; SQLite's write lock serialises
    the compare-and-swap."""

    def __init__(
        self,
        signer: Signer,
        logs: Mapping[str, Sequence[Verifier]],
        state_path: str | os.PathLike[str],
    ) -> None:
        if signer.kind != COSIGNATURE:
            raise WitnessError("a witness signs with a cosignature (type 0x04) key")
        for origin, verifiers in logs.items():
            if not verifiers:
                raise WitnessError(f"no key for the log {origin}")
            for verifier in verifiers:
                if verifier.name != origin or verifier.kind != ED25519:
                    raise WitnessError(f"{verifier.vkey} is not an Ed25519 key of {origin}")
        self.signer = signer
        self._logs = {origin: list(verifiers) for origin, verifiers in logs.items()}
        self._path = os.fspath(state_path)
        if self._path in ("", ":memory:"):
            raise WitnessError("the witness state must be a file, shared by every connection")
        with closing(self._connect()) as db:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise WitnessError(f"{self._path} cannot use WAL (journal mode {mode})")
            db.executescript(_SCHEMA)

    @property
    def name(self) -> str:
        return self.signer.name

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    @property
    def origins(self) -> list[str]:
        return sorted(self._logs)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._path, timeout=BUSY_TIMEOUT, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        return db

    @staticmethod
    def _read(db: sqlite3.Connection, origin: str) -> TreeHead | None:
        row = db.execute("SELECT size, root FROM checkpoints WHERE origin = ?", (origin,))
        found = row.fetchone()
        return None if found is None else TreeHead(int(found[0]), bytes(found[1]))

    def latest(self, origin: str) -> TreeHead | None:
        """The latest tree cosigned for ``origin``, or None if none ever was."""
        with closing(self._connect()) as db:
            return self._read(db, origin)

    def refusals(self, origin: str) -> list[Refusal]:
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT reason, received_at, latest_size, latest_root, request FROM refused"
                " WHERE origin = ? ORDER BY id",
                (origin,),
            ).fetchall()
        return [Refusal(r[0], r[1], TreeHead(r[2], bytes(r[3])), bytes(r[4])) for r in rows]

    def add_checkpoint(self, body: bytes, now: int) -> tuple[int, str, bytes]:
        """Answer one ``add-checkpoint`` request body as ``(status, content type, body)``;
        ``now`` (POSIX seconds) is the cosignature's timestamp. Blocks on SQLite."""
        if not 0 <= now <= MAX_TREE_SIZE:
            raise ValueError("a cosignature timestamp is between 0 and 2^63 - 1")
        try:
            if len(body) > MAX_BODY:
                raise _Reply(413, f"the body is limited to {MAX_BODY} bytes\n")
            request = _parse(body)
            origin = request.checkpoint.origin
            verifiers = self._logs.get(origin)
            if verifiers is None:
                raise _Reply(404, "unknown log origin\n")
            try:
                note.verify(request.note, verifiers)
            except NoteError:
                raise _Reply(403, "no valid signature from a trusted log key\n") from None
            if request.old > request.checkpoint.size:
                raise _Reply(400, "the old size is larger than the checkpoint's\n")
            refusal = self._compare_and_swap(request, body, now)
            if refusal is not None:
                raise refusal
        except _Reply as reply:
            if reply.status in (409, 422):
                log.info("witness_refused", status=reply.status, reason=str(reply).strip())
            return reply.status, reply.content_type, reply.body
        cosignature = self.signer.signature_line(request.note.text, now)
        log.info("witness_cosigned", origin=origin, size=request.checkpoint.size)
        return 200, TEXT, cosignature.encode()

    def _compare_and_swap(self, request: _Request, body: bytes, now: int) -> _Reply | None:
        """Check the request against the stored tree and store its tree if it passes, in
        one write transaction; refusals with evidence value are stored instead."""
        checkpoint = request.checkpoint
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                latest = self._read(db, checkpoint.origin) or TreeHead(0, EMPTY_ROOT)
                refusal = _check(latest, request)
                if refusal is None:
                    db.execute(
                        "INSERT INTO checkpoints (origin, size, root) VALUES (?, ?, ?)"
                        " ON CONFLICT (origin) DO UPDATE"
                        " SET size = excluded.size, root = excluded.root",
                        (checkpoint.origin, checkpoint.size, checkpoint.root),
                    )
                elif refusal.content_type != SIZE_CONTENT_TYPE:  # a fork or a bad proof
                    db.execute(
                        "INSERT OR IGNORE INTO refused (origin, reason, checkpoint_sha256,"
                        " received_at, latest_size, latest_root, request)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            checkpoint.origin,
                            str(refusal).strip(),
                            hashlib.sha256(checkpoint.text.encode()).digest(),
                            now,
                            latest.size,
                            latest.root,
                            body,
                        ),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.rollback()
                raise
        return refusal


# -- HTTP --------------------------------------------------------------------------------------


def create_app(witness: Witness, clock: Clock | None = None) -> Starlette:
    """``POST /add-checkpoint`` and ``GET /`` (the witness's vkey) for ``witness``."""
    clock = clock or SystemClock()

    def text(status: int, message: str, content_type: str = TEXT) -> Response:
        # Content-Type set verbatim: clients compare it to "text/x.tlog.size" exactly,
        # and Starlette would append a charset to a media_type.
        return Response(message, status_code=status, headers={"Content-Type": content_type})

    async def add_checkpoint(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdecimal() and int(declared) > MAX_BODY:
            return text(413, f"the body is limited to {MAX_BODY} bytes\n")
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    return text(413, f"the body is limited to {MAX_BODY} bytes\n")
        except ClientDisconnect:
            return text(400, "the client went away\n")
        now = int(clock.now().timestamp())
        try:
            status, content_type, payload = await run_in_threadpool(
                witness.add_checkpoint, bytes(body), now
            )
        except sqlite3.OperationalError as exc:  # the state file is locked or unwritable
            log.error("witness_state_unavailable", error=str(exc))
            return text(503, "the witness state is unavailable, retry later\n")
        return Response(payload, status_code=status, headers={"Content-Type": content_type})

    async def vkey(request: Request) -> Response:
        return text(200, witness.verifier.vkey + "\n")

    return Starlette(
        routes=[
            Route("/add-checkpoint", add_checkpoint, methods=["POST"]),
            Route("/", vkey, methods=["GET"]),
        ]
    )


def serve(
    name: str,
    key_file: str | os.PathLike[str],
    log_vkeys: Sequence[str],
    state_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 7380,
) -> None:
    """Run a witness named ``name`` until interrupted.

    The key in ``key_file`` is created (mode 0600) on first run; ``log_vkeys`` are the
    verifier keys of the logs to witness, each named by its log's origin; ``state_path``
    is the SQLite file of cosigned trees — losing it lets the witness be rolled back, so
    a witness whose state is lost must get a new key, not just a new file. The witness's
    own vkey (what logs and clients configure) is printed to stdout first."""
    import uvicorn

    if not log_vkeys:
        raise WitnessError("a witness needs at least one log key")
    logs = trusted_logs(log_vkeys)
    Path(key_file).parent.mkdir(parents=True, exist_ok=True)
    Path(state_path).parent.mkdir(parents=True, exist_ok=True)
    witness = Witness(ensure_key_file(key_file, name), logs, state_path)
    print(witness.verifier.vkey, flush=True)
    log.info("witness_starting", name=name, origins=witness.origins, host=host, port=port)
    uvicorn.run(create_app(witness), host=host, port=port)
