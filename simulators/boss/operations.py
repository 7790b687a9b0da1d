"""The nine BOSS operations: a validated ``<Op>Request`` element in, an ``<Op>Result`` out.

A handler either returns the result element, raises ``BusinessError`` (answered as a non-zero
ResultCode with HTTP 200, the way CBS/BES-style systems report most business errors) or raises
``SoapFault`` (HTTP 500) for the cases the contract makes faults.
"""

from __future__ import annotations

from collections.abc import Callable

from lxml import etree

from simulators.boss.soap import TNS, add_fields, client_fault
from simulators.boss.store import BossStore, CustomerRow, OrderRow, SubscriberRow
from simulators.reference import OFFERINGS, OFFERINGS_BY_ID, Offering

UNKNOWN_CERTIFICATE = "102010001"
UNKNOWN_MSISDN = "102010002"
UNKNOWN_SUBSCRIBER = "102010003"
UNKNOWN_OFFERING = "103020010"
NOT_SELLABLE_OR_SAME = "103020011"
SUBSCRIBER_NOT_ACTIVE = "103020012"
UNKNOWN_ORDER = "103030004"


class BusinessError(Exception):
    def __init__(self, code: str, desc: str) -> None:
        super().__init__(desc)
        self.code = code
        self.desc = desc


Handler = Callable[[BossStore, etree._Element], etree._Element]

_SUB = etree.SubElement


def _q(name: str) -> str:
    return f"{{{TNS}}}{name}"


def _text(req: etree._Element, name: str) -> str | None:
    return req.findtext(_q(name))


def _texts(req: etree._Element, name: str) -> list[str]:
    return [el.text or "" for el in req.iterfind(_q(name))]


def _result(operation: str) -> etree._Element:
    return etree.Element(_q(f"{operation}Result"))


def _yuan(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def _customer(parent: etree._Element, c: CustomerRow) -> None:
    add_fields(
        _SUB(parent, _q("Customer")),
        (
            ("CustomerNo", str(c.customer_no)),
            ("CustomerName", c.name),
            ("Gender", c.gender),
            ("CertificateType", "IDCARD"),
            ("CertificateNo", c.cert_no),
            ("BirthDate", c.birth_date),
            ("Address", c.address),
            ("Email", c.email),
            ("CustLevel", c.cust_level),
            ("CustSegment", c.cust_segment),
            ("CreateDate", c.create_date),
            ("Status", c.status),
        ),
    )


def _subscriber(parent: etree._Element, s: SubscriberRow) -> None:
    offering = OFFERINGS_BY_ID[s.offering_id]
    node = _SUB(parent, _q("Subscriber"))
    add_fields(
        node,
        (
            ("SubscriberNo", s.subscriber_no),
            ("CustomerNo", str(s.customer_no)),
            ("MSISDN", s.msisdn),
            ("IMSI", s.imsi),
            ("ICCID", s.iccid),
            ("Status", s.status),
            ("ActivationDate", s.activation_date),
            ("PrimaryOfferingId", offering.offering_id),
            ("PrimaryOfferingName", offering.name),
            ("ARPU", _yuan(s.arpu_cents)),
            ("MOU", str(s.mou)),
        ),
    )
    # Allowances follow the current offering, so a ChangeOffering shows up here at once.
    add_fields(
        _SUB(node, _q("Usage")),
        (
            ("DataUsedMB", str(s.data_used_mb)),
            ("DataAllowanceMB", str(offering.data_mb)),
            ("VoiceUsedMin", str(s.voice_used_min)),
            ("VoiceAllowanceMin", str(offering.voice_min)),
            ("SmsUsed", str(s.sms_used)),
            ("SmsAllowance", str(offering.sms)),
        ),
    )


def _offering(parent: etree._Element, o: Offering) -> None:
    add_fields(
        _SUB(parent, _q("Offering")),
        (
            ("OfferingId", o.offering_id),
            ("OfferingName", o.name),
            ("MonthlyFee", _yuan(o.monthly_fee_cents)),
            ("DataAllowanceMB", str(o.data_mb)),
            ("VoiceAllowanceMin", str(o.voice_min)),
            ("SmsAllowance", str(o.sms)),
            ("Sellable", "true" if o.sellable else "false"),
        ),
    )


def _order_ack(operation: str, order_id: str, status: str) -> etree._Element:
    result = _result(operation)
    add_fields(result, (("OrderId", order_id), ("Status", status)))
    return result


def query_customer(store: BossStore, req: etree._Element) -> etree._Element:
    cert_no = _text(req, "CertificateNo")
    if cert_no is not None:
        customers = store.customers_by_cert(cert_no)
        if not customers:
            raise BusinessError(UNKNOWN_CERTIFICATE, "No customer holds this certificate number.")
    else:
        customers = store.customers_by_no([int(n) for n in _texts(req, "CustomerNo")])
    result = _result("QueryCustomer")
    for customer in customers:
        _customer(result, customer)
    return result


def query_subscribers(store: BossStore, req: etree._Element) -> etree._Element:
    result = _result("QuerySubscribers")
    for subscriber in store.subscribers_of([int(n) for n in _texts(req, "CustomerNo")]):
        _subscriber(result, subscriber)
    return result


def query_subscriber_by_msisdn(store: BossStore, req: etree._Element) -> etree._Element:
    subscriber = store.subscriber_by_msisdn(_text(req, "MSISDN") or "")
    if subscriber is None:
        raise BusinessError(UNKNOWN_MSISDN, "No subscriber holds this MSISDN.")
    result = _result("QuerySubscriberByMsisdn")
    _subscriber(result, subscriber)
    return result


def query_customer_list(store: BossStore, req: etree._Element) -> etree._Element:
    total, customers = store.customer_page(
        int(_text(req, "BeginRowNum") or 0),
        int(_text(req, "FetchRowNum") or 1),
        _text(req, "CustLevel"),
        _text(req, "CustomerNameStartsWith"),
    )
    result = _result("QueryCustomerList")
    _SUB(result, _q("TotalRowNum")).text = str(total)
    for customer in customers:
        _customer(result, customer)
    return result


def query_offerings(store: BossStore, req: etree._Element) -> etree._Element:
    wanted = _texts(req, "OfferingId")
    offerings = (
        [OFFERINGS_BY_ID[i] for i in dict.fromkeys(wanted) if i in OFFERINGS_BY_ID]
        if wanted
        else list(OFFERINGS)
    )
    result = _result("QueryOfferings")
    for offering in offerings:
        _offering(result, offering)
    return result


def _ineligibility(subscriber: SubscriberRow, offering: Offering) -> tuple[str, str] | None:
    """(reason code, text) why the line cannot switch to ``offering``, or None if it can."""
    if subscriber.status != "A":
        return SUBSCRIBER_NOT_ACTIVE, "The subscriber is not active."
    if subscriber.offering_id == offering.offering_id:
        return NOT_SELLABLE_OR_SAME, "The subscriber already has this offering."
    if not offering.sellable:
        return NOT_SELLABLE_OR_SAME, "The offering is no longer sold."
    return None


def _known_subscriber(store: BossStore, subscriber_no: str) -> SubscriberRow:
    subscriber = store.subscriber(subscriber_no)
    if subscriber is None:
        raise BusinessError(UNKNOWN_SUBSCRIBER, "No subscriber has this number.")
    return subscriber


def check_offering_eligibility(store: BossStore, req: etree._Element) -> etree._Element:
    subscriber = _known_subscriber(store, _text(req, "SubscriberNo") or "")
    offering = OFFERINGS_BY_ID.get(_text(req, "NewOfferingId") or "")
    if offering is None:
        reason: tuple[str, str] | None = (UNKNOWN_OFFERING, "The offering does not exist.")
    else:
        reason = _ineligibility(subscriber, offering)
    result = _result("CheckOfferingEligibility")
    add_fields(
        result,
        (
            ("Eligible", "false" if reason else "true"),
            ("ReasonCode", reason[0] if reason else "0"),
            ("ReasonDesc", reason[1] if reason else "The subscriber may switch to this offering."),
        ),
    )
    return result


def change_offering(store: BossStore, req: etree._Element) -> etree._Element:
    key = _text(req, "IdempotencyKey") or ""
    first = store.remembered("ChangeOffering", key)
    if first is not None:
        return _order_ack("ChangeOffering", *first)
    subscriber = _known_subscriber(store, _text(req, "SubscriberNo") or "")
    new_id = _text(req, "NewOfferingId") or ""
    offering = OFFERINGS_BY_ID.get(new_id)
    if offering is None:
        raise client_fault(f"Offering {new_id} does not exist.", UNKNOWN_OFFERING)
    reason = _ineligibility(subscriber, offering)
    if reason is not None:
        raise BusinessError(*reason)
    order_id = store.change_offering(
        subscriber.subscriber_no, subscriber.offering_id, offering.offering_id, key
    )
    return _order_ack("ChangeOffering", order_id, "COMPLETED")


def _known_order(store: BossStore, order_id: str) -> OrderRow:
    order = store.order(order_id)
    if order is None:
        raise client_fault(f"Order {order_id} does not exist.", UNKNOWN_ORDER)
    return order


def cancel_order(store: BossStore, req: etree._Element) -> etree._Element:
    key = _text(req, "IdempotencyKey") or ""
    first = store.remembered("CancelOrder", key)
    if first is not None:
        return _order_ack("CancelOrder", *first)
    order = _known_order(store, _text(req, "OrderId") or "")
    store.cancel_order(order, key)
    return _order_ack("CancelOrder", order.order_id, "CANCELLED")


def query_order(store: BossStore, req: etree._Element) -> etree._Element:
    order = _known_order(store, _text(req, "OrderId") or "")
    result = _result("QueryOrder")
    add_fields(
        _SUB(result, _q("Order")),
        (
            ("OrderId", order.order_id),
            ("SubscriberNo", order.subscriber_no),
            ("OldOfferingId", order.old_offering_id),
            ("NewOfferingId", order.new_offering_id),
            ("Status", order.status),
            ("CreateTime", order.create_time),
        ),
    )
    return result


HANDLERS: dict[str, Handler] = {
    "QueryCustomer": query_customer,
    "QuerySubscribers": query_subscribers,
    "QuerySubscriberByMsisdn": query_subscriber_by_msisdn,
    "QueryCustomerList": query_customer_list,
    "QueryOfferings": query_offerings,
    "CheckOfferingEligibility": check_offering_eligibility,
    "ChangeOffering": change_offering,
    "CancelOrder": cancel_order,
    "QueryOrder": query_order,
}
