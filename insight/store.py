"""The insight rules in force, reloaded like the policy when the file changes (polled).

A reload reads and checks the whole file (and its churn model) and swaps it in one assignment;
a broken file is refused, its problems logged, and the running rules stay in force. Starting
on a broken file fails (``DeclarationInvalid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from adapters.declared.yaml_lines import DeclarationInvalid, Problem
from insight.rules import InsightRules, load_rules

log = logging.getLogger("switchboard.insight")


class RulesStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: InsightRules = load_rules(path)
        self._stamp = self._stat()
        self._watcher: asyncio.Task[None] | None = None

    def reload(self) -> list[Problem]:
        """Read the file again; keep the rules in force if it is broken. The problems found."""
        try:
            rules = load_rules(self.path)
        except DeclarationInvalid as invalid:
            for problem in invalid.problems:
                log.error(
                    "insight rules refused, %s still in force: %s", self.current.version, problem
                )
            return invalid.problems
        self.current = rules
        log.info("insight rules %s in force (%s)", rules.version, self.path)
        return []

    async def watch(self, interval_s: float) -> None:
        # Polling only: SIGHUP belongs to the policy store (a loop keeps one handler per signal).
        while True:
            await asyncio.sleep(interval_s)
            stamp = self._stat()
            if stamp != self._stamp:
                self._stamp = stamp
                self.reload()

    def start_watching(self, interval_s: float) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self.watch(interval_s))

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _stat(self) -> tuple[float | None, float | None]:
        """The rules file's and the model file's modification times: either changing reloads."""

        def mtime(path: Path) -> float | None:
            try:
                return path.stat().st_mtime_ns
            except OSError:
                return None

        return mtime(self.path), mtime(Path(self.current.churn.model.file))
