"""Entry points of the graph: one customer by hub id or by MSISDN, and a paged search."""

from __future__ import annotations

import base64
import re

import strawberry

from adapters.errors import NotFound
from adapters.records import StarLevel as RecordStarLevel
from schema.customer_scope import in_scope, not_in_scope, row_scoped
from schema.errors import bad_input, not_found
from schema.search_rules import ensure_may_search
from schema.types import (
    Customer,
    CustomerConnection,
    GraphInfo,
    Offering,
    PageInfo,
    StarLevel,
)

HUB_ID = re.compile(r"cus_[0-9a-f]{20}")
MSISDN = re.compile(r"1[3-9][0-9]{9}")
CURSOR_PREFIX = "offset:"


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{offset}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if not text.startswith(CURSOR_PREFIX):
            raise ValueError(cursor)
        offset = int(text.removeprefix(CURSOR_PREFIX))
    except ValueError:
        raise bad_input("after is not a cursor this API issued.") from None
    if offset < 0:
        raise bad_input("after is not a cursor this API issued.")
    return offset


@strawberry.type
class Query:
    @strawberry.field(description="One customer by the hub's customer id (cus_...).")
    async def customer(self, info: GraphInfo, id: strawberry.ID) -> Customer | None:
        if not HUB_ID.fullmatch(id):
            raise bad_input("id must be a hub customer id (cus_ followed by 20 hex digits).")
        info.context.customers_touched.add(str(id))
        scoped = row_scoped(info.context.disclosure)
        if scoped and not in_scope(info.context.disclosure, str(id)):
            # Asked before the lookup: "no such customer" and "someone else" must not be
            # told apart by a channel that acts for one customer (an existence oracle).
            raise not_in_scope()
        identity = await info.context.loaders.identity_by_hub_id.load(str(id))
        if identity is None:
            raise not_found("customer")
        return Customer.of(identity)

    @strawberry.field(description="The customer who holds a line, by its 11-digit MSISDN.")
    async def customer_by_msisdn(self, info: GraphInfo, msisdn: str) -> Customer | None:
        # The value is never echoed: an MSISDN is personal data.
        ensure_may_search(info, "customerByMsisdn", "msisdn")
        if not MSISDN.fullmatch(msisdn):
            raise bad_input("msisdn must be 11 digits starting with 13-19.")
        info.context.backends_called.add(info.context.backends.customer_system.name)
        disclosure = info.context.disclosure
        scoped = row_scoped(disclosure)
        try:
            line = await info.context.backends.customer_system.find_subscription_by_msisdn(msisdn)
        except NotFound:
            if scoped:
                # A channel that acts for one customer learns nothing of other numbers:
                # unknown and someone else's answer alike (no existence oracle).
                raise not_in_scope() from None
            raise
        identity = await info.context.loaders.identity_by_customer_no.load(line.customer_no)
        if identity is None:
            if scoped:
                raise not_in_scope()
            raise not_found("customer")
        info.context.customers_touched.add(identity.hub_id)
        if scoped and not in_scope(disclosure, identity.hub_id):
            raise not_in_scope()
        return Customer.of(identity)

    @strawberry.field(description="Customers page by page, in the customer system's order.")
    async def customers(
        self,
        info: GraphInfo,
        first: int = 20,
        after: str | None = None,
        star_level: StarLevel | None = None,
        name_prefix: str | None = None,
    ) -> CustomerConnection:
        limit = info.context.backends.max_page_size
        if not 1 <= first <= limit:
            raise bad_input(f"first must be between 1 and {limit}.")
        if name_prefix is not None:
            ensure_may_search(info, "customers", "namePrefix")
        if name_prefix is not None and not 1 <= len(name_prefix) <= 16:
            raise bad_input("namePrefix must be 1 to 16 characters.")
        offset = decode_cursor(after) if after else 0
        info.context.backends_called.add(info.context.backends.customer_system.name)
        page = await info.context.backends.customer_system.search_customers(
            offset,
            first,
            star_level=RecordStarLevel(star_level.value) if star_level else None,
            name_prefix=name_prefix,
        )
        loaders = info.context.loaders
        loaders.prime_profiles(page.items)
        identities = await loaders.identity_by_customer_no.load_many(
            [p.customer_no for p in page.items]
        )
        info.context.customers_touched.update(i.hub_id for i in identities if i is not None)
        end = offset + len(page.items)
        return CustomerConnection(
            total_count=page.total,
            nodes=[Customer.of(i) for i in identities if i is not None],
            page_info=PageInfo(
                has_next_page=end < page.total,
                end_cursor=encode_cursor(end) if page.items else None,
            ),
        )

    @strawberry.field(description="The offering catalogue of the customer system.")
    async def offerings(self, info: GraphInfo) -> list[Offering]:
        info.context.backends_called.add(info.context.backends.customer_system.name)
        return [Offering.of(o) for o in await info.context.backends.customer_system.get_offerings()]
