"""The ledger as C2SP tlog-tiles static files, which anyone can mirror, serve and check.

A tiled log (c2sp.org/tlog-tiles) is a directory any plain web server can publish:

- ``checkpoint``: the signed checkpoint note, the only file that ever changes;
- ``tile/<L>/<N>[.p/<W>]``: Merkle tiles. Hash ``i`` of tile ``n`` at level ``l`` is the
  tree hash of leaves ``[(n·256+i)·256^l, (n·256+i+1)·256^l)``, so level 0 holds leaf
  hashes and level ``l`` holds ``merkle.Tree`` nodes of level ``8·l``. A full tile has
  256 hashes; the rightmost tile of a level is *partial* (``.p/<W>``, 1 ≤ W ≤ 255 hashes)
  and is never hashed into the level above;
- ``tile/entries/<N>[.p/<W>]``: entry bundles, the entries of level-0 tile ``N`` each as a
  big-endian uint16 length and the bytes, so no entry may exceed 65535 bytes.

``<N>`` is written in zero-padded groups of three digits, all but the last prefixed with
``x`` (1234067 → ``x001/x234/067``), so no file name is also a directory name.

What must hold, and why the exporter is built the way it is:

- **Full tiles and bundles are immutable.** Clients and caches keep them forever, so a
  re-export never rewrites one that is already there with the same bytes (incremental
  exports cost only the new files), and refuses — rather than silently replacing — one
  whose bytes differ: that directory holds another log or was altered.
- **Nothing is published that the checkpoint does not vouch for.** The entries arrive as
  a stream that can be read only once, so new bundles are staged in a hidden directory
  beside the tiles; only when the root of the streamed entries equals the checkpoint's
  root, and extends the checkpoint the directory already publishes, are staged files moved
  into place with ``os.replace`` (each one atomic), the checkpoint last so that a reader
  who sees it finds every tile it needs. A refused export leaves the published files as
  they were.
- Old partial tiles are kept: the spec requires serving the partial tiles of every size a
  checkpoint was published for, and allows but does not require deleting them later.

The readers need nothing but the directory. ``verified_entries`` checks the rightmost
(partial) tile of every level against the root, every full tile against its hash in the
tile above, and every entry against its leaf hash, before yielding that entry — holding
one tile per level at a time, however large the log.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Final, Literal, NamedTuple

from sesame.ledger import merkle, note

TILE_WIDTH = 256
TILE_HEIGHT = 8  # a tile spans 8 levels of the Merkle tree: 2^8 = 256 hashes
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF
HASH_SIZE = merkle.HASH_SIZE
CHECKPOINT = "checkpoint"
ENTRIES: Final = "entries"


class TilesError(ValueError):
    """A tile path, directory or export that is malformed, inconsistent or does not verify."""


class TileAddress(NamedTuple):
    """What a tile path names: a Merkle tile level (or ``"entries"``), the tile index, and
    the width of a partial tile (``None`` for a full one)."""

    level: int | Literal["entries"]
    tile_index: int  # not ``index``, which would hide tuple.index
    width: int | None


# -- paths --------------------------------------------------------------------------------


def _encode_index(index: int) -> str:
    if index < 0:
        raise TilesError(f"a tile index is not negative, got {index}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _suffix(width: int | None) -> str:
    if width is None:
        return ""
    if not 1 <= width < TILE_WIDTH:
        raise TilesError(f"a partial tile is 1 to 255 wide, got {width}")
    return f".p/{width}"


def tile_path(level: int, index: int, width: int | None = None) -> str:
    """``tile/<L>/<N>[.p/<W>]``, relative to the log's directory; ``width`` only for a
    partial tile."""
    if not 0 <= level <= MAX_LEVEL:
        raise TilesError(f"a tile level is 0 to {MAX_LEVEL}, got {level}")
    return f"tile/{level}/{_encode_index(index)}{_suffix(width)}"


def entries_path(index: int, width: int | None = None) -> str:
    """``tile/entries/<N>[.p/<W>]``, relative to the log's directory."""
    return f"tile/{ENTRIES}/{_encode_index(index)}{_suffix(width)}"


_TILE_PATH = re.compile(
    r"tile/(entries|0|[1-9][0-9]*)/((?:x[0-9]{3}/)*)([0-9]{3})(?:\.p/([1-9][0-9]*))?"
)


def parse_tile_path(path: str) -> TileAddress:
    """The tile a relative path names; only the canonical spelling is accepted (no
    ``x000/`` groups, no leading zeros), so each tile has exactly one path."""
    match = _TILE_PATH.fullmatch(path)
    if match is None:
        raise TilesError(f"not a tile path: {path[:120]!r}")
    level_text, groups, last, width_text = match.groups()
    index = int("".join(g[1:] for g in groups.split("/") if g) + last)
    width = int(width_text) if width_text else None
    if level_text == ENTRIES:
        address = TileAddress(ENTRIES, index, width)
        canonical = entries_path(index, width)
    else:
        address = TileAddress(int(level_text), index, width)
        canonical = tile_path(int(level_text), index, width)
    if canonical != path:
        raise TilesError(f"not a canonical tile path: {path!r} (expected {canonical!r})")
    return address


def _layout(size: int) -> Iterator[tuple[int, int, int | None]]:
    """``(level, index, width)`` of every tile of a tree of ``size`` leaves, level by level:
    ``size // 256^(l+1)`` full tiles, then a partial one of ``(size // 256^l) % 256``
    hashes unless that is zero."""
    level = 0
    while (hashes := size >> (TILE_HEIGHT * level)) > 0:
        full = hashes // TILE_WIDTH
        for index in range(full):
            yield level, index, None
        if hashes % TILE_WIDTH:
            yield level, full, hashes % TILE_WIDTH
        level += 1


# -- export -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What an export did: ``written`` files (the checkpoint included) and ``unchanged``
    ones that were already there with the same bytes."""

    size: int
    root: bytes
    written: int
    unchanged: int


class _Staging:
    """Files waiting for the root check, in a hidden directory inside the log's directory
    (the same file system, so ``os.replace`` moves them into place atomically)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = Path(tempfile.mkdtemp(prefix=".export-", dir=directory))
        self.pending: list[tuple[Path, Path]] = []
        self.unchanged = 0

    def put(self, relative: str, data: bytes, *, mutable: bool = False) -> None:
        """Stage ``data`` for ``relative`` unless the file already holds exactly it.

        An immutable file of the right size but other bytes is refused. One of another
        size is rewritten: tiles and bundles are not fsynced (thousands of them would make an
        export crawl), so a crash can leave an empty or short one behind, and the next
        export repairs it.
        """
        target = self.directory / relative
        try:
            existing_size = target.stat().st_size
        except FileNotFoundError:
            existing_size = None
        if existing_size == len(data):
            if target.read_bytes() == data:
                self.unchanged += 1
                return
            if not mutable:
                raise TilesError(
                    f"{relative} already exists with other contents: the directory holds "
                    "another log, or its files were altered"
                )
        staged = self.path / str(len(self.pending))
        with staged.open("wb") as file:
            file.write(data)
            if mutable:  # the checkpoint: never leave a torn one where readers look
                file.flush()
                os.fsync(file.fileno())
        self.pending.append((staged, target))

    def commit(self) -> int:
        for staged, target in self.pending:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
        return len(self.pending)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _parse_checkpoint(checkpoint_note: str, what: str) -> note.Checkpoint:
    try:
        return note.Checkpoint.parse(note.parse(checkpoint_note).text)
    except ValueError as exc:  # NoteError, and int() on a non-ASCII digit size line
        raise TilesError(f"{what} is not a checkpoint note: {exc}") from exc


def _published_checkpoint(directory: Path) -> note.Checkpoint | None:
    if not (directory / CHECKPOINT).exists():
        return None
    try:
        text = read_checkpoint(directory)
    except UnicodeDecodeError as exc:
        raise TilesError(f"the checkpoint already in {directory} is not UTF-8") from exc
    return _parse_checkpoint(text, f"the checkpoint already in {directory}")


def _encode_bundle(entries: list[bytes]) -> bytes:
    return b"".join(len(entry).to_bytes(2, "big") + entry for entry in entries)


def _tile_bytes(tree: merkle.Tree, level: int, index: int, width: int) -> bytes:
    first = index * TILE_WIDTH
    return b"".join(tree.node(TILE_HEIGHT * level, first + i) for i in range(width))


def export(
    directory: Path,
    entries: Iterable[bytes],
    size: int,
    checkpoint_note: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> ExportSummary:
    """Write the checkpoint, tiles and entry bundles of the first ``size`` entries.

    ``entries`` is read once, a bundle (256 entries) at a time; the tree's hashes, 64
    bytes per entry, are all that is kept. ``progress`` is called after each bundle with
    the number of entries read so far. Nothing is published unless the entries' root
    equals the checkpoint's and extends the checkpoint the directory already publishes.
    """
    checkpoint = _parse_checkpoint(checkpoint_note, "the checkpoint to publish")
    if size < 0 or checkpoint.size != size:
        raise TilesError(f"the checkpoint is for size {checkpoint.size}, not {size}")
    published = _published_checkpoint(directory)
    if published is not None:
        if published.origin != checkpoint.origin:
            raise TilesError(
                f"{directory} publishes the log {published.origin!r}, not {checkpoint.origin!r}"
            )
        if published.size > size:
            raise TilesError(
                f"{directory} already publishes size {published.size}; "
                f"a checkpoint of size {size} would roll it back"
            )

    directory.mkdir(parents=True, exist_ok=True)
    staging = _Staging(directory)
    try:
        tree = merkle.Tree()
        stream = iter(entries)
        while tree.size < size:
            first = tree.size
            bundle = list(islice(stream, min(TILE_WIDTH, size - first)))
            if not bundle:
                raise TilesError(f"only {first} entries were given for a tree of size {size}")
            for offset, entry in enumerate(bundle):
                if len(entry) > MAX_ENTRY_SIZE:
                    raise TilesError(
                        f"entry {first + offset} is {len(entry)} bytes; entry bundles hold "
                        f"entries of at most {MAX_ENTRY_SIZE} bytes"
                    )
            tree.append(merkle.leaf_hash(entry) for entry in bundle)
            width = None if len(bundle) == TILE_WIDTH else len(bundle)
            staging.put(entries_path(first // TILE_WIDTH, width), _encode_bundle(bundle))
            if progress is not None:
                progress(tree.size)

        root = tree.root(size)
        if root != checkpoint.root:
            raise TilesError(
                f"the root of the {size} entries is {root.hex()}, "
                f"but the checkpoint says {checkpoint.root.hex()}"
            )
        if published is not None and tree.root(published.size) != published.root:
            raise TilesError(
                f"these entries do not extend the log published in {directory}: "
                f"their root at size {published.size} differs from its checkpoint's"
            )

        for level, index, width in _layout(size):
            data = _tile_bytes(tree, level, index, width or TILE_WIDTH)
            staging.put(tile_path(level, index, width), data)
        staging.put(CHECKPOINT, checkpoint_note.encode(), mutable=True)
        written = staging.commit()
    finally:
        staging.discard()
    return ExportSummary(size, root, written, staging.unchanged)


# -- reading ------------------------------------------------------------------------------


def _read(directory: Path, relative: str) -> bytes:
    try:
        return (directory / relative).read_bytes()
    except FileNotFoundError:
        raise TilesError(f"{relative} is missing from {directory}") from None


def read_checkpoint(directory: Path) -> str:
    """The checkpoint note, byte for byte (no newline translation: it is signed)."""
    return _read(directory, CHECKPOINT).decode()


def _split_hashes(data: bytes, width: int, relative: str) -> list[bytes]:
    if len(data) != width * HASH_SIZE:
        raise TilesError(f"{relative} is {len(data)} bytes, not {width} hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def read_tile(directory: Path, level: int, index: int, width: int | None = None) -> list[bytes]:
    """The hashes of exactly one tile file: 256 of them, or ``width`` for a partial tile."""
    relative = tile_path(level, index, width)
    return _split_hashes(_read(directory, relative), width or TILE_WIDTH, relative)


def _read_hashes(directory: Path, level: int, index: int, width: int) -> list[bytes]:
    """The first ``width`` hashes of a tile, from the full tile if the partial one is gone
    (the spec lets a log delete partial tiles once the full tile exists)."""
    partial = width < TILE_WIDTH
    if partial and not (directory / tile_path(level, index, width)).exists():
        partial = not (directory / tile_path(level, index)).exists()
    if partial:
        return read_tile(directory, level, index, width)
    return read_tile(directory, level, index)[:width]


def _parse_bundle(data: bytes, relative: str) -> list[bytes]:
    entries: list[bytes] = []
    position = 0
    while position < len(data):
        start = position + 2
        end = start + int.from_bytes(data[position:start], "big")
        if end > len(data):
            raise TilesError(f"{relative} is truncated after {len(entries)} entries")
        entries.append(data[start:end])
        position = end
    return entries


def _read_bundle(directory: Path, index: int, count: int) -> list[bytes]:
    """The first ``count`` entries of bundle ``index``, from the full bundle if the partial
    one is gone."""
    width = None if count == TILE_WIDTH else count
    relative = entries_path(index, width)
    if width is not None and not (directory / relative).exists():
        full = entries_path(index)
        if (directory / full).exists():
            relative = full
    entries = _parse_bundle(_read(directory, relative), relative)
    expected = TILE_WIDTH if relative == entries_path(index) else count
    if len(entries) != expected:
        raise TilesError(f"{relative} holds {len(entries)} entries, not {expected}")
    return entries[:count]


def _bundles(size: int) -> Iterator[tuple[int, int]]:
    """``(bundle index, entry count)`` of the bundles covering entries ``[0, size)``."""
    for index in range(0, size, TILE_WIDTH):
        yield index // TILE_WIDTH, min(TILE_WIDTH, size - index)


def read_entries(directory: Path, size: int) -> Iterator[bytes]:
    """Entries ``[0, size)`` as the bundles hold them, unchecked (see ``verified_entries``)."""
    if size < 0:
        raise TilesError(f"a tree size is not negative, got {size}")
    return (
        entry for index, count in _bundles(size) for entry in _read_bundle(directory, index, count)
    )


def _subtree_hash(hashes: list[bytes]) -> bytes:
    """The root of a perfect subtree over ``hashes`` (a power of two of them)."""
    while len(hashes) > 1:
        hashes = [merkle.node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
    return hashes[0]


def _root_from_edge(edge: list[list[bytes]]) -> bytes:
    """The tree's root from its partial tiles, top level first.

    Together they cover the leaves left to right in aligned blocks of 256^l. Splitting
    each tile's width in binary gives perfect subtrees of strictly decreasing size — the
    binary decomposition of the tree size — and RFC 6962's root is those subtrees folded
    from the right.
    """
    subtrees: list[bytes] = []
    for hashes in edge:
        start = 0
        for bit in reversed(range(TILE_HEIGHT)):
            if len(hashes) & (1 << bit):
                subtrees.append(_subtree_hash(hashes[start : start + (1 << bit)]))
                start += 1 << bit
    root = subtrees[-1]
    for subtree in reversed(subtrees[:-1]):
        root = merkle.node_hash(subtree, root)
    return root


class _VerifiedTiles:
    """Tiles of a tree of ``size`` leaves, each checked before it is handed out: the
    partial tiles against the root, a full tile against its hash in the tile above."""

    def __init__(self, directory: Path, size: int, root: bytes) -> None:
        self.directory = directory
        self.size = size
        self.edge: dict[int, list[bytes]] = {}
        self.current: dict[int, tuple[int, list[bytes]]] = {}  # one full tile per level
        for level, index, width in _layout(size):
            if width is not None:
                self.edge[level] = _read_hashes(directory, level, index, width)
        if not self.edge:  # the empty tree
            computed = merkle.EMPTY_ROOT
        else:
            computed = _root_from_edge([self.edge[level] for level in sorted(self.edge)[::-1]])
        if computed != root:
            raise TilesError(
                f"the tiles of {directory} for size {size} hash to {computed.hex()}, "
                f"not to the root {root.hex()}"
            )

    def hashes(self, level: int, index: int) -> list[bytes]:
        full_tiles = self.size >> (TILE_HEIGHT * (level + 1))
        if index >= full_tiles:
            return self.edge[level]
        current = self.current.get(level)
        if current is not None and current[0] == index:
            return current[1]
        hashes = read_tile(self.directory, level, index)
        parent = self.hashes(level + 1, index // TILE_WIDTH)
        if _subtree_hash(hashes) != parent[index % TILE_WIDTH]:
            span = TILE_WIDTH ** (level + 1)
            raise TilesError(
                f"{tile_path(level, index)} does not match its hash in the tile above: "
                f"entries {index * span} to {(index + 1) * span - 1} cannot be verified"
            )
        self.current[level] = (index, hashes)
        return hashes


def verified_entries(directory: Path, size: int, root: bytes) -> Iterator[bytes]:
    """Entries ``[0, size)``, each yielded only once it is proven part of the tree of
    ``size`` leaves with ``root`` (take both from a checkpoint opened with
    ``note.open_checkpoint``).

    The tiles are checked against the root when this is called; a tile or entry that
    does not verify raises ``TilesError`` naming the first entry index affected.
    """
    if size < 0:
        raise TilesError(f"a tree size is not negative, got {size}")
    tiles = _VerifiedTiles(directory, size, root)

    def generate() -> Iterator[bytes]:
        for index, count in _bundles(size):
            leaves = tiles.hashes(0, index)
            for offset, entry in enumerate(_read_bundle(directory, index, count)):
                if merkle.leaf_hash(entry) != leaves[offset]:
                    raise TilesError(
                        f"entry {index * TILE_WIDTH + offset} in {directory} does not match "
                        "its leaf hash in the verified tiles"
                    )
                yield entry

    return generate()
