"""A system's own error codes onto the hub's taxonomy, as its mapping's ``errors:`` declares."""

from __future__ import annotations

from adapters.declared.spec import ErrorSpec
from adapters.errors import AdapterError, BusinessRejected, NotFound, Unavailable


def classify(
    system: str, operation: str, errors: ErrorSpec, code: str | None, *, caller_side: bool
) -> AdapterError:
    """The error for a code the system sent (never its message: it may quote personal data).

    Declared codes decide first; an undeclared code is the caller's fault (a refusal) when the
    system said so (SOAP Client/Sender, HTTP 4xx), else the system's (unavailable).
    """
    if code is not None:
        if code in errors.not_found:
            return NotFound(system, "has no such record", backend_code=code)
        if code in errors.rejected:
            return BusinessRejected(system, f"refused {operation}", backend_code=code)
        if code in errors.unavailable:
            return Unavailable(system, f"could not serve {operation}", backend_code=code)
    if caller_side:
        return BusinessRejected(system, f"refused {operation}", backend_code=code)
    return Unavailable(system, f"failed {operation}", backend_code=code)
