"""RFC 6962 / RFC 9162 Merkle trees: hashing, proofs from stored nodes, verification.

A leaf's hash is SHA-256(0x00 ‖ entry), an interior node's SHA-256(0x01 ‖ left ‖ right),
and the tree over ``n`` leaves splits at the largest power of two below ``n``. The empty
tree's root is SHA-256 of nothing.

``Tree`` keeps every *full* node — the hash of each aligned block of 2^level leaves — in
one byte array per level (32 bytes a node, about 64 bytes per leaf in all). Any root,
inclusion proof or consistency proof for any size up to the tree's is then a handful of
slices plus at most one hash per level for the incomplete right edge. The verification
functions follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step and need nothing but
the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class ProofError(ValueError):
    """A proof was asked for sizes or indexes the tree cannot answer."""


class Tree:
    """Full nodes of an append-only Merkle tree, level by level."""

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._edges: dict[tuple[int, int], bytes] = {}

    @property
    def size(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def count(self, level: int) -> int:
        """How many full nodes the tree holds at ``level``."""
        return len(self._levels[level]) // HASH_SIZE if level < len(self._levels) else 0

    def truncate(self, size: int) -> None:
        """Forget leaves from ``size`` on (and every node that covered them)."""
        for level, nodes in enumerate(self._levels):
            del nodes[(size >> level) * HASH_SIZE :]
        self._edges.clear()

    def node(self, level: int, index: int) -> bytes:
        """The hash of leaves [index·2^level, (index+1)·2^level), which must all exist."""
        start = index * HASH_SIZE
        if level >= len(self._levels) or start + HASH_SIZE > len(self._levels[level]):
            raise ProofError(f"no full node ({level}, {index}) in a tree of {self.size}")
        return bytes(self._levels[level][start : start + HASH_SIZE])

    def append(self, leaf_hashes: Iterable[bytes]) -> list[tuple[int, int, bytes]]:
        """Add leaves; returns every full node this completes, leaves included, as
        ``(level, index, hash)`` — what a store must persist to rebuild the tree."""
        created: list[tuple[int, int, bytes]] = []
        levels = self._levels
        for leaf in leaf_hashes:
            if len(leaf) != HASH_SIZE:
                raise ValueError("a leaf hash is 32 bytes")
            index = len(levels[0]) // HASH_SIZE
            levels[0] += leaf
            created.append((0, index, leaf))
            level, current = 0, leaf
            while index & 1:  # a right child completes its parent
                left = self.node(level, index - 1)
                current = node_hash(left, current)
                level, index = level + 1, index >> 1
                if len(levels) == level:
                    levels.append(bytearray())
                levels[level] += current
                created.append((level, index, current))
        self._edges.clear()
        return created

    def load(self, level: int, index: int, value: bytes) -> None:
        """Put back a stored node; nodes must arrive in order within each level."""
        while len(self._levels) <= level:
            self._levels.append(bytearray())
        if len(self._levels[level]) != index * HASH_SIZE:
            raise ValueError(f"node ({level}, {index}) out of order")
        self._levels[level] += value
        self._edges.clear()

    # -- hashes of ranges -------------------------------------------------------------------

    def _range(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) where ``start`` is aligned to a power of two ≥ end - start,
        as every range in RFC 6962's recursions is."""
        n = end - start
        if n & (n - 1) == 0:
            level = n.bit_length() - 1
            return self.node(level, start >> level)
        cached = self._edges.get((start, end))
        if cached is None:
            k = _split(n)
            cached = node_hash(self._range(start, start + k), self._range(start + k, end))
            if len(self._edges) > 4096:
                self._edges.clear()
            self._edges[(start, end)] = cached
        return cached

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH of leaves [start, end), for a range an RFC 6962 proof can name (``start``
        aligned to a power of two at least ``end - start``)."""
        n = end - start
        if n <= 0 or end > self.size or start & ((1 << max(n - 1, 0).bit_length()) - 1):
            raise ProofError(f"no subtree [{start}, {end}) in a tree of {self.size}")
        return self._range(start, end)

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if size > self.size or size < 0:
            raise ProofError(f"the tree has {self.size} leaves, not {size}")
        return EMPTY_ROOT if size == 0 else self._range(0, size)

    # -- proofs -------------------------------------------------------------------------------

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 PATH(index, D[0:size]), deepest sibling first."""
        if not 0 <= index < size <= self.size:
            raise ProofError(f"no leaf {index} in a tree of {size} (the log has {self.size})")
        proof: list[bytes] = []
        start, end = 0, size
        while end - start > 1:
            k = _split(end - start)
            if index < start + k:
                proof.append(self._range(start + k, end))
                end = start + k
            else:
                proof.append(self._range(start, start + k))
                start += k
        proof.reverse()
        return proof

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 PROOF(first, D[0:second]); empty when first is 0 or equals second."""
        if not 0 <= first <= second <= self.size:
            raise ProofError(
                f"no consistency proof from {first} to {second} (the log has {self.size})"
            )
        if first == 0 or first == second:
            return []
        proof: list[bytes] = []
        start, end, whole = 0, second, True
        m = first
        while m != end - start:
            k = _split(end - start)
            if m <= k:
                proof.append(self._range(start + k, end))
                end = start + k
            else:
                proof.append(self._range(start, start + k))
                start, m, whole = start + k, m - k, False
        if not whole:
            proof.append(self._range(start, end))
        proof.reverse()
        return proof


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes, by building the tree (for exports and checks)."""
    tree = Tree()
    tree.append(leaf_hashes)
    return tree.root()


# -- verification (RFC 9162 2.1.3.2 and 2.1.4.2) --------------------------------------------


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows the leaf hash ``leaf`` at ``index`` in the tree of ``size``
    leaves whose root is ``root``."""
    if index >= size or index < 0:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0 or len(p) != HASH_SIZE:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether the tree of ``second`` leaves with ``second_root`` extends the tree of
    ``first`` leaves with ``first_root``, by ``proof``."""
    if first < 0 or first > second:
        return False
    if first == second:
        return not proof and first_root == second_root
    if first == 0:
        return not proof and first_root == EMPTY_ROOT
    if not proof or any(len(p) != HASH_SIZE for p in proof):
        return False
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0
