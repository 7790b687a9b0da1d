"""The five MemberService operations: the parts of an rpc/literal request in, result parts out.

A handler reads the unqualified parts of the ``lty:<operation>`` element, and appends the result
parts to the ``lty:<operation>Response`` element it is given. Invalid parts are Sender faults;
an unknown member's history is the one Receiver ("business") fault; redeemPoints reports its
outcome as a resultCode in the body, the way this vendor does for its one write.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

from simulators.loyalty.instances import Instance
from simulators.loyalty.members import Entry, Member, e164, seeded_entries
from simulators.loyalty.soap12 import (
    TOO_MANY,
    add_parts,
    invalid,
    sender_fault,
    unknown_member_fault,
)
from simulators.loyalty.store import LoyaltyStore

MAX_ITEMS = 100  # msisdn / memberNo items per lookup, and entries per history page
INT_MAX = 2**31 - 1

OK = "0"
UNKNOWN_MEMBER = "LTY-404"
DUPLICATE_REQUEST = "LTY-409"
INSUFFICIENT_POINTS = "LTY-422"
MEMBER_FROZEN = "LTY-423"

_MSISDN = re.compile(r"(?:\+86|86)?(1[3-9][0-9]{9})")
_MEMBER_NO = re.compile(r"[0-9]{10}")
_INT = re.compile(r"[+-]?[0-9]{1,10}")
_REWARD_CODE = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class Scope:
    """What a handler works with: the store, the instance answering, the dataset seed."""

    store: LoyaltyStore
    instance: Instance
    seed: int

    def owned(self, member: Member | None) -> Member | None:
        """The member if this instance owns their number: the others are unknown here."""
        return member if member is not None and self.instance.owns(member.msisdn) else None


Handler = Callable[[Scope, etree._Element, etree._Element], None]


def _parts(request: etree._Element, names: tuple[str, ...]) -> dict[str, etree._Element]:
    """The named parts of a request, each exactly once and unqualified (rpc/literal)."""
    found: dict[str, etree._Element] = {}
    for child in request:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        if qname.namespace is not None:
            raise invalid(f"part {qname.localname} must be unqualified (rpc/literal: no namespace)")
        if qname.localname not in names:
            raise invalid(f"{etree.QName(request).localname} has no part {qname.localname}")
        if qname.localname in found:
            raise invalid(f"part {qname.localname} is given twice")
        found[qname.localname] = child
    for name in names:
        if name not in found:
            raise invalid(f"part {name} is missing")
    return found


def _text(element: etree._Element, name: str) -> str:
    if any(isinstance(child.tag, str) for child in element):
        raise invalid(f"{name} must be a simple value")
    return (element.text or "").strip()


def _int(element: etree._Element, name: str) -> int:
    text = _text(element, name)
    if not _INT.fullmatch(text) or not -(2**31) <= int(text) <= INT_MAX:
        raise invalid(f"{name} must be an xs:int")
    return int(text)


def _member_no(element: etree._Element, name: str = "memberNo") -> str:
    text = _text(element, name)
    if not _MEMBER_NO.fullmatch(text):
        raise invalid(f"{name} must be ten digits, leading zeros included")
    return text


def _items(part: etree._Element, item: str) -> list[etree._Element]:
    """The ``item`` children of a list part: at most MAX_ITEMS, nothing else."""
    children = [child for child in part if isinstance(child.tag, str)]
    if len(children) > MAX_ITEMS:
        raise sender_fault(TOO_MANY, f"at most {MAX_ITEMS} {item} items per call")
    for child in children:
        if child.tag != item:
            raise invalid(f"{etree.QName(part).localname} holds only unqualified {item} items")
    return children


def normalise_msisdn(text: str) -> str | None:
    """The E.164 form of ``+8618899407311``, ``8618899407311`` or ``18899407311``."""
    match = _MSISDN.fullmatch(text)
    return e164(match.group(1)) if match else None


def _member(parent: etree._Element, m: Member) -> None:
    add_parts(
        etree.SubElement(parent, "member"),
        (
            ("memberNo", m.member_no),
            ("msisdn", m.msisdn),
            ("fullName", m.full_name),
            ("tier", m.tier),
            ("pointsBalance", str(m.points_balance)),
            ("pointsExpiring", str(m.points_expiring)),
            ("expiryDate", m.expiry_date),
            ("enrolledOn", m.enrolled_on),
            ("status", m.status),
        ),
    )


def get_members_by_msisdn(scope: Scope, request: etree._Element, answer: etree._Element) -> None:
    part = _parts(request, ("msisdns",))["msisdns"]
    wanted: list[str] = []
    for position, item in enumerate(_items(part, "msisdn"), start=1):
        number = normalise_msisdn(_text(item, "msisdn"))
        if number is None:
            raise invalid(f"msisdn item {position} is not a mobile number")
        wanted.append(number)
    # In the order asked, each member once; numbers of the other instance are unknown here.
    owned = [n for n in dict.fromkeys(wanted) if scope.instance.owns(n)]
    found = scope.store.members_by_msisdn(owned) if owned else {}
    members = etree.SubElement(answer, "members")
    for number in owned:
        if number in found:
            _member(members, found[number])


def get_members(scope: Scope, request: etree._Element, answer: etree._Element) -> None:
    part = _parts(request, ("memberNos",))["memberNos"]
    wanted = [_member_no(item) for item in _items(part, "memberNo")]
    unique = list(dict.fromkeys(wanted))
    found = scope.store.members_by_no(unique) if unique else {}
    members = etree.SubElement(answer, "members")
    for number in unique:
        member = scope.owned(found.get(number))
        if member is not None:
            _member(members, member)


def _entry(parent: etree._Element, e: Entry) -> None:
    add_parts(
        etree.SubElement(parent, "entry"),
        (
            ("entryId", e.entry_id),
            ("postedAt", e.posted_at),
            ("points", str(e.points)),
            ("reason", e.reason),
        ),
    )


def get_points_history(scope: Scope, request: etree._Element, answer: etree._Element) -> None:
    parts = _parts(request, ("memberNo", "offset", "limit"))
    member_no = _member_no(parts["memberNo"])
    offset = _int(parts["offset"], "offset")
    limit = _int(parts["limit"], "limit")
    if not 1 <= limit <= MAX_ITEMS:
        raise sender_fault(TOO_MANY, f"limit must be between 1 and {MAX_ITEMS}")
    if offset < 0:
        raise invalid("offset must be 0 or more")
    member = scope.owned(scope.store.member(member_no))
    if member is None:
        raise unknown_member_fault()
    # Postings made through the service are newer than every seeded one: they come first.
    posted = scope.store.posted_count(member_no)
    seeded = seeded_entries(scope.seed, member)
    page = scope.store.posted_entries(member_no, offset, limit) if offset < posted else []
    start = max(0, offset - posted)
    page += seeded[start : start + limit - len(page)]
    add_parts(answer, (("total", str(posted + len(seeded))),))
    entries = etree.SubElement(answer, "entries")
    for entry in page:
        _entry(entries, entry)


def _result(
    answer: etree._Element,
    code: str,
    message: str,
    redemption_id: str | None = None,
    balance: int | None = None,
) -> None:
    add_parts(
        answer,
        (
            ("resultCode", code),
            ("resultMessage", message),
            ("redemptionId", redemption_id),
            ("pointsBalance", None if balance is None else str(balance)),
        ),
    )


def redeem_points(scope: Scope, request: etree._Element, answer: etree._Element) -> None:
    parts = _parts(request, ("memberNo", "points", "rewardCode", "requestId"))
    member_no = _member_no(parts["memberNo"])
    points = _int(parts["points"], "points")
    if points < 1:
        raise invalid("points must be 1 or more")
    reward_code = _text(parts["rewardCode"], "rewardCode")
    if not _REWARD_CODE.fullmatch(reward_code):
        raise invalid("rewardCode must be 1-40 letters, digits, '_', '.' or '-'")
    request_id = _text(parts["requestId"], "requestId")
    if not _REQUEST_ID.fullmatch(request_id):
        raise invalid("requestId must be 1-64 letters, digits, '_', '.', ':' or '-'")

    instance = scope.instance.name
    first = scope.store.remembered(instance, request_id)
    if first is not None:
        if (first.member_no, first.points, first.reward_code) != (member_no, points, reward_code):
            _result(answer, DUPLICATE_REQUEST, "The requestId was used for another redemption.")
            return
        _result(answer, OK, "Points redeemed.", first.redemption_id, first.points_balance)
        return
    member = scope.owned(scope.store.member(member_no))
    if member is None:
        _result(answer, UNKNOWN_MEMBER, "No member has this number.")
        return
    if member.status == "FROZEN":
        _result(answer, MEMBER_FROZEN, "The member account is frozen.", None, member.points_balance)
        return
    done = None
    if member.points_balance >= points:
        done = scope.store.redeem(instance, request_id, member, points, reward_code)
    if done is None:
        current = scope.store.member(member_no)
        balance = current.points_balance if current is not None else member.points_balance
        _result(answer, INSUFFICIENT_POINTS, "Not enough points.", None, balance)
        return
    _result(answer, OK, "Points redeemed.", done.redemption_id, done.points_balance)


def ping(scope: Scope, request: etree._Element, answer: etree._Element) -> None:
    _parts(request, ())
    add_parts(answer, (("status", "OK"),))


HANDLERS: dict[str, Handler] = {
    "getMembersByMsisdn": get_members_by_msisdn,
    "getMembers": get_members,
    "getPointsHistory": get_points_history,
    "redeemPoints": redeem_points,
    "ping": ping,
}
