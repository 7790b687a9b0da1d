"""The checkpoints the hub signed, as an append-only JSON lines file outside the database.

Whoever can write the hub's database can delete or rewrite rows of ``audit_checkpoint``; a
copy of every checkpoint in a file (ship it to storage they cannot write: a log collector,
WORM storage) lets ``switchboard audit verify`` find that. One checkpoint per line, compact
JSON of its fields; each line is one ``write`` on a descriptor opened with O_APPEND, so
several processes appending to one local file never interleave their lines.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.audit.checkpoint import Checkpoint


def append(path: Path, checkpoint: Checkpoint) -> None:
    line = json.dumps(asdict(checkpoint), sort_keys=True, separators=(",", ":")) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class KeptCheckpoint:
    """A checkpoint an auditor holds outside the database, and where it came from."""

    checkpoint: Checkpoint | None  # None: the line is not a checkpoint
    origin: str  # "FILE line N", for findings


def read(path: Path) -> list[KeptCheckpoint]:
    kept: list[KeptCheckpoint] = []
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            origin = f"{path} line {number}"
            try:
                kept.append(KeptCheckpoint(Checkpoint.from_json(line), origin))
            except (ValueError, KeyError, TypeError):
                kept.append(KeptCheckpoint(None, origin))
    return kept
