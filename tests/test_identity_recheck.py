"""A customer a declared system had no record for is linked once the system opens one: the
"absent" outcome is asked again after ``identity.absent_recheck_s`` (here 1 s), through the
real gateway, the real loyalty simulator and its own store (a member row added behind the
hub's back, as the loyalty team would enrol the customer)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from simulators.seed import seed_dataset
from tests.harness import gateway_env, issue_key, post_graphql, running_gateway, running_simulators
from tests.test_systems import members
from tests.workflow_hub import clean_customers

SEED = 6161
CUSTOMERS = 40
MEMBERS = (
    """query($m: String!) { customerByMsisdn(msisdn: $m) { id loyaltyMembers { memberNo } } }"""
)


def _not_a_member(data_dir: Path) -> tuple[str, dict]:
    """A customer's MSISDN (national) that no member has, owned by the same loyalty instance
    (same prefix range) as an existing member, whose row serves as a template."""
    enrolled = members(data_dir)
    numbers = {m["msisdn"] for m in enrolled}
    for bundle in clean_customers(SEED, CUSTOMERS):
        for line in bundle.subscribers:
            e164 = "+86" + line.msisdn.removeprefix("+86")
            if line.status == "A" and e164 not in numbers:
                template = next(m for m in enrolled if m["msisdn"][3:6] == e164[3:6])
                return e164.removeprefix("+86"), template
    raise AssertionError("every customer of the dataset is a member")


def _enrol(data_dir: Path, msisdn: str, template: dict) -> str:
    member_no = template["member_no"][:-4] + "9999"
    row = {**template, "member_no": member_no, "msisdn": "+86" + msisdn, "member_index": 99_999}
    with sqlite3.connect(data_dir / "loyalty.db") as conn:
        columns = ", ".join(row)
        conn.execute(
            f"INSERT INTO member ({columns}) VALUES ({', '.join('?' * len(row))})",
            tuple(row.values()),
        )
    return member_no


def _seeded(tmp_path: Path) -> tuple[Path, str, dict]:
    """The dataset, and a customer's number no member has with the member row to copy."""
    data_dir = tmp_path / "simdata"
    data_dir.mkdir()
    seed_dataset(data_dir, CUSTOMERS, SEED)
    return (data_dir, *_not_a_member(data_dir))


def _env(sims, tmp_path: Path, **extra: str) -> dict[str, str]:
    return gateway_env(
        sims,
        f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        SWITCHBOARD_CACHE__ENABLED="false",
        SWITCHBOARD_AUDIT__STATE_DIR=str(tmp_path / "keys"),
        **extra,
    )


def test_a_customer_absent_from_a_system_is_linked_once_the_system_has_a_record(tmp_path):
    data_dir, msisdn, template = _seeded(tmp_path)
    with running_simulators(data_dir) as sims:
        env = _env(sims, tmp_path, SWITCHBOARD_IDENTITY__ABSENT_RECHECK_S="1")
        key = issue_key(env, channel="agent", role="agent")
        with running_gateway(env, tmp_path / "gateway.log") as url:

            def memberships() -> list[dict]:
                answer = post_graphql(url, key, MEMBERS, {"m": msisdn}).json()
                assert "errors" not in answer, answer
                return answer["data"]["customerByMsisdn"]["loyaltyMembers"]

            assert memberships() == []  # resolved: absent in loyalty
            member_no = _enrol(data_dir, msisdn, template)
            deadline = time.monotonic() + 30
            while (found := memberships()) == [] and time.monotonic() < deadline:
                time.sleep(0.5)  # asked again once the absent outcome is a second old
            assert found == [{"memberNo": member_no}]


def test_identity_recheck_asks_a_system_again_after_a_fix(tmp_path):
    """``switchboard identity recheck SYSTEM``: absent outcomes (held an hour by default)
    become unresolved now; after a restart the next request asks the system again and links
    the record opened since. Without it the restart alone keeps the customer absent."""
    import subprocess

    from tests.harness import SWITCHBOARD

    data_dir, msisdn, template = _seeded(tmp_path)
    with running_simulators(data_dir) as sims:
        env = _env(sims, tmp_path)
        key = issue_key(env, channel="agent", role="agent")

        def memberships(url: str) -> list[dict]:
            answer = post_graphql(url, key, MEMBERS, {"m": msisdn}).json()
            assert "errors" not in answer, answer
            return answer["data"]["customerByMsisdn"]["loyaltyMembers"]

        with running_gateway(env, tmp_path / "first.log") as url:
            assert memberships(url) == []  # absent in loyalty, for an hour
        member_no = _enrol(data_dir, msisdn, template)
        with running_gateway(env, tmp_path / "second.log") as url:
            assert memberships(url) == []  # a restart alone asks nobody again
        owner = "loyalty-north" if int(msisdn[:3]) < 160 else "loyalty-south"
        for args, code, printed in (
            (["nowhere"], 2, "no system 'nowhere' links customers"),
            ([owner, "--customer", "cus_x"], 2, "--customer must be a hub customer id"),
            ([owner], 0, f"absent outcome(s) in {owner} will be asked again"),
        ):
            done = subprocess.run(
                [*SWITCHBOARD, "identity", "recheck", *args],
                capture_output=True, text=True, env=env, timeout=120,
            )  # fmt: skip
            assert done.returncode == code and printed in done.stdout, done.stdout + done.stderr
        assert not done.stdout.startswith("0 ")
        with running_gateway(env, tmp_path / "third.log") as url:
            assert memberships(url) == [{"memberNo": member_no}]
