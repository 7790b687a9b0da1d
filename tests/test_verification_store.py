"""The verification store on SQLite and on PostgreSQL (the scaled mode): attempts and burns are
single conditional updates, so concurrent guesses never share the last attempt."""

from __future__ import annotations

import asyncio

import pytest

from gateway.verification_store import SqlVerificationStore, metadata
from policies.verification import OtpChallenge, Verification
from tests.conftest import engine_with_empty_tables

NOW = 1_800_000_000.0


@pytest.fixture
async def store(hub_database_url: str):
    engine = await engine_with_empty_tables(hub_database_url, metadata)
    yield SqlVerificationStore(engine)
    await engine.dispose()


def challenge(attempts: int = 3, expires_at: float = NOW + 300) -> OtpChallenge:
    return OtpChallenge("otp_1", "cus_1", "digest", "app", "k1", NOW, expires_at, attempts, False)


async def test_concurrent_guesses_never_share_the_last_attempt(store):
    await store.add_challenge(challenge(attempts=2))
    taken = await asyncio.gather(*(store.take_attempt("otp_1", NOW) for _ in range(6)))
    assert sorted(taken) == [False] * 4 + [True] * 2
    assert (await store.challenge("otp_1")).attempts_left == 0


async def test_a_challenge_is_burnt_once_and_expires(store):
    await store.add_challenge(challenge())
    assert await store.take_attempt("otp_1", NOW)
    burnt = await asyncio.gather(*(store.mark_used("otp_1") for _ in range(4)))
    assert burnt.count(True) == 1
    assert not await store.take_attempt("otp_1", NOW)  # used
    await store.add_challenge(
        OtpChallenge("otp_2", "cus_1", "d", "app", "k1", NOW, NOW + 300, 3, False)
    )
    assert not await store.take_attempt("otp_2", NOW + 301)  # expired


async def test_verifications_are_found_by_token_digest_only(store):
    found = Verification("ver_1", "cus_1", "otp", "otp", "app", "k1", NOW, NOW + 1800)
    await store.add_verification(found, "a" * 64)
    assert await store.verification_by_token_hash("a" * 64) == found
    assert await store.verification_by_token_hash("b" * 64) is None


async def test_failures_are_counted_per_customer_and_method_in_a_window(store):
    for at in (NOW - 1000, NOW - 10, NOW - 5):
        await store.add_failure("cus_1", "id_card", "store", at)
    await store.add_failure("cus_2", "id_card", "store", NOW)
    assert await store.failures_since("cus_1", "id_card", NOW - 100) == 2
    assert await store.failures_since("cus_1", "otp", NOW - 100) == 0


async def test_codes_sent_are_counted_per_customer_in_a_window(store):
    for index, at in enumerate((NOW - 1000, NOW - 10, NOW - 5)):
        await store.add_challenge(
            OtpChallenge(f"otp_{index}", "cus_1", "d", "app", "k1", at, at + 300, 3, False)
        )
    assert await store.challenges_since("cus_1", NOW - 100) == 2
    assert await store.challenges_since("cus_2", NOW - 100) == 0


async def test_sends_and_failures_can_be_counted_per_requesting_credential(store):
    for index, key in enumerate(("k1", "k1", "k2")):
        await store.add_challenge(
            OtpChallenge(f"otp_{index}", "cus_1", "d", "sms", key, NOW, NOW + 300, 3, False)
        )
        await store.add_failure("cus_1", "id_card", "store", NOW, credential_id=key)
    assert await store.challenges_since("cus_1", NOW - 1, "k1") == 2
    assert await store.challenges_since("cus_1", NOW - 1, "k2") == 1
    assert await store.challenges_since("cus_1", NOW - 1) == 3
    assert await store.failures_since("cus_1", "id_card", NOW - 1, "k1") == 2
    assert await store.failures_since("cus_1", "id_card", NOW - 1, "k3") == 0
    assert await store.failures_since("cus_1", "id_card", NOW - 1) == 3
