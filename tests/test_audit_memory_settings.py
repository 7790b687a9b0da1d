"""Two of the access log's limits as settings: how many customer hashes a process remembers,
and how often SQLite's WAL is checkpointed; each reaches the log from the TOML file and the
environment, and each does what it says."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from gateway.audit.record import CustomerHasher
from gateway.audit.service import AuditLog
from gateway.audit.writer import SqliteAppender
from gateway.settings import AuditSettings, load_settings
from tests.audit_support import CUSTOMER_KEY
from tests.conftest import migrated_engine
from tests.test_audit_batches import record

KEY = b"k" * 32


def _hmac(customer_id: str) -> str:
    return hmac.new(KEY, customer_id.encode(), hashlib.sha256).hexdigest()


def test_the_settings_reach_the_log_from_toml_and_environment(tmp_path, monkeypatch):
    config = tmp_path / "switchboard.toml"
    config.write_text("[audit]\ncustomer_hashes_remembered = 17\nwal_checkpoint_every_s = 4.5\n")
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    audit = load_settings().audit
    assert (audit.customer_hashes_remembered, audit.wal_checkpoint_every_s) == (17, 4.5)
    monkeypatch.setenv("SWITCHBOARD_AUDIT__CUSTOMER_HASHES_REMEMBERED", "0")
    audit = load_settings().audit
    assert (audit.customer_hashes_remembered, audit.wal_checkpoint_every_s) == (0, 4.5)
    monkeypatch.setenv("SWITCHBOARD_AUDIT__WAL_CHECKPOINT_EVERY_S", "0")
    with pytest.raises(ValueError, match=r"wal_checkpoint_every_s"):
        load_settings()


def test_defaults_are_the_documented_ones():
    audit = AuditSettings()
    assert (audit.customer_hashes_remembered, audit.wal_checkpoint_every_s) == (4096, 1.0)


@pytest.mark.parametrize("remembered", [0, 2, 4096])
def test_the_hasher_remembers_at_most_its_setting_and_hashes_the_same_either_way(remembered):
    hasher = CustomerHasher(KEY, remembered=remembered)
    for customer_id in ["c-1", "c-2", "c-3", "c-1", "c-4"]:
        assert hasher(customer_id) == _hmac(customer_id)
        assert len(hasher._known) <= remembered


async def test_the_wal_is_checkpointed_as_often_as_the_setting_says(tmp_path: Path, monkeypatch):
    checkpoints: list[str] = []
    plain = SqliteAppender.checkpoint

    def counted(self: SqliteAppender) -> None:
        checkpoints.append(self._path)
        plain(self)

    monkeypatch.setattr(SqliteAppender, "checkpoint", counted)
    figures = {}
    for name, every_s in (("often", 1e-6), ("seldom", 3600.0)):
        database = tmp_path / f"{name}.db"
        settings = AuditSettings(
            state_dir=tmp_path / "keys", customer_key=CUSTOMER_KEY, wal_checkpoint_every_s=every_s
        )
        audit = AuditLog(await migrated_engine(f"sqlite+aiosqlite:///{database}"), settings)
        await audit.start()
        try:
            for i in range(20):  # one batch each: awaited one at a time
                await audit.writer.append(record(i))
                running = audit.writer._checkpoint  # one runs at a time: let it end first
                if running is not None:
                    await running
        finally:
            await audit.stop()
            await audit.engine.dispose()
        figures[name] = checkpoints.count(str(database))
    # Often: after every batch; seldom: at most after the first, whatever the machine's uptime.
    assert figures["often"] == 20, figures
    assert figures["seldom"] <= 1, figures
