"""The error taxonomy every adapter speaks instead of library exceptions.

An adapter turns whatever its transport raises (httpx, zeep, lxml, JSON) into one of these. The
schema layer maps them to GraphQL errors with a stable ``extensions.code``. Messages are built by
the adapter from codes and system names only: a backend's own message may quote personal data,
so it is never copied into one.
"""

from __future__ import annotations

import re
from typing import ClassVar

#: What a backend's error code may look like to be shown: a short token (``CRM-404``,
#: ``102010002``, ``500``). A backend writes its codes itself, so one may hold anything, a
#: phone, ID-card or bank card number included: eleven digits or more (separators left
#: out) are taken for one of those.
_SHOWN_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,31}")
_LONG_NUMBER = re.compile(r"\d{11,}")
_SEPARATORS = re.compile(r"[._:/-]")


def shown_code(code: object) -> str | None:
    """The backend's code if it is safe to log and show, else None (withheld)."""
    if code is None:
        return None
    text = str(code)
    if not _SHOWN_CODE.fullmatch(text) or _LONG_NUMBER.search(_SEPARATORS.sub("", text)):
        return None
    return text


class AdapterError(Exception):
    """A call to a legacy system did not give a usable answer."""

    code: ClassVar[str] = "BACKEND_ERROR"
    #: Whether the same call may succeed if tried again (only ever used for idempotent reads).
    retryable: ClassVar[bool] = False

    def __init__(self, system: str, message: str, *, backend_code: str | None = None) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.message = message
        #: The backend's own error code (e.g. a BOSS ResultCode) when it is a short token
        #: with no long number in it: safe to log and show; anything else is withheld.
        self.backend_code = shown_code(backend_code)


class NotFound(AdapterError):
    """The system does not know the record asked for."""

    code = "NOT_FOUND"


class BusinessRejected(AdapterError):
    """The system understood the request and refused it by its business rules."""

    code = "BUSINESS_REJECTED"


class Unavailable(AdapterError):
    """The system could not be reached or answered that it cannot serve now."""

    code = "BACKEND_UNAVAILABLE"
    retryable = True


class Throttled(Unavailable):
    """The system said it is taking too many calls (HTTP 429).

    Not retried within the call: a repeat only adds to the load it asked to shed. It counts
    against the circuit like any other sign of a system not serving, so a system that keeps
    throttling is left alone for the breaker's cool-down instead of being asked again."""

    retryable = False


class TimedOut(AdapterError):
    """The system did not answer within the call's timeout."""

    code = "BACKEND_TIMEOUT"
    retryable = True


class BadResponse(AdapterError):
    """The system answered something the adapter cannot read (not XML/JSON, wrong shape)."""

    code = "BACKEND_BAD_RESPONSE"
