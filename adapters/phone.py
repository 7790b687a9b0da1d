"""MSISDNs in one form, E.164, whatever form a system or a caller uses.

Systems write the same number as ``+8618899407311``, ``8618899407311`` or ``18899407311``;
matching and routing need one form. The ``phonenumbers`` library (Google's libphonenumber)
does the parsing; numbers without a country code are read in the operator's home region.
"""

from __future__ import annotations

import phonenumbers

HOME_REGION = "CN"


def to_e164(value: str, region: str = HOME_REGION) -> str | None:
    """``+8618899407311`` for any accepted form of the number; None if it is not one."""
    text = value.strip()
    if not text:
        return None
    if text[0].isdigit() and text.startswith("86") and len(text) == 13:
        text = "+" + text  # 86 + an 11-digit mobile number: the country code without its +
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: How a system writes the numbers it is asked by: ``+8618899407311``, ``18899407311``,
#: ``8618899407311``.
MSISDN_FORMATS = ("e164", "national", "digits")


def in_format(value: str, form: str, region: str = HOME_REGION) -> str | None:
    """The number as a system that writes it in ``form`` (MSISDN_FORMATS) knows it."""
    e164 = to_e164(value, region)
    if e164 is None or form == "e164":
        return e164
    if form == "digits":
        return e164[1:]
    return str(phonenumbers.parse(e164).national_number)


def national(value: str, region: str = HOME_REGION) -> str | None:
    """The national significant number (``18899407311``), for prefix routing."""
    return in_format(value, "national", region)
