"""The Merkle tree against an independent re-implementation of RFC 6962/9162, written
here from the RFC's definitions (recursive, no stored nodes), and against published
vectors."""

from __future__ import annotations

import hashlib
import random

import pytest

from sesame.ledger import merkle


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1: MTH({}) = SHA-256(), MTH({d}) = SHA-256(0x00 ‖ d), else split."""
    if not leaves:
        return sha(b"")
    if len(leaves) == 1:
        return sha(b"\x00" + leaves[0])
    k = split(len(leaves))
    return sha(b"\x01" + mth(leaves[:k]) + mth(leaves[k:]))


def path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = split(len(leaves))
    if m < k:
        return [*path(m, leaves[:k]), mth(leaves[k:])]
    return [*path(m - k, leaves[k:]), mth(leaves[:k])]


def subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = split(n)
    if m <= k:
        return [*subproof(m, leaves[:k], whole), mth(leaves[k:])]
    return [*subproof(m - k, leaves[k:], False), mth(leaves[:k])]


DATA = [f"entry {i}".encode() for i in range(70)]


@pytest.fixture(scope="module")
def tree() -> merkle.Tree:
    built = merkle.Tree()
    built.append(merkle.leaf_hash(d) for d in DATA)
    return built


def test_the_empty_tree_is_the_hash_of_nothing() -> None:
    assert merkle.Tree().root() == sha(b"") == merkle.EMPTY_ROOT
    assert merkle.root_of([]) == sha(b"")


def test_roots_match_the_definition_for_every_size(tree: merkle.Tree) -> None:
    for n in range(len(DATA) + 1):
        assert tree.root(n) == mth(DATA[:n]), n


def test_inclusion_proofs_match_the_definition_and_verify(tree: merkle.Tree) -> None:
    for n in range(1, len(DATA) + 1):
        root = mth(DATA[:n])
        for m in range(n):
            proof = tree.inclusion_proof(m, n)
            assert proof == path(m, DATA[:n]), (m, n)
            assert merkle.verify_inclusion(merkle.leaf_hash(DATA[m]), m, n, proof, root)


def test_consistency_proofs_match_the_definition_and_verify(tree: merkle.Tree) -> None:
    for n in range(1, len(DATA) + 1):
        for m in range(1, n + 1):
            proof = tree.consistency_proof(m, n)
            assert proof == (subproof(m, DATA[:n], True) if m < n else []), (m, n)
            assert merkle.verify_consistency(m, n, mth(DATA[:m]), mth(DATA[:n]), proof)


def test_a_flipped_byte_anywhere_fails_verification(tree: merkle.Tree) -> None:
    rng = random.Random(7)
    for _ in range(300):
        n = rng.randint(2, len(DATA))
        m = rng.randrange(n)
        proof = tree.inclusion_proof(m, n)
        broken = list(proof)
        i = rng.randrange(len(broken))
        byte = rng.randrange(32)
        broken[i] = broken[i][:byte] + bytes([broken[i][byte] ^ 1]) + broken[i][byte + 1 :]
        root = tree.root(n)
        assert not merkle.verify_inclusion(merkle.leaf_hash(DATA[m]), m, n, broken, root)
        assert not merkle.verify_inclusion(merkle.leaf_hash(DATA[m]), (m + 1) % n, n, proof, root)
        first = rng.randint(1, n - 1)
        consistency = tree.consistency_proof(first, n)
        j = rng.randrange(len(consistency))
        consistency[j] = bytes([consistency[j][0] ^ 0x80]) + consistency[j][1:]
        assert not merkle.verify_consistency(first, n, tree.root(first), root, consistency)


def test_verification_refuses_wrong_shapes(tree: merkle.Tree) -> None:
    root = tree.root(8)
    proof = tree.inclusion_proof(3, 8)
    leaf = merkle.leaf_hash(DATA[3])
    assert not merkle.verify_inclusion(leaf, 3, 8, proof[:-1], root)  # too short
    assert not merkle.verify_inclusion(leaf, 3, 8, [*proof, proof[0]], root)  # too long
    assert not merkle.verify_inclusion(leaf, 8, 8, proof, root)  # index out of range
    assert not merkle.verify_consistency(5, 4, tree.root(5), tree.root(4), [])
    assert not merkle.verify_consistency(4, 8, tree.root(4), root, [])
    assert merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, root, [])
    assert merkle.verify_consistency(8, 8, root, root, [])
    assert not merkle.verify_consistency(8, 8, root, tree.root(7), [])


def test_a_tree_rebuilt_from_its_stored_nodes_answers_the_same(tree: merkle.Tree) -> None:
    nodes = merkle.Tree().append(merkle.leaf_hash(d) for d in DATA)
    rebuilt = merkle.Tree()
    for level, index, value in sorted(nodes):
        rebuilt.load(level, index, value)
    assert rebuilt.root() == tree.root()
    assert rebuilt.inclusion_proof(37, 70) == tree.inclusion_proof(37, 70)
    # every full node was returned once, leaves included: about two per leaf
    assert len(nodes) == sum(len(DATA) >> level for level in range(8))


def test_truncating_forgets_exactly_the_later_leaves(tree: merkle.Tree) -> None:
    copy = merkle.Tree()
    copy.append(merkle.leaf_hash(d) for d in DATA)
    copy.truncate(45)
    assert copy.size == 45
    assert copy.root() == mth(DATA[:45])
    copy.append(merkle.leaf_hash(d) for d in DATA[45:])
    assert copy.root() == tree.root()


def test_proofs_are_refused_beyond_the_tree(tree: merkle.Tree) -> None:
    with pytest.raises(merkle.ProofError):
        tree.inclusion_proof(70, 70)
    with pytest.raises(merkle.ProofError):
        tree.consistency_proof(3, 71)
    with pytest.raises(merkle.ProofError):
        tree.root(71)


def test_a_published_certificate_transparency_vector() -> None:
    """RFC 6962's reference test data (as used by Certificate Transparency's and
    Trillian's test suites): the root over the eight sample leaves."""
    leaves = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    expected = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert merkle.root_of([merkle.leaf_hash(x) for x in leaves]).hex() == expected
    assert mth(leaves).hex() == expected
