"""The ASGI entry point uvicorn workers import: `gateway.asgi:app`.

Each worker is a fresh process: its logging is set up here, from the same settings.
"""

from gateway.app import create_app
from gateway.settings import load_settings
from telemetry import logs

settings = load_settings()
logs.configure(settings.log_format)
app = create_app(settings)
