"""POST and GET /graphql go straight to their endpoint (gateway/direct_route.py); every other
request, the router's 404 and 405 included, is still Starlette's."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.direct_route import DirectRoute
from tests.test_telemetry import in_process, in_process_settings, no_config  # noqa: F401


class Recorder:
    """An ASGI app that notes the scopes it was called with."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(dict(scope))


async def _nothing() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _ignore(message: dict[str, Any]) -> None:
    return None


async def _served(scope: dict[str, Any]) -> tuple[Recorder, Recorder]:
    app, endpoint = Recorder(), Recorder()
    await DirectRoute(app, "/graphql", endpoint, ("GET", "POST"))(scope, _nothing, _ignore)
    return app, endpoint


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_path_and_its_methods_go_to_the_endpoint(method):
    app, endpoint = await _served({"type": "http", "method": method, "path": "/graphql"})
    assert app.scopes == [] and len(endpoint.scopes) == 1
    # What Starlette would have set: Request.app still finds the application.
    assert endpoint.scopes[0]["app"] is app


@pytest.mark.parametrize(
    "scope",
    [
        {"type": "http", "method": "PUT", "path": "/graphql"},  # the router's 405
        {"type": "http", "method": "HEAD", "path": "/graphql"},
        {"type": "http", "method": "POST", "path": "/graphql/"},
        {"type": "http", "method": "POST", "path": "/graphqlx"},
        {"type": "http", "method": "GET", "path": "/graphql/graphiql.js"},  # the assets
        {"type": "websocket", "path": "/graphql"},
        {"type": "lifespan"},
    ],
)
async def test_everything_else_goes_on_to_the_app(scope):
    app, endpoint = await _served(scope)
    assert endpoint.scopes == [] and app.scopes == [scope]


@pytest.mark.usefixtures("no_config")
async def test_the_hub_answers_graphql_directly_and_the_rest_through_its_router(sims, tmp_path):
    """The hub itself: a query over POST and over GET is answered, another method gets the
    router's 405, and a path next to /graphql its 404."""
    import httpx

    from gateway.app import create_app

    app = create_app(in_process_settings(sims, tmp_path, tracing_on=False))
    async with in_process(app) as ask:
        posted = await ask("{ __typename }", {}, {})
        assert posted.status_code == 200, posted.text
        assert posted.json() == {"data": {"__typename": "Query"}}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=30
        ) as client:
            headers = posted.request.headers
            key = {"X-Api-Key": headers["x-api-key"], "X-Purpose": "service"}
            got = await client.get("/graphql", params={"query": "{ __typename }"}, headers=key)
            assert got.status_code == 200, got.text
            assert got.json() == {"data": {"__typename": "Query"}}
            assert got.headers["x-request-id"]  # RequestIds still wraps it
            put = await client.put("/graphql", json={"query": "{ __typename }"}, headers=key)
            assert put.status_code == 405
            beside = await client.post("/graphqlx", json={"query": "{ __typename }"})
            assert beside.status_code == 404


class Failing:
    """An endpoint with a bug: it raises, before its answer starts or halfway through it."""

    def __init__(self, *, after_start: bool) -> None:
        self.after_start = after_start

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.after_start:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("a bug holding +8613800000000")


async def _sent_by_failing(after_start: bool) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    route = DirectRoute(Recorder(), "/graphql", Failing(after_start=after_start), ("POST",))
    scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": []}
    with pytest.raises(RuntimeError):  # on to the server, which logs its traceback
        await route(scope, _nothing, keep)
    return sent


async def test_a_bug_before_the_answer_starts_is_a_coded_500_and_still_raises():
    import json

    sent = await _sent_by_failing(after_start=False)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 500
    body = json.loads(sent[1]["body"])
    assert body == {
        "errors": [{"message": "Internal error.", "extensions": {"code": "INTERNAL_ERROR"}}]
    }


async def test_a_bug_after_the_answer_started_sends_no_second_start():
    sent = await _sent_by_failing(after_start=True)
    assert [m["type"] for m in sent] == ["http.response.start"]


@pytest.mark.usefixtures("no_config")
async def test_a_bug_in_the_hubs_graphql_stack_answers_500_with_its_request_id(
    sims, tmp_path, monkeypatch
):
    """Past DirectRoute the 500 still goes out through RequestIds: the caller gets the id
    the log line and the server's traceback carry, and nothing of the exception's text."""
    import httpx

    from gateway.app import create_app
    from gateway.graphql_http import GraphQLOverHTTP

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug holding +8613800000000")

    app = create_app(in_process_settings(sims, tmp_path, tracing_on=False))
    async with in_process(app) as ask:
        key = (await ask("{ __typename }", {}, {})).request.headers["x-api-key"]
        monkeypatch.setattr(GraphQLOverHTTP, "execute_single", broken)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://hub",
            timeout=30,
        ) as client:
            answer = await client.post(
                "/graphql",
                # Another document than the first: the answer cache would serve that one.
                json={"query": "query Bug { __typename }"},
                headers={"X-Api-Key": key, "X-Purpose": "service", "X-Request-Id": "bug-1"},
            )
    assert answer.status_code == 500, answer.text
    assert answer.headers["x-request-id"] == "bug-1"
    assert answer.json()["errors"][0]["extensions"]["code"] == "INTERNAL_ERROR"
    assert "8613800000000" not in answer.text
