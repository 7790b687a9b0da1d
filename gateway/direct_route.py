"""One path's HTTP requests served straight to their endpoint, before Starlette's app.

``POST /graphql`` is nearly every request the hub serves. Through Starlette it passed two
middlewares (``ServerErrorMiddleware``, ``ExceptionMiddleware``, each building its own
``Request`` and send wrapper), the router's scan of every route and the route's own method
check before reaching an endpoint that needs none of them (about 9 us of CPU a request, with
an endpoint that answers at once): the /graphql stack answers every refusal itself with a
coded error and raises no ``HTTPException``. Anything else (another path, another method, a
websocket, the lifespan) goes on to the app unchanged, so the router's 404 and 405 answers
stay its own.

An exception escaping the endpoint (a bug: the stack turns every bad input into a coded 4xx)
reaches uvicorn, which logs it and answers 500 when no response has started, as
``ServerErrorMiddleware`` did.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send


class DirectRoute:
    """Serves ``path`` for ``methods`` with ``endpoint``; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, path: str, endpoint: ASGIApp, methods: Iterable[str]) -> None:
        self.app = app  # like the other middlewares: what it wraps
        self._path = path
        self._endpoint = endpoint
        self._methods = frozenset(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == self._path
            and scope["method"] in self._methods
        ):
            # What Starlette would have put in the scope: Request.app keeps working.
            scope["app"] = self.app
            await self._endpoint(scope, receive, send)
            return
        await self.app(scope, receive, send)
