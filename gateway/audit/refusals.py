"""Refusals past a limit, counted instead of recorded one by one (docs/audit.md).

A key over its rate limit (or a caller sending bad keys) can be refused thousands of times a
second; one chained record each would fill the disk (693,689 records, 227 MB in 5 minutes
from one key and 4 connections). So, per (who, code) and window of ``window_s`` seconds, the
first ``individual`` refusals are still recorded one by one, and the rest are only counted;
when the window ends, one aggregate record holds the count (and the window's start and end).
"Who" is the credential id when the key was recognised, else a keyed hash of the caller's
address. At most ``max_callers`` windows are tracked at once: past that, refusals from new
callers share one overflow window per code (``source = "others"``), so memory stays bounded
whatever the number of addresses.

In process: with several workers each counts its own share (one aggregate per worker and
window at most). Counted refusals are answered at once; their aggregate is written when the
window closes (a sweep, or the next refusal of that caller after it) and at shutdown, so a
process killed mid-window loses at most one window's counts of refusals (which disclosed
nothing).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from gateway.audit.record import AuditRecord

OVERFLOW_SOURCE = "others"


@dataclass
class _Window:
    start_us: int
    template: AuditRecord  # the window's first refusal: who it was, which code
    individual: int = 0
    counted: int = 0


def caller_of(record: AuditRecord) -> str:
    """Whom a refusal is counted against: the credential, else the caller's keyed address."""
    if record.credential_id:
        return f"key:{record.credential_id}"
    return f"source:{record.source or '-'}"


class RefusalCounter:
    def __init__(
        self, *, codes: frozenset[str], window_s: float, individual: int, max_callers: int
    ) -> None:
        self.codes = codes
        self._window_us = int(window_s * 1_000_000)
        self._individual = individual
        self._max_callers = max_callers
        self._windows: dict[tuple[str, str], _Window] = {}
        self._closed: list[AuditRecord] = []  # aggregates waiting to be written

    def counts(self, record: AuditRecord) -> bool:
        """Whether this refusal is aggregated (True: counted, write nothing now) or must be
        recorded individually (False)."""
        if record.outcome != "refused" or record.code not in self.codes:
            return False
        now = record.time_us
        key = (caller_of(record), record.code or "")
        window = self._windows.get(key)
        if window is not None and now >= window.start_us + self._window_us:
            self._close(key, window, window.start_us + self._window_us)
            window = None
        if window is None:
            if len(self._windows) >= self._max_callers:
                key = (f"source:{OVERFLOW_SOURCE}", record.code or "")
                window = self._windows.get(key)
                if window is None:  # room for the overflow windows themselves, one per code
                    overflow = replace(
                        record,
                        source=OVERFLOW_SOURCE,
                        subject=None,
                        role=None,
                        channel=None,
                        partner=None,
                        credential_id=None,
                    )
                    window = self._windows[key] = _Window(now, overflow)
            else:
                window = self._windows[key] = _Window(now, record)
        if window.individual < self._individual:
            window.individual += 1
            return False
        window.counted += 1
        return True

    def _close(self, key: tuple[str, str], window: _Window, end_us: int) -> None:
        del self._windows[key]
        if window.counted:
            self._closed.append(aggregate(window.template, window.start_us, end_us, window.counted))

    def due(self, now_us: int, *, all_windows: bool = False) -> list[AuditRecord]:
        """The aggregates of every window that has ended (every window: at shutdown)."""
        for key, window in list(self._windows.items()):
            end = window.start_us + self._window_us
            if all_windows or now_us >= end:
                self._close(key, window, min(end, now_us))
        closed, self._closed = self._closed, []
        return closed

    @property
    def tracked(self) -> int:
        return len(self._windows)


def aggregate(template: AuditRecord, start_us: int, end_us: int, count: int) -> AuditRecord:
    """One record for ``count`` refusals of one (who, code) from start_us to end_us."""
    return AuditRecord(
        time_us=start_us,
        request_id=f"refusals-{uuid.uuid4().hex}",
        outcome="refused",
        code=template.code,
        subject=template.subject,
        role=template.role,
        channel=template.channel,
        partner=template.partner,
        credential_id=template.credential_id,
        source=template.source,
        refused_count=count,
        window_end_us=end_us,
    )
