"""The ASGI application: /graphql, /healthz, /readyz, /metrics, with authentication in front.

Wiring is explicit: settings -> database engine -> adapters -> schema -> routes, all built in
``create_app`` and started in the lifespan, so tests and workers build the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from adapters.cache import RecordCache
from adapters.errors import AdapterError
from adapters.resilience import BackendGuard
from gateway import metrics
from gateway.answer_cache import AnswerCache, replay, reused_request
from gateway.audit.export import AuditExport
from gateway.audit.middleware import (
    AuditTrail,
    record_refused_connection,
    record_subscription,
)
from gateway.audit.page import audit_page, audit_script
from gateway.audit.service import AuditLog
from gateway.audit.writer import AuditUnavailable
from gateway.auth import ApiKeyStore, key_id_of
from gateway.auth_throttle import source_of
from gateway.backends import build_backends, insight_engine
from gateway.campaigns import build_campaigns
from gateway.credentials import CredentialRefused, Credentials
from gateway.database import create_engine
from gateway.direct_route import DirectRoute
from gateway.events import EventsEndpoint, EventsFastPath, build_events
from gateway.graphiql.page import ASSETS_PATH, GraphiQLAssets, graphiql_page
from gateway.graphql_http import GRAPHQL_RESPONSE_CONTENT_TYPE, GraphQLOverHTTP
from gateway.http_input import (
    APPLICATION_JSON,
    GRAPHQL_RESPONSE_JSON,
    MEDIA_TYPE_KEY,
    REQUEST_JSON_KEY,
    RequestGate,
)
from gateway.jwt_auth import JwtVerifier
from gateway.migrate import require_head
from gateway.observe import OperationMetrics, route_of, server_span
from gateway.policy_store import DEFAULT_POLICY_FILE, PolicyStore
from gateway.readiness import check_all, hub_dependencies
from gateway.scaled import build_scaled
from gateway.settings import AnswerCacheSettings, Settings, load_settings
from gateway.shared_limits import AuthThrottle, LocalRequestLimiter, RequestLimiter
from gateway.trusted_documents import TrustedDocumentsGate, load_manifest
from gateway.verification_gate import resolve_verification
from gateway.workflows import build_workflows
from gateway.ws_limits import transport_ws_handler
from gateway.ws_verification import apply_payload_verification, deny_upgrade
from insight.rules import DEFAULT_RULES_FILE
from insight.store import RulesStore
from marketing.recording import RecordingHandler
from policies.disclosure import Disclosure
from policies.principal import Principal
from policies.verification import VerificationStore
from schema.answer_scope import ReusableDocuments
from schema.build import build_schema, operation_names
from schema.context import Backends, RequestContext, new_request_context
from schema.errors import to_coded_error
from schema.insight import INSIGHT
from telemetry import logs, tracing
from telemetry import metrics as meters
from telemetry.metrics import OperationNames

log = logging.getLogger("switchboard.gateway")

REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
IDE_VISITOR = Principal(subject="graphiql-page", role="none", channel="none")


class SwitchboardGraphQL(GraphQLOverHTTP, GraphQL):
    """Strawberry's ASGI view with the hub's per-request context (GraphQL over HTTP: the
    mixin, gateway/graphql_http.py)."""

    def __init__(
        self,
        backends: Backends,
        policies: PolicyStore,
        *,
        enforce_policy: bool = True,
        keys: Credentials | None = None,
        audit: AuditLog | None = None,
        answers: AnswerCache | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._backends = backends
        self._policies = policies
        self._enforce_policy = enforce_policy
        self._keys = keys
        self._audit = audit
        self._answers = answers

    async def render_graphql_ide(self, request: Request) -> Response:
        # Our page with the assets the gateway serves, not strawberry's CDN-loaded one.
        return graphiql_page()

    async def get_context(self, request: Request, response: Response) -> RequestContext:  # type: ignore[override]
        # Only the GraphiQL page itself is served without a key (Authenticate lets nothing
        # else through), and rendering it executes no operation.
        context = new_request_context(
            request.scope.get("switchboard.principal", IDE_VISITOR),
            self._backends,
            # Websockets pass RequestIds untouched: one id per connection.
            request.scope.get("switchboard.request_id") or _new_request_id(),
            self._policies.current,
            request.scope.get("switchboard.purpose"),
            self._enforce_policy,
            audit=self._audit.reader if self._audit is not None else None,
        )
        request.scope["switchboard.context"] = context  # for the audit record (AuditTrail)
        if request.scope["type"] == "websocket" and self._audit is not None:
            context.on_stream_end = self._record_stream_operation
        return context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._answers is not None and scope["type"] == "http":
            response = self._kept_answer(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _kept_answer(self, scope: Scope) -> Response | None:
        """The response of a POSTed query answered whole from the answer cache, before
        strawberry parses or builds anything; None to run the request as usual.

        What it leaves in the scope is what a run leaves for the access log and the metrics:
        a stand-in context with the disclosures of the request that built the answer, and
        the result (ok, no errors)."""
        assert self._answers is not None
        request = scope.get(REQUEST_JSON_KEY)
        principal = scope.get("switchboard.principal")
        if not isinstance(request, dict) or principal is None:
            return None
        query = request.get("query")
        operation_name = request.get("operationName")
        variables = request.get("variables")
        if (
            not isinstance(query, str)
            or not isinstance(operation_name, str | None)
            or not isinstance(variables, dict | None)
        ):
            return None  # strawberry refuses those in its own words
        policy = self._policies.current
        purpose = scope.get("switchboard.purpose")
        key = self._answers.key_of(
            query,
            operation_name,
            variables,
            principal,
            purpose,
            self._enforce_policy,
            policy.version,
        )
        answer = self._answers.get(key) if key is not None else None
        if answer is None:
            return None
        scope["switchboard.context"] = reused_request(
            answer, policy, principal, purpose, self._enforce_policy
        )
        scope["switchboard.result"] = ExecutionResult(data=answer.data, errors=None)
        if scope.get(MEDIA_TYPE_KEY) == GRAPHQL_RESPONSE_JSON:
            return Response(answer.body, media_type=GRAPHQL_RESPONSE_CONTENT_TYPE)
        return Response(answer.body, media_type=APPLICATION_JSON)

    async def execute_single(  # strawberry's signature
        self,
        request: Request,
        request_adapter: Any,
        sub_response: Response,
        context: Any,
        root_value: Any,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        answers = self._answers
        query = request_data.query
        key = (
            answers.key(query, request_data.operation_name, request_data.variables, context)
            if answers is not None and query is not None
            else None
        )
        if answers is None or key is None or query is None:
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        # A POST was looked up before strawberry ran (``_kept_answer``); a GET is looked up here.
        reused = answers.get(key) if request_adapter.method != "POST" else None
        if reused is not None:
            replay(reused, context)  # the access log records what it discloses
            return ExecutionResult(data=reused.data, errors=None)
        generation = answers.generation
        result = await super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )
        if not result.errors and result.data is not None:
            answers.offer(key, query, result.data, context, context.reads, generation)
        return result

    async def _record_stream_operation(
        self, context: RequestContext, started_us: int, started_perf: float, errors: list[Any]
    ) -> None:
        """One audit record per operation on a websocket, when it ends (schema/stream_audit)."""
        assert self._audit is not None
        try:
            await record_subscription(
                self._audit,
                context,
                started_us=started_us,
                started_perf=started_perf,
                errors=errors,
            )
        except AuditUnavailable:
            # The stream already went out; say so loudly (no data in the line).
            log.error(
                "audit record of a websocket operation lost: request_id=%s", context.request_id
            )

    async def on_ws_connect(self, context: RequestContext) -> dict[str, object] | None:  # type: ignore[override]
        """A websocket authenticated by its upgrade headers, or by its connection_init payload.

        The key may come in the payload's ``X-Api-Key`` / ``apiKey``; the same channel rules
        then apply to every subscription on the connection (ChannelRules runs per operation).
        A verification may come there too (gateway/ws_verification.py).
        """
        if context.principal is not IDE_VISITOR:
            await self._payload_verification(context)
            return None
        started = (time.time_ns() // 1000, time.perf_counter())
        params = context.connection_params or {}
        key = params.get("X-Api-Key") or params.get("apiKey") or params.get("x-api-key")
        principal, refused = None, "UNAUTHENTICATED"
        if self._keys is not None and isinstance(key, str):
            try:
                principal = await self._keys.authenticate(key)
            except CredentialRefused as error:
                log.warning("websocket credential refused: %s", error.reason)
                refused = error.code
        refusal = (
            refused
            if principal is None
            else "CHANNEL_NOT_ALLOWED"
            if self._policies.current.channel(principal.channel) is None
            else None
        )
        if refusal is not None:
            if self._audit is not None:  # refused like a 401 on HTTP: in the log too
                await record_refused_connection(
                    self._audit,
                    request_id=context.request_id,
                    principal=principal,
                    purpose=context.disclosure.purpose,
                    code=refusal,
                    started_us=started[0],
                    started_perf=started[1],
                )
            raise ConnectionRejectionError({"code": refusal})
        assert principal is not None
        context.principal = principal
        context.disclosure = Disclosure(
            self._policies.current,
            principal,
            context.disclosure.purpose,
            enforced=context.disclosure.enforced,
        )
        await self._payload_verification(context)
        return None

    async def _payload_verification(self, context: RequestContext) -> None:
        await apply_payload_verification(
            context, self._policies.current, self._backends.verifications
        )

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        # Parse errors raised inside the parser cache skip the schema's extensions: code them
        # here, where every answer passes (coding is idempotent).
        if result.errors:
            result.errors = [to_coded_error(e) for e in result.errors]
        request.scope["switchboard.result"] = result  # for the audit record (AuditTrail)
        return await super().process_result(request, result)


def _refused(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status
    )


def _credential_refused(refused: CredentialRefused, request_id: str | None) -> JSONResponse:
    # One line with the reason (expired, wrong audience, ...): nothing of the credential.
    log.warning("credential refused: %s request_id=%s", refused.reason, request_id)
    if refused.status == 401:
        return _unauthenticated(refused.message)
    return _refused(refused.status, refused.code, refused.message)


def _throttled(retry_after: int) -> JSONResponse:
    response = _refused(
        429, "RATE_LIMITED", "Too many failed authentication attempts; try again later."
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _unauthenticated(message: str) -> JSONResponse:
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]},
        status_code=401,
        headers={"WWW-Authenticate": 'ApiKey header="X-Api-Key"'},
    )


class Authenticate:
    """Resolves the caller's API key into a principal before the GraphQL view runs."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Credentials,
        policies: PolicyStore,
        *,
        graphiql: bool,
        verifications: VerificationStore | None = None,
        audit: AuditLog | None = None,
        throttle: AuthThrottle | None = None,
        limiter: RequestLimiter | None = None,
    ) -> None:
        self.app = app
        self.throttle = throttle  # failed keys, per address and key id (auth_throttle.py)
        self.audit = audit  # websockets refused here are recorded (HTTP: AuditTrail)
        self.keys = keys
        self.policies = policies
        self.graphiql = graphiql
        # Per credential; in Redis with the scaled mode (gateway/shared_limits.py).
        self.limiter = limiter or LocalRequestLimiter()
        self.verifications = verifications

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.graphiql and request.method == "GET" and "query" not in request.query_params:
            # The GraphiQL page itself is static HTML; the queries it sends carry the key.
            await self.app(scope, receive, send)
            return
        key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if key is None and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not key:
            response = _unauthenticated(
                "Missing API key: send it in the X-Api-Key header (or Authorization: Bearer)."
            )
            await response(scope, receive, send)
            return
        try:
            principal, retry_after = await self._authenticate(scope, key)
        except CredentialRefused as refused:
            response = _credential_refused(refused, scope.get("switchboard.request_id"))
            await response(scope, receive, send)
            return
        if retry_after is not None:
            await _throttled(retry_after)(scope, receive, send)
            return
        if principal is None:  # not reached: a refused credential raised above
            await _unauthenticated("Unknown or revoked API key.")(scope, receive, send)
            return
        scope["switchboard.principal"] = principal  # refusals below are audited with it
        claimed = request.headers.get("x-channel")
        if claimed is not None and claimed != principal.channel:
            # The channel comes from the credential; a caller claiming another is refused.
            log.warning(
                "channel mismatch refused: credential=%s request_id=%s",
                principal.credential_id,
                scope.get("switchboard.request_id"),
            )
            await _refused(
                403, "CHANNEL_MISMATCH", "X-Channel does not match this credential's channel."
            )(scope, receive, send)
            return
        profile = self.policies.current.channel(principal.channel)
        allowed, retry_after = await self.limiter.allow(
            principal.credential_id, profile.rate_limit_per_minute if profile else None
        )
        if not allowed:
            response = _refused(
                429, "RATE_LIMITED", "Too many requests for this credential; slow down."
            )
            response.headers["Retry-After"] = str(retry_after)
            await response(scope, receive, send)
            return
        purpose = request.headers.get("x-purpose") or None
        if purpose is not None and purpose not in self.policies.current.purposes:
            known = ", ".join(sorted(self.policies.current.purposes))
            await _refused(400, "BAD_PURPOSE", f"X-Purpose must be one of: {known}.")(
                scope, receive, send
            )
            return
        principal, refusal = await resolve_verification(
            request.headers.get("x-verification"),
            principal,
            self.policies.current,
            self.verifications,
        )
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope["switchboard.principal"] = principal
        scope["switchboard.purpose"] = purpose
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope, key: str) -> tuple[Principal | None, int | None]:
        """The credential's principal, or the seconds to wait if it is throttled.

        A key or bearer token that does not authenticate raises CredentialRefused, counted as
        a failure first (a bad token like a bad key: per address, and per key id for keys).
        """
        if self.throttle is None:
            return await self.keys.authenticate(key), None
        source, key_id = source_of(scope), key_id_of(key)
        retry_after = await self.throttle.refused(source, key_id)
        if retry_after is not None:
            return None, retry_after
        try:
            return await self.keys.authenticate(key), None
        except CredentialRefused as refused:
            if refused.status == 401:  # a well-signed token for an unknown channel guessed nothing
                await self.throttle.failed(source, key_id)
            raise

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A key in the upgrade request is checked here (refused before the socket opens);
        without one, the view's on_ws_connect requires it in connection_init."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if key is None and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if key:
            started = (time.time_ns() // 1000, time.perf_counter())
            principal, retry_after, refused = None, None, None
            try:
                principal, retry_after = await self._authenticate(scope, key)
            except CredentialRefused as error:
                log.warning("websocket credential refused: %s", error.reason)
                refused = error
            claimed = headers.get("x-channel")
            purpose = headers.get("x-purpose") or None
            refusal = None
            if retry_after is not None:
                refusal = "RATE_LIMITED", 4429
            elif refused is not None:
                refusal = refused.code, 4401 if refused.status == 401 else 4403
            elif principal is None:
                refusal = "UNAUTHENTICATED", 4401
            elif claimed is not None and claimed != principal.channel:
                refusal = "CHANNEL_MISMATCH", 4401
            elif purpose is not None and purpose not in self.policies.current.purposes:
                refusal = "BAD_PURPOSE", 4400
            if refusal is not None:
                if self.audit is not None:
                    await record_refused_connection(
                        self.audit,
                        request_id=_new_request_id(),
                        principal=principal,
                        purpose=purpose if refusal[0] != "BAD_PURPOSE" else None,
                        code=refusal[0],
                        started_us=started[0],
                        started_perf=started[1],
                    )
                await send({"type": "websocket.close", "code": refusal[1]})
                return
            assert principal is not None  # refused above otherwise
            principal, denial = await resolve_verification(
                headers.get("x-verification"),
                principal,
                self.policies.current,
                self.verifications,
            )
            if denial is not None:
                await deny_upgrade(scope, receive, send, denial)
                return
            scope["switchboard.principal"] = principal
            scope["switchboard.purpose"] = purpose
        elif "x-verification" in headers:
            # A verification is resolved for a known caller: with the key in connection_init,
            # the verification goes there too.
            denial = _refused(
                400,
                "VERIFICATION_WITHOUT_KEY",
                "Send X-Verification where the API key is: both on the upgrade request, "
                "or both in the connection_init payload.",
            )
            await deny_upgrade(scope, receive, send, denial)
            return
        await self.app(scope, receive, send)


class RequestIds:
    """Gives every request an id (the caller's if it is safe), echoed back and logged.

    The log line names method, route, status and time only: query strings, bodies and
    unknown paths may hold personal data and are never logged. The request's server span
    (tracing on) is opened here too (gateway/observe.py).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered, traceparent = _id_and_traceparent(scope)
        request_id = (
            offered if offered is not None and REQUEST_ID.fullmatch(offered) else _new_request_id()
        )
        scope["switchboard.request_id"] = request_id
        started = time.perf_counter()
        status = 500
        logged = logs.request_id.set(request_id)  # on every log line of this request

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        def log_line() -> None:
            # The route, not the raw path: a path may be anything a caller typed. Written
            # while the span (or the caller's traceparent) is still current: its trace id.
            route = route_of(scope["path"])
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                route,
                status,
                elapsed_ms,
                extra={
                    "method": scope["method"],
                    "path": route,
                    "status": status,
                    "duration_ms": elapsed_ms,
                },
            )

        try:
            tracer = tracing.tracer()
            if tracer is None:
                # Tracing off (the default): no span; the caller's traceparent is kept for the
                # backend calls. Taken here rather than through a context manager and
                # Starlette's Headers: on a cached answer those were ~10 us of a ~500 us request.
                passed = tracing.pass_through(traceparent)
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    log_line()
                    tracing.release(passed)
            else:
                with server_span(tracer, scope, Request(scope).headers) as span:
                    try:
                        await self.app(scope, receive, send_with_id)
                    finally:
                        span.set_attribute("http.response.status_code", status)
                        log_line()
        finally:
            logs.request_id.reset(logged)


def _id_and_traceparent(scope: Scope) -> tuple[str | None, str | None]:
    """The caller's X-Request-Id and traceparent (the first of each), in one pass over the
    raw headers (ASGI gives their names in lower case)."""
    offered = traceparent = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and offered is None:
            offered = value.decode("latin-1")
        elif name == b"traceparent" and traceparent is None:
            traceparent = value.decode("latin-1")
    return offered, traceparent


def _new_request_id() -> str:
    """32 hex digits like ``uuid4().hex``, from the same 128 bits of os.urandom, without
    building a UUID object (a quarter of the cost)."""
    return secrets.token_hex(16)


async def _probe(
    name: str, ping: Any, guard: BackendGuard, timeout_s: float
) -> tuple[str, dict[str, Any]]:
    """A backend's readiness: its ping through its circuit breaker, and the breaker's state.

    An open circuit reports the backend down without touching the network; after the
    cool-down the ping is the half-open probe, so readiness also brings a circuit back.
    """
    try:
        await guard.probe(ping, timeout_s)
    except AdapterError as error:  # CircuitOpen included: down, and no network call made
        report: dict[str, Any] = {"status": "down", "code": error.code}
    else:
        report = {"status": "up"}
    snapshot = guard.breaker.snapshot()
    report["circuit"] = snapshot.state.value
    report["consecutive_failures"] = snapshot.consecutive_failures
    if snapshot.opened_at is not None:
        report["opened_at"] = snapshot.opened_at.isoformat()
    return name, report


def build_answer_cache(
    settings: AnswerCacheSettings,
    records: RecordCache | None,
    schema: Any,
    *,
    evictions_fan_in: bool = False,
) -> AnswerCache | None:
    """The answer cache over the record cache (none without one: it reuses only answers
    made of cached records, and learns of changes from the record cache's evictions).

    Over a shared (Redis) record cache, another process's write evicts entries this process
    never hears of unless the scaled mode's eviction feed runs (``evictions_fan_in``): without
    it, no answers are kept, rather than answers that outlive another replica's write."""
    if records is None or not settings.enabled or settings.ttl_s <= 0:
        return None
    if records.shared and not evictions_fan_in:
        log.warning(
            "answer cache off: the record cache is in Redis but scaled.redis_url is unset, "
            "so other processes' evictions would not reach this one"
        )
        return None
    answers = AnswerCache(
        reusable=ReusableDocuments(schema._schema),
        ttl_s=settings.ttl_s,
        max_bytes=settings.max_bytes,
        max_entry_bytes=settings.max_entry_bytes,
    )
    records.on_eviction(answers.invalidate)
    return answers


def create_app(settings: Settings | None = None, span_exporter: Any = None) -> Starlette:
    """The gateway. ``span_exporter`` (an OpenTelemetry ``SpanExporter``) replaces the OTLP
    exporter when ``telemetry.enabled``: tests read the spans from an in-memory one."""
    settings = settings or load_settings()
    telemetry = settings.telemetry
    tracing.configure(
        enabled=telemetry.enabled,
        otlp_endpoint=telemetry.otlp_endpoint,
        service_name=telemetry.service_name,
        sample_ratio=telemetry.sample_ratio,
        exporter=span_exporter,
    )
    engine = create_engine(settings.database_url)
    wiring = build_backends(settings, engine)
    backends = wiring.backends
    keys = ApiKeyStore(engine, cache_s=settings.auth.key_cache_s)
    workflows = build_workflows(
        settings.database_url,
        settings.workflows,
        engine,
        wiring.backends,
        wiring.cache,
        workers=settings.workers,
    )
    if workflows is not None:
        backends = dataclasses.replace(backends, workflows=workflows.services)
    # Insight rules are checked before anything else starts: a broken file stops the start.
    insight_rules = RulesStore(settings.insight_rules_file or DEFAULT_RULES_FILE)
    backends = dataclasses.replace(backends, insight=insight_engine(backends, insight_rules))
    # Delivery runs as workflows: without the engine there are no campaigns. Insight
    # conditions of the campaigns are evaluated by the insight engine (its facts).
    campaigns = (
        build_campaigns(settings.campaigns, engine, backends.identity_store, facts=backends.insight)
        if workflows is not None
        else None
    )
    if campaigns is not None:
        backends = dataclasses.replace(backends, marketing=campaigns.services)
    schema = build_schema(
        settings.graphql.document_cache_size,
        wiring.registry,
        operation_limits=settings.graphql.operation_limits,
        cached_document_max_chars=settings.graphql.cached_document_max_chars,
    )
    policies = PolicyStore(
        settings.policy_file or DEFAULT_POLICY_FILE,
        operation_names(schema),
        # The insight fields' class: a policy that does not declare it is refused.
        required_classes={
            **wiring.registry.data_classes(),
            str(INSIGHT): (str(insight_rules.path), 1),
        },
    )
    audit = AuditLog(engine, settings.audit) if settings.audit.enabled else None
    oidc = settings.auth.oidc
    credentials = Credentials(
        keys, JwtVerifier(oidc, lambda: policies.current.channels) if oidc.enabled else None
    )
    # Read at start-up: a bad manifest stops the start (ManifestInvalid names the entry).
    manifest = load_manifest(
        settings.trusted_documents.manifest_file, settings.trusted_documents.max_manifest_bytes
    )
    graphql = SwitchboardGraphQL(
        backends,
        policies,
        enforce_policy=settings.policy_enforcement,
        keys=credentials,
        audit=audit,
        answers=build_answer_cache(
            settings.cache.answers,
            wiring.cache,
            schema,
            # build_scaled runs the eviction feed whenever scaled.redis_url is set.
            evictions_fan_in=settings.scaled.redis_url is not None,
        ),
        schema=schema,
        subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL],
        graphql_ide="graphiql" if settings.graphql.graphiql else None,
        allow_queries_via_get=True,
        max_subscriptions_per_connection=settings.websocket.max_operations_per_connection,
    )

    def worker_id() -> str:
        # The workflow executor id names a worker (unique per replica, stable over restarts).
        return workflows.engine.executor_id if workflows is not None else f"pid-{os.getpid()}"

    # Rate limits, failed-key throttle, eviction feed and replica board: shared in Redis in
    # the scaled mode, per process otherwise (gateway/scaled.py).
    scaled = build_scaled(settings, wiring.cache, worker_id, lambda: wiring.all_guards)
    throttle = scaled.throttle  # one per process: HTTP and websockets
    graphql.graphql_transport_ws_handler_class = transport_ws_handler(
        settings.websocket, throttle, audit, settings.http.max_json_depth
    )
    adapters = (backends.customer_system, backends.billing, backends.care)
    # Business events (marketing/): a bad events.yaml stops the start, file:line.
    events = build_events(settings, engine, wiring.registry, backends)
    meters.CACHE_ENABLED.set(1 if wiring.cache is not None else 0)

    dependencies = hub_dependencies(
        settings,
        engine,
        audit=audit,
        workflows_launched=(lambda: workflows.engine.launched) if workflows is not None else None,
        workflows_database_url=(
            workflows.engine.config.system_database_url if workflows is not None else None
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # The schema is `switchboard migrate`'s job (docs/operations.md): start-up only checks
        # it (DatabaseNotMigrated: one line, what to run) and never creates a table.
        await require_head(engine)
        for adapter in adapters:
            try:
                await adapter.start()
            except AdapterError as error:
                # A backend down at start-up must not keep the hub down: it is retried on use
                # and reported by /readyz.
                log.warning("%s not started: %s", adapter.name, error.code)
        await wiring.start_systems()  # an instance down now loads its WSDL on first use
        if audit is not None:
            await audit.start(schedule_checkpoints=True)
        if workflows is not None:
            # After the adapters: recovered workflows resume their steps at once.
            workflows.engine.launch()
        if campaigns is not None:
            # After the engine: the delivery pump starts workflows (the handler only decides).
            campaigns.start()
        if events is not None:
            if settings.events.handler == "record":
                events.install_event_handler(RecordingHandler(engine, "gateway"))
            elif settings.events.handler == "campaigns" and campaigns is not None:
                events.install_event_handler(campaigns.handler)
                campaigns.yield_to(events.dispatcher)
            # After the adapters (line lookups) and before serving: callbacks may come at once.
            await events.start()
        await scaled.start()  # after the engine: the board names the worker's executor id
        policies.start_watching(settings.policy_reload_interval_s)
        insight_rules.start_watching(settings.insight_reload_interval_s)
        credentials.start()  # a JWKS URL is fetched in the background
        # Everything built so far (WSDL, schema, engine, pools: ~180,000 objects) lives as long
        # as the process. Without this every full collection walked it: 120 ms stalls a few
        # times a second under load, the whole of the p95 tail (bench: cache-on p99 178 ms ->
        # 41 ms, 2.0 -> 1.5 ms of CPU per request on one worker).
        gc.collect()
        gc.freeze()
        yield
        if events is not None:
            await events.stop()  # unregistered first: no new deliveries while draining
        if campaigns is not None:
            await campaigns.stop_pump()  # before the engine's shutdown: no start after it
        await policies.stop_watching()
        await insight_rules.stop_watching()
        await scaled.close()
        await credentials.close()
        if workflows is not None:
            workflows.engine.shutdown()
        if campaigns is not None:
            campaigns.stop()
        if audit is not None:
            # After the workflows: their last requests are still recorded.
            await audit.stop()
        await wiring.close()
        await dependencies.close()
        await engine.dispose()
        tracing.shutdown()  # the last spans go out
        metrics.worker_exited()  # this worker's live gauges leave the replica's sums

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> JSONResponse:
        # Everything at once, each check cut at its own timeout (gateway/readiness.py).
        timeout_s = settings.readiness.backend_timeout_s
        probes, own = await asyncio.gather(
            asyncio.gather(
                *(
                    _probe(p.name, p.ping, wiring.guards[p.name], timeout_s)
                    for p in wiring.role_probes
                ),
                *(
                    _probe(p.name, p.ping, wiring.system_guards[p.name], timeout_s)
                    for p in wiring.probes
                ),
            ),
            check_all(dependencies.dependencies),
        )
        report = dict(probes[: len(wiring.role_probes)])
        systems = dict(probes[len(wiring.role_probes) :])
        required = {p.name for p in wiring.probes if p.required}
        for name, found in systems.items():
            found["required"] = name in required
        # A required dependency down takes the hub out of rotation; an optional one only
        # degrades it (its fields fail with coded errors, or reads skip the cache).
        down = [name for name, p in report.items() if p["status"] != "up"]
        down += [f"systems.{name}" for name in sorted(required) if systems[name]["status"] != "up"]
        down += [name for name, p in own.items() if p["required"] and p["status"] != "up"]
        degraded = [f"systems.{n}" for n, p in systems.items() if not p["required"]]
        degraded = [n for n in degraded if systems[n[8:]]["status"] != "up"]
        degraded += [n for n, p in own.items() if not p["required"] and p["status"] != "up"]
        return JSONResponse(
            {
                "status": "unavailable" if down else "degraded" if degraded else "ready",
                "down": down,
                "degraded": degraded,
                "dependencies": own,
                "backends": report,
                "systems": systems,
            },
            status_code=503 if down else 200,
        )

    async def metrics_page(request: Request) -> Response:
        # Names, kinds and channels only: nothing here identifies a customer.
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    async def replicas_page(request: Request) -> JSONResponse:
        # Every live replica's breakers (scaled mode), or this process's: no personal data.
        summary, status = await scaled.summary(worker_id(), wiring.all_guards)
        return JSONResponse(summary, status_code=status)

    documents = TrustedDocumentsGate(
        RequestGate(
            graphql,
            max_body_bytes=settings.http.max_body_bytes,
            max_json_depth=settings.http.max_json_depth,
        ),
        policies,
        manifest,
        max_body_bytes=settings.http.max_body_bytes,
    )
    endpoint: Any = Authenticate(
        documents,
        credentials,
        policies,
        graphiql=settings.graphql.graphiql,
        verifications=backends.verifications,
        throttle=throttle,
        limiter=scaled.limiter,
    )
    if audit is not None:
        endpoint = AuditTrail(endpoint, audit)  # one record per operation, refusals included
    # Outside the audit trail: an operation's duration includes its record's commit.
    endpoint = OperationMetrics(endpoint, OperationNames(telemetry.max_operation_names))
    export_routes: list[Route] = []
    if audit is not None:
        # The page's export: authenticated like /graphql, auditor only, itself recorded.
        exporter = Authenticate(
            AuditExport(
                audit,
                policies,
                max_records=settings.audit.export_max_records,
                batch_records=settings.audit.export_batch_records,
            ),
            credentials,
            policies,
            graphiql=False,
            verifications=backends.verifications,
            throttle=throttle,
        )
        export_routes.append(
            Route("/audit/export", AuditTrail(exporter, audit, every_get=True), methods=["GET"])
        )
    webhook = EventsEndpoint(events, settings.events.max_body_bytes) if events is not None else None
    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_page),
            Route("/replicas", replicas_page),
            Route("/graphql", endpoint, methods=["GET", "POST"]),
            WebSocketRoute(
                "/graphql",
                Authenticate(
                    documents,
                    credentials,
                    policies,
                    graphiql=settings.graphql.graphiql,
                    verifications=backends.verifications,
                    audit=audit,
                    throttle=throttle,
                ),
            ),
            # Other methods' 405; POST is served before the router (EventsFastPath).
            *([Route("/events/{source}", webhook, methods=["POST"])] if webhook else []),
            Route("/audit", audit_page),
            Route("/audit/app.js", audit_script),
            *export_routes,
            *([Mount(ASSETS_PATH, GraphiQLAssets())] if settings.graphql.graphiql else []),
        ],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.keys = keys
    app.state.policies = policies
    app.state.campaigns = campaigns
    app.state.events = events
    # POST and GET /graphql straight to their endpoint, past Starlette's router and its two
    # middlewares (gateway/direct_route.py); the route above stays for other methods' 405.
    served: ASGIApp = DirectRoute(app, "/graphql", endpoint, ("GET", "POST"))
    if webhook is not None:
        # POST /events/{source} before Starlette's router (gateway/events.py: its cost per
        # webhook); everything else, /events' other methods included, goes on to the app.
        served = EventsFastPath(served, webhook)
    return RequestIds(served)  # type: ignore[return-value]
