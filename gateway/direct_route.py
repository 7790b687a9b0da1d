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
is answered here as ``ServerErrorMiddleware`` answered it: a 500, when no response has
started, sent through the middlewares outside this one (so it carries ``x-request-id`` and is
logged with it), then the exception goes on to the server, which logs its traceback. The 500
is coded like every other refusal (``INTERNAL_ERROR``) and says nothing of the exception.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http_input import APPLICATION_JSON, MEDIA_TYPE_KEY, InputRefused, coded_response

#: The answer to a request the endpoint failed on: the exception's text could hold anything.
INTERNAL = InputRefused(500, "INTERNAL_ERROR", "Internal error.")


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
            await self._serve(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._endpoint(scope, receive, noting_send)
        except Exception:
            if not started:
                media_type = scope.get(MEDIA_TYPE_KEY, APPLICATION_JSON)
                await coded_response(INTERNAL, media_type)(scope, receive, send)
            raise
