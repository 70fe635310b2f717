"""The ledger's tables: entries, the Merkle tree's full nodes, checkpoints, the log key.

Nothing here is tenant data in the usual sense: the log is one tree for the whole
installation, readable as configured (``SESAME_LEDGER_ACCESS``), and its entries carry
opaque identifiers only. Rows are only ever inserted, except the sequencer's one state
row and the cosignatures a checkpoint gathers after it is signed.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sesame.models.base import Base, utcnow


class LedgerEntry(Base):
    """One leaf: the exact bytes the log hashed, and where they came from."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index(None, "subject_id", "idx"),
        Index(None, "leaf_hash", unique=True),
    )

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    outbox_id: Mapped[int] = mapped_column(BigInteger, unique=True)  # appended exactly once
    topic: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[UUID | None]
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    appended_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerNode(Base):
    """A run of full interior nodes of one level of the tree: the hashes of the aligned
    blocks of 2^level leaves ``start .. stop - 1`` of that level, 32 bytes each, as one
    sequencer batch created them. Every full node is stored, so a process loads the tree
    without hashing; in runs, so that a batch writes one row per level, not one per node.
    The leaves themselves are the entries' ``leaf_hash``."""

    __tablename__ = "ledger_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    start: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    stop: Mapped[int] = mapped_column(BigInteger)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)


class LedgerState(Base):
    """The sequencer's position, one row: the tree's size and the last outbox message
    considered. Updated in the transaction that appends, so a crash loses nothing and
    repeats nothing."""

    __tablename__ = "ledger_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    outbox_cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerCheckpoint(Base):
    """A signed tree head, and the witnesses' cosignatures it has gathered."""

    __tablename__ = "ledger_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)  # signed by the log
    cosignatures: Mapped[str] = mapped_column(Text, default="")  # witnesses' signature lines
    cosigners: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerKey(Base):
    """The log's identity: its origin and Ed25519 key, the private half sealed under a key
    derived from the server secret. Created once; the origin never changes."""

    __tablename__ = "ledger_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    origin: Mapped[str] = mapped_column(String(255))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    sealed_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerWitnessState(Base):
    """The size each witness last cosigned: the ``old`` of the next request to it."""

    __tablename__ = "ledger_witnesses"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
