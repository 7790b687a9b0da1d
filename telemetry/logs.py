"""Logs: one JSON object per line (or the plain text format), with request and trace ids.

Every record carries ``time`` (RFC 3339, UTC with its offset), ``level``, ``logger``,
``message``, and while a request is being served its ``request_id`` and ``trace_id`` (the
current span's when tracing is on, else the caller's ``traceparent`` trace id, if it sent
one). Structured extras a call site passes (``extra={"status": 200}``) become fields.

An exception is one field, ``exception``: its type, the types it was caused by, and the
frames (file:line in function), on one line. The exception's message is withheld: messages
of database drivers, parsers and HTTP clients quote the values they choke on, and those may
be MSISDNs, ID-card numbers or names, which never go to logs.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal

from pythonjsonlogger.json import JsonEncoder
from pythonjsonlogger.orjson import OrjsonFormatter

from telemetry import tracing

LogFormat = Literal["json", "text"]

#: The request being served in this task (gateway/app.py: RequestIds sets it).
request_id: ContextVar[str | None] = ContextVar("switchboard_request_id_log", default=None)

#: Loggers that print what they are handed (URLs with MSISDN filters, cache keys, SOAP
#: envelopes) at INFO or DEBUG: kept at WARNING whatever the level.
QUIET = ("httpx", "httpcore", "zeep", "aiocache", "urllib3")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


def describe_exception(exc_info: ExcInfo) -> str:
    """``Type at file:line in fn <- ... ; caused by Type at ...``, messages withheld."""
    parts = []
    seen: set[int] = set()
    error: BaseException | None = exc_info[1]
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        frames = traceback.extract_tb(error.__traceback__)
        where = " <- ".join(f"{f.filename}:{f.lineno} in {f.name}" for f in reversed(frames))
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        parts.append(f"{name} at {where}" if where else name)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return "; caused by ".join(parts)


class ContextFields(logging.Filter):
    """Adds the request id and trace id of the task that logs (on every handler's records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id.get()
        if not hasattr(record, "trace_id"):
            record.trace_id = tracing.current_trace_id()
        return True


#: A bare record's own attributes: anything else on a record is an extra, and a field.
_RECORD_ATTRIBUTES = frozenset(
    {*vars(logging.LogRecord("", 0, "", 0, "", (), None)), "message", "asctime"}
)


class JsonLines(OrjsonFormatter):
    """python-json-logger with the hub's field names, RFC 3339 time and one-line exceptions.

    Serialised by orjson (python-json-logger's own orjson formatter): every request logs a
    line, and the standard library's encoder was half of the line's cost. UTF-8 as is, no
    spaces after separators."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        )

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        try:
            return super().jsonify_log_record(log_data)
        except TypeError:
            # What orjson refuses (an int past 64 bits, a key of a type it cannot write): the
            # standard library's encoder with python-json-logger's defaults; the line is kept.
            return json.dumps(log_data, cls=JsonEncoder, ensure_ascii=False)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = datetime.fromtimestamp(record.created, UTC).isoformat(
            timespec="milliseconds"
        )
        super().add_fields(log_data, record, message_dict)
        for name in ("request_id", "trace_id"):
            if log_data.get(name) is None:
                log_data.pop(name, None)  # absent rather than null outside a request
        log_data.pop("color_message", None)  # uvicorn's copy of the message, with ANSI codes

    def format(self, record: logging.LogRecord) -> str:
        """The same object as python-json-logger's ``format`` builds, for the common record
        (a message and extras, no exception or stack): every request logs one, and the
        library's general path cost about a tenth of a cached request's event-loop time."""
        if record.exc_info or record.exc_text or record.stack_info or isinstance(record.msg, dict):
            return super().format(record)
        log_data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRIBUTES:
                log_data[name] = value
        for name in ("request_id", "trace_id", "color_message"):
            if log_data.get(name) is None or name == "color_message":
                log_data.pop(name, None)
        return self.jsonify_log_record(log_data)

    def formatException(self, ei: Any) -> str:
        return describe_exception(ei)

    def formatStack(self, stack_info: str) -> str:
        return " <- ".join(line.strip() for line in stack_info.splitlines() if line.strip())


class TextLines(logging.Formatter):
    """The plain format, with the same one-line, message-free exceptions."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        for name in ("request_id", "trace_id"):
            value = getattr(record, name, None)
            if value is not None:
                line += f" {name}={value}"
        return line

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def formatException(self, ei: Any) -> str:
        return describe_exception(ei)


def configure(log_format: LogFormat = "json", level: int = logging.INFO) -> None:
    """One handler on the root logger, to stderr, in the chosen format (replacing others).

    uvicorn's loggers (``uvicorn``, ``uvicorn.error``) are left without handlers of their own
    and propagate here, so its lines are in the same format; its access log stays off.
    """
    # Where a call was made from, and its thread and process ids, are in no line we write:
    # not collecting them is the logging module's documented optimisation.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else TextLines())
    handler.addFilter(ContextFields())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # uvicorn's access lines carry the client's address and the query string (a GET
    # /graphql?query=... holds the caller's variables): off for good. RequestIds
    # (gateway/app.py) logs every request instead: method, route, status, time, ids.
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    for noisy in QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
