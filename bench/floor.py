"""The floor: the 360 query's six backend calls made directly and concurrently by a plain client.

It is what a channel would pay calling the three systems itself, with no hub in between: the
gateway's overhead is measured against it. aiohttp, the cheapest Python client (the same pool
the gateway's adapters use), so that the floor is not inflated by its client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp

from adapters.billing import ACCOUNTS, BALANCES, BILLS
from adapters.care import TICKETS
from simulators.dataset import CustomerBundle

SOAP = (
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:b="http://boss.simulator.switchboard/crm/v1"><soapenv:Body><b:{op}RequestMsg>'
    "<b:RequestHeader><b:Version>1.0</b:Version><b:BusinessCode>{op}</b:BusinessCode>"
    "<b:MessageSeq>bench</b:MessageSeq><b:LoginSystemCode>BENCH</b:LoginSystemCode>"
    "</b:RequestHeader><b:{op}Request><b:CustomerNo>{no}</b:CustomerNo></b:{op}Request>"
    "</b:{op}RequestMsg></soapenv:Body></soapenv:Envelope>"
)


def floor_operation(
    session: aiohttp.ClientSession, sims, bundles: list[CustomerBundle]
) -> Callable[[int], Awaitable[bool]]:
    boss = f"{sims.boss}/boss/services/BossService"

    async def soap(op: str, customer_no: str) -> bool:
        async with session.post(
            boss,
            data=SOAP.format(op=op, no=customer_no),
            headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": op},
        ) as answer:
            await answer.read()
            return answer.status == 200

    async def rest(url: str, params: dict) -> bool:
        async with session.get(url, params=params) as answer:
            await answer.json()
            return answer.status == 200

    async def operation(number: int) -> bool:
        bundle = bundles[number % len(bundles)]
        account, party = bundle.account.id, bundle.party.id
        answers = await asyncio.gather(
            soap("QueryCustomer", bundle.customer.customer_no),
            soap("QuerySubscribers", bundle.customer.customer_no),
            rest(f"{sims.billing}{ACCOUNTS}", {"id": account}),
            rest(f"{sims.billing}{BALANCES}", {"billingAccount.id": account}),
            rest(f"{sims.billing}{BILLS}", {"billingAccount.id": account, "limit": 3}),
            rest(f"{sims.care}{TICKETS}", {"relatedParty.id": party}),
        )
        return all(answers)

    return operation
