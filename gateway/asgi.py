"""The ASGI entry point uvicorn workers import: `gateway.asgi:app`."""

from gateway.app import create_app

app = create_app()
