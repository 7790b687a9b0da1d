"""The policy in force, and its reloading: on file change (polled) or on SIGHUP.

A reload parses and checks the whole file first and swaps the policy in one assignment, so
requests in flight keep the version they started with and none is dropped. A broken file is
refused, logged with its problems, and the running policy stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Collection, Mapping
from pathlib import Path

from policies.loader import PolicyInvalid, Problem, load_policy
from policies.masks import DataClass
from policies.model import Policy

log = logging.getLogger("switchboard.policy")

DEFAULT_POLICY_FILE = Path(__file__).resolve().parent.parent / "policies" / "rules" / "default.yaml"


class PolicyStore:
    def __init__(
        self,
        path: Path,
        known_operations: Collection[str],
        required_classes: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        self.path = path
        self._known_operations = known_operations
        #: Data classes the declared systems use: a policy must know each (file, line of use).
        self._required_classes = dict(required_classes or {})
        policy, warnings = self._load()  # refuses to start on errors
        self._log_warnings(warnings)
        self.current: Policy = policy
        self._mtime = self._stat()
        self._watcher: asyncio.Task[None] | None = None

    def reload(self) -> list[Problem]:
        """Load the file again; keep the running policy if it is broken. The problems found."""
        try:
            policy, warnings = self._load()
        except PolicyInvalid as invalid:
            for problem in invalid.problems:
                log.error("policy refused, %s still in force: %s", self.current.version, problem)
            return invalid.problems
        self._log_warnings(warnings)
        if policy.version == self.current.version and policy != self.current:
            log.warning("policy changed without a new version (%s)", policy.version)
        self.current = policy
        log.info("policy %s in force (%s)", policy.version, self.path)
        return warnings

    def _load(self) -> tuple[Policy, list[Problem]]:
        policy, warnings = load_policy(self.path, self._known_operations)
        missing = [
            Problem(
                file,
                line,
                f"data class '{name}' is not declared in {self.path.name} "
                "(add it under data_classes: with its mask)",
            )
            for name, (file, line) in sorted(self._required_classes.items())
            if not policy.knows_class(DataClass(name))
        ]
        if missing:
            raise PolicyInvalid(missing)
        return policy, warnings

    async def watch(self, interval_s: float = 2.0) -> None:
        """Reload when the file's modification time changes, and on SIGHUP."""
        loop = asyncio.get_running_loop()
        # Not the main thread, or no signals on this platform: polling still works.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self._reload_now)
        while True:
            await asyncio.sleep(interval_s)
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                self.reload()

    def start_watching(self, interval_s: float = 2.0) -> None:
        self._watcher = asyncio.get_running_loop().create_task(self.watch(interval_s))

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _reload_now(self) -> None:
        self._mtime = self._stat()
        self.reload()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime_ns
        except OSError:
            return None

    @staticmethod
    def _log_warnings(warnings: list[Problem]) -> None:
        for warning in warnings:
            log.warning("policy: %s", warning)
