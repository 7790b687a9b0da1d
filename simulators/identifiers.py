"""Identifier arithmetic: check digits and the bijections that make keys unique by construction.

Every key of the dataset is an injective function of an index (customer index, line slot,
ticket slot), so uniqueness needs no lookup table and survives any customer count.
"""

from __future__ import annotations

import hashlib
import operator
from functools import lru_cache

from simulators.reference import CHINA_MOBILE_PREFIXES

_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_CHECK = "10X98765432"


def gb11643_check_digit(first17: str) -> str:
    """The 18th character of a resident ID number (ISO 7064 MOD 11-2)."""
    if len(first17) != 17:
        raise ValueError("an ID number has 17 digits before its check character")
    total = sum(map(operator.mul, map(int, first17), _GB11643_WEIGHTS))
    return _GB11643_CHECK[total % 11]


def is_valid_id_card(number: str) -> bool:
    return (
        len(number) == 18
        and number[:17].isdigit()
        and gb11643_check_digit(number[:17]) == number[17]
    )


_LUHN_DOUBLED = {str(d): (2 * d if d < 5 else 2 * d - 9) for d in range(10)}


def luhn_check_digit(body: str) -> str:
    """Check digit that makes ``body + digit`` pass the Luhn test (bank cards, ICCIDs)."""
    backwards = body[::-1]
    # The digit next to the check digit, and every second one from there, is doubled.
    total = sum(map(_LUHN_DOUBLED.__getitem__, backwards[0::2])) + sum(map(int, backwards[1::2]))
    return str(-total % 10)


def is_luhn_valid(number: str) -> bool:
    return luhn_check_digit(number[:-1]) == number[-1]


class SeedKeys:
    """Per-seed offsets for the permutations, so two seeds give unrelated-looking keys."""

    __slots__ = ("offsets", "rng_base")

    def __init__(self, seed: int) -> None:
        digest = hashlib.sha256(f"switchboard-simulators:{seed}".encode()).digest()
        words = [int.from_bytes(digest[k : k + 4], "big") for k in range(0, 32, 4)]
        self.offsets = words
        # Base of the per-customer random streams; the index is added below 2**32.
        self.rng_base = int.from_bytes(digest[:8], "big") << 32


@lru_cache(maxsize=16)
def seed_keys(seed: int) -> SeedKeys:
    return SeedKeys(seed)


# Multipliers of the affine permutations x -> (a*x + b) mod m. Each is coprime to its modulus,
# which is what makes the map a bijection.
_BA_MUL = 7_919_324_417  # mod 10**10, odd and not a multiple of 5
_SUB_MUL = 982_451_653  # mod 10**12
_IMSI_MUL = 3_367_900_313  # mod 10**10
_ICCID_MUL = 5_915_587_277  # mod 10**13
_MSISDN_MUL = 32_452_843  # mod 24 * 10**8: coprime to 2, 3 and 5
_TICKET_MUL = 2_860_486_313  # mod 5 * 10**9 (coprime to 2 and 5)
_PARTY_MUL = 0x5DEECE66D  # mod 2**48, odd
_PARTY_MUL2 = 0x9E3779B97F4B  # mod 2**48, odd


def billing_account_id(keys: SeedKeys, index: int) -> str:
    return f"BA{(index * _BA_MUL + keys.offsets[0]) % 10**10:010d}"


def party_id(keys: SeedKeys, index: int) -> str:
    mask = (1 << 48) - 1
    x = (index * _PARTY_MUL + keys.offsets[1]) & mask
    x ^= x >> 24  # invertible xorshift: spreads neighbouring indexes over all digits
    x = (x * _PARTY_MUL2) & mask
    return f"P{x:012X}"


_MSISDN_SPACE = len(CHINA_MOBILE_PREFIXES) * 10**8


def msisdn(keys: SeedKeys, slot: int) -> str:
    """MSISDN of a global line slot; distinct slots (below 2.4e9) give distinct numbers.

    The slot is permuted over (prefix, 8 digits) space first, so that the lines of one customer
    land on unrelated numbers rather than on 138xxxxxxxx, 139xxxxxxxx with equal endings.
    """
    scrambled = (slot * _MSISDN_MUL + keys.offsets[2]) % _MSISDN_SPACE
    rest, prefix = divmod(scrambled, len(CHINA_MOBILE_PREFIXES))
    return f"{CHINA_MOBILE_PREFIXES[prefix]}{rest:08d}"


def subscriber_no(keys: SeedKeys, slot: int) -> str:
    return f"S{(slot * _SUB_MUL + keys.offsets[3]) % 10**12:012d}"


def imsi(keys: SeedKeys, slot: int) -> str:
    return f"46000{(slot * _IMSI_MUL + keys.offsets[4]) % 10**10:010d}"


def iccid(keys: SeedKeys, slot: int) -> str:
    body = f"898600{(slot * _ICCID_MUL + keys.offsets[5]) % 10**13:013d}"
    return body + luhn_check_digit(body)


def seeded_ticket_number(keys: SeedKeys, slot: int) -> int:
    """Ticket/interaction numbers of seeded records lie below 5e9; created ones above."""
    return (slot * _TICKET_MUL + keys.offsets[6]) % (5 * 10**9)


CREATED_NUMBER_BASE = 5 * 10**9
