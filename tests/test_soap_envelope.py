"""The declared SOAP engine's prepared envelopes against zeep's (adapters/declared/soap_envelope).

For every operation of every bundled SOAP system's WSDL, and of a test WSDL that uses what the
prepared path leaves to zeep, the envelope prepared once per operation and filled per call is
the one zeep's ``binding._create`` builds (canonical XML and the serialised bytes), with the same
HTTP headers; what zeep refuses is refused, before anything is sent.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
from lxml import etree

from adapters.declared import soap
from adapters.declared.registry import load_registry
from adapters.declared.soap import SoapEngine, binding_of, load_client
from adapters.declared.soap_envelope import Node, PreparedOperation, Refused, prepare
from adapters.declared.spec import SystemSpec
from adapters.declared.values import fill_template
from adapters.errors import BusinessRejected, Unavailable
from adapters.resilience import Endpoint

REPO = Path(__file__).resolve().parents[1]
REGISTRY = load_registry(REPO / "systems")
#: The bundled SOAP systems and where their WSDL is on disk (loyalty's is served by the
#: instance; the simulator serves this file).
WSDLS = {
    "boss": REPO / "systems" / "boss" / "BossService.wsdl",
    "loyalty": REPO / "simulators" / "loyalty" / "MemberService.wsdl",
}
TEST_WSDL = Path(__file__).parent / "wsdl" / "Shapes.wsdl"
#: Text that needs escaping, non-ASCII, both quotes, a tab and a newline.
AWKWARD = ["<a&b>", "Zoë 李 ü", "\"q\" 'a' ]]>", "tab\there\nnewline", "", " x "]
FAILS = (Refused, zeep.exceptions.Error, TypeError, ValueError)


def _binding(path: Path, wanted: str | None = None) -> tuple[Any, Any]:
    client = load_client(str(path), httpx.AsyncClient(), 2.0)
    return client, binding_of(client, wanted)


def _zeep(client: Any, binding: Any, operation: str, kwargs: dict, headers: list) -> Any:
    return binding._create(
        operation,
        (),
        {**kwargs, "_soapheaders": headers or None},
        client=client,
        options={"address": "http://127.0.0.1:9/x"},
    )


def _headers(spec: SystemSpec | None) -> list[etree._Element]:
    if spec is None or not spec.soap_headers:
        return []
    return [soap._header_element(q, values) for q, values in spec.soap_headers]


def _leaf_value(node: Node, rng: random.Random) -> Any:
    kinds = {k.__name__ for k in type(getattr(node.xmlvalue, "__self__", None)).__mro__}
    text = " ".join(kinds)
    if "Boolean" in text:
        return rng.choice([True, False, "true", "0"])
    if "Integer" in text or "Decimal" in text or "Float" in text or "Double" in text:
        return rng.choice([0, 7, -3, 12345678901234, "42"])
    return rng.choice(AWKWARD)


def _representative(node: Node, rng: random.Random, *, fill_optional: bool) -> dict[str, Any]:
    """Arguments for a complex element: every required child, optional ones or not, lists of
    one to three items (within the element's occurs)."""
    if node.choice:
        option = rng.choice(node.children)
        return {option.name: _child_value(option, rng, fill_optional)}
    values = {}
    for child in node.children:
        if child.optional and not fill_optional and rng.random() < 0.7:
            continue
        values[child.name] = _child_value(child, rng, fill_optional)
    return values


def _child_value(node: Node, rng: random.Random, fill_optional: bool) -> Any:
    def one() -> Any:
        if node.xmlvalue is not None:
            return _leaf_value(node, rng)
        return _representative(node, rng, fill_optional=fill_optional)

    if node.multiple:
        top = node.max_occurs if node.max_occurs is not None else 3
        count = rng.randint(max(node.min_occurs, 1), min(top, 3))
        return [one() for _ in range(count)]
    return one()


def _spoiled(node: Node, good: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """Variants of good arguments, each with whether it is one of the shapes the prepared path
    refuses where zeep guesses (a list for a complex element that occurs once, a list of lists,
    a bare value for a complex type whose first child is not simple): those must be refused;
    the others must come out as zeep has them, built or refused."""
    cases: list[tuple[dict[str, Any], bool]] = [({**good, "noSuchArgument": "x"}, False)]
    for child in node.children:
        name = child.name
        complex_once = child.xmlvalue is None and not child.multiple
        without = {k: v for k, v in good.items() if k != name}
        cases += [
            (without, False),
            ({**good, name: None}, False),
            ({**good, name: []}, complex_once),
        ]
        cases.append(({**good, name: {"nested": 1}}, False))
        nested = child.xmlvalue is None and isinstance(good.get(name), list)  # a list of lists
        cases.append(({**good, name: [good.get(name)] * 2}, complex_once or nested))
        if child.xmlvalue is None:
            bare_refused = child.choice or not child.children or child.children[0].xmlvalue is None
            cases.append(({**good, name: "bare"}, bare_refused))
            if isinstance(good.get(name), dict):
                for inner, stricter in _spoiled(child, good[name]):
                    cases.append(({**good, name: inner}, stricter))
        elif child.multiple and child.max_occurs is not None:
            cases.append(({**good, name: ["x"] * (child.max_occurs + 1)}, False))
            cases.append(({**good, name: ["x", None]}, False))
    if node.choice and len(node.children) > 1:
        first, second = node.children[0], node.children[1]
        cases.append(({first.name: ["1"], second.name: "2"}, False))  # two choices
        cases.append(({first.name: [], second.name: "2"}, False))  # an empty one, a real one
        cases.append(({first.name: "", second.name: None}, False))
        cases.append(({first.name: 0, second.name: "x"}, False))
    return cases


def _same(
    prepared: PreparedOperation,
    client: Any,
    binding: Any,
    op: str,
    kwargs: dict,
    headers: list,
    stricter: bool = False,
) -> str:
    """'refused' when both refuse, 'built' when both build the same envelope; fails otherwise
    (``stricter``: the prepared path must refuse, whatever zeep does)."""
    if stricter:
        with pytest.raises(Refused):
            prepared.envelope(kwargs, _copies(headers))
        return "refused"
    try:
        expected, expected_headers = _zeep(client, binding, op, kwargs, _copies(headers))
    except FAILS:
        expected = None
    try:
        got = prepared.envelope(kwargs, _copies(headers))
    except FAILS:
        got = None
    assert (expected is None) == (got is None), repr((op, kwargs, expected is None))
    if got is None:
        return "refused"
    assert etree.tostring(got, method="c14n") == etree.tostring(expected, method="c14n"), kwargs
    assert etree.tostring(got, xml_declaration=True, encoding="utf-8") == etree.tostring(
        expected, xml_declaration=True, encoding="utf-8"
    )
    assert dict(prepared.http_headers) == expected_headers
    return "built"


def _copies(headers: list[etree._Element]) -> list[etree._Element]:
    return [etree.fromstring(etree.tostring(h)) for h in headers]


def _request_header(spec: SystemSpec | None) -> dict[str, Any]:
    if spec is None or spec.soap_request_header is None:
        return {}
    part, values = spec.soap_request_header
    return {part: {k: v.replace("$", "") for k, v in values.items()}}


CASES = [
    ("boss", "{http://boss.simulator.switchboard/crm/v1}BossServiceSoapBinding"),
    ("loyalty", None),
]


@pytest.mark.parametrize(("system", "wanted"), CASES)
def test_every_bundled_operation_is_prepared_and_builds_zeeps_envelope(system, wanted):
    spec = REGISTRY.systems[system]
    client, binding = _binding(WSDLS[system], wanted)
    prepared, left = prepare(client, binding)
    assert left == {}  # the bundled WSDLs are covered entirely
    assert set(prepared) == set(binding._operations)
    headers = _headers(spec)
    rng = random.Random(12)
    outcomes = {"built": 0, "refused": 0}
    for op, ready in prepared.items():
        for round_ in range(12):
            good = {**_representative(ready.body, rng, fill_optional=round_ % 2 == 0)}
            good.update(_request_header(spec))
            assert _same(ready, client, binding, op, good, headers) == "built", (op, good)
            for spoiled, stricter in _spoiled(ready.body, good):
                outcomes[_same(ready, client, binding, op, spoiled, headers, stricter)] += 1
    # Both kinds were compared, many times.
    assert outcomes["built"] > 50 and outcomes["refused"] > 50, outcomes


def test_what_zeep_writes_as_it_writes_it():
    """zeep does not check numeric text or facets; neither does the prepared path (the
    envelope is zeep's). Escaping is lxml's."""
    client, binding = _binding(WSDLS["loyalty"])
    prepared, _ = prepare(client, binding)
    history = prepared["getPointsHistory"]
    envelope = history.envelope({"memberNo": "<&>\u00e9", "offset": "abc", "limit": 10}, [])
    text = etree.tostring(envelope, encoding="unicode")
    assert "<memberNo>&lt;&amp;&gt;\u00e9</memberNo><offset>abc</offset>" in text
    zeep_envelope, _ = _zeep(
        client,
        binding,
        "getPointsHistory",
        {"memberNo": "<&>\u00e9", "offset": "abc", "limit": 10},
        [],
    )
    assert etree.tostring(zeep_envelope, method="c14n") == etree.tostring(envelope, method="c14n")


def test_a_wsdl_the_prepared_path_does_not_cover_is_left_to_zeep_per_operation():
    client, binding = _binding(TEST_WSDL)
    prepared, left = prepare(client, binding)
    assert set(prepared) == {"Plain"}
    assert set(left) == {"WithAttribute", "ChoiceInSequence", "Nillable"}
    assert "attributes" in left["WithAttribute"]
    rng = random.Random(3)
    for _ in range(20):
        good = _representative(prepared["Plain"].body, rng, fill_optional=rng.random() < 0.5)
        assert _same(prepared["Plain"], client, binding, "Plain", good, []) == "built"
        for spoiled, stricter in _spoiled(prepared["Plain"].body, good):
            _same(prepared["Plain"], client, binding, "Plain", spoiled, [], stricter)


# --- the engine: what goes out, prepared and by zeep; and nothing goes out when refused ----


class Recorder:
    """Stands in for the backend pool: keeps what would be sent, then fails the call."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, str], bytes]] = []

    async def send(self, method: str, url: str, *, headers: dict, body: bytes) -> Any:
        self.sent.append((url, dict(headers), body))
        raise httpx.ConnectError("recorded, not sent")

    async def aclose(self) -> None:
        return None


async def _engine(system: str, monkeypatch) -> SoapEngine:
    spec = REGISTRY.systems[system]
    # The WSDL from disk, as a path from the system file (a path starting "/" is on the instance).
    contract = os.path.relpath(WSDLS[system], Path(spec.system_file).parent)
    spec = dataclasses.replace(spec, contract=contract)
    engine = SoapEngine(
        spec, spec.instances[0], Endpoint(spec.instances[0].name, "http://127.0.0.1:9")
    )
    await engine._http.aclose()
    engine._http = Recorder()  # type: ignore[assignment]
    await engine.start()
    monkeypatch.setattr(soap.time, "time_ns", lambda: 1700000000000000000)
    return engine


VALUES = {
    "$keys": ["0000000001", "0000000042", "<&>"],
    "$key": "Zoë <1>",
    "$offset": 0,
    "$limit": 20,
    "$starLevel": "3",
    "$namePrefix": "李",
    "$offeringId": "OF0001",
    "$idempotencyKey": "k-1 & 2",
    "$points": 100,
    "$rewardCode": 'R"1"',
}


@pytest.mark.parametrize("system", ["boss", "loyalty"])
async def test_the_engine_sends_what_zeep_would_for_every_declared_operation(system, monkeypatch):
    engine = await _engine(system, monkeypatch)
    spec = engine.spec
    try:
        assert engine.left_to_zeep == {}
        operations = list(spec.operations.values())
        operations += [write.operation for write in spec.writes.values()]
        for operation in operations:
            for values in (
                VALUES,
                {k: v for k, v in VALUES.items() if k not in ("$namePrefix", "$starLevel")},
            ):
                request = fill_template(operation.request or {}, values)
                sent = []
                for prepared in (engine._prepared, {}):
                    saved = engine._prepared
                    engine._prepared = prepared
                    engine._sequence = itertools.count(1)
                    try:
                        with pytest.raises(Unavailable):
                            await engine.call(operation, request)
                    finally:
                        engine._prepared = saved
                    sent.append(engine._http.sent.pop())
                assert sent[0] == sent[1], operation.name
    finally:
        await engine.close()


@pytest.mark.parametrize(
    ("system", "call", "arguments"),
    [
        ("boss", "QueryCustomer", {"QueryCustomerRequest": {"CustomerNo": ["1"], "Bogus": "x"}}),
        (
            "boss",
            "QueryCustomer",
            {"QueryCustomerRequest": {"CustomerNo": ["1"], "CertificateNo": "2"}},
        ),
        ("boss", "QueryCustomer", {"QueryCustomerRequest": "0000000001"}),
        ("boss", "QuerySubscribers", {"QuerySubscribersRequest": {"CustomerNo": ["1"] * 101}}),
        ("boss", "QuerySubscribers", {"QuerySubscribersRequest": {}}),
        ("boss", "QueryCustomerList", {"QueryCustomerListRequest": {"BeginRowNum": 0}}),
        ("boss", "QueryOrder", {"Unknown": {}}),
        ("loyalty", "getPointsHistory", {"memberNo": "1", "offset": 0}),
        ("loyalty", "getPointsHistory", {"memberNo": {"x": 1}, "offset": 0, "limit": 1}),
        ("loyalty", "getMembers", {"memberNos": {"memberNo": ["1"] * 101}}),
        ("loyalty", "ping", {"extra": 1}),
        (
            "loyalty",
            "redeemPoints",
            {"memberNo": "1", "points": 1, "rewardCode": "\x00", "requestId": "r"},
        ),
    ],
)
async def test_a_request_that_does_not_fit_is_refused_and_nothing_is_sent(
    system, call, arguments, monkeypatch
):
    engine = await _engine(system, monkeypatch)
    try:
        operation = next(iter(engine.spec.operations.values()))
        operation = dataclasses.replace(operation, call=call)
        for prepared in (engine._prepared, {}):  # prepared, then zeep: the same refusal
            saved = engine._prepared
            engine._prepared = prepared
            try:
                with pytest.raises(BusinessRejected, match="request does not fit the WSDL"):
                    await engine.call(operation, arguments)
            finally:
                engine._prepared = saved
        assert engine._http.sent == []
    finally:
        await engine.close()
