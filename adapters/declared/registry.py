"""The system registry: every system declared in a folder, one sub-folder per system.

A system is a folder holding ``system.yaml`` and ``mapping.yaml`` (docs/systems.md). The hub
reads the folder at start-up: dropping a system's folder in and restarting onboards it.
Problems across all systems are collected with file:line, so ``switchboard systems check``
reports every one at once, and the gateway refuses to start on any.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from adapters.declared.spec import SystemSpec, parse_system
from adapters.declared.yaml_lines import DeclarationInvalid, Problem

SYSTEM_FILE = "system.yaml"
MAPPING_FILE = "mapping.yaml"
#: The systems bundled with the project (the demo's loyalty programme), beside the code.
BUNDLED_SYSTEMS_DIR = Path(__file__).resolve().parents[2] / "systems"


@dataclass(frozen=True)
class SystemRegistry:
    systems: Mapping[str, SystemSpec]
    folder: Path | None = None

    def __iter__(self) -> Iterator[SystemSpec]:
        return iter(self.systems.values())

    def __len__(self) -> int:
        return len(self.systems)

    @property
    def instance_names(self) -> frozenset[str]:
        """Every declared system's instances (what ``system_urls`` and identity links name)."""
        return frozenset(i for s in self for i in s.instance_names)

    def unknown_instances(self, names: Iterable[str]) -> list[str]:
        """Of ``names`` (``system_urls`` keys), those no declared system has as an instance."""
        return sorted(set(names) - self.instance_names)

    def playing(self, role: str) -> SystemSpec | None:
        """The system that plays one of the hub's roles (``role:`` in its mapping)."""
        return next((s for s in self if s.role is not None and s.role.plays == role), None)

    def graph_systems(self) -> list[SystemSpec]:
        """The systems that are not a role's: each is its own part of the graph."""
        return [s for s in self if s.role is None]

    def by_instance(self, instance: str) -> SystemSpec | None:
        return next((s for s in self if instance in s.instance_names), None)

    def data_classes(self) -> dict[str, tuple[str, int]]:
        """Every data class the systems use, with a file and line that uses it."""
        used: dict[str, tuple[str, int]] = {}
        for spec in self:
            for record in spec.records.values():
                for field in record.fields:
                    if field.data_class:
                        used.setdefault(field.data_class, (spec.mapping_file, field.line))
            if spec.identity is not None:
                used.setdefault(spec.identity.key_class, (spec.mapping_file, spec.identity.line))
        return used

    def class_problems(self, known: set[str]) -> list[Problem]:
        """Data classes the systems use that the policy neither builds in nor declares."""
        return [
            Problem(
                file,
                line,
                f"data class '{name}' is not declared in the policy "
                "(add it under data_classes: with its mask)",
            )
            for name, (file, line) in sorted(self.data_classes().items())
            if name not in known
        ]


EMPTY = SystemRegistry({})


def load_registry(folder: Path | None) -> SystemRegistry:
    """Every system under ``folder``; DeclarationInvalid listing all problems otherwise."""
    if folder is None or not folder.exists():
        return SystemRegistry({}, folder)
    problems: list[Problem] = []
    systems: dict[str, SystemSpec] = {}
    instances: dict[str, str] = {}
    graph_names: dict[str, str] = {}
    for directory in sorted(p for p in folder.iterdir() if p.is_dir()):
        system_file, mapping_file = directory / SYSTEM_FILE, directory / MAPPING_FILE
        if not system_file.exists() and not mapping_file.exists():
            continue
        if not system_file.exists() or not mapping_file.exists():
            missing = system_file if not system_file.exists() else mapping_file
            problems.append(Problem(str(missing), 0, "missing: a system needs both files"))
            continue
        try:
            spec = parse_system(system_file, mapping_file)
        except DeclarationInvalid as error:
            problems += error.problems
            continue
        if spec.name in systems:
            problems.append(Problem(str(system_file), 1, f"system '{spec.name}' is declared twice"))
            continue
        for instance in spec.instance_names:
            if instance in instances:
                problems.append(
                    Problem(
                        str(system_file),
                        1,
                        f"instance '{instance}' is also in system '{instances[instance]}'",
                    )
                )
            instances[instance] = spec.name
        if spec.graph is not None:
            names = [spec.graph.field, spec.graph.type, *(c.type for c in spec.graph.connections)]
            for name in names:
                if name in graph_names:
                    problems.append(
                        Problem(
                            spec.mapping_file,
                            spec.graph.line,
                            f"graph name '{name}' is also used by system '{graph_names[name]}'",
                        )
                    )
                graph_names[name] = spec.name
        systems[spec.name] = spec
    if problems:
        raise DeclarationInvalid(problems)
    return SystemRegistry(systems, folder)


def with_bundled_roles(registry: SystemRegistry) -> SystemRegistry:
    """The registry, plus the bundled system of each role that no system in it plays.

    An operator's folder declares its own systems; the hub's roles (billing...) stay served
    by the bundled declarations until a system in that folder plays them.
    """
    if registry.folder is not None and registry.folder.resolve() == BUNDLED_SYSTEMS_DIR:
        return registry
    bundled = load_registry(BUNDLED_SYSTEMS_DIR)
    added = {
        spec.name: spec
        for spec in bundled
        if spec.role is not None
        and registry.playing(spec.role.plays) is None
        and spec.name not in registry.systems
    }
    if not added:
        return registry
    return SystemRegistry({**registry.systems, **added}, registry.folder)
