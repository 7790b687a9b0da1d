"""Credentials a caller may present: API keys (gateway/auth.py) and, when ``auth.oidc`` is
configured, OAuth2/OIDC bearer tokens (gateway/jwt_auth.py).

``Credentials.authenticate`` is the one place the gateway turns a presented credential into a
principal, so HTTP, websockets, the failed-auth throttle and the audit log treat a bad token
exactly like a bad key: a ``CredentialRefused`` with a coded error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from policies.principal import Principal

if TYPE_CHECKING:
    from gateway.auth import ApiKeyStore
    from gateway.jwt_auth import JwtVerifier


@dataclass(frozen=True)
class CredentialRefused(Exception):
    """A presented credential that does not authenticate: what the caller and the log get."""

    status: int
    code: str
    message: str  # for the caller: fixed text, nothing of the credential
    reason: str  # for the log: one line, nothing of the credential, no claim values


def unknown_key() -> CredentialRefused:
    # A new one each time: a shared instance would carry every raise's traceback along.
    return CredentialRefused(
        401, "UNAUTHENTICATED", "Unknown or revoked API key.", "unknown or revoked API key"
    )


class Credentials:
    """API keys (``sb_<id>.<secret>``) and, if configured, JWT bearer tokens."""

    def __init__(self, keys: ApiKeyStore, tokens: JwtVerifier | None = None) -> None:
        self.keys = keys
        self.tokens = tokens

    async def authenticate(self, presented: str) -> Principal:
        """The principal of a valid credential; CredentialRefused for anything else."""
        if self.tokens is not None and not presented.startswith("sb_"):
            return await self.tokens.authenticate(presented)
        principal = await self.keys.authenticate(presented)
        if principal is None:
            raise unknown_key()
        return principal

    def start(self) -> None:
        if self.tokens is not None:
            self.tokens.start()

    async def close(self) -> None:
        if self.tokens is not None:
            await self.tokens.close()
