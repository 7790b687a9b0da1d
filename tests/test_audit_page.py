"""The auditors' web page in a real headless browser (Debian's chromium, selenium).

The page is static; every call it makes carries the key typed into it, so a non-auditor key
is refused (and the refusal recorded) and an auditor sees records and the chain verified,
filters on every field the API filters on, pages, opens a record, reads times in the browser's
own time zone, and exports the current filter as CSV and JSON lines (files checked).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.audit_support import AuditedGateway, audited_gateway
from tests.conftest import REQUIRE_SERVICES

CHROMIUM = Path(os.environ.get("SWITCHBOARD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SWITCHBOARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 30
# The browser's time zone for these tests: not UTC, not the backends' +08:00, a half hour.
BROWSER_TZ = "Asia/Kolkata"


@pytest.fixture(scope="module")
def audited(sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditedGateway]:
    with audited_gateway(sims, tmp_path_factory.mktemp("auditpage")) as gateway:
        yield gateway


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.exists() and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, downloads: Path) -> Iterator:
    reason = _browser_missing()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver = webdriver.Chrome(
        service=Service(executable_path=str(CHROMEDRIVER), env={**os.environ, "TZ": BROWSER_TZ}),
        options=options,
    )
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_log(driver, audited: AuditedGateway, key: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{audited.url}/audit")
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "connect").click()


def wait_for(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition)


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def chain_ok(driver) -> str | None:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "chain-status").get_attribute("data-ok")


def table_rows(driver) -> list[list[str]]:
    # In one script: rows replaced by the next page between two reads are never stale.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#records tbody tr'))"
        ".map((r) => Array.from(r.cells).map((c) => c.innerText.trim()));"
    )


TEXT_FILTERS = (
    "customerId",
    "principal",
    "role",
    "channel",
    "operation",
    "code",
    "purpose",
    "requestId",
)


def set_filter(driver, *, decision: str = "", clear_only: bool = False, **given: str) -> None:
    """Fill the filter form (every other field emptied) and search."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    for name in TEXT_FILTERS:
        field = driver.find_element(By.ID, f"f-{name}")
        field.clear()
        if given.get(name):
            field.send_keys(given[name])
    for name in ("from", "to"):
        # datetime-local is the auditor's wall clock: set through the DOM (typing into it
        # depends on the browser's locale).
        driver.execute_script(
            "document.getElementById(arguments[0]).value = arguments[1];",
            f"f-{name}",
            given.get(name, ""),
        )
    Select(driver.find_element(By.ID, "f-decision")).select_by_value(decision)
    box = driver.find_element(By.ID, "f-clearOnly")
    if box.is_selected() != clear_only:
        box.click()
    loads = load_count(driver)
    driver.find_element(By.ID, "search").click()
    wait_for(driver, lambda d: load_count(d) > loads or text_of(d, "error"))


def load_count(driver) -> int:
    """How many pages the page has shown (it counts them on the table, for tests)."""
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, "records").get_attribute("data-loads") or 0)


def forbidden_records(audited: AuditedGateway) -> int:
    return sum(1 for r in audited.records() if r["code"] == "FORBIDDEN")


def test_a_non_auditor_key_gets_nothing_and_is_recorded(browser, audited):
    before = forbidden_records(audited)
    open_log(browser, audited, audited.keys["agent"])
    wait_for(browser, lambda d: "FORBIDDEN" in text_of(d, "error"))
    assert table_rows(browser) == []
    assert chain_ok(browser) is None
    assert forbidden_records(audited) == before + 1
    open_log(browser, audited, "sb_deadbeef.not-a-key")
    wait_for(browser, lambda d: "UNAUTHENTICATED" in text_of(d, "error"))
    assert table_rows(browser) == []


def test_an_auditor_searches_by_customer_and_principal_and_sees_the_chain(
    browser, audited, customers
):
    bundle = customers[11]
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status != "D")
    looked = audited.post(
        "query($m: String!) { customerByMsisdn(msisdn: $m) { id profile { name } } }",
        {"m": msisdn},
    ).json()
    hub_id = looked["data"]["customerByMsisdn"]["id"]
    checkpoint = audited.publish_checkpoint()  # as the operators' cron does
    audited.post("query { offerings { id } }", channel="app")

    open_log(browser, audited, audited.keys["audit"])
    wait_for(browser, lambda d: chain_ok(d) is not None)
    assert chain_ok(browser) == "true"
    status = text_of(browser, "chain-status")
    assert status.startswith("Chain verified:")
    # The page verifies from the latest signed checkpoint, and says which and how far.
    assert f"since the published checkpoint at seq {checkpoint['seq']} (signed " in status
    # No key is pinned on this hub: the page says the signatures prove less.
    assert "Signatures UNTRUSTED" in status
    wait_for(browser, lambda d: len(table_rows(d)) > 0)

    set_filter(browser, customerId=hub_id)
    wait_for(browser, lambda d: len(table_rows(d)) == 1)
    (row,) = table_rows(browser)
    assert row[2:6] == ["test-agent", "agent", "agent", "service"]
    assert "customerByMsisdn.profile.name" in row[8]  # went out clear
    assert bundle.customer.name not in browser.page_source
    assert msisdn not in browser.page_source

    set_filter(browser, principal="test-app")
    wait_for(browser, lambda d: table_rows(d) and all(r[2] == "test-app" for r in table_rows(d)))
    assert text_of(browser, "error") == ""


def test_the_page_shows_a_tampered_chain(browser, audited):
    # After the checkpoint the previous test published: what the page verifies.
    with sqlite3.connect(audited.database) as conn:
        (seq,) = conn.execute("SELECT max(seq) FROM audit_record").fetchone()
        (purpose,) = conn.execute(
            "SELECT purpose FROM audit_record WHERE seq = ?", (seq,)
        ).fetchone()
        conn.execute(
            "UPDATE audit_record SET purpose = 'fraud_investigation' WHERE seq = ?", (seq,)
        )
    try:
        open_log(browser, audited, audited.keys["audit"])
        wait_for(browser, lambda d: chain_ok(d) == "false")
        assert f"edited at seq {seq}" in text_of(browser, "chain-status")
    finally:  # put it back: the chain verifies again
        with sqlite3.connect(audited.database) as conn:
            conn.execute("UPDATE audit_record SET purpose = ? WHERE seq = ?", (purpose, seq))


def local_text(time_us: int) -> str:
    """What the page shows for a time: the browser's wall clock, with date and offset."""
    moment = datetime.fromtimestamp(time_us / 1_000_000, ZoneInfo(BROWSER_TZ))
    offset = moment.strftime("%z")
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f" UTC{offset[:3]}:{offset[3:]}"


def wait_for_file(folder: Path, suffix: str, known: set[str]) -> Path:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        done = [p for p in folder.iterdir() if p.name.endswith(suffix) and p.name not in known]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} file downloaded into {folder}")


def test_an_auditor_filters_pages_opens_a_record_and_exports_it(
    browser, audited, customers, downloads
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    bundle = customers[13]
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status != "D")
    looked = audited.post(
        "query Look($m: String!) { customerByMsisdn(msisdn: $m) { id profile { name } } }",
        {"m": msisdn},
        request_id="page-detail-0001",
    ).json()
    assert looked["data"]["customerByMsisdn"]["profile"]["name"] == bundle.customer.name
    for _ in range(12):
        audited.post("query Offers { offerings { id } }", channel="app", purpose=None)
    audited.post("query { auditLog { nodes { seq } } }")  # the agent: FORBIDDEN

    open_log(browser, audited, audited.keys["audit"])
    wait_for(browser, lambda d: chain_ok(d) is not None and load_count(d) > 0)
    assert chain_ok(browser) == "true"
    assert "Last checkpoint:" in text_of(browser, "chain-status")

    # Outcome and code: the agent's refused read of the log.
    set_filter(browser, decision="REFUSED", code="FORBIDDEN", role="agent", channel="agent")
    rows = table_rows(browser)
    assert rows and all(r[7] == "refused (FORBIDDEN)" and r[3] == "agent" for r in rows)

    # Times from-to in the auditor's own clock, operation, purpose: the one lookup above.
    (stored,) = audited.records("page-detail-0001")
    start = datetime.fromtimestamp(stored["time_us"] / 1_000_000 - 1, ZoneInfo(BROWSER_TZ))
    end = datetime.fromtimestamp(stored["time_us"] / 1_000_000 + 1, ZoneInfo(BROWSER_TZ))
    set_filter(
        browser,
        operation="Look",
        purpose="service",
        principal="test-agent",
        **{"from": start.strftime("%Y-%m-%dT%H:%M:%S"), "to": end.strftime("%Y-%m-%dT%H:%M:%S")},
    )
    (row,) = table_rows(browser)
    assert row[0] == str(stored["seq"])
    # The browser's time zone (Asia/Kolkata, +05:30) with the date, to the second, one line.
    assert row[1] == local_text(stored["time_us"])
    assert "\n" not in row[1]

    # Open it: every field, every disclosed path with its level, the request id.
    browser.find_element(By.CSS_SELECTOR, "#records tbody tr").click()
    wait_for(browser, lambda d: d.find_element(By.ID, "detail").is_displayed())
    detail = {
        r.get_attribute("data-field"): r.find_element(By.TAG_NAME, "td").text
        for r in browser.find_elements(By.CSS_SELECTOR, "#detail-fields tr")
    }
    assert detail["request id"] == "page-detail-0001"
    assert detail["outcome"] == "ok" and detail["code"] == "-"
    assert detail["operation name"] == "Look" and detail["operation type"] == "query"
    assert detail["document sha256"] == stored["document_sha256"]
    assert detail["hash"] == stored["hash"]
    assert detail["customers (keyed hashes)"] == " ".join(stored["customers"])
    assert detail["policy version"] == stored["policy_version"]
    assert detail["time"].startswith(local_text(stored["time_us"]))
    levels = {
        r.get_attribute("data-path"): r.find_elements(By.TAG_NAME, "td")[1].text
        for r in browser.find_elements(By.CSS_SELECTOR, "#detail-disclosed tbody tr")
    }
    assert levels == stored["disclosed"]
    assert levels["customerByMsisdn.profile.name"] == "clear"
    assert bundle.customer.name not in browser.page_source
    assert msisdn not in browser.page_source

    # Paging: ten a page, next and previous, newest first without overlap.
    set_filter(browser, principal="test-app", operation="Offers")
    loads = load_count(browser)
    Select(browser.find_element(By.ID, "page-size")).select_by_value("10")
    wait_for(browser, lambda d: load_count(d) > loads)
    assert len(table_rows(browser)) == 10
    first = [int(r[0]) for r in table_rows(browser)]
    loads = load_count(browser)
    browser.find_element(By.ID, "next").click()
    wait_for(browser, lambda d: load_count(d) > loads)
    second = [int(r[0]) for r in table_rows(browser)]
    assert second and max(second) < min(first)
    assert first == sorted(first, reverse=True)
    loads = load_count(browser)
    browser.find_element(By.ID, "prev").click()
    wait_for(browser, lambda d: load_count(d) > loads)
    assert [int(r[0]) for r in table_rows(browser)] == first

    # Export the current filter, both formats: the files hold exactly its records.
    wanted = [
        r
        for r in audited.records()
        if r["subject"] == "test-app" and r["operation_name"] == "Offers"
    ]
    known = {p.name for p in downloads.iterdir()}
    browser.find_element(By.ID, "export-csv").click()
    csv_file = wait_for_file(downloads, ".csv", known)
    rows = list(csv.DictReader(io.StringIO(csv_file.read_text(encoding="utf-8"))))
    assert [int(r["seq"]) for r in rows] == [r["seq"] for r in wanted]
    assert {r["subject"] for r in rows} == {"test-app"}
    assert all(r["time"].endswith("+00:00") for r in rows)
    browser.find_element(By.ID, "export-jsonl").click()
    jsonl_file = wait_for_file(downloads, ".jsonl", known)
    lines = [json.loads(line) for line in jsonl_file.read_text(encoding="utf-8").splitlines()]
    assert [x["seq"] for x in lines] == [r["seq"] for r in wanted]
    assert text_of(browser, "error") == ""
    # Each export is an audited access of the auditor's.
    exports = [r for r in audited.records() if r["operation_name"] == "auditExport"]
    assert len(exports) >= 2 and {r["subject"] for r in exports} == {"test-audit"}
