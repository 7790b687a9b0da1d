"""Trusted documents (persisted operations): a manifest of the documents the hub's own clients
send, requests that name a document by its hash, and channels that run nothing else.

The manifest (``trusted_documents.manifest_file``) is a JSON object, read at start-up::

    {
      "<sha256 hex of the document's UTF-8 text>": "<document text>",
      "channels": {"partner": {"<sha256 hex>": "<document text>"}}
    }

Top-level documents count for every channel; those under ``channels.<name>`` for that channel
only. Every key must be the SHA-256 of its document (computed and checked at load), so a
manifest cannot map a reviewed hash to other text.

A request names a document by its hash in either convention:

- GraphQL over HTTP persisted documents: ``"documentId": "sha256:<hex>"`` (bare hex too);
- Apollo: ``"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "<hex>"}}``.

With a hash and no ``query`` the manifest's text runs (unknown hash: 400
PERSISTED_DOCUMENT_NOT_FOUND); with both, the hash must be the query's
(PERSISTED_DOCUMENT_HASH_MISMATCH). Nothing is registered from requests: only the manifest
counts. A channel whose policy profile says ``documents: trusted_only`` runs only documents in
the manifest (sent in full or by hash); anything else is 400 PERSISTED_DOCUMENT_REQUIRED before
GraphQL parses it. ``TrustedDocumentsGate`` applies this to HTTP (GET and POST) and to
``subscribe`` messages on the websocket, and hands on what it checked, re-encoded, so what runs
is exactly what was checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.policy_store import PolicyStore
from policies.model import DOCUMENTS_TRUSTED_ONLY
from policies.principal import Principal

log = logging.getLogger("switchboard.gateway")

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CHANNELS_KEY = "channels"
DOCUMENT_ID_PREFIX = "sha256:"


def document_hash(text: str) -> str:
    """The hash a document is known by: SHA-256 of its UTF-8 text, lowercase hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ManifestInvalid(ValueError):
    """A manifest that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Manifest:
    shared: Mapping[str, str] = field(default_factory=dict)
    per_channel: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def lookup(self, channel: str, digest: str) -> str | None:
        found = self.shared.get(digest)
        if found is None:
            found = self.per_channel.get(channel, {}).get(digest)
        return found

    def __len__(self) -> int:
        return len(self.shared) + sum(len(d) for d in self.per_channel.values())


def _documents(section: Any, where: str, source: str) -> dict[str, str]:
    if not isinstance(section, dict):
        raise ManifestInvalid(f"{source}: {where} must be an object of sha256 hex -> document")
    documents: dict[str, str] = {}
    for key, text in section.items():
        if where == "the manifest" and key == CHANNELS_KEY:
            continue
        if not isinstance(key, str) or not SHA256_HEX.fullmatch(key):
            raise ManifestInvalid(
                f"{source}: {where}: key {str(key)[:70]!r} is not a sha256 hex digest "
                "(64 lowercase hex digits)"
            )
        if not isinstance(text, str) or not text.strip():
            raise ManifestInvalid(f"{source}: {where}: {key}: the document must be a string")
        actual = document_hash(text)
        if actual != key:
            raise ManifestInvalid(
                f"{source}: {where}: {key}: the document's sha256 is {actual}, not its key"
            )
        documents[key] = text
    return documents


def parse_manifest(raw: bytes, source: str) -> Manifest:
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ManifestInvalid(f"{source}: not UTF-8") from None
    except json.JSONDecodeError as error:
        raise ManifestInvalid(
            f"{source}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from None
    except RecursionError:
        raise ManifestInvalid(f"{source}: nested too deeply") from None
    if not isinstance(data, dict):
        raise ManifestInvalid(f"{source}: the manifest must be a JSON object")
    shared = _documents(data, "the manifest", source)
    channels = data.get(CHANNELS_KEY, {})
    if not isinstance(channels, dict):
        raise ManifestInvalid(f"{source}: channels must be an object of channel -> documents")
    per_channel = {
        str(name): _documents(section, f"channels.{name}", source)
        for name, section in channels.items()
    }
    return Manifest(shared, per_channel)


def load_manifest(path: Path | None, max_bytes: int) -> Manifest:
    """The manifest at ``path`` (an empty one when unset); ManifestInvalid on any problem."""
    if path is None:
        return Manifest()
    try:
        with path.open("rb") as file:
            raw = file.read(max_bytes + 1)
    except OSError as error:
        raise ManifestInvalid(f"{path}: cannot read: {error.strerror}") from None
    if len(raw) > max_bytes:
        raise ManifestInvalid(
            f"{path}: larger than trusted_documents.max_manifest_bytes ({max_bytes})"
        )
    return parse_manifest(raw, str(path))


@dataclass(frozen=True)
class DocumentRefused(Exception):
    status: int
    code: str
    message: str


def _required() -> DocumentRefused:
    return DocumentRefused(
        400,
        "PERSISTED_DOCUMENT_REQUIRED",
        "This channel runs trusted documents only: send the documentId (sha256:<hex>) of a "
        "document in the hub's manifest.",
    )


def _not_found() -> DocumentRefused:
    return DocumentRefused(
        400, "PERSISTED_DOCUMENT_NOT_FOUND", "No trusted document has this hash for this channel."
    )


def _may_name_a_document(body: bytes) -> bool:
    """Whether a JSON body could hold ``documentId`` or ``persistedQuery``: it spells one of
    them, or has an escape that could spell one. A body that cannot is left to RequestGate
    and GraphQL to parse (a channel that takes any document loses nothing by it)."""
    return b"documentId" in body or b"persistedQuery" in body or b"\\u" in body


def requested_hash(request: Mapping[str, Any]) -> str | None:
    """The document hash a request names (documentId or Apollo's persistedQuery), if any."""
    document_id = request.get("documentId")
    extensions = request.get("extensions")
    persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
    apollo = persisted.get("sha256Hash") if isinstance(persisted, dict) else None
    if document_id is None and apollo is None:
        return None
    if document_id is not None:
        if not isinstance(document_id, str):
            raise _not_found()
        digest = document_id.removeprefix(DOCUMENT_ID_PREFIX)
        if apollo is not None and apollo != digest:
            raise DocumentRefused(
                400,
                "PERSISTED_DOCUMENT_HASH_MISMATCH",
                "documentId and extensions.persistedQuery.sha256Hash name different documents.",
            )
        return _checked(digest)
    return _checked(apollo)


def _checked(digest: Any) -> str:
    """A well-formed SHA-256 hex digest, or PERSISTED_DOCUMENT_NOT_FOUND."""
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise _not_found()
    return digest


def resolve(
    request: dict[str, Any], channel: str, trusted_only: bool, manifest: Manifest
) -> dict[str, Any]:
    """The request to run: its hash replaced by the manifest's document, checked against the
    channel's mode. DocumentRefused if it may not run."""
    digest = requested_hash(request)
    query = request.get("query")
    resolved = {k: v for k, v in request.items() if k != "documentId"}
    if isinstance(query, str):
        actual = document_hash(query)
        if digest is not None and digest != actual:
            raise DocumentRefused(
                400,
                "PERSISTED_DOCUMENT_HASH_MISMATCH",
                "The document's sha256 is not the hash the request names.",
            )
        if trusted_only and manifest.lookup(channel, actual) is None:
            raise _required()
        return resolved
    if query is not None or digest is None:
        if trusted_only:
            raise _required()
        return resolved  # GraphQL answers the missing or malformed query
    text = manifest.lookup(channel, digest)
    if text is None:
        raise _not_found()
    resolved["query"] = text
    return resolved


def refused_response(refusal: DocumentRefused) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": refusal.message, "extensions": {"code": refusal.code}}]},
        status_code=refusal.status,
    )


class TrustedDocumentsGate:
    """Between authentication and the GraphQL view: see the module's docstring."""

    def __init__(
        self, app: ASGIApp, policies: PolicyStore, manifest: Manifest, *, max_body_bytes: int
    ) -> None:
        self.app = app
        self.policies = policies
        self.manifest = manifest
        self.max_body_bytes = max_body_bytes

    def _mode(self, principal: Principal | None) -> tuple[str, bool] | None:
        """(channel, trusted only?) of an authenticated caller; None before authentication."""
        if principal is None or principal.channel == "none":
            return None
        profile = self.policies.current.channel(principal.channel)
        trusted_only = profile is not None and profile.documents == DOCUMENTS_TRUSTED_ONLY
        return principal.channel, trusted_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.app(scope, self._checked_messages(scope, receive, send), send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        mode = self._mode(scope.get("switchboard.principal"))
        if mode is None:
            await self.app(scope, receive, send)
            return
        channel, trusted_only = mode
        try:
            if scope["method"] == "GET":
                scope = self._get(scope, channel, trusted_only)
            else:
                receive = await self._post(scope, receive, channel, trusted_only)
        except DocumentRefused as refusal:
            log.info(
                "document refused: code=%s channel=%s credential=%s request_id=%s",
                refusal.code,
                channel,
                scope["switchboard.principal"].credential_id,
                scope.get("switchboard.request_id"),
            )
            await refused_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _get(self, scope: Scope, channel: str, trusted_only: bool) -> Scope:
        params = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        request: dict[str, Any] = dict(params)
        if "extensions" in params:
            try:
                request["extensions"] = json.loads(params["extensions"])
            except (ValueError, RecursionError):
                if trusted_only:
                    raise _required() from None
                return scope  # GraphQL refuses the bad parameter
        if not trusted_only and requested_hash(request) is None:
            return scope  # the common case: the request goes on untouched
        resolved = resolve(request, channel, trusted_only, self.manifest)
        if "extensions" in resolved:
            resolved["extensions"] = json.dumps(resolved["extensions"])
        # Re-encoded from what was checked: one value per parameter.
        return {**scope, "query_string": urlencode(resolved).encode("latin-1")}

    async def _post(
        self, scope: Scope, receive: Receive, channel: str, trusted_only: bool
    ) -> Receive:
        content_type = Headers(scope=scope).get("content-type", "")
        if "json" not in content_type.lower():
            if trusted_only:
                raise _required()
            return receive
        body = await self._read_body(receive)
        if not trusted_only and not _may_name_a_document(body):
            return _replay(body, receive)  # the common case, without parsing it here
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            if trusted_only:
                raise _required()
            return _replay(body, receive)
        if not trusted_only and requested_hash(request) is None:
            return _replay(body, receive)  # the common case: the body goes on untouched
        resolved = resolve(request, channel, trusted_only, self.manifest)
        return _replay(json.dumps(resolved).encode(), receive)

    async def _read_body(self, receive: Receive) -> bytes:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise DocumentRefused(400, "BAD_REQUEST", "The request body did not arrive.")
            body.extend(message.get("body", b""))
            if len(body) > self.max_body_bytes:
                raise DocumentRefused(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"The request body is larger than {self.max_body_bytes} bytes.",
                )
            if not message.get("more_body", False):
                return bytes(body)

    def _checked_messages(self, scope: Scope, receive: Receive, send: Send) -> Receive:
        """The websocket's incoming messages, each ``subscribe`` checked like an HTTP request;
        a refused one is answered with an ``error`` message and never reaches GraphQL."""

        async def checked() -> Message:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return message
                raw = message.get("text")
                if raw is None:
                    raw = message.get("bytes")
                try:
                    data = json.loads(raw) if raw is not None else None
                except (ValueError, RecursionError):
                    return message  # the protocol handler closes the socket (4400)
                if not (
                    isinstance(data, dict)
                    and data.get("type") == "subscribe"
                    and isinstance(data.get("payload"), dict)
                    and isinstance(data.get("id"), str)
                ):
                    return message
                context = scope.get("switchboard.context")
                principal = getattr(context, "principal", None) or scope.get(
                    "switchboard.principal"
                )
                mode = self._mode(principal)
                if mode is None:
                    return message  # not acknowledged yet: the handler refuses it
                try:
                    data["payload"] = resolve(data["payload"], *mode, self.manifest)
                except DocumentRefused as refusal:
                    error = {"message": refusal.message, "extensions": {"code": refusal.code}}
                    reply = {"id": data["id"], "type": "error", "payload": [error]}
                    await send({"type": "websocket.send", "text": json.dumps(reply)})
                    continue
                return {"type": "websocket.receive", "text": json.dumps(data)}

        return checked


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
