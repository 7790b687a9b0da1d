"""Which documents are made only of the legacy systems' records, so their answers may be reused.

The answer cache (gateway/answer_cache.py) reuses an answer only if nothing in it comes from
the hub's own state, which changes without any record cache eviction: workflow requests,
verifications, consent and offers, the crosswalk's links and conflicts, the access log. The
rule is an allowlist: a document qualifies when every field it selects is a root field of
``REUSABLE_ROOTS`` or a field of a type in ``RECORD_TYPES`` (or one generated from a declared
system's records), and none is in ``HUB_STATE_FIELDS``. A type or field added later is not
reusable until somebody puts it here; ``tests/test_answer_cache.py`` fails on any type
reachable from these roots that is in neither list, so the choice is made on purpose.
"""

from __future__ import annotations

from collections import OrderedDict

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLSchema,
    GraphQLSyntaxError,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    get_named_type,
    parse,
    visit,
)

from schema.system_fields import GENERATED_TYPE_NAMES

#: Query fields whose answers are records read through the record cache.
REUSABLE_ROOTS = frozenset({"customer", "customerByMsisdn", "customers", "offerings"})
#: Types every field of which is a legacy system's record, or computed from records only
#: (insight: the rules file's figures over lines, usage, bills, payments, tickets).
RECORD_TYPES = frozenset(
    {
        "Customer",
        "CustomerConnection",
        "PageInfo",
        "CustomerProfile",
        "Subscription",
        "Usage",
        "Offering",
        "OfferingRef",
        "BillingAccount",
        "Balance",
        "Money",
        "BillPage",
        "Bill",
        "PaymentPage",
        "Payment",
        "Ticket",
        "TicketNote",
        "Interaction",
        "CustomerInsight",
        "Rfm",
        "ChurnRisk",
    }
)
#: Fields of those types that read the hub's own tables.
HUB_STATE_FIELDS = frozenset(
    {
        ("Customer", "identity"),  # the crosswalk's links and conflicts
        ("Customer", "nextBestOffers"),  # offers, caps and consent, changed by every send
    }
)


def reusable_types() -> frozenset[str]:
    """The object types whose fields may go into a reused answer (generated ones included)."""
    return RECORD_TYPES | frozenset(GENERATED_TYPE_NAMES)


class _Scan(Visitor):
    def __init__(self, type_info: TypeInfo, query_root: str, allowed: frozenset[str]) -> None:
        super().__init__()
        self.type_info = type_info
        self.query_root = query_root
        self.allowed = allowed
        self.reusable = True

    def enter_field(self, node: FieldNode, *_: object) -> object:
        name = node.name.value
        if name == "__typename":
            return None
        parent = self.type_info.get_parent_type()
        parent_name = get_named_type(parent).name if parent is not None else None
        if name.startswith("__") or parent_name is None:
            fits = False  # introspection, or a field the schema does not have
        elif parent_name == self.query_root:
            fits = name in REUSABLE_ROOTS
        else:
            fits = parent_name in self.allowed and (parent_name, name) not in HUB_STATE_FIELDS
        if not fits:
            self.reusable = False
            return self.BREAK
        return None


def document_is_reusable(schema: GraphQLSchema, document: DocumentNode) -> bool:
    """Whether every field of every operation and fragment of ``document`` is records only."""
    query = schema.query_type
    if query is None:
        return False
    type_info = TypeInfo(schema)
    scan = _Scan(type_info, query.name, reusable_types())
    visit(document, TypeInfoVisitor(type_info, scan))
    return scan.reusable


class ReusableDocuments:
    """``document_is_reusable`` per document text, remembered for the ``size`` latest."""

    def __init__(self, schema: GraphQLSchema, size: int = 1024) -> None:
        self._schema = schema
        self._size = size
        self._known: OrderedDict[str, bool] = OrderedDict()

    def __call__(self, query: str) -> bool:
        known = self._known.get(query)
        if known is not None:
            self._known.move_to_end(query)
            return known
        try:
            found = document_is_reusable(self._schema, parse(query, no_location=True))
        except GraphQLSyntaxError:
            found = False
        self._known[query] = found
        if len(self._known) > self._size:
            self._known.popitem(last=False)
        return found
