"""Obtaining verifications in tests the way a customer would: an OTP read off the phone.

The code goes out through the care simulator (TMF681) and is read back from its
/_sim/messages, so a test that uses these helpers exercises the whole path over the wire.
"""

from __future__ import annotations

import re

import httpx

from policies.masks import mask_mobile

START = """mutation($id: ID!) { startOtp(customerId: $id) { challengeId sentTo attempts } }"""
CONFIRM = """mutation($c: String!, $code: String!) {
  confirmOtp(challengeId: $c, code: $code) { token customerId level method channel } }"""


def _data(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def _post(gateway, document: str, variables: dict, channel: str) -> httpx.Response:
    return gateway.query(document, variables, channel=channel, purpose=None)


def inbox(sims, msisdn: str) -> list[str]:
    response = httpx.get(f"{sims.care}/_sim/messages", params={"msisdn": msisdn})
    response.raise_for_status()
    return [m["content"] for m in response.json()]


def start_otp(gateway, sims, bundle, hub_id: str, channel: str = "app") -> tuple[str, str]:
    """(challenge id, the code the customer's phone received)."""
    started = _data(_post(gateway, START, {"id": hub_id}, channel))["startOtp"]
    line = next(
        s.msisdn
        for s in bundle.subscribers
        if s.status == "A" and mask_mobile(s.msisdn) == started["sentTo"]
    )
    code = re.search(r"验证码是(\d{6})", inbox(sims, line)[-1]).group(1)
    assert code not in str(started)
    return started["challengeId"], code


def otp_token(gateway, sims, bundle, hub_id: str, channel: str = "app") -> str:
    challenge, code = start_otp(gateway, sims, bundle, hub_id, channel)
    confirmed = _data(_post(gateway, CONFIRM, {"c": challenge, "code": code}, channel))
    return confirmed["confirmOtp"]["token"]


def version_line(policy_text: str) -> str:
    """The policy file's `version:` line as written, so a test can swap it for its own tag
    whatever version the shipped file is at."""
    return re.search(r'^version: "[^"]*"$', policy_text, re.MULTILINE).group(0)
