"""Records inside records (``record:`` on a field): a ticket's notes, a line's usage.

Read from JSON and XML answers, kept through the cache codec, built into the canonical
dataclasses for a role, shown as their own graph types, and every mistake refused with
file:line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import strawberry
from lxml import etree

from adapters.declared.canonical import to_canonical
from adapters.declared.registry import load_registry
from adapters.declared.values import decode, encode, from_json, from_xml
from adapters.errors import BadResponse
from adapters.records import Subscription, Ticket, TicketNote, Usage
from schema.system_fields import _instance, record_type
from tests.test_systems_units import copy_loyalty, line_of, problems_of

NESTED = """
  Visit:
    fields:
      at: {path: at, type: datetime, required: true}
      store: {path: store, class: free_text}
      receipt: {path: receipt, record: Receipt}
  Receipt:
    fields:
      total: {path: total, type: decimal}
"""


def _with_visits(tmp_path, extra: str = NESTED, field: str = "visits"):
    folder = copy_loyalty(tmp_path)
    mapping = folder / "loyalty" / "mapping.yaml"
    text = mapping.read_text()
    text = text.replace(
        "      status: {path: status}\n",
        f"      status: {{path: status}}\n      {field}: {{path: visits/visit, many: true, "
        "record: Visit}\n",
        1,
    )
    text = text.replace("  Redemption:\n", extra.lstrip("\n") + "  Redemption:\n", 1)
    mapping.write_text(text)
    return folder, mapping


def test_nested_records_are_read_from_xml_and_json_and_survive_the_cache_codec(tmp_path):
    folder, _ = _with_visits(tmp_path)
    member = load_registry(folder).systems["loyalty"].records["Member"]
    visits = member.field("visits")
    assert visits is not None and visits.nested is not None and visits.type == "record"
    assert visits.nested.field("receipt").nested.name == "Receipt"

    xml = etree.fromstring(
        "<member><memberNo>0042</memberNo><visits>"
        "<visit><at>2026-11-30T10:00:00Z</at><store>Nanjing Rd</store>"
        "<receipt><total>12.50</total></receipt></visit>"
        "<visit><at>2026-12-01T09:00:00Z</at></visit>"
        "</visits></member>"
    )
    read = from_xml(xml, member, "loyalty-north")
    first, second = read["visits"]
    assert first["store"] == "Nanjing Rd" and first["receipt"] == {"total": Decimal("12.50")}
    assert second["receipt"] is None and second["at"] == datetime(2026, 12, 1, 9, tzinfo=UTC)

    as_json = from_json(
        {"memberNo": "0042", "visits": {"visit": [{"at": "2026-11-30T10:00:00Z"}]}},
        member,
        "loyalty-north",
    )
    assert as_json["visits"][0]["at"] == datetime(2026, 11, 30, 10, tzinfo=UTC)
    assert decode(encode(read, member), member) == read

    # A nested record that breaks its own rules fails the answer, like any field would.
    with pytest.raises(BadResponse):
        from_json({"memberNo": "1", "visits": {"visit": [{"store": "x"}]}}, member, "x")
    with pytest.raises(BadResponse):
        from_json({"memberNo": "1", "visits": {"visit": {"at": "x"}}}, member, "x")


def test_nested_record_mistakes_are_refused_at_their_line(tmp_path):
    broken = NESTED.replace("record: Receipt}", "record: Reciept}").replace(
        "total: {path: total, type: decimal}",
        "total: {path: total, type: decimal}\n      back: {path: back, record: Visit}",
    )
    folder, mapping = _with_visits(tmp_path, broken)
    joined = "\n".join(problems_of(folder))
    assert f"{mapping}:{line_of(mapping, 'record: Reciept')}:" in joined
    assert "unknown record 'Reciept'" in joined

    folder, mapping = _with_visits(
        tmp_path / "2",
        NESTED.replace("receipt: {path: receipt, record: Receipt}", "back: {record: Member}"),
    )
    assert "record 'Member' would contain itself" in "\n".join(problems_of(folder))

    folder, mapping = _with_visits(
        tmp_path / "3", NESTED.replace("record: Receipt}", "record: Receipt, type: int}")
    )
    assert "a nested record takes no type" in "\n".join(problems_of(folder))


def test_a_role_builds_nested_canonical_records_and_fills_what_is_left_out():
    ticket = to_canonical(
        "Ticket",
        {
            "id": "TT1",
            "notes": (
                {"date": datetime(2026, 12, 1, tzinfo=UTC), "author": "agent1", "text": "called"},
                {"author": "agent2"},
            ),
        },
    )
    assert isinstance(ticket, Ticket)
    assert ticket.notes == (
        TicketNote(datetime(2026, 12, 1, tzinfo=UTC), "agent1", "called"),
        TicketNote(None, "agent2", ""),
    )
    line = to_canonical("Subscription", {"subscriberNo": "S1"})
    assert isinstance(line, Subscription)
    assert line.usage == Usage(0, 0, 0, 0, 0, 0)  # left out: the record of empty values


def test_the_graph_gets_a_type_per_nested_record(tmp_path):
    folder, _ = _with_visits(tmp_path)
    member = load_registry(folder).systems["loyalty"].records["Member"]
    member_type = record_type("NestedMember", member, None)

    def member_of(self) -> object:
        answer = {
            "memberNo": "0042",
            "visits": {"visit": [{"at": "2026-12-01T09:00:00Z", "receipt": {"total": "3"}}]},
        }
        return _instance(member_type, from_json(answer, member, "loyalty-north"), None)

    # The type is known only at run time (as in schema/system_fields.py).
    member_of.__annotations__["return"] = member_type
    Query = strawberry.type(
        type("Query", (), {"member": strawberry.field(resolver=member_of)}), name="Query"
    )

    sdl = str(strawberry.Schema(query=Query))
    assert "type NestedMemberVisits" in sdl and "type NestedMemberVisitsReceipt" in sdl
    result = strawberry.Schema(query=Query).execute_sync(
        # Unclassified fields only: classified ones need the hub's policy in the context.
        "{ member { visits { at receipt { total } } } }"
    )
    assert result.errors is None
    assert result.data == {
        "member": {"visits": [{"at": "2026-12-01T09:00:00+00:00", "receipt": {"total": "3"}}]}
    }
