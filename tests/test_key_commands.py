"""`switchboard keys create | list | revoke`, run as an operator runs them (the CLI in its own
process, on a migrated database): a listing never shows a secret, a revoked key is refused by
the store at once and by a running gateway within ``auth.key_cache_s``, and revoking an
unknown or already revoked key is exit code 1 and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from gateway.auth import ApiKeyStore
from gateway.database import create_engine
from tests.harness import REPO, SWITCHBOARD, migrate_database


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path}/hub.db"
    migrate_database(url)
    return url


def _cli(database: str, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(SWITCHBOARD_DATABASE_URL=database, SWITCHBOARD_CONFIG="/nonexistent.toml")
    return subprocess.run(
        [*SWITCHBOARD, *argv], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )


def test_create_list_and_revoke_a_key_from_the_command_line(database: str) -> None:
    created = _cli(
        database, "keys", "create", "--subject", "crm-sync", "--role", "partner",
        "--channel", "partner", "--scope", "loyalty:redeem", "--partner", "acme",
        "--label", "crm",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    key_id = key[3:].split(".", 1)[0]
    other = _cli(
        database, "keys", "create", "--subject", "a", "--role", "agent", "--channel", "agent"
    )
    assert other.returncode == 0, other.stderr

    listed = _cli(database, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["key_id"] for r in rows][:1] == [key_id] and len(rows) == 2
    assert rows[0] | {"created_at": None} == {
        "key_id": key_id, "subject": "crm-sync", "role": "partner", "channel": "partner",
        "scopes": ["loyalty:redeem"], "partner": "acme", "label": "crm", "created_at": None,
        "revoked_at": None,
    }  # fmt: skip
    table = _cli(database, "keys", "list")
    assert key_id in table.stdout and "crm-sync" in table.stdout
    secret = key.split(".", 1)[1]
    assert secret not in listed.stdout + table.stdout  # never the secret

    revoked = _cli(database, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "30 s" in revoked.stderr
    assert [r["key_id"] for r in json.loads(_cli(database, "keys", "list", "--json").stdout)] == [
        other.stdout.strip()[3:].split(".", 1)[0]
    ]
    everything = json.loads(_cli(database, "keys", "list", "--all", "--json").stdout)
    assert [r["revoked_at"] is not None for r in everything] == [True, False]
    again = _cli(database, "keys", "revoke", key_id)
    assert again.returncode == 1 and "no unrevoked key" in again.stderr
    assert _cli(database, "keys", "revoke", "deadbeef").returncode == 1


async def test_a_store_forgets_a_key_it_revokes_at_once(database: str) -> None:
    engine = create_engine(database)
    try:
        store = ApiKeyStore(engine)  # the default cache: 30 s
        issued = await store.issue(subject="s", role="agent", channel="agent")
        assert await store.authenticate(issued.key) is not None  # now cached
        assert await store.revoke(issued.key_id)
        assert await store.authenticate(issued.key) is None
        assert not await store.revoke(issued.key_id)
    finally:
        await engine.dispose()


def test_an_unmigrated_database_is_refused(tmp_path: Path) -> None:
    done = _cli(f"sqlite+aiosqlite:///{tmp_path}/empty.db", "keys", "list")
    assert done.returncode != 0
    assert "migrate" in done.stderr
