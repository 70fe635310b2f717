"""What the ledger's endpoints answer. Hashes and bytes are standard base64 (RFC 4648 §4),
as in checkpoints and the witness protocol."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class WitnessRead(BaseModel):
    name: str
    url: str
    vkey: str = Field(description="The witness's cosignature verifier key (type 0x04).")


class LedgerInfo(BaseModel):
    origin: str = Field(description="The log's origin line, and its key's name.")
    log_key: str = Field(description="The log's verifier key: name+key ID+base64(0x01‖key).")
    witnesses: list[WitnessRead]
    quorum: int = Field(description="Cosignatures a checkpoint needs before it is served.")
    size: int = Field(description="Entries appended so far.")
    checkpoint_size: int | None = Field(description="The size of the served checkpoint.")


class EntryRead(BaseModel):
    index: int
    leaf_hash: str = Field(description="SHA-256(0x00 ‖ body), base64.")
    body: str = Field(description="The entry's exact bytes, base64: what the log hashed.")
    entry: dict[str, Any] | None = Field(
        description="The same bytes decoded, for reading; null if they are not a canonical"
        " entry (the bytes are served as stored, so that verifiers see any damage)."
    )


class EntriesPage(BaseModel):
    entries: list[EntryRead]
    size: int = Field(description="The log's size when answering.")


class InclusionProof(BaseModel):
    leaf_index: int
    tree_size: int
    hashes: list[str]


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str]


class Receipt(BaseModel):
    entry: EntryRead
    proof: InclusionProof | None = Field(
        description="Inclusion in the checkpoint below; null while the entry is newer."
    )


class Receipts(BaseModel):
    subject_id: str
    checkpoint: str | None = Field(
        description="The served checkpoint (a signed note, with witnesses' cosignatures)."
    )
    receipts: list[Receipt]
