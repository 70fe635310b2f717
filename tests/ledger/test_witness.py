"""The tlog-witness: what it cosigns, what it refuses and with which status, that its state
only moves forward (across restarts and under concurrent requests), and its key file."""

from __future__ import annotations

import base64
import os
import stat
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sesame.kit.clock import FrozenClock
from sesame.ledger import note
from sesame.ledger.merkle import Tree, leaf_hash
from sesame.ledger.note import (
    COSIGNATURE,
    ED25519,
    Checkpoint,
    Signer,
    Verifier,
    open_checkpoint,
    sign_checkpoint,
)
from sesame.ledger.witness import (
    MAX_BODY,
    TreeHead,
    Witness,
    WitnessError,
    create_app,
    ensure_key_file,
    generate_key,
    load_signer,
    read_key_file,
    serve,
    trusted_logs,
)

ORIGIN = "ledger.example.org/sesame"
WITNESS_NAME = "witness.example.org/w1"
NOW = 1_790_000_000
SIZE_TYPE = "text/x.tlog.size"


class Log:
    """A log in memory: leaves ``entry <i>``, or ``forked <i>`` from ``fork_at`` on, so a
    forked log agrees with the honest one below ``fork_at`` and differs above."""

    def __init__(
        self,
        origin: str = ORIGIN,
        signer: Signer | None = None,
        fork_at: int | None = None,
        leaves: int = 40,
    ) -> None:
        self.origin = origin
        self.signer = signer or Signer(origin, Ed25519PrivateKey.generate())
        self.tree = Tree()
        self.tree.append(
            leaf_hash(f"{'entry' if fork_at is None or i < fork_at else 'forked'} {i}".encode())
            for i in range(leaves)
        )

    @property
    def verifier(self) -> Verifier:
        return self.signer.verifier

    def checkpoint(self, size: int, extensions: tuple[str, ...] = ()) -> str:
        head = Checkpoint(self.origin, size, self.tree.root(size), extensions)
        return sign_checkpoint(head, self.signer)

    def request(self, old: int, size: int) -> bytes:
        return request(old, self.tree.consistency_proof(old, size), self.checkpoint(size))


def request(old: int | str, proof: Sequence[bytes], checkpoint: str) -> bytes:
    lines = [f"old {old}\n", *(base64.b64encode(p).decode() + "\n" for p in proof), "\n"]
    return ("".join(lines) + checkpoint).encode()


def make_witness(path: Path, *logs: Log, signer: Signer | None = None) -> Witness:
    signer = signer or load_signer(generate_key(WITNESS_NAME))
    return Witness(signer, trusted_logs(log.verifier.vkey for log in logs), path)


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def witness(tmp_path: Path, log: Log) -> Witness:
    return make_witness(tmp_path / "witness.sqlite", log)


def cosign(witness: Witness, log: Log, old: int, size: int, now: int = NOW) -> bytes:
    status, content_type, body = witness.add_checkpoint(log.request(old, size), now)
    assert (status, content_type) == (200, "text/plain; charset=utf-8"), body
    return body


# -- cosigning -----------------------------------------------------------------------------------


def test_first_checkpoint_is_cosigned_with_a_timestamped_cosignature(
    witness: Witness, log: Log
) -> None:
    """With old 0 and no proof the witness cosigns, and the cosignature verifies as type
    0x04 with the caller's time."""
    body = cosign(witness, log, 0, 5)
    lines = body.decode().splitlines(keepends=True)
    assert len(lines) == 1
    assert lines[0].startswith(f"\u2014 {WITNESS_NAME} ")
    assert witness.verifier.kind == COSIGNATURE
    checkpoint, cosignatures = open_checkpoint(
        log.checkpoint(5) + body.decode(), log.verifier, [witness.verifier]
    )
    assert (checkpoint.size, checkpoint.root) == (5, log.tree.root(5))
    assert [(c.verifier, c.timestamp) for c in cosignatures] == [(witness.verifier, NOW)]
    assert witness.latest(ORIGIN) == TreeHead(5, log.tree.root(5))


def test_growth_with_consistency_proofs_advances_the_state(witness: Witness, log: Log) -> None:
    """Each checkpoint proven consistent with the last is cosigned and becomes the state."""
    assert witness.latest(ORIGIN) is None
    previous = 0
    for size in (1, 2, 3, 8, 13, 32, 33):
        body = cosign(witness, log, previous, size, now=NOW + size)
        _, verified = note.verify(log.checkpoint(size) + body.decode(), [witness.verifier])
        assert verified[0].timestamp == NOW + size
        assert witness.latest(ORIGIN) == TreeHead(size, log.tree.root(size))
        previous = size


def test_the_same_checkpoint_is_cosigned_again(witness: Witness, log: Log) -> None:
    """Old size equal to the checkpoint's, same root, empty proof: a fresh cosignature."""
    cosign(witness, log, 0, 7)
    body = cosign(witness, log, 7, 7, now=NOW + 60)
    _, verified = note.verify(log.checkpoint(7) + body.decode(), [witness.verifier])
    assert verified[0].timestamp == NOW + 60
    assert witness.latest(ORIGIN) == TreeHead(7, log.tree.root(7))


def test_extension_lines_are_part_of_the_cosigned_message(witness: Witness, log: Log) -> None:
    """The cosignature covers the whole checkpoint text, extension lines included."""
    signed = log.checkpoint(4, ("extension one", "extension two"))
    status, _, body = witness.add_checkpoint(request(0, [], signed), NOW)
    assert status == 200
    checkpoint, cosignatures = open_checkpoint(
        signed + body.decode(), log.verifier, [witness.verifier]
    )
    assert checkpoint.extensions == ("extension one", "extension two")
    assert len(cosignatures) == 1
    with pytest.raises(note.NoteError):  # not valid for the text without the extensions
        note.verify(log.checkpoint(4) + body.decode(), [witness.verifier])


def test_signatures_from_unknown_keys_are_ignored(witness: Witness, log: Log) -> None:
    """An extra signature by a key the witness does not know does not stop the cosignature."""
    other = Signer("someone.example/else", Ed25519PrivateKey.generate())
    text = Checkpoint(ORIGIN, 3, log.tree.root(3)).text
    signed = text + "\n" + other.signature_line(text) + log.signer.signature_line(text)
    assert witness.add_checkpoint(request(0, [], signed), NOW)[0] == 200


# -- refusals ------------------------------------------------------------------------------------


def test_a_smaller_checkpoint_is_refused_with_the_latest_size(witness: Witness, log: Log) -> None:
    """Rolling back (an older checkpoint, or a stale old size) is 409 with the latest size
    as text/x.tlog.size, and leaves the state alone."""
    cosign(witness, log, 0, 8)
    for old, size in ((5, 5), (0, 3), (0, 12), (5, 12), (9, 12)):
        status, content_type, body = witness.add_checkpoint(log.request(old, size), NOW)
        assert (status, content_type, body) == (409, SIZE_TYPE, b"8\n"), (old, size)
    assert witness.latest(ORIGIN) == TreeHead(8, log.tree.root(8))
    assert witness.refusals(ORIGIN) == []  # stale clients are not evidence


def test_a_different_root_at_the_same_size_is_a_fork(witness: Witness, log: Log) -> None:
    """Same size, other root (the log signed two trees of 8): 409, not a size answer, and
    the signed checkpoint is kept as evidence, once."""
    cosign(witness, log, 0, 8)
    forked = Log(signer=log.signer, fork_at=6)
    fork_request = forked.request(8, 8)
    for _ in range(2):
        status, content_type, _ = witness.add_checkpoint(fork_request, NOW + 1)
        assert (status, content_type) == (409, "text/plain; charset=utf-8")
    assert witness.latest(ORIGIN) == TreeHead(8, log.tree.root(8))
    [refusal] = witness.refusals(ORIGIN)
    assert refusal.request == fork_request
    assert refusal.latest == TreeHead(8, log.tree.root(8))
    assert refusal.received_at == NOW + 1


def test_a_larger_checkpoint_of_a_forked_log_does_not_verify(witness: Witness, log: Log) -> None:
    """A forked log's own proof from the size we cosigned does not lead from our root: 422."""
    cosign(witness, log, 0, 8)
    forked = Log(signer=log.signer, fork_at=6)
    status, _, _ = witness.add_checkpoint(forked.request(8, 12), NOW)
    assert status == 422
    assert witness.latest(ORIGIN) == TreeHead(8, log.tree.root(8))
    assert [r.reason for r in witness.refusals(ORIGIN)] == ["the consistency proof does not verify"]
    # The honest continuation still goes through.
    cosign(witness, log, 8, 12)


def test_one_flipped_bit_in_any_proof_hash_is_422(witness: Witness, log: Log) -> None:
    """Every hash of the proof matters."""
    cosign(witness, log, 0, 11)
    proof = log.tree.consistency_proof(11, 27)
    assert len(proof) > 2
    for line in range(len(proof)):
        for byte in (0, 31):
            broken = list(proof)
            damaged = bytearray(broken[line])
            damaged[byte] ^= 0x01
            broken[line] = bytes(damaged)
            status, _, _ = witness.add_checkpoint(request(11, broken, log.checkpoint(27)), NOW)
            assert status == 422, (line, byte)
    for wrong in (proof[:-1], [*proof, proof[0]], []):
        assert witness.add_checkpoint(request(11, wrong, log.checkpoint(27)), NOW)[0] == 422
    assert witness.latest(ORIGIN) == TreeHead(11, log.tree.root(11))


def test_a_proof_from_old_size_zero_must_be_empty(witness: Witness, log: Log) -> None:
    """The spec says the proof MUST be empty for old 0; any hash there makes it a proof that
    does not verify, so 422 (the body itself is well formed)."""
    proof = log.tree.consistency_proof(4, 9)
    assert witness.add_checkpoint(request(0, proof, log.checkpoint(9)), NOW)[0] == 422
    assert witness.latest(ORIGIN) is None


def test_a_proof_between_equal_sizes_must_be_empty(witness: Witness, log: Log) -> None:
    cosign(witness, log, 0, 6)
    junk = [log.tree.root(3)]
    assert witness.add_checkpoint(request(6, junk, log.checkpoint(6)), NOW)[0] == 422


def test_an_unknown_origin_is_404(witness: Witness) -> None:
    stranger = Log(origin="other.example/log")
    status, _, _ = witness.add_checkpoint(stranger.request(0, 3), NOW)
    assert status == 404
    assert witness.latest("other.example/log") is None


def test_a_checkpoint_without_a_trusted_signature_is_403(witness: Witness, log: Log) -> None:
    """Another key under the log's name, or the log's key over different text: 403."""
    impostor = Log(signer=Signer(ORIGIN, Ed25519PrivateKey.generate()))
    assert witness.add_checkpoint(impostor.request(0, 3), NOW)[0] == 403
    genuine = log.checkpoint(3)
    _, signatures = genuine.split("\n\n")
    tampered = Checkpoint(ORIGIN, 3, log.tree.root(2)).text + "\n" + signatures
    assert tampered != genuine
    assert witness.add_checkpoint(request(0, [], tampered), NOW)[0] == 403
    assert witness.latest(ORIGIN) is None


MALFORMED = {
    "no blank line": b"old 0\n",
    "empty": b"",
    "leading zero": b"old 01\n\n{cp}",
    "negative": b"old -1\n\n{cp}",
    "two spaces": b"old  0\n\n{cp}",
    "capitals": b"OLD 0\n\n{cp}",
    "hex": b"old 0x0\n\n{cp}",
    "unicode digit": "old \u0661\n\n{cp}".encode(),
    "carriage return": b"old 0\r\n\r\n{cp}",
    "not base64": b"old 0\nnot-base64!\n\n{cp}",
    "short hash": b"old 0\n" + base64.b64encode(b"x" * 31) + b"\n\n{cp}",
    "long hash": b"old 0\n" + base64.b64encode(b"x" * 33) + b"\n\n{cp}",
    "64 proof lines": b"old 0\n" + (base64.b64encode(b"x" * 32) + b"\n") * 64 + b"\n{cp}",
    "not utf-8": b"old 0\n\n\xff{cp}",
    "unsigned checkpoint": b"old 0\n\n" + f"{ORIGIN}\n3\n".encode(),
    "size with leading zero": b"old 0\n\n{zero}",
    "superscript size": b"old 0\n\n{super}",
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_are_400(witness: Witness, log: Log, case: str) -> None:
    """Anything that is not old line, proof lines, blank line and a signed checkpoint."""
    good = log.checkpoint(3)
    text, signatures = good.split("\n\n")
    _, _, root = text.split("\n")
    variants = {
        b"{cp}": good.encode(),
        b"{zero}": f"{ORIGIN}\n03\n{root}\n\n{signatures}".encode(),
        b"{super}": f"{ORIGIN}\n\u00b3\n{root}\n\n{signatures}".encode(),
    }
    body = MALFORMED[case]
    for placeholder, value in variants.items():
        body = body.replace(placeholder, value)
    status, content_type, answer = witness.add_checkpoint(body, NOW)
    assert (status, content_type) == (400, "text/plain; charset=utf-8"), answer
    assert witness.latest(ORIGIN) is None


def test_63_proof_lines_are_not_malformed(witness: Witness, log: Log) -> None:
    """The limit is 63 lines: 63 junk hashes get as far as the proof check."""
    cosign(witness, log, 0, 2)
    junk = [bytes([i]) * 32 for i in range(63)]
    assert witness.add_checkpoint(request(2, junk, log.checkpoint(5)), NOW)[0] == 422


def test_old_size_above_the_checkpoint_size_is_400(witness: Witness, log: Log) -> None:
    cosign(witness, log, 0, 8)
    status, _, _ = witness.add_checkpoint(request(9, [], log.checkpoint(8)), NOW)
    assert status == 400
    assert witness.latest(ORIGIN) == TreeHead(8, log.tree.root(8))


def test_an_oversized_body_is_413(witness: Witness) -> None:
    assert witness.add_checkpoint(b"old 0\n" + b"A" * MAX_BODY, NOW)[0] == 413


# -- state ---------------------------------------------------------------------------------------


def test_state_survives_a_restart(tmp_path: Path, log: Log) -> None:
    """A new Witness on the same file knows what the old one cosigned, per origin."""
    other = Log(origin="other.example/log")
    signer = load_signer(generate_key(WITNESS_NAME))
    first = make_witness(tmp_path / "state.sqlite", log, other, signer=signer)
    cosign(first, log, 0, 10)
    cosign(first, other, 0, 4)
    del first
    again = make_witness(tmp_path / "state.sqlite", log, other, signer=signer)
    assert again.latest(ORIGIN) == TreeHead(10, log.tree.root(10))
    assert again.latest(other.origin) == TreeHead(4, other.tree.root(4))
    assert again.add_checkpoint(log.request(0, 12), NOW) == (409, SIZE_TYPE, b"10\n")
    cosign(again, log, 10, 12)


def test_concurrent_requests_from_one_old_size_have_one_winner(witness: Witness, log: Log) -> None:
    """Many threads extend size 5 to different sizes at once: exactly one is cosigned, the
    rest learn its size, and a reader never sees the stored size go backwards."""
    cosign(witness, log, 0, 5)
    targets = list(range(6, 30))
    start = threading.Barrier(len(targets) + 1, timeout=30)
    done = threading.Event()
    seen: list[int] = []

    def submit(size: int) -> tuple[int, str, bytes]:
        body = log.request(5, size)
        start.wait()
        return witness.add_checkpoint(body, NOW)

    def watch() -> None:
        start.wait()
        while not done.is_set():
            head = witness.latest(ORIGIN)
            assert head is not None
            seen.append(head.size)

    with ThreadPoolExecutor(len(targets) + 1) as pool:
        watcher = pool.submit(watch)
        try:
            answers = list(pool.map(submit, targets))
        finally:
            done.set()  # or the watcher spins on, and leaving the pool waits for it forever
        watcher.result()

    winners = [size for size, (status, _, _) in zip(targets, answers, strict=True) if status == 200]
    assert len(winners) == 1
    [winner] = winners
    losers = [answer for answer in answers if answer[0] != 200]
    assert losers == [(409, SIZE_TYPE, f"{winner}\n".encode())] * (len(targets) - 1)
    assert witness.latest(ORIGIN) == TreeHead(winner, log.tree.root(winner))
    assert seen == sorted(seen)
    assert set(seen) <= {5, winner}


def test_racing_clients_only_ever_move_the_state_forward(witness: Witness, log: Log) -> None:
    """Clients that retry with the size from each 409 all end up cosigned, in some order,
    and the state only ever grows."""
    sizes = list(range(1, 25))
    start = threading.Barrier(len(sizes), timeout=30)

    def submit_until_settled(size: int) -> int:
        start.wait()
        old = 0
        while True:
            if old > size:
                return old  # overtaken: a client gives up on a tree older than the witness
            status, content_type, body = witness.add_checkpoint(log.request(old, size), NOW)
            if status == 200:
                return size
            assert (status, content_type) == (409, SIZE_TYPE)
            old = int(body)

    with ThreadPoolExecutor(len(sizes)) as pool:
        results = list(pool.map(submit_until_settled, sizes))
    assert witness.latest(ORIGIN) == TreeHead(max(sizes), log.tree.root(max(sizes)))
    assert all(result >= size for result, size in zip(results, sizes, strict=True))


# -- HTTP ----------------------------------------------------------------------------------------


def client_for(witness: Witness, clock: FrozenClock) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(witness, clock))
    return httpx.AsyncClient(transport=transport, base_url="http://witness.test")


async def test_http_cosigns_and_answers_conflicts(witness: Witness, log: Log) -> None:
    """Over HTTP: the cosignature carries the clock's time; a stale old size gets the latest
    size with Content-Type exactly text/x.tlog.size."""
    clock = FrozenClock(datetime(2026, 6, 1, 12, 0, tzinfo=UTC))
    async with client_for(witness, clock) as client:
        response = await client.post("/add-checkpoint", content=log.request(0, 9))
        assert response.status_code == 200
        _, [cosignature] = open_checkpoint(
            log.checkpoint(9) + response.text, log.verifier, [witness.verifier]
        )
        assert cosignature.timestamp == int(clock.now().timestamp())

        stale = await client.post("/add-checkpoint", content=log.request(0, 12))
        assert stale.status_code == 409
        assert stale.headers["content-type"] == SIZE_TYPE
        assert stale.text == "9\n"

        proof_broken = await client.post(
            "/add-checkpoint", content=request(9, [], log.checkpoint(12))
        )
        assert proof_broken.status_code == 422


async def test_http_limits_and_key(witness: Witness) -> None:
    """GET / is the witness's vkey; bodies past the limit are 413; only POST adds."""
    async with client_for(witness, FrozenClock()) as client:
        home = await client.get("/")
        assert home.status_code == 200
        assert Verifier.parse(home.text) == witness.verifier
        too_big = await client.post("/add-checkpoint", content=b"old 0\n" + b"A" * MAX_BODY)
        assert too_big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(MAX_BODY // 1024 + 2):
                yield b"A" * 1024

        streamed = await client.post("/add-checkpoint", content=chunks())
        assert streamed.status_code == 413
        assert (await client.get("/add-checkpoint")).status_code == 405
        assert (await client.post("/add-checkpoint", content=b"old 0\n")).status_code == 400


# -- keys and configuration ----------------------------------------------------------------------


def test_a_generated_key_round_trips(tmp_path: Path) -> None:
    """The key string loads back to a 0x04 signer whose cosignatures its vkey verifies."""
    key = generate_key(WITNESS_NAME)
    assert key.startswith(f"PRIVATE+KEY+{WITNESS_NAME}+")
    signer = load_signer(key)
    assert (signer.name, signer.kind) == (WITNESS_NAME, COSIGNATURE)
    assert key.split("+")[3] == signer.verifier.id.hex()
    text = Checkpoint(ORIGIN, 1, b"\x00" * 32).text
    line = signer.signature_line(text, NOW)
    verifier = Verifier.parse(signer.verifier.vkey)
    assert note.verify(text + "\n" + line, [verifier])[1][0].timestamp == NOW
    assert load_signer(key + "\n").verifier == signer.verifier
    assert generate_key(WITNESS_NAME) != key


def test_malformed_keys_are_refused_without_echoing_them() -> None:
    key = generate_key(WITNESS_NAME)
    material = key.split("+", 4)[4]  # base64 may itself contain "+"
    prefix = key.removesuffix("+" + material)
    raw = base64.b64decode(material)
    as_log_key = base64.b64encode(bytes([ED25519]) + raw[1:]).decode()
    other_id = Signer("x", Ed25519PrivateKey.generate(), COSIGNATURE).verifier.id.hex()
    bad = [
        key.replace("PRIVATE+KEY+", "PRIVATE+"),
        key.replace(WITNESS_NAME, "witness.example.org/w2"),  # the key ID no longer matches
        f"PRIVATE+KEY+{WITNESS_NAME}+{other_id}+{material}",
        f"{prefix}+{as_log_key}",
        f"{prefix}+{material[:-4]}",
        f"{prefix}+not*base64",
        f"PRIVATE+KEY+{WITNESS_NAME}+{material}",
        "PRIVATE+KEY+bad name+00000000+" + material,
    ]
    for text in bad:
        with pytest.raises(WitnessError) as caught:
            load_signer(text)
        assert material not in str(caught.value)
        assert material[:16] not in str(caught.value)


def test_the_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "witness.key"
    first = ensure_key_file(path, WITNESS_NAME)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith(f"PRIVATE+KEY+{WITNESS_NAME}+")
    again = ensure_key_file(path, WITNESS_NAME)
    assert again.verifier == first.verifier == read_key_file(path).verifier
    with pytest.raises(WitnessError, match="not 'someone-else'"):
        ensure_key_file(path, "someone-else")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "witness.key"
    path.write_text(generate_key(WITNESS_NAME) + "\n")
    path.chmod(0o644)
    with pytest.raises(WitnessError, match="chmod 600"):
        read_key_file(path)


def test_trusted_logs_group_log_keys_by_origin() -> None:
    first, second, other = Log(), Log(), Log(origin="other.example/log")
    logs = trusted_logs([first.verifier.vkey, second.verifier.vkey, other.verifier.vkey])
    assert logs == {
        ORIGIN: [first.verifier, second.verifier],
        "other.example/log": [other.verifier],
    }
    witness_key = load_signer(generate_key(WITNESS_NAME)).verifier.vkey
    with pytest.raises(WitnessError, match="not a log"):
        trusted_logs([witness_key])
    with pytest.raises(WitnessError):
        trusted_logs(["nonsense"])


def test_a_witness_accepts_any_of_its_logs_keys(tmp_path: Path, log: Log) -> None:
    """With two keys for one origin (a key rotation), either key's checkpoint is cosigned."""
    rotated = Log(signer=Signer(ORIGIN, Ed25519PrivateKey.generate()))
    witness = make_witness(tmp_path / "w.sqlite", log, rotated)
    cosign(witness, log, 0, 3)
    cosign(witness, rotated, 3, 6)
    assert witness.latest(ORIGIN) == TreeHead(6, log.tree.root(6))


def test_a_witness_needs_a_state_file_and_a_cosigning_key(tmp_path: Path, log: Log) -> None:
    logs = trusted_logs([log.verifier.vkey])
    signer = load_signer(generate_key(WITNESS_NAME))
    with pytest.raises(WitnessError, match="must be a file"):
        Witness(signer, logs, ":memory:")
    with pytest.raises(WitnessError, match="0x04"):
        Witness(Signer(WITNESS_NAME, Ed25519PrivateKey.generate()), logs, tmp_path / "w")
    with pytest.raises(WitnessError, match="not an Ed25519 key of"):
        Witness(signer, {"elsewhere": [log.verifier]}, tmp_path / "w")


def test_serve_creates_the_key_prints_the_vkey_and_runs_the_app(
    tmp_path: Path,
    log: Log,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """serve() makes the key file and the state, prints only the public vkey, and hands
    uvicorn an app for the configured logs; a second start reuses the same key."""
    import uvicorn

    runs: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: runs.append({"app": app, **options}))
    key_file = tmp_path / "keys" / "witness.key"
    state = tmp_path / "state" / "witness.sqlite"
    serve(WITNESS_NAME, key_file, [log.verifier.vkey], state, host="127.0.0.1", port=7999)
    printed = capsys.readouterr().out
    signer = read_key_file(key_file)
    assert printed == signer.verifier.vkey + "\n"
    assert "PRIVATE" not in printed
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert state.exists()
    assert [(run["host"], run["port"]) for run in runs] == [("127.0.0.1", 7999)]
    serve(WITNESS_NAME, key_file, [log.verifier.vkey], state)
    assert capsys.readouterr().out == printed
    with pytest.raises(WitnessError, match="at least one log key"):
        serve(WITNESS_NAME, key_file, [], state)
