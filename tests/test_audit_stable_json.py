"""The access log's stable JSON (gateway/audit/record.py) is the standard library's, byte for
byte: every chain hash written before orjson came in must still verify, and a verifier in
another language only needs to know the one documented form."""

from __future__ import annotations

import json
import random

import pytest

from gateway.audit.record import AuditRecord, canonical, stable_json
from gateway.audit.store import _json_column

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


# --- reading the JSON columns back (gateway/audit/store.py) --------------------------------

#: Column texts the standard library reads one way and orjson another, or not at all.
ODD_COLUMNS = [
    "[123456789012345678901234567890]",  # past 64 bits: orjson would make it a float
    '{"k": 123456789012345678901234567890}',
    '["\\ud800"]',  # a lone surrogate: orjson refuses it
    "[NaN]",
    '{"a": 1e400}',
    '{"a": 1, "a": 2}',
    '"just text"',
    "17",
    "null",
    '[1.5, -0.0, {"x": [true]}]',
]


@pytest.mark.parametrize("text", ODD_COLUMNS)
def test_an_odd_column_reads_as_the_standard_library_reads_it(text: str) -> None:
    read, expected = _json_column(text), json.loads(text)
    assert read == expected or (read != read and expected != expected)  # NaN is not NaN
    assert repr(read) == repr(expected)


def test_columns_as_written_read_back_identically() -> None:
    rng = random.Random(7)
    alphabet = "".join(AWKWARD) + "abcxyz0189-_./"

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))

    for _ in range(2000):
        for column in (
            [text() for _ in range(rng.randrange(5))],  # customers, backends
            {text(): rng.choice(["clear", "masked", "denied", text()]) for _ in range(8)},
        ):
            written = stable_json(column).decode("ascii")
            read = _json_column(written)
            assert read == json.loads(written) == column
            assert type(read) is type(column)
