"""Aurora Loyalty's MemberService (SOAP 1.2, rpc/literal), run as loyalty-north and -south.

zeep consumes the published WSDL unchanged and calls every operation; raw SOAP 1.2 posts check
the faults, the limits and the wire forms a generic SOAP engine must get right.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import zeep
from lxml import etree
from zeep.exceptions import Fault

from simulators.dataset import CustomerBundle
from simulators.loyalty.members import Member, MemberSource, member_of, seeded_entries
from simulators.seed import seed_dataset
from tests.harness import free_ports

TNS = "urn:aurora:loyalty:member:v2"
ENV12 = "http://www.w3.org/2003/05/soap-envelope"
ENV11 = "http://schemas.xmlsoap.org/soap/envelope/"
PATH = "/loyalty/soap/MemberService"
SOAP12 = "application/soap+xml; charset=utf-8"
BINDING = f"{{{TNS}}}MemberServiceSoap12Binding"
HEADERS = {"credentials": {"partnerCode": "SWITCHBOARD"}}
REPO = Path(__file__).resolve().parents[2]


def _source(bundle: CustomerBundle) -> MemberSource:
    c = bundle.customer
    return MemberSource(
        c.index, c.name, c.status, c.cust_level, c.create_date, bundle.subscribers[0].msisdn
    )


def _is_north(member: Member) -> bool:
    return 130 <= int(member.msisdn[3:6]) <= 159


@pytest.fixture(scope="session")
def members(bundles: list[CustomerBundle], dataset_seed: int) -> list[Member]:
    """The members the dataset defines, to check the servers against."""
    return [m for b in bundles if (m := member_of(dataset_seed, _source(b))) is not None]


@pytest.fixture(scope="session")
def north(members: list[Member]) -> list[Member]:
    return [m for m in members if _is_north(m)]


@pytest.fixture(scope="session")
def south(members: list[Member]) -> list[Member]:
    return [m for m in members if not _is_north(m)]


def _service(base: str) -> zeep.proxy.ServiceProxy:
    client = zeep.Client(f"{base}{PATH}?wsdl")
    return client.create_service(BINDING, f"{base}{PATH}")


@pytest.fixture(scope="session")
def lty_north(sims):
    return _service(sims.loyalty_north)


@pytest.fixture(scope="session")
def lty_south(sims):
    return _service(sims.loyalty_south)


def envelope(operation: str, parts: str = "", *, header: str | None = None) -> bytes:
    if header is None:
        header = "<lty:Credentials><partnerCode>SWITCHBOARD</partnerCode></lty:Credentials>"
    return (
        f'<env:Envelope xmlns:env="{ENV12}" xmlns:lty="{TNS}">'
        f"<env:Header>{header}</env:Header>"
        f"<env:Body><lty:{operation}>{parts}</lty:{operation}></env:Body></env:Envelope>"
    ).encode()


def post(http: httpx.Client, base: str, body: bytes, content_type: str = SOAP12) -> httpx.Response:
    return http.post(f"{base}{PATH}", content=body, headers={"Content-Type": content_type})


def fault_of(response: httpx.Response) -> dict[str, str | None]:
    """The parts of a SOAP 1.2 fault answer."""
    root = etree.fromstring(response.content)
    fault = root.find(f"{{{ENV12}}}Body/{{{ENV12}}}Fault")
    assert fault is not None, response.text
    text = fault.find(f"{{{ENV12}}}Reason/{{{ENV12}}}Text")
    detail = fault.find(f"{{{ENV12}}}Detail/{{{TNS}}}LoyaltyFault")
    assert text is not None and detail is not None
    return {
        "value": fault.findtext(f"{{{ENV12}}}Code/{{{ENV12}}}Value"),
        "lang": text.get("{http://www.w3.org/XML/1998/namespace}lang"),
        "reason": text.text,
        "code": detail.findtext(f"{{{TNS}}}code"),
        "category": detail.findtext(f"{{{TNS}}}category"),
        "trace": detail.findtext(f"{{{TNS}}}traceId"),
    }


def assert_fault(response: httpx.Response, status: int, side: str, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/soap+xml")
    fault = fault_of(response)
    assert (fault["value"], fault["code"]) == (f"env:{side}", code)
    assert fault["lang"] == "en" and fault["reason"] and fault["trace"]
    return fault


def msisdn_items(numbers: list[str]) -> str:
    return "<msisdns>" + "".join(f"<msisdn>{n}</msisdn>" for n in numbers) + "</msisdns>"


def _as_dict(member: Member) -> dict:
    return {
        "memberNo": member.member_no,
        "msisdn": member.msisdn,
        "fullName": member.full_name,
        "tier": member.tier,
        "pointsBalance": member.points_balance,
        "pointsExpiring": member.points_expiring,
        "expiryDate": member.expiry_date,
        "enrolledOn": member.enrolled_on,
        "status": member.status,
    }


def _zeep_member(found) -> dict:
    got = zeep.helpers.serialize_object(found, dict)
    got["expiryDate"] = got["expiryDate"].isoformat()
    got["enrolledOn"] = got["enrolledOn"].isoformat()
    return got


def _balance(data_dir: Path, member_no: str) -> int:
    conn = sqlite3.connect(data_dir / "loyalty.db")
    try:
        return conn.execute(
            "SELECT points_balance FROM member WHERE member_no = ?", (member_no,)
        ).fetchone()[0]
    finally:
        conn.close()


def _count(data_dir: Path, sql: str, *params: object) -> int:
    conn = sqlite3.connect(data_dir / "loyalty.db")
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


# The dataset and the WSDL -----------------------------------------------------------------


def test_members_are_about_sixty_percent_keyed_to_the_first_line(
    bundles: list[CustomerBundle], members: list[Member], north, south
) -> None:
    assert 0.5 < len(members) / len(bundles) < 0.7
    by_index = {b.customer.index: b for b in bundles}
    for m in members:
        bundle = by_index[m.index]
        assert m.full_name == bundle.customer.name
        assert m.msisdn == "+86" + bundle.subscribers[0].msisdn
        assert len(m.member_no) == 10 and m.member_no.isdigit()
    assert len({m.member_no for m in members}) == len(members)
    # The dataset's number blocks fall on both sides of the split.
    assert north and south


def test_wsdl_is_soap12_rpc_and_names_the_instance_itself(sims, http: httpx.Client) -> None:
    for base in sims.loyalty():
        wsdl = http.get(f"{base}{PATH}?wsdl")
        assert wsdl.status_code == 200 and b"wsdl:definitions" in wsdl.content
        client = zeep.Client(f"{base}{PATH}?wsdl")
        binding = client.wsdl.bindings[BINDING]
        assert type(binding).__name__ == "Soap12Binding"
        assert set(binding._operations) == {
            "getMembersByMsisdn",
            "getMembers",
            "getPointsHistory",
            "redeemPoints",
            "ping",
        }
        assert all(op.style == "rpc" for op in binding._operations.values())
        port = client.wsdl.services["MemberService"].ports["MemberServiceSoap12Port"]
        assert port.binding_options["address"] == f"{base}{PATH}"
    assert http.get(f"{sims.loyalty_north}{PATH}").status_code == 404


# zeep calls every operation -----------------------------------------------------------------


def test_zeep_ping(lty_north, lty_south) -> None:
    assert lty_north.ping(_soapheaders=HEADERS) == "OK"
    assert lty_south.ping(_soapheaders=HEADERS) == "OK"


def test_zeep_get_members_by_msisdn_in_three_forms(lty_north, north: list[Member]) -> None:
    a, b, c = north[:3]
    asked = [a.msisdn, b.msisdn[1:], c.msisdn[3:], "+8613400000000", a.msisdn[3:]]
    found = lty_north.getMembersByMsisdn(msisdns={"msisdn": asked}, _soapheaders=HEADERS)
    # In the order asked, each once, unknown numbers left out, MSISDNs always E.164.
    assert [_zeep_member(m) for m in found] == [_as_dict(a), _as_dict(b), _as_dict(c)]


def test_zeep_get_members_keeps_leading_zeros(lty_north, north: list[Member]) -> None:
    zeros = sorted(north, key=lambda m: m.member_no)[:2]
    assert zeros[0].member_no.startswith("00")
    found = lty_north.getMembers(
        memberNos={"memberNo": [m.member_no for m in zeros] + ["0000000000"]},
        _soapheaders=HEADERS,
    )
    assert [m.memberNo for m in found] == [m.member_no for m in zeros]
    assert all(isinstance(m.memberNo, str) and len(m.memberNo) == 10 for m in found)


def test_raw_answer_is_rpc_literal_with_the_zeros(sims, http, north: list[Member]) -> None:
    member = min(north, key=lambda m: m.member_no)
    response = post(
        http,
        sims.loyalty_north,
        envelope("getMembers", f"<memberNos><memberNo>{member.member_no}</memberNo></memberNos>"),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/soap+xml")
    body = etree.fromstring(response.content).find(f"{{{ENV12}}}Body")
    (wrapper,) = list(body)
    assert wrapper.tag == f"{{{TNS}}}getMembersResponse"
    (part,) = list(wrapper)
    assert part.tag == "members"  # unqualified, as rpc/literal parts are
    (node,) = list(part)
    assert node.tag == "member" and all(etree.QName(c).namespace is None for c in node)
    assert node.findtext("memberNo") == member.member_no
    assert node.findtext("msisdn") == member.msisdn


def test_zeep_points_history_pages_newest_first(
    lty_north, north: list[Member], dataset_seed: int
) -> None:
    member = max(north, key=lambda m: len(seeded_entries(dataset_seed, m)))
    expected = seeded_entries(dataset_seed, member)
    pages = []
    offset = 0
    while True:
        page = lty_north.getPointsHistory(
            memberNo=member.member_no, offset=offset, limit=4, _soapheaders=HEADERS
        )
        assert page.total == len(expected)
        if page.entries is None or not page.entries.entry:
            break
        pages.extend(page.entries.entry)
        offset += 4
    assert [e.entryId for e in pages] == [e.entry_id for e in expected]
    assert [e.points for e in pages] == [e.points for e in expected]
    stamps = [e.postedAt for e in pages]
    assert stamps == sorted(stamps, reverse=True)
    assert all(s.utcoffset().total_seconds() == 8 * 3600 for s in stamps)
    # The seeded postings add up to the stored balance.
    assert sum(e.points for e in expected) == member.points_balance


def test_zeep_redeem_points_is_idempotent(
    lty_north, sims, north: list[Member], dataset_seed: int
) -> None:
    member = next(m for m in north[10:] if m.status == "ACTIVE" and m.points_balance >= 300)
    before = _balance(sims.data_dir, member.member_no)
    entries_before = lty_north.getPointsHistory(
        memberNo=member.member_no, offset=0, limit=1, _soapheaders=HEADERS
    ).total
    request = {
        "memberNo": member.member_no,
        "points": 120,
        "rewardCode": "VCH-10",
        "requestId": f"req-{uuid.uuid4()}",
    }
    first = lty_north.redeemPoints(**request, _soapheaders=HEADERS)
    again = lty_north.redeemPoints(**request, _soapheaders=HEADERS)
    assert first.resultCode == "0" and first.redemptionId
    assert (again.resultCode, again.redemptionId, again.pointsBalance) == (
        "0",
        first.redemptionId,
        before - 120,
    )
    assert _balance(sims.data_dir, member.member_no) == before - 120
    count = _count(
        sims.data_dir, "SELECT count(*) FROM points_entry WHERE member_no = ?", member.member_no
    )
    assert count == 1
    history = lty_north.getPointsHistory(
        memberNo=member.member_no, offset=0, limit=2, _soapheaders=HEADERS
    )
    assert history.total == entries_before + 1
    newest = history.entries.entry[0]
    assert newest.points == -120 and "VCH-10" in newest.reason
    assert newest.postedAt.utcoffset().total_seconds() == 8 * 3600

    # The same requestId for another redemption is refused, and changes nothing.
    other = lty_north.redeemPoints(**{**request, "points": 121}, _soapheaders=HEADERS)
    assert other.resultCode == "LTY-409" and other.redemptionId is None
    assert _balance(sims.data_dir, member.member_no) == before - 120
    found = lty_north.getMembers(memberNos={"memberNo": [member.member_no]}, _soapheaders=HEADERS)
    assert found[0].pointsBalance == before - 120


def test_redeem_business_results_are_body_codes_over_200(
    sims, http, north: list[Member], members: list[Member]
) -> None:
    member = next(m for m in north[20:] if m.status == "ACTIVE")
    before = _balance(sims.data_dir, member.member_no)

    def redeem(member_no: str, points: int, base: str = sims.loyalty_north) -> etree._Element:
        parts = (
            f"<memberNo>{member_no}</memberNo><points>{points}</points>"
            f"<rewardCode>PHONE-1</rewardCode><requestId>{uuid.uuid4()}</requestId>"
        )
        response = post(http, base, envelope("redeemPoints", parts))
        assert response.status_code == 200, response.text
        return etree.fromstring(response.content).find(
            f"{{{ENV12}}}Body/{{{TNS}}}redeemPointsResponse"
        )

    short = redeem(member.member_no, before + 1)
    assert short.findtext("resultCode") == "LTY-422"
    assert short.findtext("pointsBalance") == str(before)
    assert short.find("redemptionId") is None
    assert redeem("0000000000", 1).findtext("resultCode") == "LTY-404"
    frozen = next(m for m in members if m.status == "FROZEN")
    base = sims.loyalty_north if _is_north(frozen) else sims.loyalty_south
    assert redeem(frozen.member_no, 1, base).findtext("resultCode") == "LTY-423"
    assert _balance(sims.data_dir, member.member_no) == before
    assert _balance(sims.data_dir, frozen.member_no) == frozen.points_balance


# The two instances ------------------------------------------------------------------------


def test_each_instance_answers_its_own_range_only(
    lty_north, lty_south, sims, http, north: list[Member], south: list[Member]
) -> None:
    n, s = north[0], south[0]
    both = {"msisdn": [n.msisdn, s.msisdn]}
    by_msisdn = {
        "north": lty_north.getMembersByMsisdn(msisdns=both, _soapheaders=HEADERS),
        "south": lty_south.getMembersByMsisdn(msisdns=both, _soapheaders=HEADERS),
    }
    assert [m.memberNo for m in by_msisdn["north"]] == [n.member_no]
    assert [m.memberNo for m in by_msisdn["south"]] == [s.member_no]
    numbers = {"memberNo": [n.member_no, s.member_no]}
    by_number = lty_south.getMembers(memberNos=numbers, _soapheaders=HEADERS)
    assert [m.memberNo for m in by_number] == [s.member_no]
    with pytest.raises(Fault) as caught:
        lty_south.getPointsHistory(memberNo=n.member_no, offset=0, limit=5, _soapheaders=HEADERS)
    assert caught.value.code == "env:Receiver"
    assert caught.value.detail.findtext(f"{{{TNS}}}LoyaltyFault/{{{TNS}}}code") == "LTY-404"
    refused = lty_south.redeemPoints(
        memberNo=n.member_no,
        points=1,
        rewardCode="X",
        requestId=str(uuid.uuid4()),
        _soapheaders=HEADERS,
    )
    assert refused.resultCode == "LTY-404"
    assert _balance(sims.data_dir, n.member_no) == n.points_balance
    # Every member is answered by exactly one instance.
    mixed = north[:40] + south[:40]
    asked = envelope("getMembersByMsisdn", msisdn_items([m.msisdn for m in mixed]))
    for base, mine in ((sims.loyalty_north, north), (sims.loyalty_south, south)):
        response = post(http, base, asked)
        got = [e.text for e in etree.fromstring(response.content).iter("memberNo")]
        assert got == [m.member_no for m in mixed if m in mine]


def test_instances_have_their_own_stats_and_control(control, http, lty_north) -> None:
    for base in control.loyalty():
        http.post(f"{base}/_sim/reset").raise_for_status()
    lty_north.ping(_soapheaders=HEADERS)
    lty_north.ping(_soapheaders=HEADERS)
    post(http, control.loyalty_north, envelope("ping", header=""))  # refused, still counted
    assert http.get(f"{control.loyalty_north}/_sim/stats").json() == {
        "calls": {"ping": 3},
        "total": 3,
    }
    assert http.get(f"{control.loyalty_south}/_sim/stats").json()["total"] == 0

    http.post(f"{control.loyalty_south}/_sim/control", json={"down": True}).raise_for_status()
    down = post(http, control.loyalty_south, envelope("ping"))
    assert down.status_code == 503 and down.content == b""
    assert lty_north.ping(_soapheaders=HEADERS) == "OK"
    assert http.get(f"{control.loyalty_south}/_sim/health").json() == {"status": "ok"}

    http.post(f"{control.loyalty_north}/_sim/control", json={"failure_rate": 1.0})
    with pytest.raises(Fault) as caught:
        lty_north.ping(_soapheaders=HEADERS)
    assert caught.value.code == "env:Receiver"
    assert caught.value.detail.findtext(f"{{{TNS}}}LoyaltyFault/{{{TNS}}}code") == "LTY-500"

    http.post(
        f"{control.loyalty_north}/_sim/control", json={"failure_rate": 0, "bad_response": True}
    )
    garbled = post(http, control.loyalty_north, envelope("ping"))
    assert garbled.status_code == 200
    with pytest.raises(etree.XMLSyntaxError):
        etree.fromstring(garbled.content)

    http.post(
        f"{control.loyalty_north}/_sim/control",
        json={"bad_response": False, "latency_ms": [150, 160]},
    )
    started = time.monotonic()
    assert lty_north.ping(_soapheaders=HEADERS) == "OK"
    assert time.monotonic() - started >= 0.15


# Faults and limits over raw SOAP ----------------------------------------------------------


def test_soap11_and_text_xml_are_version_faults(sims, http) -> None:
    soap11 = (
        f'<soapenv:Envelope xmlns:soapenv="{ENV11}" xmlns:lty="{TNS}"><soapenv:Body>'
        "<lty:ping/></soapenv:Body></soapenv:Envelope>"
    ).encode()
    cases = [
        (soap11, "text/xml; charset=utf-8"),
        (soap11, SOAP12),
        (envelope("ping"), "text/xml; charset=utf-8"),
        (envelope("ping"), "application/json"),
    ]
    for body, content_type in cases:
        response = post(http, sims.loyalty_north, body, content_type)
        fault = assert_fault(response, 400, "Sender", "LTY-VERSION")
        assert fault["category"] == "VALIDATION"


def test_missing_or_empty_credentials_are_auth_faults(sims, http) -> None:
    for header in (
        "",
        "<lty:Credentials/>",
        "<lty:Credentials><partnerCode> </partnerCode></lty:Credentials>",
    ):
        response = post(http, sims.loyalty_north, envelope("ping", header=header))
        fault = assert_fault(response, 400, "Sender", "LTY-AUTH")
        assert fault["category"] == "SECURITY"
    no_header = (
        f'<env:Envelope xmlns:env="{ENV12}" xmlns:lty="{TNS}"><env:Body><lty:ping/></env:Body>'
        "</env:Envelope>"
    ).encode()
    assert_fault(post(http, sims.loyalty_north, no_header), 400, "Sender", "LTY-AUTH")


def test_malformed_xml_and_dtds_are_xml_faults_quickly(sims, http) -> None:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol%s;" % (n - 1 if n > 1 else "")) * 10}">' for n in range(1, 10)
    )
    laughs = (
        f'<?xml version="1.0"?><!DOCTYPE lolz [{entities}]>'
        f'<env:Envelope xmlns:env="{ENV12}" xmlns:lty="{TNS}"><env:Body>'
        "<lty:ping>&lol9;</lty:ping></env:Body></env:Envelope>"
    ).encode()
    xxe = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        f'<env:Envelope xmlns:env="{ENV12}" xmlns:lty="{TNS}"><env:Body>'
        "<lty:ping>&xxe;</lty:ping></env:Body></env:Envelope>"
    ).encode()
    not_envelope = b"<a/>"
    two_ops = envelope("ping").replace(b"<lty:ping></lty:ping>", b"<lty:ping/><lty:ping/>")
    for body in (b"<env:Envelope", b"hello", laughs, xxe, not_envelope, two_ops):
        started = time.monotonic()
        response = post(http, sims.loyalty_north, body)
        assert time.monotonic() - started < 2
        assert_fault(response, 400, "Sender", "LTY-XML")
        assert b"lollollol" not in response.content and b"root:" not in response.content


def test_unknown_member_history_is_a_receiver_business_fault(sims, http) -> None:
    parts = "<memberNo>0000000001</memberNo><offset>0</offset><limit>10</limit>"
    response = post(http, sims.loyalty_north, envelope("getPointsHistory", parts))
    fault = assert_fault(response, 500, "Receiver", "LTY-404")
    assert fault["category"] == "BUSINESS"


def test_the_hundred_limits(sims, http, north: list[Member]) -> None:
    numbers = [f"1380000{n:04d}" for n in range(100)]
    ok = post(http, sims.loyalty_north, envelope("getMembersByMsisdn", msisdn_items(numbers)))
    assert ok.status_code == 200
    over = post(
        http,
        sims.loyalty_north,
        envelope("getMembersByMsisdn", msisdn_items([*numbers, north[0].msisdn])),
    )
    assert_fault(over, 400, "Sender", "LTY-413")
    items = "".join(f"<memberNo>{n:010d}</memberNo>" for n in range(101))
    assert_fault(
        post(http, sims.loyalty_north, envelope("getMembers", f"<memberNos>{items}</memberNos>")),
        400,
        "Sender",
        "LTY-413",
    )
    member = north[0].member_no
    for limit, status in ((100, 200), (0, 400), (101, 400)):
        parts = f"<memberNo>{member}</memberNo><offset>0</offset><limit>{limit}</limit>"
        response = post(http, sims.loyalty_north, envelope("getPointsHistory", parts))
        assert response.status_code == status
        if status == 400:
            assert fault_of(response)["code"] == "LTY-413"


def test_invalid_parts_are_sender_faults(sims, http, north: list[Member]) -> None:
    member = north[0].member_no
    zeros = min(m.member_no for m in north)
    assert zeros.startswith("0")
    history = "getPointsHistory"
    cases = [
        # Parts qualified in the target namespace: rpc/literal parts are unqualified.
        (history, f"<lty:memberNo>{member}</lty:memberNo><offset>0</offset><limit>5</limit>"),
        (history, f"<memberNo>{member}</memberNo><offset>0</offset>"),
        # A member number that went through an integer: its leading zeros are lost.
        (history, f"<memberNo>{int(zeros)}</memberNo><offset>0</offset><limit>5</limit>"),
        (history, f"<memberNo>{member}</memberNo><offset>-1</offset><limit>5</limit>"),
        (history, f"<memberNo>{member}</memberNo><offset>x</offset><limit>5</limit>"),
        ("getMembersByMsisdn", msisdn_items(["12345"])),
        ("getMembers", "<memberNos><msisdn>13800000000</msisdn></memberNos>"),
        ("nosuchOperation", ""),
        (
            "redeemPoints",
            f"<memberNo>{member}</memberNo><points>0</points><rewardCode>A</rewardCode>"
            "<requestId>r-1</requestId>",
        ),
    ]
    for operation, parts in cases:
        response = post(http, sims.loyalty_north, envelope(operation, parts))
        assert_fault(response, 400, "Sender", "LTY-400")
        assert "12345" not in (fault_of(response)["reason"] or "")
    wrong_action = f'{SOAP12}; action="{TNS}#getMembers"'
    response = post(http, sims.loyalty_north, envelope("ping"), wrong_action)
    assert_fault(response, 400, "Sender", "LTY-400")
    right_action = f'{SOAP12}; action="{TNS}#ping"'
    assert post(http, sims.loyalty_north, envelope("ping"), right_action).status_code == 200


# Stores: built for old data dirs, and surviving a restart -----------------------------------


@contextmanager
def _serving(data_dir: Path) -> Iterator[tuple[str, str]]:
    ports = free_ports(5)
    flags = ["--boss-port", "--billing-port", "--care-port"]
    flags += ["--loyalty-north-port", "--loyalty-south-port"]
    argv = [sys.executable, "-m", "simulators", "serve", "--data-dir", str(data_dir)]
    for flag, port in zip(flags, ports, strict=True):
        argv += [flag, str(port)]
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("simulators ready: boss="), line
        urls = dict(part.split("=", 1) for part in line.split(":", 1)[1].split())
        yield urls["loyalty-north"], urls["loyalty-south"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_an_old_data_dir_gets_loyalty_db_on_serve_and_redemptions_survive_restart(
    tmp_path: Path, dataset_seed: int
) -> None:
    reference, old = tmp_path / "reference", tmp_path / "old"
    seed_dataset(reference, 80, dataset_seed)
    shutil.copytree(reference, old)
    (old / "loyalty.db").unlink()  # as seeded before the loyalty system existed

    with _serving(old) as (north_url, _):
        service = _service(north_url)
        assert service.ping(_soapheaders=HEADERS) == "OK"
    # The same members as the seeder writes.
    query = "SELECT * FROM member ORDER BY member_no"
    rows = []
    for path in (reference, old):
        conn = sqlite3.connect(path / "loyalty.db")
        rows.append(conn.execute(query).fetchall())
        conn.close()
    assert rows[0] == rows[1] and rows[0]

    seeded = [Member(*row) for row in rows[0]]
    member = next(
        m for m in seeded if _is_north(m) and m.status == "ACTIVE" and m.points_balance >= 50
    )
    request = {
        "memberNo": member.member_no,
        "points": 50,
        "rewardCode": "R",
        "requestId": "restart-1",
    }
    with _serving(old) as (north_url, _):
        first = _service(north_url).redeemPoints(**request, _soapheaders=HEADERS)
    with _serving(old) as (north_url, _):
        service = _service(north_url)
        again = service.redeemPoints(**request, _soapheaders=HEADERS)
        total = service.getPointsHistory(
            memberNo=member.member_no, offset=0, limit=1, _soapheaders=HEADERS
        ).total
    assert first.resultCode == again.resultCode == "0"
    assert again.redemptionId == first.redemptionId
    assert _balance(old, member.member_no) == member.points_balance - 50
    assert total == len(seeded_entries(dataset_seed, member)) + 1


def test_seed_without_force_builds_only_the_missing_loyalty_db(tmp_path: Path) -> None:
    seed_dataset(tmp_path, 60, 9)
    original = (tmp_path / "loyalty.db").read_bytes()
    boss = (tmp_path / "boss.db").stat().st_mtime_ns
    (tmp_path / "loyalty.db").unlink()
    result = seed_dataset(tmp_path, 60, 9)
    assert result.skipped and result.loyalty_built
    assert (tmp_path / "boss.db").stat().st_mtime_ns == boss
    assert (tmp_path / "loyalty.db").read_bytes() == original
    again = seed_dataset(tmp_path, 60, 9)
    assert again.skipped and not again.loyalty_built
