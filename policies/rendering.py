"""Channel renderings of amounts and dates: speech-ready for IVR, short text for SMS.

The profile's `rendering` picks one; `standard` and `full` keep plain figures. Speech output is
what a Chinese text-to-speech engine reads naturally (三百八十九元八角九分), text output is short
enough for an SMS (¥389.89, 11月21日).
"""

from __future__ import annotations

from datetime import date
from decimal import ROUND_HALF_UP, Decimal

DIGITS = "零一二三四五六七八九"
SMALL_UNITS = ("", "十", "百", "千")
LARGE_UNITS = ("", "万", "亿")


def _group(number: int) -> str:
    """0 < number < 10000 in Chinese numerals."""
    text, zero = "", False
    for position in range(3, -1, -1):
        digit = number // 10**position % 10
        if digit == 0:
            zero = bool(text)
            continue
        if zero:
            text += "零"
            zero = False
        text += DIGITS[digit] + SMALL_UNITS[position]
    return text


def chinese_integer(number: int) -> str:
    if number == 0:
        return "零"
    groups: list[int] = []
    parts: list[str] = []
    while number:
        groups.append(number % 10000)
        number //= 10000
    for index in range(len(groups) - 1, -1, -1):
        group = groups[index]
        if group == 0:
            continue
        if parts and group < 1000:
            parts.append("零")
        parts.append(_group(group) + LARGE_UNITS[index % 3] if index < 3 else _group(group))
    text = "".join(parts)
    return text[1:] if text.startswith("一十") else text


def speak_amount(amount: Decimal) -> str:
    cents = int((abs(amount) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    yuan, jiao, fen = cents // 100, cents // 10 % 10, cents % 10
    text = chinese_integer(yuan) + "元" if yuan or not (jiao or fen) else ""
    if jiao:
        text += DIGITS[jiao] + "角"
    if fen:
        text += ("零" if text and not jiao else "") + DIGITS[fen] + "分"
    if not jiao and not fen:
        text += "整"
    return ("负" if amount < 0 else "") + text


def render_amount(amount: Decimal, currency: str, rendering: str) -> str:
    if rendering == "speech":
        return speak_amount(amount) if currency == "CNY" else f"{amount} {currency}"
    symbol = "¥" if currency == "CNY" else f"{currency} "
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{abs(amount).quantize(Decimal('0.01'))}"


def render_date(value: date, rendering: str) -> str:
    if rendering == "speech":
        return f"{chinese_integer(value.month)}月{chinese_integer(value.day)}日"
    if rendering == "text":
        return f"{value.month}月{value.day}日"
    return value.isoformat()
