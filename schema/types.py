"""The unified customer graph: one Customer assembled from the customer system, billing and care.

Types wrap canonical records. Fields that need another backend resolve through the request's
DataLoaders, and are nullable: when that backend fails, the field is null with a coded error
at its path and everything else still answers.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated

import strawberry
from strawberry.types import Info

from adapters import records
from adapters.identity_store import Identity
from policies.masks import DataClass
from policies.rendering import render_amount, render_date
from schema.classified import KeyClassified, classified
from schema.context import RequestContext
from schema.customer_scope import CustomerScope
from schema.errors import bad_input, identity_conflict, identity_unresolved
from schema.insight import CustomerInsight, resolve_insight

if TYPE_CHECKING:
    from schema.marketing import NextBestOffer

GraphInfo = Info[RequestContext, None]


@strawberry.enum(description="Customer value tier, as the customer system grades it.")
class StarLevel(enum.Enum):
    NORMAL = "normal"
    SILVER = "silver"
    GOLD = "gold"
    DIAMOND = "diamond"
    PREMIUM = "premium"


def rendering_of(info: GraphInfo) -> str:
    """How the caller's channel wants amounts and dates (policy: the channel's rendering)."""
    context = info.context
    profile = context.disclosure.policy.channel(context.principal.channel)
    return profile.rendering if profile is not None else "standard"


@strawberry.type
class Money:
    amount: Decimal
    currency: str

    @strawberry.field(
        description="The amount as the caller's channel renders it: spoken Chinese for IVR, "
        "short text (¥389.89) elsewhere."
    )
    def display(self, info: GraphInfo) -> str:
        return render_amount(self.amount, self.currency, rendering_of(info))

    @classmethod
    def of(cls, money: records.Money) -> Money:
        return cls(amount=money.amount, currency=money.currency)


@strawberry.type(description="The customer as the customer system holds them.")
class CustomerProfile:
    customer_no: str
    name: str | None = classified(DataClass.NAME)
    gender: str
    certificate_type: str
    certificate_number: str | None = classified(DataClass.ID_CARD)
    birth_date: date | None = classified(DataClass.BIRTH_DATE)
    address: str | None = classified(DataClass.ADDRESS)
    email: str | None = classified(DataClass.EMAIL)
    star_level: StarLevel
    segment: str
    customer_since: date | None
    status: str

    @classmethod
    def of(cls, p: records.CustomerProfile) -> CustomerProfile:
        return cls(
            customer_no=p.customer_no,
            name=p.name,
            gender=p.gender,
            certificate_type=p.certificate_type,
            certificate_number=p.certificate_no,
            birth_date=p.birth_date,
            address=p.address,
            email=p.email,
            star_level=StarLevel(p.star_level.value),
            segment=p.segment,
            customer_since=p.customer_since,
            status=p.status,
        )


@strawberry.type(description="This month's usage of a line against its offering's allowance.")
class Usage:
    data_used_mb: int
    data_allowance_mb: int
    voice_used_minutes: int
    voice_allowance_minutes: int
    sms_used: int
    sms_allowance: int

    @strawberry.field(description="Share of the data allowance used, 0..1 (null if none).")
    def data_used_ratio(self) -> float | None:
        if self.data_allowance_mb <= 0:
            return None
        return round(self.data_used_mb / self.data_allowance_mb, 4)


@strawberry.type
class OfferingRef:
    id: str
    name: str


@strawberry.type(description="A line (subscriber) of the customer.")
class Subscription:
    subscriber_no: str
    msisdn: str | None = classified(DataClass.MOBILE)
    imsi: str | None = classified(DataClass.DEVICE_ID)
    iccid: str | None = classified(DataClass.DEVICE_ID)
    status: str
    activated_on: date | None
    offering: OfferingRef
    arpu: Decimal = strawberry.field(description="Average revenue per month, yuan.")
    mou: int = strawberry.field(description="Minutes of use last month.")
    usage: Usage

    @classmethod
    def of(cls, s: records.Subscription) -> Subscription:
        u = s.usage
        return cls(
            subscriber_no=s.subscriber_no,
            msisdn=s.msisdn,
            imsi=s.imsi,
            iccid=s.iccid,
            status=s.status,
            activated_on=s.activated_on,
            offering=OfferingRef(id=s.offering_id, name=s.offering_name),
            arpu=s.arpu,
            mou=s.mou,
            usage=Usage(
                data_used_mb=u.data_used_mb,
                data_allowance_mb=u.data_allowance_mb,
                voice_used_minutes=u.voice_used_min,
                voice_allowance_minutes=u.voice_allowance_min,
                sms_used=u.sms_used,
                sms_allowance=u.sms_allowance,
            ),
        )


@strawberry.type
class Offering:
    id: str
    name: str
    monthly_fee: Decimal
    data_allowance_mb: int
    voice_allowance_minutes: int
    sms_allowance: int
    sellable: bool

    @classmethod
    def of(cls, o: records.Offering) -> Offering:
        return cls(
            id=o.id,
            name=o.name,
            monthly_fee=o.monthly_fee,
            data_allowance_mb=o.data_allowance_mb,
            voice_allowance_minutes=o.voice_allowance_min,
            sms_allowance=o.sms_allowance,
            sellable=o.sellable,
        )


@strawberry.type
class Balance:
    amount: Money = strawberry.field(description="Negative when the account is in arrears.")
    overdue: Money
    as_of: datetime | None


@strawberry.type
class Bill:
    id: str
    bill_no: str
    bill_date: date | None
    period_start: datetime | None
    period_end: datetime | None
    amount_due: Money
    remaining: Money
    due_date: date | None
    state: str

    @strawberry.field(description="The due date as the caller's channel renders it.")
    def due_date_display(self, info: GraphInfo) -> str | None:
        return render_date(self.due_date, rendering_of(info)) if self.due_date else None

    @classmethod
    def of(cls, b: records.Bill) -> Bill:
        return cls(
            id=b.id,
            bill_no=b.bill_no,
            bill_date=b.bill_date,
            period_start=b.period_start,
            period_end=b.period_end,
            amount_due=Money.of(b.amount_due),
            remaining=Money.of(b.remaining),
            due_date=b.due_date,
            state=b.state,
        )


@strawberry.type
class BillPage:
    total_count: int
    items: list[Bill]


@strawberry.type
class Payment:
    id: str
    paid_at: datetime | None
    amount: Money
    status: str
    channel: str
    method: str


@strawberry.type
class PaymentPage:
    total_count: int
    items: list[Payment]


def check_page(first: int, offset: int, limit: int, default: int) -> int:
    """A page's size: 1 to ``limit`` items from a non-negative offset. The field's own
    default, when above the limit, is cut to it: a caller that did not choose a size is not
    refused for the hub's setting."""
    if first == default:
        first = min(first, limit)
    if not 1 <= first <= limit:
        raise bad_input(f"first must be between 1 and {limit}.")
    if offset < 0:
        raise bad_input("offset must not be negative.")
    return first


def _check_page(info: GraphInfo, first: int, offset: int, default: int) -> int:
    # Within graphql.max_page_size: what the cost limit assumes a page holds at most.
    return check_page(first, offset, info.context.backends.max_page_size, default)


@strawberry.type(description="An account in the billing system.")
class BillingAccount:
    id: str
    holder_name: str | None = classified(DataClass.NAME)
    state: str
    account_type: str
    payment_method: str
    bank_card_number: str | None = classified(DataClass.BANK_CARD)
    credit_limit: Money

    @classmethod
    def of(cls, a: records.BillingAccount) -> BillingAccount:
        return cls(
            id=a.id,
            holder_name=a.holder_name,
            state=a.state,
            account_type=a.account_type,
            payment_method=a.payment_method,
            bank_card_number=a.bank_card_no,
            credit_limit=Money.of(a.credit_limit),
        )

    @strawberry.field
    async def balance(self, info: GraphInfo) -> Balance | None:
        found = await info.context.loaders.balances.load(self.id)
        if found is None:
            return None
        return Balance(
            amount=Money.of(found.amount), overdue=Money.of(found.overdue), as_of=found.as_of
        )

    @strawberry.field(description="Monthly bills, newest first.")
    async def bills(self, info: GraphInfo, first: int = 12, offset: int = 0) -> BillPage | None:
        first = _check_page(info, first, offset, default=12)
        page = await info.context.backends.billing.list_bills(self.id, offset, first)
        return BillPage(total_count=page.total, items=[Bill.of(b) for b in page.items])

    @strawberry.field(description="Payments, newest first.")
    async def payments(
        self, info: GraphInfo, first: int = 10, offset: int = 0
    ) -> PaymentPage | None:
        first = _check_page(info, first, offset, default=10)
        page = await info.context.backends.billing.list_payments(self.id, offset, first)
        return PaymentPage(
            total_count=page.total,
            items=[
                Payment(
                    id=p.id,
                    paid_at=p.paid_at,
                    amount=Money.of(p.amount),
                    status=p.status,
                    channel=p.channel,
                    method=p.method,
                )
                for p in page.items
            ],
        )


@strawberry.type
class TicketNote:
    date: datetime | None
    author: str
    text: str | None = classified(DataClass.FREE_TEXT)


@strawberry.type(description="A trouble ticket (complaint, inquiry, fault) in the care system.")
class Ticket:
    id: str
    name: str | None = classified(DataClass.FREE_TEXT)
    description: str | None = classified(DataClass.FREE_TEXT)
    type: str
    severity: str
    priority: str
    status: str
    created_at: datetime | None
    updated_at: datetime | None
    channel: str
    notes: list[TicketNote]

    @classmethod
    def of(cls, t: records.Ticket) -> Ticket:
        return cls(
            id=t.id,
            name=t.name,
            description=t.description,
            type=t.ticket_type,
            severity=t.severity,
            priority=t.priority,
            status=t.status,
            created_at=t.created_at,
            updated_at=t.updated_at,
            channel=t.channel,
            notes=[TicketNote(date=n.date, author=n.author, text=n.text) for n in t.notes],
        )


@strawberry.type(description="A contact between the customer and the operator.")
class Interaction:
    id: str
    started_at: datetime | None
    ended_at: datetime | None
    channel: str
    direction: str
    reason: str
    description: str | None = classified(DataClass.FREE_TEXT)
    status: str

    @classmethod
    def of(cls, i: records.Interaction) -> Interaction:
        return cls(
            id=i.id,
            started_at=i.started_at,
            ended_at=i.ended_at,
            channel=i.channel,
            direction=i.direction,
            reason=i.reason,
            description=i.description,
            status=i.status,
        )


#: The class of crosswalk keys of systems that declare none (the bundled billing and care).
SYSTEM_KEY = DataClass("system_key")


@strawberry.type
class IdentityLink:
    system: str
    key: str | None = strawberry.field(
        description="The customer's key in that system: personal data of the system's key "
        "class (system_key unless its mapping declares one), disclosed as the policy says.",
        extensions=[KeyClassified(SYSTEM_KEY)],
    )
    matched_on: str


@strawberry.type
class IdentityConflict:
    system: str
    kind: str
    detail: str


@strawberry.type(description="How the hub linked this customer's records across systems.")
class CustomerIdentity:
    hub_id: str
    customer_no: str
    links: list[IdentityLink]
    conflicts: list[IdentityConflict]
    unresolved_systems: list[str]


@strawberry.type(description="One customer, assembled live from every system that knows them.")
class Customer:
    id: strawberry.ID = strawberry.field(extensions=[CustomerScope()])
    _identity: strawberry.Private[Identity]

    @classmethod
    def of(cls, identity: Identity) -> Customer:
        return cls(id=strawberry.ID(identity.hub_id), _identity=identity)

    @strawberry.field(description="The customer system's profile.", extensions=[CustomerScope()])
    async def profile(self, info: GraphInfo) -> CustomerProfile | None:
        found = await info.context.loaders.profiles.load(self._identity.customer_no)
        return CustomerProfile.of(found) if found is not None else None

    @strawberry.field(
        description="The customer's lines, from the customer system.", extensions=[CustomerScope()]
    )
    async def subscriptions(self, info: GraphInfo) -> list[Subscription] | None:
        lines = await info.context.loaders.subscriptions.load(self._identity.customer_no)
        return [Subscription.of(line) for line in lines]

    @strawberry.field(description="The customer's billing accounts.", extensions=[CustomerScope()])
    async def billing_accounts(self, info: GraphInfo) -> list[BillingAccount] | None:
        keys = self._keys_of("billing")
        accounts = await info.context.loaders.billing_accounts.load_many(keys)
        return [BillingAccount.of(a) for a in accounts if a is not None]

    @strawberry.field(
        description="Trouble tickets in the care system, newest first.",
        extensions=[CustomerScope()],
    )
    async def tickets(self, info: GraphInfo, first: int = 10) -> list[Ticket] | None:
        first = _check_page(info, first, 0, default=10)
        per_party = await info.context.loaders.tickets.load_many(self._keys_of("care"))
        tickets = sorted(
            (t for found in per_party for t in found),
            key=lambda t: t.created_at or datetime.min,
            reverse=True,
        )
        return [Ticket.of(t) for t in tickets[:first]]

    @strawberry.field(
        description="Interactions in the care system, newest first.", extensions=[CustomerScope()]
    )
    async def interactions(self, info: GraphInfo, first: int = 10) -> list[Interaction] | None:
        first = _check_page(info, first, 0, default=10)
        per_party = await info.context.loaders.interactions.load_many(self._keys_of("care"))
        found = sorted(
            (i for items in per_party for i in items),
            key=lambda i: i.started_at or datetime.min,
            reverse=True,
        )
        return [Interaction.of(i) for i in found[:first]]

    @strawberry.field(
        description="How this customer's records were linked across systems.",
        extensions=[CustomerScope()],
    )
    def identity(self) -> CustomerIdentity:
        i = self._identity
        return CustomerIdentity(
            hub_id=i.hub_id,
            customer_no=i.customer_no,
            links=[
                IdentityLink(system=x.system, key=x.key, matched_on=x.matched_on) for x in i.links
            ],
            conflicts=[
                IdentityConflict(system=c.system, kind=c.kind, detail=c.detail) for c in i.conflicts
            ],
            unresolved_systems=[s for s in ("billing", "care") if not i.is_resolved(s)],
        )

    @strawberry.field(
        description="Offers the campaigns made this customer that are still open, best first, "
        "within the consent and complaint guards (showing them consumes no contact cap).",
        extensions=[CustomerScope()],
    )
    async def next_best_offers(
        self, info: GraphInfo, first: int = 3
    ) -> list[Annotated[NextBestOffer, strawberry.lazy("schema.marketing")]] | None:
        from schema.marketing import next_best_offers

        return await next_best_offers(info, self._identity.hub_id, first)

    @strawberry.field(
        description="Tags, value tier, RFM, lifecycle stage and churn risk, from every "
        "system's records under the hub's insight rules (personal data of class insight: "
        "the policy decides who sees it, e.g. an agent with X-Purpose: marketing).",
        extensions=[CustomerScope()],
    )
    async def insight(self, info: GraphInfo) -> CustomerInsight | None:
        return await resolve_insight(info, self._identity)

    def _keys_of(self, system: str) -> tuple[str, ...]:
        """This customer's keys in a system, or the coded reason there are none to use."""
        identity = self._identity
        if not identity.is_resolved(system):
            raise identity_unresolved(system)
        keys = identity.keys(system)
        if not keys and identity.conflicts_in(system):
            raise identity_conflict(system)
        return keys


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class CustomerConnection:
    total_count: int
    nodes: list[Customer]
    page_info: PageInfo
