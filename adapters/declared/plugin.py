"""The escape hatch: a system whose wire a mapping cannot describe, spoken by Python.

A system file with ``protocol: plugin`` and ``plugin: package.module:attribute`` names a
factory, called once per instance::

    factory(spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> PluginEngine

The engine only speaks the wire (a binary protocol, a signature scheme, a vendor SDK): it
takes one declared operation and the call's variables and returns the answer as JSON-like
data (dicts, lists, text, numbers). Everything else stays the mapping's and the hub's: the
records are read from that answer by the mapping's ``list:``, ``total:`` and field paths as
for REST; identity linking, graph fields, data classes and masking, the cache, the access log,
writes and their idempotency, and the call policy (timeout budget, retries of reads, breaker,
bulkhead) apply to a plugin system as to any declared one.

An engine raises ``adapters.errors`` for what the system says (NotFound, BusinessRejected,
Unavailable, TimedOut, BadResponse); anything else it raises becomes a BadResponse that names
the system and the exception's type only (its message may quote personal data).
``adapters.declared.values.fill_template(operation.request, values)`` fills the mapping's
request template if the engine wants one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

from adapters.declared.spec import InstanceSpec, OperationSpec, SystemSpec
from adapters.errors import AdapterError, BadResponse, TimedOut, Unavailable
from adapters.resilience import Endpoint


class PluginEngine(Protocol):
    async def start(self) -> None:
        """Open what the engine needs (connections, keys), before the first call."""

    async def close(self) -> None:
        """Release it."""

    async def call(self, operation: OperationSpec, values: dict[str, Any]) -> Any:
        """One call of the system: the answer as JSON-like data."""


PluginFactory = Callable[[SystemSpec, InstanceSpec, Endpoint], PluginEngine]


class PluginNotLoaded(ValueError):
    """The plugin reference does not name an importable callable (said without a traceback)."""


def load_factory(reference: str) -> PluginFactory:
    """The callable ``package.module:attribute`` names."""
    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # an operator's module: any import failure is a refusal
        raise PluginNotLoaded(
            f"plugin module '{module_name}' cannot be imported ({type(error).__name__})"
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise PluginNotLoaded(f"plugin '{reference}' is not a callable in '{module_name}'")
    return factory


class PluginAnswer:
    """A plugin's answer, read by the REST engine's record and total readers."""

    __slots__ = ("body", "headers")

    def __init__(self, body: Any) -> None:
        self.body = body
        self.headers: dict[str, str] = {}


class PluginCaller:
    """One instance's engine, with the hub's rules for what it may raise."""

    def __init__(self, spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> None:
        factory = load_factory(str(spec.plugin))
        self.name = instance.name
        self._engine = factory(spec, instance, endpoint)

    async def start(self) -> None:
        await self._guarded(self._engine.start())

    async def close(self) -> None:
        await self._engine.close()

    async def call(self, operation: OperationSpec, values: dict[str, Any]) -> PluginAnswer:
        return PluginAnswer(await self._guarded(self._engine.call(operation, values)))

    async def _guarded(self, work: Any) -> Any:
        try:
            return await work
        except AdapterError:
            raise
        except TimeoutError:
            raise TimedOut(self.name, "did not answer within the timeout") from None
        except OSError as error:
            raise Unavailable(self.name, f"could not be reached ({type(error).__name__})") from None
        except Exception as error:
            raise BadResponse(self.name, f"plugin failed ({type(error).__name__})") from None
