"""A declared system at run time: its instances, their router, call policy and cache.

Each instance has its own endpoint, guard (breaker, bulkhead, counters) and engine, so one
provincial instance failing opens only its own circuit. Reads by key go to the instance that
holds the key (the crosswalk links keys per instance); lookups by MSISDN go to the instance
whose ``owns.msisdn_prefix`` covers the number (content-based routing). Batches are split to
the operation's ``batch`` limit, and each instance's batches run concurrently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from adapters.cache import Kind, RecordCache
from adapters.codec import Codec, tuple_of
from adapters.concurrency import gather_all
from adapters.declared import rest, soap
from adapters.declared.plugin import PluginCaller
from adapters.declared.spec import InstanceSpec, OperationSpec, RecordSpec, SystemSpec
from adapters.declared.values import Record, decode, encode, fill_template, from_json, from_xml
from adapters.errors import AdapterError, BadResponse, BusinessRejected, TimedOut
from adapters.parsing import chunks, unique
from adapters.phone import in_format, national, to_e164
from adapters.resilience import CallPolicy, Endpoint


@dataclass(frozen=True, slots=True)
class Located:
    """A record and the instance it came from (crosswalk keys are per instance)."""

    instance: str
    record: Record


class _Instance:
    def __init__(self, spec: SystemSpec, instance: InstanceSpec, endpoint: Endpoint) -> None:
        self.spec = instance
        self.policy = CallPolicy(endpoint)
        self.max_items = endpoint.reply_limits.max_items
        self.list_read_timeout_s = endpoint.list_read_timeout_s
        self.engine: soap.SoapEngine | rest.RestEngine | PluginCaller
        if spec.protocol == "soap":
            self.engine = soap.SoapEngine(spec, instance, endpoint)
        elif spec.protocol == "plugin":
            self.engine = PluginCaller(spec, instance, endpoint)
        else:
            self.engine = rest.RestEngine(spec, instance, endpoint)


def _coded(system: str, op: OperationSpec, values: dict[str, Any]) -> dict[str, Any]:
    """The role's values of the variables the operation ``maps`` in the system's codes."""
    coded = dict(values)
    for variable, codes in op.maps.items():
        value = coded.get(variable)
        if value is None:
            continue
        if str(value) not in codes:
            raise BusinessRejected(system, f"{op.name}: {variable} has no code in the mapping")
        coded[variable] = codes[str(value)]
    return coded


def _record_codec(record: RecordSpec) -> Codec[Record]:
    return Codec(encode=lambda r: encode(r, record), decode=lambda v: decode(v, record))


class DeclaredSystem:
    """Runs a system's declared operations through the hub's call policy and cache."""

    def __init__(
        self,
        spec: SystemSpec,
        endpoints: Mapping[str, Endpoint],
        cache: RecordCache | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.instances = {i.name: _Instance(spec, i, endpoints[i.name]) for i in spec.instances}
        #: Each instance's endpoint (its guard is what /readyz and /metrics report).
        self.endpoints: Mapping[str, Endpoint] = {i.name: endpoints[i.name] for i in spec.instances}
        self._cache = cache
        self._kinds: dict[str, Kind[Any]] = {}
        if cache is not None:
            for op_name, ttl in spec.cache_ttl_s.items():
                op = spec.operations[op_name]
                record = spec.records[op.record or ""]
                codec = _record_codec(record) if op.key_field else tuple_of(_record_codec(record))
                kind: Kind[Any] = Kind(f"{spec.name}.{op_name}", codec)
                cache.register(kind, ttl)
                self._kinds[op_name] = kind

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load contracts; an instance that is down now loads on its first call instead."""
        for instance in self.instances.values():
            try:
                await instance.engine.start()
            except AdapterError:
                continue

    async def close(self) -> None:
        for instance in self.instances.values():
            await instance.engine.close()

    async def ping(self, instance_name: str) -> None:
        instance = self.instances[instance_name]
        if self.spec.health is None:
            await instance.engine.start()
            return
        await self._call(instance, self.spec.operations[self.spec.health], {})

    # --- routing ------------------------------------------------------------------------

    def owner_of(self, msisdn: str) -> str | None:
        """The instance that owns a number, by its national prefix; None if none does (or the
        text is no number). Of several instances, one that declares no ``msisdn_prefix``
        (it is split by ``key_prefix``) owns no number."""
        number = national(msisdn)
        if number is None:
            return None
        several = len(self.instances) > 1
        return next(
            (
                name
                for name, i in self.instances.items()
                if i.spec.owns(number) and (i.spec.owns_msisdns or not several)
            ),
            None,
        )

    def key_owner(self, key: str) -> str | None:
        """The instance that holds one of the system's own keys: the only instance, or the one
        whose ``owns.key_prefix`` covers it; None when the key says nothing of its instance."""
        if len(self.instances) == 1:
            return self.sole_instance
        return next((n for n, i in self.instances.items() if i.spec.owns_key(key)), None)

    def number_owner(self, msisdn: str) -> str | None:
        """The instance that serves a number in the system's own form: the only instance, or
        the one whose ``owns.msisdn_prefix`` covers it; None when no rule says."""
        if len(self.instances) == 1:
            return self.sole_instance
        return self.owner_of(msisdn)

    # --- reads --------------------------------------------------------------------------

    async def read_by_keys(
        self, operation: str, keys: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Record]:
        """Records by (instance, key), through the cache when the operation is cached."""
        op = self.spec.operations[operation]
        by_instance: dict[str, list[str]] = {}
        for instance, key in keys:
            if instance in self.instances:
                by_instance.setdefault(instance, []).append(key)
        results = await gather_all(
            [self._read_instance(op, name, wanted) for name, wanted in by_instance.items()]
        )
        found: dict[tuple[str, str], Record] = {}
        for name, records in zip(by_instance, results, strict=True):
            found.update({(name, key): record for key, record in records.items()})
        return found

    async def _read_instance(
        self, op: OperationSpec, instance_name: str, keys: list[str]
    ) -> Mapping[str, Record]:
        kind = self._kinds.get(op.name)
        if kind is None or self._cache is None:
            return await self._fetch_keyed(op, instance_name, keys)

        async def fetch(misses: list[str]) -> dict[str, Record]:
            found = await self._fetch_keyed(
                op, instance_name, [k.partition(":")[2] for k in misses]
            )
            return {f"{instance_name}:{key}": record for key, record in found.items()}

        cached = await self._cache.many(kind, [f"{instance_name}:{k}" for k in keys], fetch)
        return {key.partition(":")[2]: record for key, record in cached.items()}

    async def _fetch_keyed(
        self, op: OperationSpec, instance_name: str, keys: list[str]
    ) -> dict[str, Record]:
        instance = self.instances[instance_name]
        batches = list(chunks(unique(keys), op.batch or 1))
        answers = await gather_all([self._records(instance, op, batch) for batch in batches])
        found: dict[str, Record] = {}
        key_field = op.key_field
        asked = set(keys)
        for records in answers:
            for record in records:
                key = record.get(key_field) if key_field else None
                if key is None:
                    raise BadResponse(instance_name, f"answered {op.name} without record keys")
                if str(key) not in asked:
                    # Another record than the ones asked for (a key written differently, a
                    # filter the system ignored): read as "not found", the asked record
                    # would silently be null and the stray one cached under its own key.
                    raise BadResponse(
                        instance_name, f"answered {op.name} with a record it was not asked for"
                    )
                found[str(key)] = record
        return found

    async def lookup_msisdns(self, operation: str, msisdns: Sequence[str]) -> list[Located]:
        """Records found by MSISDN, each number asked only of the instance that owns it."""
        op = self.spec.operations[operation]
        by_instance: dict[str, list[str]] = {}
        for msisdn in msisdns:
            number = to_e164(msisdn)
            owner = self.owner_of(msisdn) if number is not None else None
            if number is not None and owner is not None:
                by_instance.setdefault(owner, []).append(number)
        return await self._lookup(op, by_instance)

    async def lookup_keys(self, operation: str, values: Sequence[str]) -> list[Located]:
        """Records found by other values (ID-card numbers): asked of every instance."""
        op = self.spec.operations[operation]
        return await self._lookup(op, {name: list(values) for name in self.instances})

    async def lookup_at(
        self, operation: str, instance: str, values: Sequence[str]
    ) -> list[Located]:
        """Records found by ``values`` (as given) on one instance."""
        return await self._lookup(self.spec.operations[operation], {instance: list(values)})

    async def _lookup(self, op: OperationSpec, by_instance: dict[str, list[str]]) -> list[Located]:
        async def one(name: str, values: list[str]) -> list[Located]:
            instance = self.instances[name]
            if op.msisdn_format is not None:
                # Numbers as the system writes them; one no form fits is no number to ask.
                values = [n for v in values if (n := in_format(v, op.msisdn_format))]
            batches = list(chunks(unique(values), op.batch or 1))
            answers = await gather_all([self._records(instance, op, b) for b in batches])
            return [Located(name, record) for records in answers for record in records]

        results = await gather_all([one(n, v) for n, v in by_instance.items() if v])
        return [located for found in results for located in found]

    async def page(
        self,
        operation: str,
        instance_name: str,
        key: str,
        offset: int,
        limit: int,
        variables: Mapping[str, Any] | None = None,
    ) -> tuple[int, list[Record]]:
        """One page of a paged operation for one key: the total and the records.

        ``variables``: a role's own (a search's filters), None where the caller has none."""
        op = self.spec.operations[operation]
        if op.max_limit is not None:
            limit = min(limit, op.max_limit)
        instance = self.instances[instance_name]
        values = {**(variables or {}), "$key": key, "$offset": offset, "$limit": limit}
        answer = await instance.policy.read(op.name, self._call, instance, op, values)
        record = self.spec.records[op.record or ""]
        return self._total(instance, op, answer), self._extract(instance, op, record, answer)

    # --- one call -------------------------------------------------------------------------

    async def _records(self, instance: _Instance, op: OperationSpec, batch: list[str]) -> list:
        values: dict[str, Any] = {"$keys": batch}
        if len(batch) == 1:
            values["$key"] = batch[0]
        record = self.spec.records[op.record or ""]
        if not op.all_pages:
            answer = await instance.policy.read(op.name, self._call, instance, op, values)
            return self._extract(instance, op, record, answer)
        # A filtered list read whole, page after page, within the reply item limit and
        # within list_read_timeout_s for all its pages together: a system telling an endless
        # total, or answering slowly page after page, cannot hold the request for longer.
        found: list[Record] = []
        limit = op.max_limit or 200
        try:
            async with asyncio.timeout(instance.list_read_timeout_s):
                while True:
                    paged = {**values, "$offset": len(found), "$limit": limit}
                    answer = await instance.policy.read(op.name, self._call, instance, op, paged)
                    page = self._extract(instance, op, record, answer)
                    found += page
                    if len(found) > instance.max_items:
                        raise BadResponse(
                            instance.spec.name, "answered a list longer than the limit"
                        )
                    if not page or len(found) >= self._total(instance, op, answer):
                        return found
        except TimeoutError:
            raise TimedOut(instance.spec.name, f"took too long to list {op.name}") from None

    async def read(
        self, operation: str, values: dict[str, Any], instance_name: str | None = None
    ) -> list[Record]:
        """A role's read with its variables through one instance (default: the first)."""
        op = self.spec.operations[operation]
        instance = self.instances[instance_name or self.sole_instance]
        answer = await instance.policy.read(op.name, self._call, instance, op, values)
        return self._extract(instance, op, self.spec.records[op.record or ""], answer)

    async def send(
        self, operation: str, values: dict[str, Any], instance_name: str | None = None
    ) -> list[Record]:
        """A role's write through one instance (default: the first): once, never retried."""
        op = self.spec.operations[operation]
        instance = self.instances[instance_name or self.sole_instance]
        answer = await instance.policy.write(op.name, self._call, instance, op, values)
        if op.record is None:
            return []
        return self._extract(instance, op, self.spec.records[op.record], answer)

    def _sole_instance(self) -> _Instance:
        return next(iter(self.instances.values()))

    @property
    def sole_instance(self) -> str:
        """The first declared instance (a role system with one instance answers from it)."""
        return self._sole_instance().spec.name

    async def _call(self, instance: _Instance, op: OperationSpec, values: dict[str, Any]) -> Any:
        if op.maps:
            values = _coded(instance.spec.name, op, values)
        engine = instance.engine
        if isinstance(engine, soap.SoapEngine):
            return await engine.call(op, fill_template(op.request or {}, values))
        return await engine.call(op, values)

    def _extract(
        self, instance: _Instance, op: OperationSpec, record: RecordSpec, answer: Any
    ) -> list[Record]:
        name = instance.spec.name
        if isinstance(instance.engine, soap.SoapEngine):
            return [from_xml(e, record, name) for e in soap.records_at(answer, op)]
        return [from_json(item, record, name) for item in rest.records_at(answer, op, name)]

    def _total(self, instance: _Instance, op: OperationSpec, answer: Any) -> int:
        if isinstance(instance.engine, soap.SoapEngine):
            return soap.total_at(answer, op, instance.spec.name)
        return rest.total_at(answer, op, instance.spec.name)

    # --- writes -------------------------------------------------------------------------

    async def write(
        self, write: str, instance_name: str, key: str, values: dict[str, Any]
    ) -> Record | None:
        """Make a declared change once (never retried: the idempotency key makes the
        caller's repeat safe), then evict what it changed, also when it failed."""
        spec = self.spec.writes[write]
        instance = self.instances[instance_name]
        op = spec.operation
        try:
            answer = await instance.policy.write(
                op.name, self._call, instance, op, {**values, "$key": key}
            )
        finally:
            if self._cache is not None and spec.evicts:
                await self._cache.evict(
                    (self._kinds[name], f"{instance_name}:{key}")
                    for name in spec.evicts
                    if name in self._kinds
                )
        if op.record is None:
            return None
        records = self._extract(instance, op, self.spec.records[op.record], answer)
        if not records:
            raise BadResponse(instance_name, f"answered {write} without its result")
        return records[0]

    async def call_raw(self, instance_name: str, operation: str, values: dict[str, Any]) -> Any:
        """One call with the caller's variables, for ``systems try``."""
        instance = self.instances[instance_name]
        op = self.spec.operations[operation]
        answer = await instance.policy.read(op.name, self._call, instance, op, values)
        if op.record is None:
            return answer
        records = self._extract(instance, op, self.spec.records[op.record], answer)
        total = self._total(instance, op, answer) if op.paged else None
        return total, records
