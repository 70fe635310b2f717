"""The published reader test vectors give, through the reference reader (the code the
simulated readers run), exactly the verdicts they promise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sesame.devices import protocol
from sesame.keys import vectors
from sesame.keys.reader import Reader, ReaderTrust, Verdict

DIRECTORY = Path(__file__).resolve().parents[2] / "docs" / "test-vectors"
PUBLISHED = json.loads((DIRECTORY / vectors.VECTORS_FILE).read_text())


def test_the_vectors_are_generated_from_the_test_keys() -> None:
    assert vectors.is_current(DIRECTORY), "run `sesame protocol docs` and commit the vectors"


def test_every_verdict_a_reader_can_give_has_a_vector() -> None:
    reasons = {p["expected"] for case in PUBLISHED["cases"] for p in case["presented"]}
    every = {v for k, v in vars(Verdict).items() if k.isupper()}
    assert reasons == every


@pytest.mark.parametrize("case", PUBLISHED["cases"], ids=lambda c: str(c["name"]))
def test_the_reference_reader_gives_each_published_verdict(case: dict[str, Any]) -> None:
    document = protocol.decode(protocol.Channel.TRUST, json.dumps(PUBLISHED["trust"]).encode())
    assert isinstance(document, protocol.TrustDocument)
    reader = Reader(ReaderTrust.of(document) if case["trust"] else None)
    verdicts = [reader.decide(p["token"], case["now"]).reason for p in case["presented"]]
    assert verdicts == [p["expected"] for p in case["presented"]]


def test_the_published_trust_names_the_test_site_key() -> None:
    keys = json.loads((DIRECTORY / vectors.KEYS_FILE).read_text())
    assert [k["kid"] for k in PUBLISHED["trust"]["keys"]] == [keys["site_key"]["kid"]]
    assert PUBLISHED["trust"]["keys"][0]["x"] == keys["site_key"]["x"]
