"""YAML with line numbers: every mapping remembers the line it starts on, for file:line errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LINE = "__line__"


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"


class DeclarationInvalid(ValueError):
    """One or more errors in a system's files; each names the file and the line."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class FileProblems:
    """The problems found in one declared file, each with its line: what every checker of a
    YAML file (systems, event sources, campaigns) shares."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def error(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.file, line, message))

    def unknown_keys(
        self, mapping: dict, allowed: Iterable[str], what: str, line: int | None = None
    ) -> None:
        """One error per key of ``mapping`` not in ``allowed`` (at ``line``, else the
        mapping's own)."""
        known = set(allowed)
        for key in mapping:
            if key != LINE and key not in known:
                self.error(
                    mapping.get(LINE, 0) if line is None else line,
                    f"unknown key '{key}' in {what} (known: {', '.join(sorted(known))})",
                )


class LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # A key written twice would silently keep only its last value (YAML's own loaders
        # do): one of the two is a mistake, so name its line.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                continue  # an unhashable key: the base loader refuses it itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        mapping = super().construct_mapping(node, deep=True)
        mapping[LINE] = node.start_mark.line + 1
        return mapping


def load_yaml(path: Path) -> Any:
    """The document, or DeclarationInvalid naming the file and line of the syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DeclarationInvalid(
            [Problem(str(path), 0, f"cannot read: {error.strerror}")]
        ) from None
    try:
        return yaml.load(text, Loader=LineLoader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        raise DeclarationInvalid(
            [Problem(str(path), line, f"not valid YAML: {getattr(error, 'problem', error)}")]
        ) from None


def line_of(value: Any, default: int = 0) -> int:
    return value.get(LINE, default) if isinstance(value, dict) else default


def plain(value: Any) -> Any:
    """The value without the line markers (for request templates and value maps)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items() if k != LINE}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
