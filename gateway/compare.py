"""`switchboard compare`: the same 360 query through several channels, side by side.

It calls a running gateway over HTTP with each channel's key (the demo writes them to
.switchboard/demo-keys.json) and prints only the fields whose answers differ, which is what a
policy makes of one customer in each channel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

QUERY_BY_ID = """
query Customer360($id: ID!) {
  customer(id: $id) {
    profile { name certificateNumber birthDate address email starLevel }
    subscriptions { msisdn imsi iccid offering { name } }
    billingAccounts { holderName bankCardNumber balance { amount { amount } } }
    tickets(first: 3) { description }
  }
}
"""
FIND = "query($m: String!) { customerByMsisdn(msisdn: $m) { id } }"
START_OTP = """mutation($id: ID!, $m: String!) {
  startOtp(customerId: $id, msisdn: $m) { challengeId } }"""
CONFIRM_OTP = """mutation($c: String!, $code: String!) {
  confirmOtp(challengeId: $c, code: $code) { token } }"""
DENIED = "(denied)"


class CompareFailed(Exception):
    """Why the comparison could not be made, in one line for the operator."""


def _origin(url: httpx.URL) -> str:
    return f"{url.scheme}://{url.netloc.decode()}"


def _json(response: httpx.Response) -> dict:
    """The GraphQL answer, or CompareFailed when what answered is not a gateway."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CompareFailed(
            f"{_origin(response.request.url)} answered HTTP {response.status_code} with no "
            "GraphQL response: is that a Switchboard gateway? (--url)"
        )
    return body


def _flatten(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{path}[{index}]")
    else:
        yield path, value


def _answer(
    client: httpx.Client,
    url: str,
    key: str,
    purpose: str | None,
    hub_id: str,
    verification: str | None = None,
) -> dict:
    headers = {"X-Api-Key": key, **({"X-Purpose": purpose} if purpose else {})}
    if verification:
        headers["X-Verification"] = verification
    body = _json(
        client.post(
            f"{url}/graphql",
            json={"query": QUERY_BY_ID, "variables": {"id": hub_id}},
            headers=headers,
        )
    )
    flat = dict(_flatten((body.get("data") or {}).get("customer") or {}))
    for error in body.get("errors", []):
        path = ".".join(
            f"[{p}]" if isinstance(p, int) else p for p in error.get("path", [])[1:]
        ).replace(".[", "[")
        flat[path] = (
            DENIED if error["extensions"]["code"] == "FIELD_DENIED" else error["extensions"]["code"]
        )
    return flat


def verify_by_otp(
    client: httpx.Client, url: str, key: str, hub_id: str, msisdn: str, phone_url: str
) -> str:
    """Demo only: an OTP sent to the line, read back from the care simulator's outbox.

    Self-service channels act for their verified customer only; this is how the demo shows
    the app's view of the customer the way the customer would get it.
    """
    headers = {"X-Api-Key": key}
    started = _json(
        client.post(
            f"{url}/graphql",
            json={"query": START_OTP, "variables": {"id": hub_id, "m": msisdn}},
            headers=headers,
        )
    )
    if "errors" in started:
        raise CompareFailed(f"could not start an OTP: {started['errors'][0]['extensions']}")
    sent = client.get(f"{phone_url}/_sim/messages", params={"msisdn": msisdn}).json()
    code = re.search(r"(?<![0-9])[0-9]{6}(?![0-9])", sent[-1]["content"]) if sent else None
    if code is None:
        raise CompareFailed("no one-time code arrived at the line (is the care simulator running?)")
    confirmed = _json(
        client.post(
            f"{url}/graphql",
            json={
                "query": CONFIRM_OTP,
                "variables": {
                    "c": started["data"]["startOtp"]["challengeId"],
                    "code": code.group(0),
                },
            },
            headers=headers,
        )
    )
    if "errors" in confirmed:
        raise CompareFailed(f"could not confirm the OTP: {confirmed['errors'][0]['extensions']}")
    return confirmed["data"]["confirmOtp"]["token"]


def compare(
    url: str,
    keys: dict[str, str],
    msisdn: str,
    channels: list[str],
    purposes: dict[str, str],
    verifications: dict[str, str] | None = None,
    verify_by_otp_in: tuple[str, ...] = (),
    phone_url: str | None = None,
) -> str:
    """The differing fields; `verifications` holds X-Verification tokens per channel (the app
    acts for its OTP-verified customer only, so without one it sees nothing of the customer);
    channels in `verify_by_otp_in` get one by an OTP read from the simulator at `phone_url`."""
    verifications = dict(verifications or {})
    missing = [c for c in {"agent", *channels, *verify_by_otp_in} if c not in keys]
    if missing:
        raise CompareFailed(f"no key for channel(s) {', '.join(sorted(missing))} (--keys)")
    try:
        with httpx.Client(timeout=30) as client:
            answers = _answers(
                client,
                url,
                keys,
                msisdn,
                channels,
                purposes,
                verifications,
                verify_by_otp_in,
                phone_url,
            )
    except httpx.TransportError as error:
        raise CompareFailed(
            f"nothing answers at {_origin(error.request.url)} ({type(error).__name__}): is the "
            "demo running? Give the gateway with --url or SWITCHBOARD_PORT/SWITCHBOARD_HOST"
        ) from None
    return _table(answers, channels, purposes)


def _answers(
    client: httpx.Client,
    url: str,
    keys: dict[str, str],
    msisdn: str,
    channels: list[str],
    purposes: dict[str, str],
    verifications: dict[str, str],
    verify_by_otp_in: tuple[str, ...],
    phone_url: str | None,
) -> dict[str, dict]:
    found = _json(
        client.post(
            f"{url}/graphql",
            json={"query": FIND, "variables": {"m": msisdn}},
            headers={"X-Api-Key": keys["agent"], "X-Purpose": "service"},
        )
    )
    customer = (found.get("data") or {}).get("customerByMsisdn")
    if customer is None:
        codes = sorted({e.get("extensions", {}).get("code") for e in found.get("errors", [])})
        raise CompareFailed(f"no customer found for that MSISDN ({', '.join(codes) or 'none'})")
    for channel in verify_by_otp_in:
        if channel in channels and channel not in verifications and phone_url:
            verifications[channel] = verify_by_otp(
                client, url, keys[channel], customer["id"], msisdn, phone_url
            )
    return {
        channel: _answer(
            client,
            url,
            keys[channel],
            purposes.get(channel),
            customer["id"],
            verifications.get(channel),
        )
        for channel in channels
    }


def _table(answers: dict[str, dict], channels: list[str], purposes: dict[str, str]) -> str:
    paths = sorted({p for a in answers.values() for p in a})
    differing = [p for p in paths if len({str(a.get(p)) for a in answers.values()}) > 1]
    width = max((len(p) for p in differing), default=10)
    columns = [f"{c} ({purposes.get(c) or 'no purpose'})" for c in channels]
    col = max(24, *(len(c) for c in columns))
    lines = [f"{'field':<{width}}  " + "  ".join(f"{c:<{col}}" for c in columns)]
    for path in differing:
        cells = [str(answers[c].get(path, "")) for c in channels]
        lines.append(f"{path:<{width}}  " + "  ".join(f"{v:<{col}}" for v in cells))
    same = len(paths) - len(differing)
    lines.append(f"({same} other fields are the same in every channel)")
    return "\n".join(lines)


def load_keys(path: Path) -> dict[str, str]:
    """The demo's keys file (channel -> key), or CompareFailed saying how to get one."""
    try:
        keys = json.loads(path.read_text())
    except FileNotFoundError:
        raise CompareFailed(f"no keys file at {path}: `switchboard demo` writes it") from None
    except (OSError, ValueError) as error:
        raise CompareFailed(f"cannot read the keys file {path}: {error}") from None
    if not isinstance(keys, dict):
        raise CompareFailed(f"{path} is not a JSON object channel -> key")
    return keys
