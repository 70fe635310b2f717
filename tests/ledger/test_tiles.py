"""The ledger's C2SP tlog-tiles export and readers.

Tree hashes are checked against RFC 6962's recursive definition, written out here
(``mth``) rather than taken from ``sesame.ledger.merkle``, so the tiles are compared with
the specification and not with the code that produced them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sesame.ledger import note, tiles
from sesame.ledger.tiles import TileAddress, TilesError

ORIGIN = "ledger.sesame.example/test"
SIGNER = note.Signer(ORIGIN, Ed25519PrivateKey.generate())


def leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1, word for word: split at the largest power of two below n."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def small_entries(size: int) -> list[bytes]:
    return [i.to_bytes(4, "big") for i in range(size)]


def signed_checkpoint(size: int, root: bytes) -> str:
    return note.sign_checkpoint(note.Checkpoint(ORIGIN, size, root), SIGNER)


def export_entries(directory: Path, entries: Sequence[bytes]) -> tiles.ExportSummary:
    checkpoint = signed_checkpoint(len(entries), mth([leaf(e) for e in entries]))
    return tiles.export(directory, iter(entries), len(entries), checkpoint)


def files(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in directory.rglob("*")
        if path.is_file()
    }


def hashes_of(data: bytes) -> list[bytes]:
    return [data[i : i + 32] for i in range(0, len(data), 32)]


# -- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "encoded"),
    [
        (0, "000"),
        (5, "005"),
        (999, "999"),
        (1000, "x001/000"),
        (1234067, "x001/x234/067"),
        (10**9, "x001/x000/x000/000"),
    ],
)
def test_tile_indexes_are_written_in_groups_of_three_digits(index: int, encoded: str) -> None:
    """The index is zero-padded 3-digit path elements, all but the last prefixed with x."""
    assert tiles.tile_path(0, index) == f"tile/0/{encoded}"
    assert tiles.tile_path(3, index, 17) == f"tile/3/{encoded}.p/17"
    assert tiles.entries_path(index) == f"tile/entries/{encoded}"
    assert tiles.entries_path(index, 255) == f"tile/entries/{encoded}.p/255"


def test_the_spec_example_path() -> None:
    """Index 1234067 of a partial level-0 tile of width 112 has the spec's spelling."""
    assert tiles.tile_path(0, 1234067, 112) == "tile/0/x001/x234/067.p/112"


@pytest.mark.parametrize(
    "address",
    [
        TileAddress(0, 0, None),
        TileAddress(0, 1234067, 112),
        TileAddress(63, 999, 1),
        TileAddress(2, 1000, 255),
        TileAddress("entries", 5, None),
        TileAddress("entries", 1234067, 3),
    ],
)
def test_tile_paths_parse_back(address: TileAddress) -> None:
    """Every path the writer produces parses back to the tile it names."""
    level, index, width = address
    path = (
        tiles.entries_path(index, width)
        if level == "entries"
        else tiles.tile_path(level, index, width)
    )
    assert tiles.parse_tile_path(path) == address


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/5",
        "tile/0/x000/005",  # a non-canonical spelling of 5
        "tile/00/005",
        "tile/64/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/07",
        "tile/0/001/000",
        "tile/entries/x1/000",
        "/tile/0/000",
        "checkpoint",
    ],
)
def test_malformed_tile_paths_are_refused(path: str) -> None:
    """Only the canonical spelling of a tile is accepted, so each tile has one path."""
    with pytest.raises(TilesError):
        tiles.parse_tile_path(path)


def test_out_of_range_tile_coordinates_are_refused() -> None:
    """Levels are 0 to 63, indexes non-negative and partial widths 1 to 255."""
    for bad in [(64, 0, None), (-1, 0, None), (0, -1, None), (0, 0, 0), (0, 0, 256)]:
        with pytest.raises(TilesError):
            tiles.tile_path(*bad)


# -- the spec's examples -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def log_70000(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[bytes]]:
    directory = tmp_path_factory.mktemp("log70000")
    entries = small_entries(70_000)
    export_entries(directory, entries)
    return directory, [leaf(e) for e in entries]


def test_a_tree_of_70000_has_the_tiles_the_spec_lists(
    log_70000: tuple[Path, list[bytes]],
) -> None:
    """273 full level-0 tiles and one of width 112, a full level-1 tile and one of width
    17, a level-2 tile of width 1, and the bundles of the level-0 tiles — nothing else."""
    directory, _ = log_70000
    written = files(directory)
    expected = {
        "checkpoint",
        *(tiles.tile_path(0, n) for n in range(273)),
        "tile/0/273.p/112",
        "tile/1/000",
        "tile/1/001.p/17",
        "tile/2/000.p/1",
        *(tiles.entries_path(n) for n in range(273)),
        "tile/entries/273.p/112",
    }
    assert set(written) == expected
    for path, data in written.items():
        if path.startswith("tile/entries/"):
            continue
        if path.startswith("tile/"):
            width = tiles.parse_tile_path(path).width or 256
            assert len(data) == 32 * width, path


def test_tiles_of_70000_hold_the_rfc_6962_hashes(log_70000: tuple[Path, list[bytes]]) -> None:
    """Level 0 holds SHA-256(0x00 ‖ entry); hash i of level-l tile n is MTH of leaves
    [(256n+i)·256^l, (256n+i+1)·256^l) — full level-0 tiles hashed into level 1, the
    partial one not."""
    directory, leaves = log_70000
    level0 = tiles.read_tile(directory, 0, 5)
    assert level0 == [leaf(i.to_bytes(4, "big")) for i in range(5 * 256, 6 * 256)]
    assert tiles.read_tile(directory, 0, 273, 112) == leaves[273 * 256 :]
    level1 = tiles.read_tile(directory, 1, 0)
    assert level1 == [mth(leaves[i * 256 : (i + 1) * 256]) for i in range(256)]
    level1_partial = tiles.read_tile(directory, 1, 1, 17)
    assert level1_partial == [mth(leaves[i * 256 : (i + 1) * 256]) for i in range(256, 273)]
    assert tiles.read_tile(directory, 2, 0, 1) == [mth(leaves[:65536])]


def test_a_tree_of_256_is_one_full_tile_and_a_level_1_tile_of_width_1(tmp_path: Path) -> None:
    """The spec's second example: size 256 gives tile/0/000 and tile/1/000.p/1."""
    entries = small_entries(256)
    export_entries(tmp_path, entries)
    assert set(files(tmp_path)) == {
        "checkpoint",
        "tile/0/000",
        "tile/1/000.p/1",
        "tile/entries/000",
    }
    assert tiles.read_tile(tmp_path, 1, 0, 1) == [mth([leaf(e) for e in entries])]


def test_an_empty_log_publishes_only_its_checkpoint(tmp_path: Path) -> None:
    """Empty tiles are never written; the empty tree's root is SHA-256 of nothing."""
    export_entries(tmp_path, [])
    assert set(files(tmp_path)) == {"checkpoint"}
    assert list(tiles.verified_entries(tmp_path, 0, hashlib.sha256(b"").digest())) == []


# -- readers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 512, 513, 1000])
def test_the_readers_return_exactly_the_exported_entries(tmp_path: Path, size: int) -> None:
    """Entries of every length from empty to 65535 bytes come back unchanged and verify
    against the root, whatever the tree's shape."""
    entries = [bytes([i % 251]) * (i * 97 % 300) for i in range(size)]
    entries[0] = b""
    entries[-1] = b"\xff" * 65535
    root = mth([leaf(e) for e in entries])
    checkpoint = signed_checkpoint(size, root)
    tiles.export(tmp_path, (e for e in entries), size, checkpoint)
    assert tiles.read_checkpoint(tmp_path) == checkpoint
    assert list(tiles.read_entries(tmp_path, size)) == entries
    assert list(tiles.verified_entries(tmp_path, size, root)) == entries
    whole_bundles = size - size % 256  # a smaller size needs no tile of its own
    assert list(tiles.read_entries(tmp_path, whole_bundles)) == entries[:whole_bundles]


def test_a_tampered_entry_is_named_by_its_index(tmp_path: Path) -> None:
    """One changed byte in a bundle stops verification at that entry, after yielding only
    the entries before it."""
    entries = small_entries(600)
    root = export_entries(tmp_path, entries).root
    bundle = tmp_path / "tile/entries/001"
    data = bytearray(bundle.read_bytes())
    data[44 * 6 + 2 + 3] ^= 1  # entry 300: 44th of bundle 1, after its length prefix
    bundle.write_bytes(bytes(data))

    assert list(tiles.read_entries(tmp_path, 600))[300] != entries[300]
    yielded = []
    with pytest.raises(TilesError, match=r"entry 300 "):
        yielded.extend(tiles.verified_entries(tmp_path, 600, root))
    assert yielded == entries[:300]


def test_a_tampered_full_tile_is_caught_by_the_tile_above(tmp_path: Path) -> None:
    """A full level-0 tile that does not hash to its level-1 hash names its entries."""
    root = export_entries(tmp_path, small_entries(600)).root
    tile = tmp_path / "tile/0/001"
    data = bytearray(tile.read_bytes())
    data[0] ^= 1
    tile.write_bytes(bytes(data))
    with pytest.raises(TilesError, match=r"tile/0/001 .* entries 256 to 511"):
        list(tiles.verified_entries(tmp_path, 600, root))


def test_tiles_that_do_not_hash_to_the_root_are_refused_at_once(tmp_path: Path) -> None:
    """A wrong root, or a tampered partial tile, fails before any entry is yielded."""
    root = export_entries(tmp_path, small_entries(600)).root
    with pytest.raises(TilesError, match="root"):
        tiles.verified_entries(tmp_path, 600, hashlib.sha256(b"another").digest())
    with pytest.raises(TilesError, match="root"):
        tiles.verified_entries(tmp_path, 599, root)
    partial = tmp_path / "tile/1/000.p/2"
    partial.write_bytes(partial.read_bytes()[:-1] + b"\x00")
    with pytest.raises(TilesError, match="root"):
        tiles.verified_entries(tmp_path, 600, root)


def test_a_truncated_bundle_is_refused(tmp_path: Path) -> None:
    """A bundle cut short is reported, not read as fewer entries."""
    export_entries(tmp_path, small_entries(300))
    bundle = tmp_path / "tile/entries/001.p/44"
    bundle.write_bytes(bundle.read_bytes()[:-3])
    with pytest.raises(TilesError, match="truncated"):
        list(tiles.read_entries(tmp_path, 300))


def test_read_tile_reads_exactly_the_file_asked_for(tmp_path: Path) -> None:
    """A partial tile read with the wrong width, or a missing tile, is an error."""
    export_entries(tmp_path, small_entries(300))
    assert len(tiles.read_tile(tmp_path, 0, 1, 44)) == 44
    with pytest.raises(TilesError, match="missing"):
        tiles.read_tile(tmp_path, 0, 1, 43)
    with pytest.raises(TilesError, match="missing"):
        tiles.read_tile(tmp_path, 0, 1)


# -- incremental export -------------------------------------------------------------------------


def test_a_larger_export_adds_files_and_leaves_the_old_ones_untouched(tmp_path: Path) -> None:
    """Exporting 300 then 600 entries gives the files of a fresh export of 600 (plus the
    old partial tiles, kept for readers of the old checkpoint), without rewriting any file
    but the checkpoint."""
    entries = small_entries(600)
    incremental, fresh = tmp_path / "incremental", tmp_path / "fresh"
    first = export_entries(incremental, entries[:300])
    before = {
        path.relative_to(incremental).as_posix(): path.stat()
        for path in incremental.rglob("*")
        if path.is_file()
    }
    second = export_entries(incremental, entries)
    export_entries(fresh, entries)

    after, expected = files(incremental), files(fresh)
    assert {path: after[path] for path in expected} == expected
    assert set(after) - set(expected) == {
        "tile/0/001.p/44",
        "tile/entries/001.p/44",
        "tile/1/000.p/1",
    }
    for path, stat in before.items():
        if path != "checkpoint":
            now = (incremental / path).stat()
            assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns), path
    assert (first.written, first.unchanged) == (6, 0)
    assert (second.written, second.unchanged) == (6, 2)

    # A reader of the old checkpoint still finds its tiles, and the full ones once the
    # partial ones are deleted, as the spec allows.
    assert list(tiles.verified_entries(incremental, 300, first.root)) == entries[:300]
    for partial in ["tile/0/001.p/44", "tile/entries/001.p/44"]:
        (incremental / partial).unlink()
    assert list(tiles.verified_entries(incremental, 300, first.root)) == entries[:300]


def test_exporting_the_same_size_again_writes_nothing(tmp_path: Path) -> None:
    """A repeated export finds every file in place and writes none."""
    export_entries(tmp_path, small_entries(600))
    again = export_entries(tmp_path, small_entries(600))
    assert (again.written, again.unchanged) == (0, 8)


def test_progress_reports_entries_read(tmp_path: Path) -> None:
    """Progress is reported after each bundle with the number of entries read so far."""
    seen: list[int] = []
    entries = small_entries(600)
    checkpoint = signed_checkpoint(600, mth([leaf(e) for e in entries]))
    tiles.export(tmp_path, iter(entries), 600, checkpoint, progress=seen.append)
    assert seen == [256, 512, 600]


def test_a_short_tile_left_by_a_crash_is_repaired(tmp_path: Path) -> None:
    """A full tile of the wrong size is rewritten by the next export."""
    entries = small_entries(600)
    export_entries(tmp_path, entries)
    (tmp_path / "tile/0/000").write_bytes(b"")
    assert export_entries(tmp_path, entries).written == 1
    assert tiles.read_tile(tmp_path, 0, 0) == [leaf(e) for e in entries[:256]]


def test_a_published_tile_with_other_bytes_is_never_overwritten(tmp_path: Path) -> None:
    """A full tile of the right size but other contents makes the export refuse."""
    entries = small_entries(600)
    export_entries(tmp_path, entries)
    (tmp_path / "tile/0/001").write_bytes(bytes(8192))
    with pytest.raises(TilesError, match="tile/0/001 already exists"):
        export_entries(tmp_path, entries)
    assert (tmp_path / "tile/0/001").read_bytes() == bytes(8192)


# -- refusals ---------------------------------------------------------------------------------


def test_a_checkpoint_with_another_root_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """If the entries' root is not the checkpoint's, no tile and no checkpoint appear."""
    directory = tmp_path / "log"
    entries = small_entries(600)
    wrong = signed_checkpoint(600, mth([leaf(e) for e in small_entries(601)[1:]]))
    with pytest.raises(TilesError, match="root"):
        tiles.export(directory, iter(entries), 600, wrong)
    assert list(directory.rglob("*")) == []


def test_a_refused_export_leaves_the_published_log_as_it_was(tmp_path: Path) -> None:
    """A bad checkpoint over an existing export changes none of its files."""
    export_entries(tmp_path, small_entries(300))
    before = files(tmp_path)
    entries = small_entries(600)
    wrong = signed_checkpoint(600, hashlib.sha256(b"not the root").digest())
    with pytest.raises(TilesError, match="root"):
        tiles.export(tmp_path, iter(entries), 600, wrong)
    assert files(tmp_path) == before


def test_a_checkpoint_for_another_size_is_refused(tmp_path: Path) -> None:
    """The checkpoint must be for exactly the exported size."""
    entries = small_entries(300)
    checkpoint = signed_checkpoint(300, mth([leaf(e) for e in entries]))
    with pytest.raises(TilesError, match="size 300, not 299"):
        tiles.export(tmp_path, iter(entries), 299, checkpoint)


def test_too_few_entries_are_refused(tmp_path: Path) -> None:
    """Running out of entries before ``size`` is an error, not a smaller export."""
    checkpoint = signed_checkpoint(300, hashlib.sha256(b"").digest())
    with pytest.raises(TilesError, match="only 299 entries"):
        tiles.export(tmp_path, iter(small_entries(299)), 300, checkpoint)
    assert files(tmp_path) == {}


def test_entries_over_65535_bytes_are_refused(tmp_path: Path) -> None:
    """Bundles prefix each entry with a uint16 length, so a longer entry cannot be
    exported; the error names it and nothing is written."""
    entries = [b"a", b"b", b"c", b"x" * 65536]
    with pytest.raises(TilesError, match="entry 3 is 65536 bytes"):
        export_entries(tmp_path, entries)
    assert files(tmp_path) == {}


def test_a_log_that_does_not_extend_the_published_one_is_refused(tmp_path: Path) -> None:
    """Entries whose first 300 differ from the published checkpoint's are a fork."""
    export_entries(tmp_path, small_entries(300))
    other = [b"other" + e for e in small_entries(600)]
    with pytest.raises(TilesError, match="do not extend"):
        export_entries(tmp_path, other)


def test_a_smaller_checkpoint_is_refused(tmp_path: Path) -> None:
    """Publishing size 300 over size 600 would roll the log back."""
    entries = small_entries(600)
    export_entries(tmp_path, entries)
    with pytest.raises(TilesError, match="roll it back"):
        export_entries(tmp_path, entries[:300])


def test_a_checkpoint_of_another_origin_is_refused(tmp_path: Path) -> None:
    """One directory publishes one log."""
    export_entries(tmp_path, small_entries(3))
    signer = note.Signer("another.example/log", Ed25519PrivateKey.generate())
    entries = small_entries(4)
    checkpoint = note.sign_checkpoint(
        note.Checkpoint("another.example/log", 4, mth([leaf(e) for e in entries])), signer
    )
    with pytest.raises(TilesError, match=re.escape("another.example/log")):
        tiles.export(tmp_path, iter(entries), 4, checkpoint)
