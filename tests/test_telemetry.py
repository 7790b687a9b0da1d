"""Traces, metrics and logs (docs/operations.md), against the real simulators.

- One request's spans, from the gateway to the SOAP call to BOSS, share the caller's trace id
  (read from an in-memory exporter, app in process), and BOSS receives that trace id in its
  traceparent header. With tracing off, no span is made and the caller's traceparent still
  reaches the backend unchanged.
- /metrics of `serve --workers 2` sums both workers: the operation histogram counts every
  request, whichever worker answered it, and its buckets move.
- A gateway's whole log output, after searches by MSISDN, 360 views, failing backends and bad
  input, is JSON lines and holds no MSISDN, ID-card number or customer name of the dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from prometheus_client.mmap_dict import MmapedDict

from gateway.app import create_app
from gateway.settings import load_settings
from telemetry import tracing
from telemetry.metrics import OperationNames
from tests.harness import (
    REPO,
    SWITCHBOARD,
    free_ports,
    gateway_env,
    issue_key,
    migrate_database,
    post_graphql,
    starlette_of,
    start_gateway,
    stop,
)

FIND = "query FindCustomer($m: String!) { customerByMsisdn(msisdn: $m) { id profile { name } } }"
VIEW_360 = """query View360($id: ID!) { customer(id: $id) {
  profile { name certificateNumber } subscriptions { msisdn }
  billingAccounts { id balance { amount { amount } } } tickets(first: 3) { id description } } }"""


def active_msisdn(bundle) -> str:
    return next(s.msisdn for s in bundle.subscribers if s.status == "A")


def with_lines(customers) -> list:
    """The dataset's customers that have an active line (not all do)."""
    return [c for c in customers if any(s.status == "A" for s in c.subscribers)]


def new_traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def sim_traceparents(url: str) -> list[str | None]:
    return httpx.get(f"{url}/_sim/traceparents", timeout=10).json()["traceparents"]


def in_process_settings(sims, tmp_path: Path, *, tracing_on: bool):
    os.environ.pop("SWITCHBOARD_CONFIG", None)
    database_url = f"sqlite+aiosqlite:///{tmp_path}/hub.db"
    migrate_database(database_url)  # as `switchboard migrate` does; the app only checks it
    return load_settings(
        database_url=database_url,
        boss={"base_url": sims.boss},
        billing={"base_url": sims.billing},
        care={"base_url": sims.care},
        system_urls={"loyalty-north": sims.loyalty_north, "loyalty-south": sims.loyalty_south},
        workflows={"enabled": False},
        audit={"state_dir": str(tmp_path)},
        telemetry={"enabled": tracing_on},
    )


@contextlib.asynccontextmanager
async def in_process(app):
    """The app started (its lifespan), an agent key, and a function that posts to it."""
    starlette = starlette_of(app)
    async with starlette.router.lifespan_context(starlette):
        issued = await starlette.state.keys.issue(subject="t", role="agent", channel="agent")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://hub", timeout=30
        ) as client:

            async def ask(document: str, variables: dict, headers: dict) -> httpx.Response:
                return await client.post(
                    "/graphql",
                    json={"query": document, "variables": variables},
                    headers={"X-Api-Key": issued.key, "X-Purpose": "service", **headers},
                )

            yield ask


@pytest.fixture
def no_config(monkeypatch):
    for variable in list(os.environ):
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")


async def test_one_requests_spans_share_the_callers_trace_down_to_the_soap_call(
    sims, control, customers, tmp_path, no_config
):
    settings = in_process_settings(sims, tmp_path, tracing_on=True)
    exporter = InMemorySpanExporter()
    app = create_app(settings, span_exporter=exporter)
    msisdn = active_msisdn(with_lines(customers)[11])
    trace_id, traceparent = new_traceparent()
    try:
        async with in_process(app) as ask:
            response = await ask(FIND, {"m": msisdn}, {"traceparent": traceparent})
    finally:
        tracing.shutdown()
    assert response.status_code == 200, response.text
    assert response.json()["data"]["customerByMsisdn"]["id"].startswith("cus_")

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(trace_id, 16)]
    assert {format_trace_id(s.context.trace_id) for s in spans} == {trace_id}
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.name == "query FindCustomer"
    assert server.attributes["graphql.operation.name"] == "FindCustomer"
    assert server.attributes["graphql.operation.type"] == "query"
    assert server.attributes["switchboard.channel"] == "agent"
    assert format_span_id(server.parent.span_id) == traceparent.split("-")[2]  # the caller's
    soap = [
        s
        for s in spans
        if s.kind is SpanKind.CLIENT and s.attributes["switchboard.system"] == "boss"
    ]
    assert soap, [s.name for s in spans]
    assert {s.attributes["switchboard.outcome"] for s in soap} == {"OK"}
    assert all(s.attributes["switchboard.attempt"] == 1 for s in soap)
    assert any(s.name.startswith("batch ") for s in spans)
    assert any(s.name == "audit commit" for s in spans)
    by_id = {s.context.span_id: s for s in spans}
    for span in soap:  # each SOAP call hangs, through its parents, under the server span
        parent = span
        while parent.parent is not None and parent.parent.span_id in by_id:
            parent = by_id[parent.parent.span_id]
        assert parent is server
    # BOSS received the trace, with the SOAP call's own span as parent.
    received = [t for t in sim_traceparents(sims.boss) if t and t.split("-")[1] == trace_id]
    assert received
    assert {t.split("-")[2] for t in received} <= {format_span_id(s.context.span_id) for s in soap}
    # No personal data in any attribute: names and codes only.
    for span in spans:
        for value in (span.attributes or {}).values():
            assert msisdn not in str(value)


async def test_with_tracing_off_no_span_is_made_and_the_traceparent_still_reaches_the_backend(
    sims, control, customers, tmp_path, no_config
):
    settings = in_process_settings(sims, tmp_path, tracing_on=False)
    app = create_app(settings)
    assert tracing.tracer() is None
    _, traceparent = new_traceparent()
    msisdn = active_msisdn(with_lines(customers)[12])
    async with in_process(app) as ask:
        response = await ask(FIND, {"m": msisdn}, {"traceparent": traceparent})
        assert response.status_code == 200, response.text
        assert traceparent in sim_traceparents(sims.boss)  # passed on unchanged
        # Without a well-formed one from the caller, none is made up.
        control.reset()
        response = await ask(
            FIND,
            {"m": active_msisdn(with_lines(customers)[13])},
            {"traceparent": "not-a-traceparent"},
        )
        assert response.status_code == 200
    assert set(sim_traceparents(sims.boss)) == {None}


def test_operation_names_are_bounded_and_never_carry_numbers():
    names = OperationNames(max_names=2)
    assert names.label(None) == "anonymous"
    assert names.label("FindCustomer") == "FindCustomer"
    assert names.label("q18899407311") == "unlabelled"
    assert names.label("Second") == "Second"
    assert names.label("Third") == "other"
    assert names.label("FindCustomer") == "FindCustomer"


def _counts_per_worker(directory: Path, operation: str) -> dict[int, float]:
    """Each worker's own count of the operation histogram, read from its file."""
    counts: dict[int, float] = {}
    for path in directory.glob("histogram_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _metric, sample, labels, _help = json.loads(key)
            # Files hold each bucket's own count (the collector accumulates): their sum is
            # the number of observations.
            if (
                sample == "switchboard_operation_duration_seconds_bucket"
                and labels.get("operation") == operation
            ):
                counts[pid] = counts.get(pid, 0) + value
    return counts


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", re.M)
    total = 0.0
    found = False
    for match in pattern.finditer(text):
        present = (match.group(1) or "").split(",")
        if not wanted or all(part in present for part in wanted.split(",")):
            total += float(match.group(2))
            found = True
    assert found, f"{name}{{{wanted}}} not in /metrics"
    return total


def test_two_workers_metrics_are_summed_and_the_histograms_move(sims, customers, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    database = f"sqlite+aiosqlite:///{state}/hub.db"
    env = gateway_env(sims, database, SWITCHBOARD_WORKFLOWS__ENABLED="false")
    key = issue_key(env, channel="agent", role="agent")
    (port,) = free_ports(1)
    log = (tmp_path / "gateway.log").open("w")
    process = subprocess.Popen(
        [*SWITCHBOARD, "serve", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # two workers importing the hub on a loaded machine
        while True:
            assert process.poll() is None, (tmp_path / "gateway.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.2)
        directory = state / f"metrics-{port}"
        before = httpx.get(f"{base}/metrics", timeout=10).text
        assert "switchboard_backend_circuit_state" in before  # the multiprocess exposition
        sent = 0
        msisdns = [active_msisdn(c) for c in with_lines(customers)[20:40]]
        # New connection per request (httpx.post): the kernel hands them to either worker.
        while sent < 400:
            response = post_graphql(base, key, FIND, {"m": msisdns[sent % len(msisdns)]})
            assert response.status_code == 200, response.text
            sent += 1
            if sent >= 20 and len(_counts_per_worker(directory, "FindCustomer")) == 2:
                break
        per_worker = _counts_per_worker(directory, "FindCustomer")
        assert len(per_worker) == 2 and all(n > 0 for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) == sent
        for _ in range(4):  # whichever worker answers /metrics, it reports both
            text = httpx.get(f"{base}/metrics", timeout=10).text
            count = _sample(
                text, "switchboard_operation_duration_seconds_count", operation="FindCustomer"
            )
            assert count == sent
            inf = _sample(
                text,
                "switchboard_operation_duration_seconds_bucket",
                operation="FindCustomer",
                channel="agent",
                le="+Inf",
            )
            assert inf == sent
            assert (
                _sample(text, "switchboard_backend_call_duration_seconds_count", backend="boss")
                >= 1
            )
            assert _sample(text, "switchboard_audit_commit_seconds_count") >= sent
            assert _sample(text, "switchboard_backend_calls_total", backend="boss") >= 1
            assert _sample(text, "switchboard_backend_circuit_state", backend="boss") == 0
        assert 'operation="FindCustomer"' not in before  # the buckets moved from nothing
    finally:
        stop(process)
        log.close()
    # Each worker removed its live gauges on the way out.
    assert not list(directory.glob("gauge_live*"))


def _dataset_secrets(customers) -> set[str]:
    found: set[str] = set()
    for bundle in customers:
        profile = bundle.customer
        found.update((profile.cert_no, profile.name, profile.email or ""))
        found.add(bundle.account.certificate_number)  # typo'd variants included
        for subscriber in bundle.subscribers:
            found.add(subscriber.msisdn[-11:])  # national form: +86 and 86 forms contain it
    return {value for value in found if value and len(value) >= 2}


def test_the_logs_are_json_lines_without_personal_data(sims, control, customers, tmp_path):
    state = tmp_path / "hub"
    state.mkdir()
    env = gateway_env(
        sims,
        f"sqlite+aiosqlite:///{state}/hub.db",
        SWITCHBOARD_BILLING__TIMEOUT_S="0.5",
        SWITCHBOARD_BILLING__RETRY_ATTEMPTS="1",
    )
    key = issue_key(env, channel="agent", role="agent")
    log_path = tmp_path / "gateway.log"
    trace_id, traceparent = new_traceparent()
    chosen = with_lines(customers)[40:46]
    base, process = start_gateway(env, log_path, timeout_s=180)  # a loaded machine is slow
    try:
        ids = []
        for bundle in chosen:  # searches by MSISDN, then the 360 view
            msisdn = active_msisdn(bundle)
            found = post_graphql(
                base, key, FIND, {"m": msisdn}, headers={"traceparent": traceparent}
            )
            assert found.status_code == 200, found.text
            ids.append(found.json()["data"]["customerByMsisdn"]["id"])
        for hub_id in ids[:3]:
            assert post_graphql(base, key, VIEW_360, {"id": hub_id}).status_code == 200
        control.set("billing", down=True)  # failing backends
        control.set("care", bad_response=True)
        for hub_id in ids[3:]:
            body = post_graphql(base, key, VIEW_360, {"id": hub_id}).json()
            assert body["errors"]
        control.reset()
        msisdn = active_msisdn(chosen[0])
        certificate = chosen[0].customer.cert_no
        name = chosen[0].customer.name
        bad = [  # bad input carrying personal data, every way a caller can send it
            httpx.post(
                f"{base}/graphql",
                content=f'{{"query": "{msisdn}',
                headers={"X-Api-Key": key, "Content-Type": "application/json"},
            ),
            post_graphql(base, key, f'{{ customerByMsisdn(msisdn: "{msisdn}") {{ id }} }}'),
            post_graphql(base, key, f"{{ customerByMsisdn(msisdn: {msisdn}) {{ id }} }}"),
            post_graphql(base, key, FIND, {"m": f"+86{msisdn}x{name}{certificate}"}),
            post_graphql(base, key, FIND, {"m": name}),
            post_graphql(base, f"sb_{msisdn}.{certificate}", FIND, {"m": msisdn}),
            httpx.get(
                f"{base}/graphql",
                params={"query": f'{{ customerByMsisdn(msisdn: "{msisdn}") {{ id }} }}'},
                headers={"X-Api-Key": key},
            ),
            httpx.get(f"{base}/customers/{msisdn}/{certificate}"),
            post_graphql(
                base, key, FIND, {"m": msisdn}, purpose=None, headers={"X-Purpose": name.encode()}
            ),
        ]
        assert all(r.status_code < 500 for r in bad), [r.status_code for r in bad]
    finally:
        stop(process)
    lines = log_path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert len(records) > 20
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", record["time"])
        assert "\n" not in json.dumps(record)[1:-1].replace("\\n", "")
    access = [r for r in records if r.get("path") == "/graphql"]
    assert access and all(r.get("request_id") for r in access)
    assert any(r.get("trace_id") == trace_id for r in access)  # the caller's, tracing off
    assert not any(r["logger"] == "uvicorn.access" for r in records)
    whole = log_path.read_text(encoding="utf-8")
    leaked = sorted(value for value in _dataset_secrets(customers) if value in whole)
    assert leaked == [], leaked


def test_the_telemetry_settings_reach_the_code_by_file_environment_and_flag(
    tmp_path, no_config, monkeypatch
):
    from gateway.cli import _export, _overrides, build_parser

    config = tmp_path / "switchboard.toml"
    config.write_text(
        'log_format = "text"\nworker_healthcheck_s = 45\n'
        "[telemetry]\nenabled = true\nsample_ratio = 0.25\nmax_operation_names = 7\n"
    )
    monkeypatch.setenv("SWITCHBOARD_CONFIG", str(config))
    settings = load_settings()
    assert (settings.log_format, settings.worker_healthcheck_s) == ("text", 45)
    assert (settings.telemetry.enabled, settings.telemetry.sample_ratio) == (True, 0.25)
    assert settings.telemetry.max_operation_names == 7
    monkeypatch.setenv("SWITCHBOARD_TELEMETRY__SERVICE_NAME", "hub-a")
    monkeypatch.setenv("SWITCHBOARD_LOG_FORMAT", "json")
    settings = load_settings()
    assert (settings.telemetry.service_name, settings.log_format) == ("hub-a", "json")
    # serve's flags go into the environment the workers inherit, and win.
    monkeypatch.setenv("SWITCHBOARD_CONFIG", "/nonexistent/switchboard.toml")
    args = build_parser().parse_args(
        [
            "serve",
            "--trace",
            "--otlp-endpoint",
            "http://collector:4318/v1/traces",
            "--log-format",
            "text",
        ]
    )
    _export(_overrides(args))
    settings = load_settings()
    assert settings.telemetry.enabled is True
    assert settings.telemetry.otlp_endpoint == "http://collector:4318/v1/traces"
    assert settings.log_format == "text"
    for variable in list(os.environ):  # _export wrote to os.environ itself
        if variable.startswith("SWITCHBOARD_"):
            monkeypatch.delenv(variable)


def test_bad_telemetry_settings_are_refused_with_the_key(tmp_path, no_config, monkeypatch):
    from gateway.settings import SettingsInvalid

    monkeypatch.setenv("SWITCHBOARD_TELEMETRY__SAMPLE_RATIO", "1.5")
    with pytest.raises(SettingsInvalid, match=r"telemetry\.sample_ratio"):
        load_settings()
    monkeypatch.delenv("SWITCHBOARD_TELEMETRY__SAMPLE_RATIO")
    monkeypatch.setenv("SWITCHBOARD_LOG_FORMAT", "xml")
    with pytest.raises(SettingsInvalid, match="log_format"):
        load_settings()


def test_an_exception_is_one_line_without_its_message():
    from telemetry.logs import describe_exception

    try:
        try:
            raise KeyError("18899407311")
        except KeyError as inner:
            raise ValueError("110101199001011234 张三") from inner
    except ValueError as error:
        text = describe_exception((type(error), error, error.__traceback__))
    assert "\n" not in text
    assert text.startswith("builtins.ValueError at ")
    assert "caused by builtins.KeyError" in text
    assert "test_telemetry.py" in text
    assert "18899407311" not in text and "110101" not in text and "张三" not in text


@pytest.mark.parametrize(
    "extra",
    [
        {"method": "POST", "path": "/graphql", "status": 200, "duration_ms": 1.2},
        {},
        {"request_id": "r-1", "trace_id": None},
        {"color_message": "\x1b[32mINFO\x1b[0m", "system": "计费"},
        {"when": __import__("datetime").date(2026, 12, 3)},
    ],
)
def test_the_fast_log_line_is_the_librarys_line(extra):
    """JsonLines.format's own path writes what python-json-logger's general one writes."""
    import logging

    from pythonjsonlogger.orjson import OrjsonFormatter

    from telemetry.logs import ContextFields, JsonLines

    record = logging.LogRecord("switchboard.x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    record.__dict__.update(extra)
    ContextFields().filter(record)
    formatter = JsonLines()
    assert formatter.format(record) == OrjsonFormatter.format(formatter, record)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"count": 2**70}, {"count": 2**70}),  # past orjson's 64 bits
        ({"by_code": {404: 3}}, {"by_code": {"404": 3}}),  # a key that is not text
        ({"system": "计费", "n": 1.5}, {"system": "计费", "n": 1.5}),  # UTF-8 as is
    ],
)
def test_a_log_line_orjson_refuses_is_still_written(extra, expected):
    """What orjson cannot write goes through the standard library: one JSON line, not lost."""
    import json
    import logging

    from telemetry.logs import ContextFields, JsonLines

    record = logging.LogRecord("switchboard.x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    record.__dict__.update(extra)
    ContextFields().filter(record)
    line = JsonLines().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "a b" and parsed["level"] == "INFO"
    assert {name: parsed[name] for name in expected} == expected
