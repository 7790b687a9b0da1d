"""A system onboarded by its files alone: dropped into the systems folder, live after a restart.

The bundled Aurora loyalty files (systems/loyalty) are copied into an empty folder that a real
gateway reads; the loyalty simulator's two instances (SOAP 1.2, rpc/literal) answer on
loopback. What the onboarded system must get with no code: graph fields masked per policy,
crosswalk keys classified, batched calls, the record cache, the access log, partial answers
while an instance is down and a degraded-but-ready /readyz for an optional system.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.harness import REPO, gateway_env, issue_key, post_graphql, running_gateway

LOYALTY = REPO / "systems" / "loyalty"
QUERY = """
query Loyalty($id: ID!) {
  customer(id: $id) {
    id
    profile { name }
    loyaltyMembers {
      memberNo msisdn fullName tier pointsBalance expiryDate status
      pointsHistory(first: 3) { totalCount items { entryId points postedAt reason } }
    }
    identity { links { system key matchedOn } }
  }
}
"""
FIND = "query Find($m: String!) { customerByMsisdn(msisdn: $m) { id } }"
PAGE = "{ customers(first: 50) { nodes { id loyaltyMembers { memberNo tier } } } }"


def members(data_dir: Path) -> list[dict]:
    with sqlite3.connect(data_dir / "loyalty.db") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM member ORDER BY member_index")]


def loyalty_calls(client: httpx.Client, url: str) -> dict[str, int]:
    return client.get(f"{url}/_sim/stats").json()["calls"]


@pytest.fixture(scope="module")
def onboarding(sims, hub_data_dir, tmp_path_factory):
    """A gateway over an empty systems folder, and a way to restart it after changes."""
    state = tmp_path_factory.mktemp("systems")
    folder = state / "systems"
    folder.mkdir()
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state / 'hub.db'}",
        SWITCHBOARD_SYSTEMS_DIR=str(folder),
        SWITCHBOARD_AUDIT__STATE_DIR=str(state),
    )
    keys = {
        channel: issue_key(env, channel=channel, role=role, scopes=("customer:read",))
        for channel, role in (("agent", "agent"), ("partner", "partner"))
    }
    return {"env": env, "keys": keys, "folder": folder, "state": state}


def ask(url: str, key: str, document: str, variables: dict | None = None, **kw) -> dict:
    response = post_graphql(url, key, document, variables, **kw)
    assert response.status_code < 500, response.text
    return response.json()


def test_a_system_dropped_into_the_folder_is_onboarded_by_its_files_alone(
    onboarding, sims, hub_data_dir, sim_client
):
    env, keys, folder = onboarding["env"], onboarding["keys"], onboarding["folder"]
    member = next(m for m in members(hub_data_dir) if m["member_no"].startswith("0"))
    national = member["msisdn"].removeprefix("+86")

    with running_gateway(env, onboarding["state"] / "before.log") as url:
        hub_id = ask(url, keys["agent"], FIND, {"m": national}, purpose="service")["data"][
            "customerByMsisdn"
        ]["id"]
        before = ask(url, keys["agent"], QUERY, {"id": hub_id}, purpose="service")
        assert before["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"

    shutil.copytree(LOYALTY, folder / "loyalty")
    with running_gateway(env, onboarding["state"] / "after.log") as url:
        clear = ask(url, keys["agent"], QUERY, {"id": hub_id}, purpose="service")
        assert "errors" not in clear, clear
        (found,) = clear["data"]["customer"]["loyaltyMembers"]
        # Leading zeros kept byte for byte; the number in E.164 as the system wrote it.
        assert found["memberNo"] == member["member_no"]
        assert found["msisdn"] == member["msisdn"]
        assert found["fullName"] == member["full_name"]
        assert found["tier"] == member["tier"].lower()  # the mapping's value map
        assert found["pointsBalance"] == member["points_balance"]
        history = found["pointsHistory"]
        assert history["totalCount"] >= len(history["items"]) > 0
        # A lazily linked system's link shows from the next answer on (this one's identity was
        # read before the loyalty field linked it).
        again = ask(url, keys["agent"], QUERY, {"id": hub_id}, purpose="service")
        links = again["data"]["customer"]["identity"]["links"]
        owner = "loyalty-north" if 130 <= int(national[:3]) <= 159 else "loyalty-south"
        assert {"system": owner, "key": member["member_no"], "matchedOn": "msisdn"} in links

        # Without a purpose the agent sees the declared masks; the partner too, and it sees
        # the crosswalk key (the member number) masked as well.
        for channel, purpose in (("agent", None), ("partner", None)):
            masked = ask(url, keys[channel], QUERY, {"id": hub_id}, purpose=purpose)
            (shown,) = masked["data"]["customer"]["loyaltyMembers"]
            assert shown["memberNo"] == "*" * 6 + member["member_no"][-4:]
            assert shown["fullName"] != member["full_name"] and "*" in shown["fullName"]
            keys_shown = {
                link["key"]
                for link in masked["data"]["customer"]["identity"]["links"]
                if link["system"] == owner
            }
            assert keys_shown == {"*" * 6 + member["member_no"][-4:]}
        # The access log records each loyalty field path with the level it went out at.
        with sqlite3.connect(onboarding["state"] / "hub.db") as conn:
            rows = conn.execute("SELECT disclosed FROM audit_record").fetchall()
        disclosed = [json.loads(row[0]) for row in rows]
        levels = {
            level
            for record in disclosed
            for path, level in record.items()
            if path.endswith("loyaltyMembers.memberNo")
        }
        assert levels == {"clear", "masked"}


def test_a_page_is_batched_per_instance_and_cached(onboarding, sims, sim_client):
    env, keys, folder = onboarding["env"], onboarding["keys"], onboarding["folder"]
    if not (folder / "loyalty").exists():
        shutil.copytree(LOYALTY, folder / "loyalty")
    urls = (sims.loyalty_north, sims.loyalty_south)
    for instance in urls:
        sim_client.post(f"{instance}/_sim/reset").raise_for_status()
    with running_gateway(env, onboarding["state"] / "page.log") as url:
        # First sight of the page's customers waits for billing and care, not for loyalty.
        ask(url, keys["agent"], "{ customers(first: 50) { nodes { id } } }", purpose="service")
        assert all(sum(loyalty_calls(sim_client, u).values()) == 0 for u in urls)
        page = ask(url, keys["agent"], PAGE, purpose="service")
        assert "errors" not in page, page
        nodes = page["data"]["customers"]["nodes"]
        assert len(nodes) == 50 and any(n["loyaltyMembers"] for n in nodes)
        first = [loyalty_calls(sim_client, u) for u in urls]
        for calls in first:
            # A page of 50 customers: one lookup batch and one read batch per instance at
            # most (a customer's lines add up to fewer than two batches of 100).
            assert calls.get("getMembersByMsisdn", 0) <= 2
            assert calls.get("getMembers", 0) <= 1
        assert sum(c.get("getMembers", 0) for c in first) >= 1
        again = ask(url, keys["agent"], PAGE, purpose="service")
        assert again["data"] == page["data"]
        # Linked once (the crosswalk), records from the cache: no new loyalty call.
        assert [loyalty_calls(sim_client, u) for u in urls] == first


def test_an_optional_system_down_fails_only_its_fields_and_degrades_readiness(
    onboarding, sims, hub_data_dir, sim_client
):
    env, keys, folder = onboarding["env"], onboarding["keys"], onboarding["folder"]
    if not (folder / "loyalty").exists():
        shutil.copytree(LOYALTY, folder / "loyalty")
    south = next(m for m in reversed(members(hub_data_dir)) if int(m["msisdn"][3:6]) >= 160)
    sim_client.post(f"{sims.loyalty_south}/_sim/control", json={"down": True}).raise_for_status()
    try:
        with running_gateway(env, onboarding["state"] / "down.log") as url:
            ready = httpx.get(f"{url}/readyz")
            assert ready.status_code == 200
            body = ready.json()
            assert body["status"] == "degraded"
            assert body["systems"]["loyalty-south"]["status"] == "down"
            assert body["systems"]["loyalty-south"]["required"] is False
            assert body["systems"]["loyalty-north"]["status"] == "up"
            hub_id = ask(url, keys["agent"], FIND, {"m": south["msisdn"][3:]}, purpose="service")[
                "data"
            ]["customerByMsisdn"]["id"]
            answer = ask(url, keys["agent"], QUERY, {"id": hub_id}, purpose="service")
            customer = answer["data"]["customer"]
            assert customer["profile"]["name"] is not None  # BOSS still answers
            assert customer["loyaltyMembers"] is None
            (error,) = answer["errors"]
            assert error["path"] == ["customer", "loyaltyMembers"]
            assert error["extensions"]["code"] == "BACKEND_UNAVAILABLE"
            assert south["full_name"] not in json.dumps(answer["errors"], ensure_ascii=False)
    finally:
        sim_client.post(f"{sims.loyalty_south}/_sim/reset").raise_for_status()


REDEEM = """
mutation Redeem($id: ID!, $member: String!, $points: Int!, $key: String!) {
  redeemLoyaltyPoints(customerId: $id, memberNo: $member, points: $points,
                      rewardCode: "CINEMA-2", idempotencyKey: $key) {
    redemptionId pointsBalance
  }
}
"""
BALANCE = "query B($id: ID!) { customer(id: $id) { loyaltyMembers { memberNo pointsBalance } } }"


def redemptions(data_dir: Path, member_no: str) -> int:
    with sqlite3.connect(data_dir / "loyalty.db") as conn:
        return conn.execute(
            "SELECT count(*) FROM redemption WHERE member_no = ?", (member_no,)
        ).fetchone()[0]


def test_a_declared_write_needs_its_scope_goes_out_once_per_key_and_evicts(
    onboarding, sims, hub_data_dir
):
    env, keys, folder = onboarding["env"], onboarding["keys"], onboarding["folder"]
    if not (folder / "loyalty").exists():
        shutil.copytree(LOYALTY, folder / "loyalty")
    redeemer = issue_key(env, channel="agent", role="agent", scopes=("loyalty:redeem",))
    rich = next(m for m in members(hub_data_dir) if m["points_balance"] > 500)
    other = next(m for m in members(hub_data_dir) if m["member_no"] != rich["member_no"])
    with running_gateway(env, onboarding["state"] / "write.log") as url:
        hub_id = ask(url, keys["agent"], FIND, {"m": rich["msisdn"][3:]}, purpose="service")[
            "data"
        ]["customerByMsisdn"]["id"]
        before = ask(url, redeemer, BALANCE, {"id": hub_id}, purpose="service")
        (member,) = before["data"]["customer"]["loyaltyMembers"]  # now cached
        # Asked again, linked and cached: this whole answer is kept (gateway/answer_cache.py).
        assert ask(url, redeemer, BALANCE, {"id": hub_id}, purpose="service") == before
        start = member["pointsBalance"]
        args = {"id": hub_id, "member": rich["member_no"], "points": 100, "key": "redeem-0001"}

        refused = ask(url, keys["agent"], REDEEM, args, purpose="service")
        assert refused["errors"][0]["extensions"]["code"] == "SCOPE_REQUIRED"
        assert redemptions(hub_data_dir, rich["member_no"]) == 0

        first = ask(url, redeemer, REDEEM, args, purpose="service")
        assert "errors" not in first, first
        done = first["data"]["redeemLoyaltyPoints"]
        assert done["pointsBalance"] == start - 100
        again = ask(url, redeemer, REDEEM, args, purpose="service")  # a caller's retry
        assert again["data"]["redeemLoyaltyPoints"] == done
        assert redemptions(hub_data_dir, rich["member_no"]) == 1  # in the system's own store
        # The same key with another input is refused before anything is sent: the system
        # would answer it with the first redemption, and the caller would think it made two.
        reused = ask(url, redeemer, REDEEM, {**args, "points": 101}, purpose="service")
        assert reused["errors"][0]["extensions"]["code"] == "IDEMPOTENCY_KEY_REUSED", reused
        assert reused["data"]["redeemLoyaltyPoints"] is None
        assert redemptions(hub_data_dir, rich["member_no"]) == 1
        # The write evicted the cached member: the next read shows the new balance.
        after = ask(url, redeemer, BALANCE, {"id": hub_id}, purpose="service")
        assert after["data"]["customer"]["loyaltyMembers"][0]["pointsBalance"] == start - 100

        too_much = ask(url, redeemer, REDEEM, {**args, "points": 10**8, "key": "redeem-0002"})
        error = too_much["errors"][0]["extensions"]
        assert (error["code"], error["backendCode"]) == ("BUSINESS_REJECTED", "LTY-422")
        stranger = ask(
            url, redeemer, REDEEM, {**args, "member": other["member_no"], "key": "r-03xyzab"}
        )
        assert stranger["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        bad_key = ask(url, redeemer, REDEEM, {**args, "key": "short"})
        assert bad_key["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        partner = ask(url, keys["partner"], REDEEM, {**args, "key": "redeem-0004"})
        assert partner["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
        assert redemptions(hub_data_dir, rich["member_no"]) == 1


def test_systems_try_shows_one_call_masked_and_refuses_terms_the_policy_does_not_know(
    sims, hub_data_dir, tmp_path
):
    """``systems try``: the records of one live call, masked as the channel and purpose
    would see them; a channel or purpose the policy does not know stops it (exit 2) rather
    than quietly masking as the policy's default."""
    import subprocess
    import sys

    member = next(m for m in members(hub_data_dir) if m["msisdn"].startswith("+8613"))
    env = {
        "SWITCHBOARD_CONFIG": "/nonexistent.toml",
        "PATH": "/usr/bin:/bin",
        "SWITCHBOARD_SYSTEM_URLS": json.dumps({"loyalty-north": sims.loyalty_north}),
    }

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "systems", "try", "loyalty", "members", *args],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
        )  # fmt: skip

    done = run("--key", member["member_no"], "--instance", "loyalty-north")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = json.loads(done.stdout)
    (record,) = shown["records"]
    # Masked for an agent without a purpose, as the graph would show it.
    assert record["memberNo"] == "******" + member["member_no"][-4:]
    assert record["pointsBalance"] == member["points_balance"]
    for args, unknown in (
        (("--channel", "telepathy"), "unknown channel 'telepathy'"),
        (("--purpose", "curiosity"), "unknown purpose 'curiosity'"),
    ):
        refused = run("--key", member["member_no"], *args)
        assert refused.returncode == 2 and unknown in refused.stdout, refused.stdout

    # A path that finds nothing reads as "empty": try says so, with the field's line.
    folder = tmp_path / "systems"
    shutil.copytree(LOYALTY, folder / "loyalty")
    mapping = folder / "loyalty" / "mapping.yaml"
    mapping.write_text(
        mapping.read_text().replace("path: pointsBalance,", "path: pointBalance,", 1)
    )
    typo = run("--key", member["member_no"], "--dir", str(folder))
    assert typo.returncode == 0, typo.stdout + typo.stderr
    line = next(i for i, t in enumerate(mapping.read_text().splitlines(), 1) if "pointBalance" in t)
    assert (
        f"note: field 'pointsBalance' was empty in all 1 record(s): check its path "
        f"(pointBalance) at {mapping}:{line}"
    ) in typo.stderr
    nobody = run("--key", "0000000000")
    assert nobody.returncode == 0 and "note: no records" in nobody.stderr
    for args, refusal in (
        ((), "members needs a key: give --key"),
        (("--key", "1", "--key", "2"), None),  # $keys: one call with both
    ):
        done = run(*args)
        assert (done.returncode == 2) is (refusal is not None), done.stdout + done.stderr
        assert refusal is None or refusal in done.stdout
    history = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "systems", "try", "loyalty", "pointsHistory",
         "--key", member["member_no"], "--key", "0000000001"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert history.returncode == 2 and "takes one key per call" in history.stdout
    write = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "systems", "try", "loyalty", "redeemLoyaltyPoints"],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert write.returncode == 2 and "is a write: try reads only" in write.stdout
