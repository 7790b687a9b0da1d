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
