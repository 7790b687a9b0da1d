"""OAuth2/OIDC bearer tokens (JWTs) as credentials beside API keys.

A token is checked with PyJWT against the issuer's JSON Web Key Set: the signature with the
key its ``kid`` names, in an algorithm from ``auth.oidc.algorithms`` (asymmetric only, and the
key's type must fit it: an RSA key never verifies an HS256 or ES256 token), then ``iss``,
``aud``, ``exp``, ``nbf`` and ``iat`` with ``leeway_s``, and an age limit on ``iat``. Its claims
then name the principal (``channel_claim``, ``role_claim``, ``scope_claim``,
``partner_claim``); a channel the policy does not know is refused.

Every refusal is a ``CredentialRefused`` with a fixed one-line reason for the log: nothing of
the token (it is a credential) and none of its claims (they may be personal data) is logged
or echoed. A JWKS URL is fetched off the request path when its keys grow stale; a request
waits for a fetch only when no key is known or its ``kid`` is new (at most once per
``jwks_min_refresh_interval_s``), and never longer than ``jwks_timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
from jwt import PyJWK

from gateway.credentials import CredentialRefused
from gateway.settings import OidcSettings
from policies.principal import Principal

log = logging.getLogger("switchboard.auth")

#: The key type (and for EC the curve) each algorithm needs.
KEY_TYPES: dict[str, tuple[str, str | None]] = {
    **{f"RS{n}": ("RSA", None) for n in (256, 384, 512)},
    **{f"PS{n}": ("RSA", None) for n in (256, 384, 512)},
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", None),
}


def _unauthenticated(reason: str, message: str = "Invalid bearer token.") -> CredentialRefused:
    return CredentialRefused(401, "UNAUTHENTICATED", message, reason)


class JwksInvalid(ValueError):
    """A key set that cannot be used (start-up error for a file; logged for a URL)."""


@dataclass(frozen=True)
class SigningKey:
    key: Any  # the cryptography public key
    key_type: str
    curve: str | None
    algorithm: str | None  # the JWK's own `alg`, if it names one


def parse_jwks(raw: bytes, max_bytes: int, source: str) -> dict[str, SigningKey]:
    """kid -> key of a JWKS document; JwksInvalid naming the problem (not the key material)."""
    if len(raw) > max_bytes:
        raise JwksInvalid(f"{source}: JWKS larger than {max_bytes} bytes")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError):
        raise JwksInvalid(f"{source}: not a JSON document") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksInvalid(f"{source}: a JWKS is an object with a 'keys' list")
    keys: dict[str, SigningKey] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise JwksInvalid(f"{source}: keys[{index}] is not an object")
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JwksInvalid(f"{source}: keys[{index}] has no kid")
        if entry.get("use", "sig") != "sig":
            continue  # an encryption key never verifies a signature
        if "d" in entry or entry.get("kty") == "oct":
            # A private or symmetric key published as a verification key is a mistake that
            # would let anyone who reads the set sign tokens.
            raise JwksInvalid(f"{source}: keys[{index}] ({kid}) is not a public key")
        try:
            parsed = PyJWK(entry)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            raise JwksInvalid(f"{source}: keys[{index}] ({kid}) is not a usable key") from None
        if kid in keys:
            raise JwksInvalid(f"{source}: kid {kid} appears twice")
        keys[kid] = SigningKey(
            key=parsed.key,
            key_type=str(entry.get("kty")),
            curve=entry.get("crv"),
            algorithm=entry.get("alg"),
        )
    if not keys:
        raise JwksInvalid(f"{source}: no signing keys")
    return keys


class FileKeys:
    """Keys from a local JWKS file, read once at start-up (a bad file stops the start)."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise JwksInvalid(f"{path}: cannot read: {error.strerror}") from None
        self._keys = parse_jwks(raw, max_bytes, str(path))

    async def get(self, kid: str) -> SigningKey | None:
        return self._keys.get(kid)

    def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class UrlKeys:
    """Keys fetched from a JWKS URL and cached for ``jwks_cache_ttl_s``.

    Stale keys keep serving while one background fetch refreshes them; a failed fetch keeps
    the keys we had (an issuer outage does not log everyone out at once).
    """

    def __init__(self, settings: OidcSettings, clock: Callable[[], float] = time.monotonic):
        assert settings.jwks_url is not None
        self._url = settings.jwks_url
        self._settings = settings
        self._clock = clock
        self._keys: dict[str, SigningKey] = {}
        self._fresh_until = float("-inf")
        self._last_attempt = float("-inf")
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    async def get(self, kid: str) -> SigningKey | None:
        now = self._clock()
        found = self._keys.get(kid)
        if found is not None:
            if now >= self._fresh_until and (self._refresh is None or self._refresh.done()):
                self._refresh = asyncio.create_task(self._fetch())
            return found
        if now - self._last_attempt >= self._settings.jwks_min_refresh_interval_s:
            await self._fetch()  # a new kid (key rotation) or no keys yet: wait, bounded
        return self._keys.get(kid)

    async def _fetch(self) -> None:
        async with self._lock:
            now = self._clock()
            if now - self._last_attempt < self._settings.jwks_min_refresh_interval_s:
                return  # fetched (or tried) a moment ago, maybe while we waited for the lock
            self._last_attempt = now
            try:
                raw = await self._download()
                self._keys = parse_jwks(raw, self._settings.jwks_max_bytes, "auth.oidc.jwks_url")
                self._fresh_until = self._clock() + self._settings.jwks_cache_ttl_s
            except JwksInvalid as error:
                log.warning("JWKS refresh failed: %s", error)
            except (aiohttp.ClientError, TimeoutError) as error:
                log.warning("JWKS refresh failed: %s", type(error).__name__)

    async def _download(self) -> bytes:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.jwks_timeout_s)
            )
        limit = self._settings.jwks_max_bytes
        async with self._session.get(self._url, allow_redirects=False) as response:
            if response.status != 200:
                raise JwksInvalid(f"auth.oidc.jwks_url: HTTP {response.status}")
            raw = await response.content.read(limit + 1)  # bounded: never the whole of a flood
            return raw

    def start(self) -> None:
        """Fetch the keys in the background now, so the first request seldom waits."""
        self._refresh = asyncio.create_task(self._fetch())

    async def close(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._refresh
        if self._session is not None:
            await self._session.close()


def credential_id_of(issuer: str, kid: str, subject: str) -> str:
    """A short stable id for the audit log and rate limits: never the token itself."""
    digest = hashlib.sha256(f"{issuer}\0{kid}\0{subject}".encode()).hexdigest()
    return f"jwt_{digest[:12]}"


class JwtVerifier:
    """Bearer tokens -> principals, per ``auth.oidc`` (see the module's docstring)."""

    def __init__(
        self,
        settings: OidcSettings,
        known_channels: Callable[[], Collection[str]],
        keys: FileKeys | UrlKeys | None = None,
    ) -> None:
        self._settings = settings
        self._known_channels = known_channels
        if keys is None:
            keys = (
                FileKeys(settings.jwks_file, settings.jwks_max_bytes)
                if settings.jwks_file is not None
                else UrlKeys(settings)
            )
        self._keys = keys

    def start(self) -> None:
        self._keys.start()

    async def close(self) -> None:
        await self._keys.close()

    async def authenticate(self, token: str) -> Principal:
        """The principal a valid token stands for; CredentialRefused for anything else."""
        settings = self._settings
        if len(token) > settings.max_token_bytes:
            raise _unauthenticated("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthenticated("malformed token") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in settings.algorithms:
            raise _unauthenticated("algorithm not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > settings.max_kid_length:
            raise _unauthenticated("no kid in the token header")
        key = await self._keys.get(kid)
        if key is None:
            raise _unauthenticated("unknown kid")
        if (key.key_type, key.curve if key.key_type == "EC" else None) != KEY_TYPES[algorithm] or (
            key.algorithm is not None and key.algorithm != algorithm
        ):
            raise _unauthenticated("key does not fit the token's algorithm")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_s,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("token expired", "The bearer token has expired.") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("wrong audience") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("bad signature") from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("token not valid yet") from None
        except jwt.MissingRequiredClaimError as error:
            raise _unauthenticated(f"missing claim {error.claim}") from None
        except jwt.PyJWTError:
            raise _unauthenticated("invalid token") from None
        if time.time() - float(claims["iat"]) > settings.max_token_age_s + settings.leeway_s:
            raise _unauthenticated("token older than max_token_age_s")
        return self._principal(claims, kid)

    def _principal(self, claims: Mapping[str, Any], kid: str) -> Principal:
        settings = self._settings
        # Lengths as the audit log stores them (gateway/audit/store.py).
        subject = _name(claims, "sub", 128)
        channel = _name(claims, settings.channel_claim, 32)
        role = _name(claims, settings.role_claim, 32)
        if subject is None or channel is None or role is None:
            missing = "sub" if subject is None else "channel" if channel is None else "role"
            raise _unauthenticated(
                f"token has no usable {missing} claim",
                f"The bearer token has no usable {missing} claim.",
            )
        if channel not in self._known_channels():
            raise CredentialRefused(
                403,
                "TOKEN_CHANNEL_UNKNOWN",
                "The bearer token names a channel this hub's policy does not have.",
                "token names an unknown channel",
            )
        partner_claim = settings.partner_claim
        partner = _name(claims, partner_claim, 64) if partner_claim is not None else None
        assert settings.issuer is not None
        return Principal(
            subject=subject,
            role=role,
            channel=channel,
            scopes=_scopes(
                claims.get(settings.scope_claim), settings.max_scopes, settings.max_scope_length
            ),
            partner=partner,
            credential_id=credential_id_of(settings.issuer, kid, subject),
        )


def _name(claims: Mapping[str, Any], claim: str, max_length: int) -> str | None:
    value = claims.get(claim)
    if isinstance(value, str) and 0 < len(value) <= max_length and value.isprintable():
        return value
    return None


def _scopes(value: Any, max_scopes: int, max_length: int) -> frozenset[str]:
    """``scope`` as OAuth2 sends it (space-separated), or a list claim (``scp``, Azure): more
    than ``max_scopes`` items is a refusal, an item longer than ``max_length`` is dropped."""
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, list):
        items = [item for item in value if isinstance(item, str)]
    else:
        return frozenset()
    if len(items) > max_scopes:
        raise _unauthenticated("too many scopes")
    return frozenset(item for item in items if 0 < len(item) <= max_length)
