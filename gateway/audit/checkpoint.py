"""Signed checkpoints: (seq, head hash, time) signed with the hub's Ed25519 key.

The hub signs; an auditor verifies with the public key alone and keeps exported checkpoints
elsewhere, so a log rewritten (or cut short) after a checkpoint no longer matches it. The key
pair lives in the hub's state dir (``.switchboard/`` by default), generated on first use; the
private key file is 0600.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.audit.store import audit_checkpoint, audit_head

PUBLISHED = "published"
PRUNE = "prune"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    kind: str  # published | prune (the anchor verification starts from after pruning)
    seq: int  # the last record covered; the count of records ever written
    head_hash: str
    time_us: int
    key_id: str  # SHA-256 of the raw public key, hex, first 16
    signature: str  # base64 Ed25519 over signed_bytes()

    def signed_bytes(self) -> bytes:
        body = {"kind": self.kind, "seq": self.seq, "head_hash": self.head_hash}
        body["time_us"] = self.time_us
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")

    def to_json(self, public_key: Ed25519PublicKey | None = None) -> str:
        data: dict[str, Any] = asdict(self)
        if public_key is not None:
            data["public_key"] = public_key_text(public_key)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Raises ValueError (or KeyError, TypeError) if the text is not a checkpoint.

        Only its own fields are read: a ``public_key`` in the file is never used to check it
        (whoever forged the checkpoint would have put their own key there)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        checkpoint = cls(
            kind=str(data["kind"]),
            seq=_integer(data["seq"]),
            head_hash=str(data["head_hash"]),
            time_us=_integer(data["time_us"]),
            key_id=str(data["key_id"]),
            signature=str(data["signature"]),
        )
        if checkpoint.kind not in (PUBLISHED, PRUNE) or checkpoint.seq < 0:
            raise ValueError("not a checkpoint")
        return checkpoint


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("not an integer")
    return value


def public_key_text(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


class SigningKey:
    """The hub's checkpoint key pair, on disk as PEM (private 0600, public beside it)."""

    def __init__(self, private_path: Path) -> None:
        self.private_path = private_path
        self.public_path = private_path.with_suffix(".pub")
        self._key: Ed25519PrivateKey | None = None

    def _load_or_create(self) -> Ed25519PrivateKey:
        if self._key is not None:
            return self._key
        path = self.private_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            try:  # O_EXCL: two processes generating at once keep the first key
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "wb") as out:
                    out.write(pem)
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(loaded, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 private key")
        public_pem = loaded.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if not self.public_path.exists() or self.public_path.read_bytes() != public_pem:
            self.public_path.write_bytes(public_pem)
        self._key = loaded
        return loaded

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._load_or_create().public_key()

    def sign(self, kind: str, seq: int, head_hash: str, time_us: int) -> Checkpoint:
        key = self._load_or_create()
        unsigned = Checkpoint(kind, seq, head_hash, time_us, key_id(key.public_key()), "")
        signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
        return Checkpoint(kind, seq, head_hash, time_us, unsigned.key_id, signature)


def signature_valid(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


async def store_checkpoint(conn: AsyncConnection, checkpoint: Checkpoint) -> None:
    values = asdict(checkpoint)
    await conn.execute(insert(audit_checkpoint).values(**values))


async def publish(engine: AsyncEngine, key: SigningKey) -> Checkpoint:
    """Sign the current head and keep the checkpoint in the table."""
    async with engine.begin() as conn:
        head = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash))).first()
        seq, head_hash = (int(head.seq), head.hash) if head is not None else (0, "0" * 64)
        checkpoint = key.sign(PUBLISHED, seq, head_hash, int(time.time() * 1_000_000))
        await store_checkpoint(conn, checkpoint)
    return checkpoint


def _of_row(row: Any) -> Checkpoint:
    return Checkpoint(
        kind=row.kind,
        seq=int(row.seq),
        head_hash=row.head_hash,
        time_us=int(row.time_us),
        key_id=row.key_id,
        signature=row.signature,
    )


async def latest(engine: AsyncEngine, kind: str) -> Checkpoint | None:
    query = (
        select(audit_checkpoint)
        .where(audit_checkpoint.c.kind == kind)
        .order_by(audit_checkpoint.c.seq.desc(), audit_checkpoint.c.id.desc())
        .limit(1)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    return _of_row(row) if row is not None else None


async def newest_first(engine: AsyncEngine, batch: int = 50) -> AsyncIterator[Checkpoint]:
    """Every checkpoint the hub holds, of any kind, latest seq first (in pages)."""
    before: tuple[int, int] | None = None
    while True:
        query = select(audit_checkpoint).order_by(
            audit_checkpoint.c.seq.desc(), audit_checkpoint.c.id.desc()
        )
        if before is not None:
            seq, row_id = before
            query = query.where(
                (audit_checkpoint.c.seq < seq)
                | ((audit_checkpoint.c.seq == seq) & (audit_checkpoint.c.id < row_id))
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(query.limit(batch))).all()
        for row in rows:
            yield _of_row(row)
        if len(rows) < batch:
            return
        before = (int(rows[-1].seq), int(rows[-1].id))
