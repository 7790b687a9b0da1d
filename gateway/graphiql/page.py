"""GraphiQL served by the gateway itself: our page, and the pinned assets under /graphiql/.

strawberry's own page loads React and GraphiQL from a CDN, which is a blank page on an
operator's network without internet. This one loads the same kind of build, pinned and shipped
in static/ (README.md there: versions, licences, how they were obtained), and nothing else:
its Content-Security-Policy allows this origin only.
"""

from __future__ import annotations

from pathlib import Path

from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Message, Receive, Scope, Send

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Where the assets are served (the page refers to them by these absolute paths).
ASSETS_PATH = "/graphiql"

PAGE_HEADERS = {
    # Scripts, styles, fonts, images and fetches/websockets from this origin only: no CDN, no
    # inline script, no eval; the page may not be framed; no key in referrers.
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchboard GraphiQL</title>
<link rel="icon" href="{ASSETS_PATH}/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{ASSETS_PATH}/graphiql.min.css">
<link rel="stylesheet" href="{ASSETS_PATH}/switchboard.css">
</head>
<body>
<div id="graphiql">Loading GraphiQL...</div>
<script src="{ASSETS_PATH}/react.production.min.js"></script>
<script src="{ASSETS_PATH}/react-dom.production.min.js"></script>
<script src="{ASSETS_PATH}/graphiql.min.js"></script>
<script src="{ASSETS_PATH}/switchboard.js"></script>
</body>
</html>
"""


def graphiql_page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=PAGE_HEADERS)


class GraphiQLAssets:
    """The files of static/, read-only, with headers that keep a browser from guessing types."""

    def __init__(self) -> None:
        self.files = StaticFiles(directory=STATIC_DIR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"public, max-age=3600"),
                ]
            await send(message)

        await self.files(scope, receive, send_with_headers)
