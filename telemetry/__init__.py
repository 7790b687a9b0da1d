"""Traces, metrics and log context every layer records into (docs/operations.md).

A leaf: it imports nothing of the hub, so the gateway, the schema, the workflows and the
adapters can all record into it without bending the dependency direction. It holds
process-wide instruments (a Prometheus registry and a tracer are process-wide by nature);
the gateway configures them at start-up (``gateway/app.py``, ``gateway/asgi.py``).
"""
