"""Refusals by the operation limits and the HTTP input checks are recorded as `refused`, not
`error`: the caller was not allowed to ask that, nothing went wrong in the hub. Through the
real gateway, each request made the way a caller would make it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.audit_support import AuditedGateway, audited_gateway

OFFERS = "offerings { id }"
#: A bill page per account of 200 customers: about 400 billing calls, past the agent's 100.
COSTLY = (
    "{ customers(first: 200) { nodes { billingAccounts { bills(first: 1) { items { id } } } } } }"
)


@pytest.fixture(scope="module")
def audited(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    with audited_gateway(sims, tmp_path_factory.mktemp("refusalcodes")) as gateway:
        yield gateway


def graphql_body(query: str, **extra: object) -> bytes:
    return json.dumps({"query": query, **extra}).encode()


# (what, method, body or query string, extra headers, expected status, expected code)
CASES = [
    (
        "too many aliases",
        "POST",
        graphql_body("{ " + " ".join(f"a{i}: {OFFERS}" for i in range(31)) + " }"),
        {},
        200,
        "ALIAS_LIMIT_EXCEEDED",
    ),
    (
        "too many root fields",
        "POST",
        graphql_body("{ " + " ".join(f"a{i}: {OFFERS}" for i in range(11)) + " }"),
        {},
        200,
        "ROOT_FIELD_LIMIT_EXCEEDED",
    ),
    (
        "too costly",
        "POST",
        graphql_body(COSTLY),
        {},
        200,
        "COST_LIMIT_EXCEEDED",
    ),
    (
        "too many tokens",
        "POST",
        graphql_body("{ offerings { " + "id " * 2100 + "} }"),
        {},
        200,
        "TOKEN_LIMIT_EXCEEDED",
    ),
    (
        "operationName not a string",
        "POST",
        graphql_body("{ offerings { id } }", operationName={"x": 1}),
        {},
        400,
        "BAD_REQUEST",
    ),
    (
        "body too large",
        "POST",
        graphql_body("{ offerings { id } }", variables={"pad": "x" * 1_100_000}),
        {},
        413,
        "PAYLOAD_TOO_LARGE",
    ),
    (
        "not JSON",
        "POST",
        b"{ offerings { id } }",
        {"Content-Type": "text/plain"},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    (
        "an answer type the hub does not make",
        "POST",
        graphql_body("{ offerings { id } }"),
        {"Accept": "text/event-stream"},
        406,
        "NOT_ACCEPTABLE",
    ),
    (
        "a mutation over GET",
        "GET",
        "mutation { renew }",
        {},
        405,
        "METHOD_NOT_ALLOWED",
    ),
    (
        "a subscription over HTTP",
        "POST",
        graphql_body('subscription { requestUpdates(requestId: "r") { state } }'),
        {},
        400,
        "SUBSCRIPTION_REQUIRES_WEBSOCKET",
    ),
]


@pytest.mark.parametrize(
    ("what", "method", "payload", "headers", "status", "code"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_a_refusal_is_recorded_as_refused(audited, what, method, payload, headers, status, code):
    request_id = uuid.uuid4().hex
    sent = {
        "X-Api-Key": audited.keys["agent"],
        "X-Purpose": "service",
        "X-Request-Id": request_id,
        **headers,
    }
    if method == "GET":
        response = httpx.get(
            f"{audited.url}/graphql", params={"query": payload}, headers=sent, timeout=30
        )
    else:
        sent.setdefault("Content-Type", "application/json")
        response = httpx.post(f"{audited.url}/graphql", content=payload, headers=sent, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["extensions"]["code"] == code
    (record,) = audited.records(request_id)
    assert (record["outcome"], record["code"]) == ("refused", code)
