"""The customer system (BOSS): a legacy SOAP 1.1 document/literal service, through zeep.

zeep loads the WSDL once, at start-up and off the event loop (its constructor is synchronous),
and builds every request envelope from it, so a request that does not fit the contract fails
here rather than at the vendor. Answers are read with lxml directly (``raw_response``): zeep's
object mapping costs about 8x raw lxml, and the vendor style needs handling zeep does not do
anyway: business errors come back either as SOAP faults or as HTTP 200 with a non-zero
``ResultCode`` in the ``ResultHeader``, and both must become the error taxonomy.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx
import zeep
from lxml import etree
from zeep.proxy import AsyncServiceProxy
from zeep.transports import AsyncTransport

from adapters.errors import (
    AdapterError,
    BadResponse,
    BusinessRejected,
    NotFound,
    Unavailable,
)
from adapters.parsing import chunks, read_xml, reading, to_date, to_datetime, unique
from adapters.records import (
    CustomerProfile,
    Offering,
    Order,
    Page,
    StarLevel,
    Subscription,
    Usage,
)
from adapters.resilience import (
    CallPolicy,
    Endpoint,
    make_http_client,
    status_error,
    transport_error,
)
from adapters.transport import CappedSyncTransport

NS = "http://boss.simulator.switchboard/crm/v1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
BINDING = f"{{{NS}}}BossServiceSoapBinding"
MAX_BATCH = 100

# Result codes that mean "no such record"; any other non-zero code is a business refusal.
NOT_FOUND_CODES = frozenset({"102010001", "102010002", "102010003", "103030004"})

STAR_LEVELS = {
    "1": StarLevel.NORMAL,
    "2": StarLevel.SILVER,
    "3": StarLevel.GOLD,
    "4": StarLevel.DIAMOND,
    "5": StarLevel.PREMIUM,
}
STAR_LEVEL_CODES = {level: code for code, level in STAR_LEVELS.items()}


def _q(name: str) -> str:
    return f"{{{NS}}}{name}"


class BossAdapter:
    """Implements adapters.contract.CustomerSystem over the BOSS SOAP service."""

    name = "boss"

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        wsdl_path: str,
        service_path: str,
        login_system_code: str,
    ) -> None:
        self._endpoint = endpoint
        self._wsdl_url = endpoint.base_url.rstrip("/") + wsdl_path
        self._service_url = endpoint.base_url.rstrip("/") + service_path
        self._login_system_code = login_system_code
        self._policy = CallPolicy(endpoint)
        self._http = make_http_client(endpoint)
        self._limits = endpoint.reply_limits
        self._service: Any = None
        self._sequence = itertools.count(1)
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        async with self._starting:
            if self._service is None:
                # zeep fetches and compiles the WSDL synchronously: keep it off the event loop.
                self._service = await asyncio.to_thread(self._load_service)

    def _load_service(self) -> AsyncServiceProxy:
        wsdl_http = httpx.Client(
            timeout=self._endpoint.timeout_s * 5,
            transport=CappedSyncTransport(self._endpoint.max_response_bytes),
        )
        try:
            transport = AsyncTransport(client=self._http, wsdl_client=wsdl_http)
            client = zeep.AsyncClient(
                self._wsdl_url,
                transport=transport,
                settings=zeep.Settings(raw_response=True, strict=True),
            )
        except httpx.HTTPError as error:
            raise transport_error(self.name, error) from None
        except (zeep.exceptions.Error, etree.XMLSyntaxError):
            raise BadResponse(self.name, "published a WSDL zeep cannot load") from None
        finally:
            wsdl_http.close()
        return AsyncServiceProxy(client, client.wsdl.bindings[BINDING], address=self._service_url)

    async def close(self) -> None:
        await self._http.aclose()

    async def ping(self) -> None:
        await self._call("QueryOfferings", {"OfferingId": ["OF0000"]})

    # --- reads ------------------------------------------------------------------------------

    async def get_customers(self, customer_nos: Sequence[str]) -> Mapping[str, CustomerProfile]:
        profiles: dict[str, CustomerProfile] = {}
        for batch in chunks(unique(customer_nos), MAX_BATCH):
            result = await self._read("QueryCustomer", {"CustomerNo": batch})
            for element in result.iterfind(_q("Customer")):
                profile = _customer(element)
                profiles[profile.customer_no] = profile
        return profiles

    async def find_customer_by_certificate(self, certificate_no: str) -> CustomerProfile:
        result = await self._read("QueryCustomer", {"CertificateNo": certificate_no})
        element = result.find(_q("Customer"))
        if element is None:
            raise NotFound(self.name, "has no customer with that certificate")
        return _customer(element)

    async def get_subscriptions(
        self, customer_nos: Sequence[str]
    ) -> Mapping[str, Sequence[Subscription]]:
        wanted = unique(customer_nos)
        lines: dict[str, list[Subscription]] = {no: [] for no in wanted}
        for batch in chunks(wanted, MAX_BATCH):
            result = await self._read("QuerySubscribers", {"CustomerNo": batch})
            for element in result.iterfind(_q("Subscriber")):
                line = _subscriber(element)
                lines.setdefault(line.customer_no, []).append(line)
        return lines

    async def find_subscription_by_msisdn(self, msisdn: str) -> Subscription:
        result = await self._read("QuerySubscriberByMsisdn", {"MSISDN": msisdn})
        element = result.find(_q("Subscriber"))
        if element is None:
            raise BadResponse(self.name, "answered without the subscriber")
        return _subscriber(element)

    async def search_customers(
        self,
        offset: int,
        limit: int,
        star_level: StarLevel | None = None,
        name_prefix: str | None = None,
    ) -> Page[CustomerProfile]:
        request: dict[str, Any] = {"BeginRowNum": offset, "FetchRowNum": limit}
        if star_level is not None:
            request["CustLevel"] = STAR_LEVEL_CODES[star_level]
        if name_prefix:
            request["CustomerNameStartsWith"] = name_prefix
        result = await self._read("QueryCustomerList", request)
        with reading(self.name, "customer list"):
            total = int(_text(result, "TotalRowNum"))
        return Page(total, tuple(_customer(e) for e in result.iterfind(_q("Customer"))))

    async def get_offerings(self, offering_ids: Sequence[str] = ()) -> Sequence[Offering]:
        result = await self._read("QueryOfferings", {"OfferingId": unique(offering_ids)})
        return [_offering(e) for e in result.iterfind(_q("Offering"))]

    async def check_eligibility(self, subscriber_no: str, offering_id: str) -> tuple[bool, str]:
        result = await self._read(
            "CheckOfferingEligibility",
            {"SubscriberNo": subscriber_no, "NewOfferingId": offering_id},
        )
        with reading(self.name, "eligibility answer"):
            return _text(result, "Eligible") == "true", _text(result, "ReasonCode")

    async def get_order(self, order_id: str) -> Order:
        result = await self._read("QueryOrder", {"OrderId": order_id})
        element = result.find(_q("Order"))
        if element is None:
            raise BadResponse(self.name, "answered without the order")
        return _order(element)

    # --- writes (never retried here; the idempotency key makes the caller's repeat safe) ----

    async def change_offering(
        self, subscriber_no: str, offering_id: str, idempotency_key: str
    ) -> Order:
        result = await self._policy.write(
            "ChangeOffering",
            self._call,
            "ChangeOffering",
            {
                "SubscriberNo": subscriber_no,
                "NewOfferingId": offering_id,
                "IdempotencyKey": idempotency_key,
            },
        )
        with reading(self.name, "order answer"):
            order_id = _text(result, "OrderId")
        return await self.get_order(order_id)

    async def cancel_order(self, order_id: str, idempotency_key: str) -> Order:
        await self._policy.write(
            "CancelOrder",
            self._call,
            "CancelOrder",
            {"OrderId": order_id, "IdempotencyKey": idempotency_key},
        )
        return await self.get_order(order_id)

    # --- the SOAP exchange ------------------------------------------------------------------

    async def _read(self, operation: str, request: dict[str, Any]) -> etree._Element:
        return await self._policy.read(operation, self._call, operation, request)

    async def _call(self, operation: str, request: dict[str, Any]) -> etree._Element:
        """Send one operation; the ``<Op>Result`` element, or an AdapterError."""
        if self._service is None:
            # BOSS was down when the hub started: load the WSDL now (once, under the lock).
            await self.start()
        header = {
            "Version": "1.0",
            "BusinessCode": operation,
            "MessageSeq": f"SB{time.time_ns()}{next(self._sequence) % 1000:03d}",
            "LoginSystemCode": self._login_system_code,
        }
        try:
            response = await getattr(self._service, operation)(
                RequestHeader=header, **{f"{operation}Request": request}
            )
        except httpx.HTTPError as error:
            raise transport_error(self.name, error) from None
        except (zeep.exceptions.Error, TypeError, ValueError):
            # zeep refused to build the envelope: the request does not fit the contract.
            raise BusinessRejected(
                self.name, f"{operation} request does not fit the WSDL"
            ) from None
        return self._result(
            operation, response.status_code, response.content, response.headers.get("content-type")
        )

    def _result(
        self, operation: str, status: int, content: bytes, content_type: str | None
    ) -> etree._Element:
        if not content:
            raise status_error(self.name, status) or BadResponse(
                self.name, f"answered {operation} with an empty body"
            )
        try:
            # No DTDs, entities or network access, within the depth and size limits.
            envelope = read_xml(self.name, content, content_type, self._limits)
        except BadResponse as unreadable:
            raise status_error(self.name, status) or unreadable from None
        body = envelope.find(f"{{{SOAP_ENV}}}Body")
        if body is None or len(body) == 0:
            raise BadResponse(self.name, f"answered {operation} without a SOAP body")
        payload = body[0]
        if payload.tag == f"{{{SOAP_ENV}}}Fault":
            raise self._fault(operation, payload)
        if status != 200:
            raise status_error(self.name, status) or BadResponse(
                self.name, f"answered {operation} with HTTP {status}"
            )
        if payload.tag != _q(f"{operation}ResultMsg"):
            raise BadResponse(self.name, f"answered {operation} with an unexpected message")
        result_code = payload.findtext(f"{_q('ResultHeader')}/{_q('ResultCode')}")
        if result_code is None:
            raise BadResponse(self.name, f"answered {operation} without a ResultCode")
        if result_code != "0":
            raise self._business_error(operation, result_code)
        result = payload.find(_q(f"{operation}Result"))
        if result is None:
            raise BadResponse(self.name, f"answered {operation} without a result")
        return result

    def _fault(self, operation: str, fault: etree._Element) -> AdapterError:
        # faultcode keeps its namespace prefix ("soapenv:Client"); only the local part counts.
        faultcode = (fault.findtext("faultcode") or "").rpartition(":")[2]
        error_code = fault.findtext(f"detail/{_q('ErrorCode')}")
        if faultcode == "Client":
            return self._business_error(operation, error_code or "unknown")
        return Unavailable(
            self.name, f"failed {operation} (SOAP Server fault)", backend_code=error_code
        )

    def _business_error(self, operation: str, code: str) -> AdapterError:
        if code in NOT_FOUND_CODES:
            return NotFound(self.name, "has no such record", backend_code=code)
        return BusinessRejected(self.name, f"refused {operation}", backend_code=code)


def _text(element: etree._Element, name: str) -> str:
    value = element.findtext(_q(name))
    if value is None:
        raise KeyError(name)
    return value


def _optional(element: etree._Element, name: str) -> str | None:
    return element.findtext(_q(name)) or None


def _customer(element: etree._Element) -> CustomerProfile:
    with reading("boss", "customer"):
        return CustomerProfile(
            customer_no=_text(element, "CustomerNo"),
            name=_text(element, "CustomerName"),
            gender=_text(element, "Gender"),
            certificate_type=_text(element, "CertificateType"),
            certificate_no=_text(element, "CertificateNo"),
            birth_date=to_date(_optional(element, "BirthDate")),
            address=_text(element, "Address"),
            email=_optional(element, "Email"),
            star_level=STAR_LEVELS[_text(element, "CustLevel")],
            segment=_text(element, "CustSegment"),
            customer_since=to_date(_optional(element, "CreateDate")),
            status=_text(element, "Status"),
        )


def _subscriber(element: etree._Element) -> Subscription:
    with reading("boss", "subscriber"):
        usage = element.find(_q("Usage"))
        if usage is None:
            raise KeyError("Usage")
        return Subscription(
            subscriber_no=_text(element, "SubscriberNo"),
            customer_no=_text(element, "CustomerNo"),
            msisdn=_text(element, "MSISDN"),
            imsi=_text(element, "IMSI"),
            iccid=_text(element, "ICCID"),
            status=_text(element, "Status"),
            activated_on=to_date(_optional(element, "ActivationDate")),
            offering_id=_text(element, "PrimaryOfferingId"),
            offering_name=_text(element, "PrimaryOfferingName"),
            arpu=Decimal(_text(element, "ARPU")),
            mou=int(_text(element, "MOU")),
            usage=Usage(
                data_used_mb=int(_text(usage, "DataUsedMB")),
                data_allowance_mb=int(_text(usage, "DataAllowanceMB")),
                voice_used_min=int(_text(usage, "VoiceUsedMin")),
                voice_allowance_min=int(_text(usage, "VoiceAllowanceMin")),
                sms_used=int(_text(usage, "SmsUsed")),
                sms_allowance=int(_text(usage, "SmsAllowance")),
            ),
        )


def _offering(element: etree._Element) -> Offering:
    with reading("boss", "offering"):
        return Offering(
            id=_text(element, "OfferingId"),
            name=_text(element, "OfferingName"),
            monthly_fee=Decimal(_text(element, "MonthlyFee")),
            data_allowance_mb=int(_text(element, "DataAllowanceMB")),
            voice_allowance_min=int(_text(element, "VoiceAllowanceMin")),
            sms_allowance=int(_text(element, "SmsAllowance")),
            sellable=_text(element, "Sellable") == "true",
        )


def _order(element: etree._Element) -> Order:
    with reading("boss", "order"):
        return Order(
            id=_text(element, "OrderId"),
            subscriber_no=_text(element, "SubscriberNo"),
            old_offering_id=_text(element, "OldOfferingId"),
            new_offering_id=_text(element, "NewOfferingId"),
            status=_text(element, "Status"),
            created_at=to_datetime(_optional(element, "CreateTime")),
        )
