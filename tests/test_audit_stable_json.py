"""The access log's stable JSON (gateway/audit/record.py) is the standard library's, byte for
byte: every chain hash written before orjson came in must still verify, and a verifier in
another language only needs to know the one documented form."""

from __future__ import annotations

import json
import random

import pytest

from gateway.audit.record import AuditRecord, canonical, stable_json

#: Text that either encoder might escape: controls, DEL, quotes, backslashes, non-ASCII,
#: a lone surrogate, and the plain ASCII a record nearly always holds.
AWKWARD = [
    "",
    "plain-ascii_text.1",
    'quote " inside',
    "back\\slash",
    "tab\tnewline\ncr\r",
    "\x00nul\x01\x1f",
    "\x7fdel",
    "\b\f",
    "é ü 中文 \u2028\u2029",
    "emoji \U0001f4f1",
    "\ud800lone surrogate",
    "</script>",
    "~ { } [ ] : ,",
]


def _stdlib(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode(
        "ascii"
    )


@pytest.mark.parametrize("text", AWKWARD)
def test_each_awkward_text_as_key_and_value(text: str) -> None:
    value = {text: text, "list": [text, 1, None, True, False], "z": {text: [text]}}
    assert stable_json(value) == _stdlib(value)


def test_numbers_at_the_edges() -> None:
    for number in (0, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64, 10**30):
        assert stable_json({"n": number, "l": [number]}) == _stdlib({"n": number, "l": [number]})


def test_random_values_match() -> None:
    rng = random.Random(12)
    alphabet = "".join(AWKWARD) + "abcxyz0189-_./"

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))

    def value(depth: int = 0) -> object:
        kind = rng.randrange(6 if depth < 3 else 3)
        if kind == 0:
            return text()
        if kind == 1:
            return rng.choice([None, True, False, rng.randrange(-(2**40), 2**40)])
        if kind == 2:
            return rng.randrange(10**6)
        if kind == 3:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {text(): value(depth + 1) for _ in range(rng.randrange(4))}

    for _ in range(3000):
        sample = value()
        assert stable_json(sample) == _stdlib(sample), sample


def test_a_record_canonical_form_is_unchanged() -> None:
    record = AuditRecord(
        time_us=1_764_000_000_000_000,
        request_id="r-1",
        outcome="ok",
        subject="agent é",
        customers=("c" * 64,),
        disclosed={"Customer.profile.name": "masked", "Customer.id": "clear"},
        backends=("billing", "boss"),
        latency_us=812,
        source="s",
    )
    assert canonical(record) == _stdlib(record.as_dict())
