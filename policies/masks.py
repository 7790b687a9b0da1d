"""Masks per data class, and the free-text scrubber.

Each class has exactly one mask, used in every channel, so that a value keeps the same visible
positions everywhere and two views can never be combined back into the whole (DESIGN.md,
"Masks in use"). Masks never fail: a value of an unexpected shape is hidden entirely.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar


class DataClass(str):
    """The name of a class of personal data ("mobile", "name", or one a policy declares).

    Open, not an enum: a system onboarded by configuration brings classes of its own (a loyalty
    member number), declared with their mask in the policy file (``data_classes:``), with no
    code. The built-in classes below have their masks here.
    """

    __slots__ = ()

    MOBILE: ClassVar[DataClass]
    ID_CARD: ClassVar[DataClass]
    NAME: ClassVar[DataClass]
    ADDRESS: ClassVar[DataClass]
    EMAIL: ClassVar[DataClass]
    BANK_CARD: ClassVar[DataClass]
    DEVICE_ID: ClassVar[DataClass]
    BIRTH_DATE: ClassVar[DataClass]
    FREE_TEXT: ClassVar[DataClass]
    LOCATION: ClassVar[DataClass]

    @property
    def value(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"DataClass({str(self)!r})"


DataClass.MOBILE = DataClass("mobile")
DataClass.ID_CARD = DataClass("id_card")
DataClass.NAME = DataClass("name")
DataClass.ADDRESS = DataClass("address")
DataClass.EMAIL = DataClass("email")
DataClass.BANK_CARD = DataClass("bank_card")
DataClass.DEVICE_ID = DataClass("device_id")  # IMSI, ICCID
DataClass.BIRTH_DATE = DataClass("birth_date")
DataClass.FREE_TEXT = DataClass("free_text")
DataClass.LOCATION = DataClass("location")


HIDDEN = "****"


def mask_mobile(value: str) -> str:
    """138****5678: the operator prefix and the last four digits (+86138****5678 in E.164)."""
    if value.startswith("+") and len(value) > 11:
        # E.164 (systems declared by files normalise numbers to it): the country code stays,
        # the national number is masked as usual.
        national = value[-11:]
        return value[:-11] + mask_mobile(national)
    if len(value) < 8:
        return HIDDEN
    return value[:3] + "*" * (len(value) - 7) + value[-4:]


def mask_id_card(value: str) -> str:
    """110101********1234: region and last four; never the birth date (digits 7-14)."""
    if len(value) != 18:
        return HIDDEN
    return value[:6] + "*" * 8 + value[-4:]


def mask_name(value: str) -> str:
    """张* for two characters, 张*三 for three, first and last kept beyond that."""
    if len(value) <= 1:
        return "*"
    if len(value) == 2:
        return value[0] + "*"
    return value[0] + "*" * (len(value) - 2) + value[-1]


_DISTRICT = re.compile(r"^.*?(?:区|县|旗)")


def mask_address(value: str) -> str:
    """Cut after the district: 重庆市渝中区****."""
    found = _DISTRICT.match(value)
    if found is None or found.end() >= len(value):
        return HIDDEN
    return found.group(0) + HIDDEN


def mask_email(value: str) -> str:
    """d***@x.com: the first character of the local part and the domain."""
    local, at, domain = value.partition("@")
    if not at or not local or not domain:
        return HIDDEN
    return local[0] + "***@" + domain


def mask_bank_card(value: str) -> str:
    """First six (the issuer) and last four."""
    digits = value.replace(" ", "")
    if len(digits) < 12:
        return HIDDEN
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def mask_device_id(value: str) -> str:
    """IMSI / ICCID: the network prefix (first five) and the last four."""
    if len(value) < 12:
        return HIDDEN
    return value[:5] + "*" * (len(value) - 9) + value[-4:]


def mask_location(value: str) -> str:
    """Only the city."""
    found = re.match(r"^.*?市", value)
    return found.group(0) + HIDDEN if found else HIDDEN


# Longest first: an 18-character ID card or a 19-digit card must not be read as a phone number.
_ID_CARD_IN_TEXT = re.compile(r"(?<![0-9])[1-9][0-9]{16}[0-9Xx](?![0-9])")
_BANK_CARD_IN_TEXT = re.compile(r"(?<![0-9])[0-9]{16,19}(?![0-9])")
_MOBILE_IN_TEXT = re.compile(r"(?<![0-9])(?:\+?86[- ]?)?1[3-9][0-9](?:[- ]?[0-9]{4}){2}(?![0-9])")


def scrub_free_text(value: str) -> str:
    """Mask the phone numbers, ID-card numbers and bank cards found in free text."""
    value = _ID_CARD_IN_TEXT.sub(lambda m: mask_id_card(m.group(0).upper()), value)
    value = _BANK_CARD_IN_TEXT.sub(lambda m: mask_bank_card(m.group(0)), value)
    return _MOBILE_IN_TEXT.sub(
        lambda m: mask_mobile(re.sub(r"[^0-9]", "", m.group(0))[-11:]), value
    )


MASKS: dict[DataClass, Callable[[str], str | None]] = {
    DataClass.MOBILE: mask_mobile,
    DataClass.ID_CARD: mask_id_card,
    DataClass.NAME: mask_name,
    DataClass.ADDRESS: mask_address,
    DataClass.EMAIL: mask_email,
    DataClass.BANK_CARD: mask_bank_card,
    DataClass.DEVICE_ID: mask_device_id,
    # A birth date repeats ID-card digits 7-14, which no mask may show: masked means withheld.
    DataClass.BIRTH_DATE: lambda value: None,
    DataClass.FREE_TEXT: scrub_free_text,
    DataClass.LOCATION: mask_location,
}


BUILTIN_CLASSES: frozenset[DataClass] = frozenset(MASKS)


@dataclass(frozen=True, slots=True)
class DeclaredMask:
    """The mask of a class a policy declares: keep some leading and trailing characters.

    ``keep_first``/``keep_last`` characters stay, the rest become ``*``; a value too short to
    hide anything (shorter than ``min_length``) is hidden whole. ``withheld`` masks to null.
    ``like`` reuses a built-in class's mask.
    """

    keep_first: int = 0
    keep_last: int = 0
    min_length: int = 0
    withheld: bool = False
    like: DataClass | None = None

    def __call__(self, value: str) -> str | None:
        if self.like is not None:
            return MASKS[self.like](value)
        if self.withheld:
            return None
        shown = self.keep_first + self.keep_last
        if len(value) <= shown or len(value) < self.min_length:
            return HIDDEN
        tail = value[len(value) - self.keep_last :] if self.keep_last else ""
        return value[: self.keep_first] + "*" * (len(value) - shown) + tail


Mask = Callable[[str], str | None]


def mask(
    data_class: DataClass, value: object, declared: Mapping[DataClass, Mask] | None = None
) -> object:
    """The masked form of a value of a class (lists masked item by item; None stays None).

    A class neither built in nor declared is hidden whole: masks never fail open.
    """
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [mask(data_class, item, declared) for item in value]
    found = MASKS.get(data_class) or (declared or {}).get(data_class)
    return found(str(value)) if found is not None else HIDDEN
