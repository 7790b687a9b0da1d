"""The dataset generator and the seeded stores: determinism, valid and unique keys."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from simulators import dataset, identifiers, ledger
from simulators.reference import CHINA_MOBILE_PREFIXES, OFFERINGS_BY_ID, REGIONS, TYPO_REGION
from simulators.seed import is_seeded, seed_dataset, seeded_meta

MSISDN = re.compile(r"1[3-9][0-9]{9}")


def test_same_seed_same_records_and_different_seed_different() -> None:
    for index in (0, 1, 199, 12_345, 987_654):
        assert dataset.generate(7, index) == dataset.generate(7, index)
    a = [dataset.generate(7, i) for i in range(50)]
    b = [dataset.generate(8, i) for i in range(50)]
    assert all(x.customer.cert_no != y.customer.cert_no for x, y in zip(a, b, strict=True))
    assert {x.subscribers[0].msisdn for x in a}.isdisjoint({y.subscribers[0].msisdn for y in b})


def test_id_cards_are_valid_unique_and_match_the_person() -> None:
    regions = {r.code for r in REGIONS}
    certs = set()
    for i in range(4000):
        c = dataset.generate(3, i).customer
        assert identifiers.is_valid_id_card(c.cert_no), c.cert_no
        assert c.cert_no[:6] in regions
        assert c.cert_no[6:14] == c.birth_date.replace("-", "")
        assert "1950-01-01" <= c.birth_date <= "2006-12-31"
        assert int(c.cert_no[16]) % 2 == (1 if c.gender == "M" else 0)
        certs.add(c.cert_no)
    assert len(certs) == 4000


def test_id_cards_stay_unique_where_customers_share_a_region_and_birth_date() -> None:
    # Index i and i + cells fall into the same (district, birth date) cell; only the sequence
    # number tells them apart.
    cells = dataset._CELLS
    for i in (0, 5, 77):
        same_cell = [dataset.generate(3, i + k * cells).customer.cert_no for k in range(5)]
        assert len({c[:14] for c in same_cell}) == 1
        assert len(set(same_cell)) == 5


def test_check_digits_of_known_numbers() -> None:
    assert identifiers.gb11643_check_digit("11010519491231002") == "X"
    assert identifiers.is_valid_id_card("11010519491231002X")
    assert not identifiers.is_valid_id_card("110105194912310021")
    assert identifiers.luhn_check_digit("7992739871") == "3"


def test_msisdns_unique_in_china_mobile_ranges() -> None:
    keys = identifiers.seed_keys(11)
    numbers = [identifiers.msisdn(keys, slot) for slot in range(0, 400_000)]
    assert len(set(numbers)) == len(numbers)
    assert all(MSISDN.fullmatch(n) and n[:3] in CHINA_MOBILE_PREFIXES for n in numbers[:5000])
    # and far up the slot range (a billion lines) still distinct from the start
    far = {identifiers.msisdn(keys, slot) for slot in range(2_000_000_000, 2_000_050_000)}
    assert far.isdisjoint(numbers)


def test_customer_records_are_consistent() -> None:
    for i in range(500):
        b = dataset.generate(5, i)
        assert 1 <= len(b.subscribers) <= 4
        assert len(b.tickets) <= 3 and len(b.interactions) <= 4
        assert b.customer.customer_no == str(1_000_000_001 + i)
        assert re.fullmatch(r"BA[0-9]{10}", b.account.id)
        assert re.fullmatch(r"P[0-9A-F]{12}", b.party.id)
        assert b.party.phone == b.subscribers[0].msisdn
        assert b.party.id_card == b.customer.cert_no
        assert b.customer.cust_level in "12345"
        for s in b.subscribers:
            assert re.fullmatch(r"S[0-9]{12}", s.subscriber_no)
            assert len(s.imsi) == 15 and len(s.iccid) == 20
            assert identifiers.is_luhn_valid(s.iccid)
            assert s.offering_id in OFFERINGS_BY_ID
        if b.account.bank_card:
            assert identifiers.is_luhn_valid(b.account.bank_card)


def test_billing_account_ids_are_a_permutation_not_the_customer_number() -> None:
    keys = identifiers.seed_keys(5)
    ids = [identifiers.billing_account_id(keys, i) for i in range(100_000)]
    assert len(set(ids)) == len(ids)
    parties = [identifiers.party_id(keys, i) for i in range(100_000)]
    assert len(set(parties)) == len(parties)
    assert ids[0][2:] != "1000000001"


def test_one_customer_in_two_hundred_has_a_mistyped_billing_certificate() -> None:
    for block in range(5):
        flagged = [
            i for i in range(block * 200, block * 200 + 200) if dataset.has_certificate_typo(9, i)
        ]
        assert len(flagged) == 1
    i = next(i for i in range(200) if dataset.has_certificate_typo(9, i))
    b = dataset.generate(9, i)
    typo = b.account.certificate_number
    assert typo != b.customer.cert_no
    assert identifiers.is_valid_id_card(typo)
    assert typo[:6] == TYPO_REGION[b.customer.cert_no[:6]]
    assert typo[6:17] == b.customer.cert_no[6:17]  # same birth date and sequence
    clean = dataset.generate(9, (i + 1) % 200)
    assert clean.account.certificate_number == clean.customer.cert_no


def test_free_text_sometimes_holds_personal_data() -> None:
    texts = []
    for i in range(300):
        b = dataset.generate(4, i)
        for t in b.tickets:
            texts.append((t.description, b))
        for n in b.interactions:
            texts.append((n.description, b))
    leaking = [
        text
        for text, b in texts
        if b.subscribers[0].msisdn in text
        or b.customer.cert_no in text
        or re.search(r"62\d{17}", text)
    ]
    assert 0.05 < len(leaking) / len(texts) < 0.6


def test_bills_are_twelve_months_newest_first_and_match_the_balance() -> None:
    for i in range(200):
        a = dataset.generate(6, i).account
        bills = ledger.bills(6, a.index, a.id, a.base_fee_cents, a.account_type, a.arrears)
        assert len(bills) == 12
        assert [b.bill_date for b in bills] == sorted((b.bill_date for b in bills), reverse=True)
        if a.account_type == "postpaid":
            assert a.balance_cents == -sum(b.remaining_cents for b in bills)
        payments = ledger.payments(6, a.index, a.payment_method, bills)
        assert all(p.amount_cents > 0 for p in payments)


def _seed_bytes(path: Path, seed: int) -> dict[str, bytes]:
    seed_dataset(path, 120, seed)
    return {name: (path / f"{name}.db").read_bytes() for name in ("boss", "billing", "care")}


def test_stores_are_byte_identical_for_the_same_inputs(tmp_path: Path) -> None:
    first = _seed_bytes(tmp_path / "a", 1)
    assert first == _seed_bytes(tmp_path / "b", 1)
    assert first["boss"] != _seed_bytes(tmp_path / "c", 2)["boss"]


def test_seeding_is_skipped_when_the_dir_matches_and_redone_with_force(tmp_path: Path) -> None:
    seen: list[int] = []
    result = seed_dataset(tmp_path, 50, 3, progress=seen.append)
    assert not result.skipped and sum(seen) == 50
    assert is_seeded(tmp_path, 50, 3) and not is_seeded(tmp_path, 51, 3)
    assert seed_dataset(tmp_path, 50, 3).skipped
    assert not seed_dataset(tmp_path, 50, 3, force=True).skipped
    meta = seeded_meta(tmp_path)
    assert meta is not None and (meta.seed, meta.customers) == (3, 50)


def test_seeded_store_contents_and_indexes(data_dir: Path, bundles: list) -> None:
    conn = sqlite3.connect(data_dir / "boss.db")
    assert conn.execute("SELECT count(*) FROM customer").fetchone()[0] == len(bundles)
    assert conn.execute("SELECT count(*) FROM subscriber").fetchone()[0] == sum(
        len(b.subscribers) for b in bundles
    )
    indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_customer_cert", "ix_subscriber_msisdn", "ix_customer_level"} <= indexes
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM subscriber WHERE msisdn = '13800000000'"
    ).fetchall()
    assert "ix_subscriber_msisdn" in str(plan)
    conn.close()


@pytest.mark.parametrize("bad", [0, -1, dataset.MAX_CUSTOMERS + 1])
def test_seed_rejects_impossible_counts(tmp_path: Path, bad: int) -> None:
    with pytest.raises(ValueError):
        seed_dataset(tmp_path, bad, 1)
