"""Mutations that declared systems offer (``writes:`` in a mapping file).

Each write becomes one mutation taking ``customerId``, the record's key (one of that
customer's linked keys in the system), the declared arguments and ``idempotencyKey``. It goes
through everything a hand-written mutation does: the channel's operations list and
verification requirements (by its name, like any root field), the credential's scope, the
channel's row scope, the access log (the customer noted, as a keyed hash), and the system's
breaker and bulkhead. It is sent once: the system receives a request id derived from the
caller's credential and the idempotency key, so a caller's repeat is answered with the first
result, and two callers' keys never collide. The hub records each (caller, key) with a digest
of the input it was first used with: the same key with another input, or for another mutation,
is refused (``IDEMPOTENCY_KEY_REUSED``) before anything is sent, since the system would answer
it with the first input's result.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from typing import Any

import strawberry
from strawberry.types import Info

from adapters.declared.registry import SystemRegistry
from adapters.declared.spec import SystemSpec, WriteSpec
from orchestration.store import KeyReused, input_hash
from schema.customer_scope import ensure_in_scope
from schema.errors import GraphError, bad_input, key_reused, not_found
from schema.system_fields import PYTHON_TYPES, record_type

HUB_ID = re.compile(r"cus_[0-9a-f]{20}")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{8,64}")


@strawberry.type(description="A declared write that maps no record: it was made.")
class DeclaredWriteDone:
    done: bool


def request_id(caller: str, idempotency_key: str) -> str:
    """The id the system sees: the caller's key, kept apart from other callers' keys."""
    return hashlib.sha256(f"{caller}\x00{idempotency_key}".encode()).hexdigest()[:40]


def key_label(write: str) -> str:
    """The write's name as the key record keeps it (40 characters at most), still unique."""
    if len(write) <= 40:
        return write
    return write[:23] + "~" + hashlib.sha256(write.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A value as the input digest sees it: JSON's own types kept, others (Decimal) as text."""
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


async def _claim_key(
    info: Info, write: WriteSpec, caller: str, key: str, payload: dict[str, Any], sent_as: str
) -> None:
    store = info.context.backends.mutation_keys
    if store is None:
        return
    digest = input_hash(write.name, {k: _plain(v) for k, v in payload.items()})
    try:
        await store.claim_key(caller, key, key_label(write.name), digest, sent_as)
    except KeyReused:
        raise key_reused() from None


def _mutation(spec: SystemSpec, write: WriteSpec) -> Any:
    op = write.operation
    result: Any = DeclaredWriteDone
    if op.record is not None:
        name = write.name[:1].upper() + write.name[1:] + "Result"
        result = record_type(name, spec.records[op.record], write.description)

    async def resolve(root: Any, info: Info, **kwargs: Any) -> Any:
        context = info.context
        principal = context.principal
        if write.scope and not principal.has_scope(write.scope):
            raise GraphError(
                "SCOPE_REQUIRED", f"{write.name} needs the scope {write.scope} on this credential."
            )
        key, customer_id = str(kwargs[write.key]), str(kwargs["customer_id"])
        if not IDEMPOTENCY_KEY.fullmatch(kwargs["idempotency_key"]):
            raise bad_input("idempotencyKey must be 8-64 characters: letters, digits, . _ : -")
        if not HUB_ID.fullmatch(customer_id):
            raise not_found("customer")
        context.customers_touched.add(customer_id)
        ensure_in_scope(info, customer_id)
        identity = await context.loaders.identity_by_hub_id.load(customer_id)
        if identity is None:
            raise not_found("customer")
        keys = await context.loaders.system_keys(spec.name, identity)
        instance = next((i for i, k in keys if k == key), None)
        if instance is None:
            raise GraphError(
                "NOT_FOUND", f"{write.key} is not one of this customer's records in {spec.name}."
            )
        caller = principal.credential_id or principal.subject
        values = {f"${name}": kwargs[name] for name in write.arguments}
        values["$idempotencyKey"] = request_id(caller, kwargs["idempotency_key"])
        payload = {"customerId": customer_id, write.key: key}
        payload.update({name: kwargs[name] for name in write.arguments})
        await _claim_key(
            info, write, caller, kwargs["idempotency_key"], payload, values["$idempotencyKey"]
        )
        context.backends_called.add(instance)
        record = await context.backends.systems[spec.name].write(write.name, instance, key, values)
        if record is None:
            return DeclaredWriteDone(done=True)
        item = result(**{k: v for k, v in record.items() if k in _names(result)})
        item._located = (instance, key)
        return item

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("root", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        inspect.Parameter("info", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Info),
        inspect.Parameter("customer_id", keyword, annotation=strawberry.ID),
        inspect.Parameter(write.key, keyword, annotation=str),
        *(
            inspect.Parameter(name, keyword, annotation=PYTHON_TYPES[kind])
            for name, kind in write.arguments.items()
        ),
        inspect.Parameter("idempotency_key", keyword, annotation=str),
    ]
    # Nullable: a refusal is an error at this field, not a null for the whole answer.
    returns = result | None
    resolve.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    resolve.__annotations__ = {p.name: p.annotation for p in params[1:]} | {"return": returns}
    return strawberry.field(resolver=resolve, name=write.name, description=write.description)


def _names(record_class: Any) -> set[str]:
    return {f.python_name for f in record_class.__strawberry_definition__.fields}


def system_mutations(registry: SystemRegistry) -> type | None:
    """The mutation root fields of every declared write, or None if there are none."""
    fields = {
        write.name: _mutation(spec, write) for spec in registry for write in spec.writes.values()
    }
    if not fields:
        return None
    return strawberry.type(type("DeclaredMutation", (), fields), name="DeclaredMutation")
