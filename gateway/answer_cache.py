"""Whole answers, reused for callers the policy treats alike: the read cache's top layer.

The record cache (adapters/cache.py) spares the backends; every request still runs the graph:
parsing, the policy on every field, the loaders, serialising. A repeated query for the same
customer by the same kind of caller gets the same answer, so the answer itself is kept, under
a key of everything that shapes it:

- the document, the operation's name and the variables;
- who asks, as the policy sees it: role, channel, scopes, partner, the verification (its
  customer, its level in this channel and where it was obtained), the purpose, whether the
  policy is enforced, and the policy version in force. The caller's own name and credential
  are not in the key (no reusable field depends on them: schema/answer_scope.py), so agents of
  one role and channel share answers, and a caller whose policy differs in anything never
  gets another's.

What is kept, and for how long:
- only answers without errors, of queries whose every field is a legacy system's records
  (``schema/answer_scope.py``), made while every backend read went through the record cache
  (``adapters/read_ledger.py``);
- for ``ttl_s`` at most, and never longer than the shortest TTL of the record kinds it read;
- until the record cache evicts anything, here or in another process (its eviction feed): an
  eviction follows every write, and the whole answer cache is invalid from then on (a
  generation counter, checked at every hit and compared at every store, so an answer being
  built across an eviction is not kept either);
- in bounded memory: ``max_bytes`` in all (least recently used answers go first), and no
  answer larger than ``max_entry_bytes``.

A reused answer is still a disclosure: its request is authenticated, rate limited and recorded
in the access log with the same fields, paths, levels and customers as when it was built (the
snapshot goes with the answer), before the response goes out.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.read_ledger import ReadLedger
from policies.disclosure import Disclosure
from policies.model import Level, Policy
from policies.principal import Principal
from schema.context import RequestContext
from telemetry import metrics

#: (document, operation name, variables, role, channel, scopes, partner, verification,
#: purpose, enforced, policy version)
AnswerKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Answer:
    data: Any
    #: The response body, as strawberry encodes it (``{"data": ...}``, compact JSON).
    body: bytes
    size: int
    expires: float  # time.monotonic()
    generation: int
    # What the access log records of the request that built it.
    disclosed: Mapping[str, Level]
    customers: frozenset[str]
    backends: frozenset[str]
    operation_type: str | None
    operation_name: str | None
    document_sha256: str | None


class AnswerCache:
    def __init__(
        self,
        *,
        reusable: Callable[[str], bool],
        ttl_s: float = 5.0,
        max_bytes: int = 64 * 1024 * 1024,
        max_entry_bytes: int = 256 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reusable = reusable
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        self._clock = clock
        self._answers: OrderedDict[AnswerKey, Answer] = OrderedDict()
        self._bytes = 0
        #: Bumped by every record cache eviction: answers of an older generation are stale.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def bytes(self) -> int:
        return self._bytes

    def invalidate(self) -> None:
        """Something the answers were built from changed: none of them may be served."""
        self.generation += 1
        if self._answers:
            self._answers.clear()
            self._bytes = 0

    @staticmethod
    def key(
        query: str, operation_name: str | None, variables: Any, context: RequestContext
    ) -> AnswerKey | None:
        """The key of this request's answer; None when its variables do not serialise."""
        disclosure = context.disclosure
        return AnswerCache.key_of(
            query,
            operation_name,
            variables,
            context.principal,
            disclosure.purpose,
            disclosure.enforced,
            disclosure.policy.version,
        )

    @staticmethod
    def key_of(
        query: str,
        operation_name: str | None,
        variables: Any,
        principal: Principal,
        purpose: str | None,
        enforced: bool,
        policy_version: str,
    ) -> AnswerKey | None:
        """The key from its parts (before any request context exists: gateway/app.py)."""
        verified = principal.verification
        try:
            variables_text = (
                json.dumps(variables, sort_keys=True, separators=(",", ":")) if variables else ""
            )
        except (TypeError, ValueError):
            return None
        return (
            query,
            operation_name,
            variables_text,
            principal.role,
            principal.channel,
            tuple(sorted(principal.scopes)),
            principal.partner,
            None
            if verified is None
            else (verified.customer_id, verified.level, verified.obtained_in),
            purpose,
            enforced,
            policy_version,
        )

    def get(self, key: AnswerKey) -> Answer | None:
        answer = self._answers.get(key)
        if answer is None:
            metrics.ANSWER_CACHE.labels("miss").inc()
            return None
        if answer.generation != self.generation or answer.expires <= self._clock():
            self._drop(key, answer)
            metrics.ANSWER_CACHE.labels("miss").inc()
            return None
        self._answers.move_to_end(key)
        metrics.ANSWER_CACHE.labels("hit").inc()
        return answer

    def offer(
        self,
        key: AnswerKey,
        query: str,
        data: Any,
        context: RequestContext,
        ledger: ReadLedger,
        generation: int,
    ) -> bool:
        """Keep the answer of a request that executed without errors, if it may be reused;
        ``generation`` is the cache's generation when the request started executing."""
        ttl = min(self._ttl_s, ledger.reusable_for_s)
        if (
            ttl <= 0
            or generation != self.generation
            or context.operation_type != "query"
            or not self._reusable(query)
        ):
            metrics.ANSWER_CACHE.labels("not_reusable").inc()
            return False
        try:
            body = json.dumps({"data": data}, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            metrics.ANSWER_CACHE.labels("not_reusable").inc()
            return False
        size = len(body)
        if size > self._max_entry_bytes:
            metrics.ANSWER_CACHE.labels("too_large").inc()
            return False
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= old.size
        self._answers[key] = Answer(
            data=data,
            body=body,
            size=size,
            expires=self._clock() + ttl,
            generation=generation,
            disclosed=dict(context.disclosure.disclosed),
            customers=frozenset(context.customers_touched),
            backends=frozenset(context.backends_called),
            operation_type=context.operation_type,
            operation_name=context.operation_name,
            document_sha256=context.document_sha256,
        )
        self._bytes += size
        while self._bytes > self._max_bytes and self._answers:
            _, oldest = self._answers.popitem(last=False)
            self._bytes -= oldest.size
        metrics.ANSWER_CACHE.labels("stored").inc()
        return True

    def _drop(self, key: AnswerKey, answer: Answer) -> None:
        del self._answers[key]
        self._bytes -= answer.size


@dataclass(slots=True)
class ReusedRequest:
    """What the access log and the operation metrics read of a request answered from the
    cache before any request context was made (the fields of ``RequestContext`` they use)."""

    disclosure: Disclosure
    customers_touched: set[str] = field(default_factory=set)
    backends_called: set[str] = field(default_factory=set)
    operation_type: str | None = None
    operation_name: str | None = None
    document_sha256: str | None = None


def reused_request(
    answer: Answer, policy: Policy, principal: Principal, purpose: str | None, enforced: bool
) -> ReusedRequest:
    """The stand-in context of a request the cache answered."""
    stand_in = ReusedRequest(Disclosure(policy, principal, purpose, enforced=enforced))
    replay(answer, stand_in)
    return stand_in


def replay(answer: Answer, context: RequestContext | ReusedRequest) -> None:
    """Put on the request's context what the access log records of the answer it reuses."""
    context.disclosure.disclosed.update(answer.disclosed)
    context.customers_touched.update(answer.customers)
    context.backends_called.update(answer.backends)
    context.operation_type = answer.operation_type
    context.operation_name = answer.operation_name
    context.document_sha256 = answer.document_sha256
