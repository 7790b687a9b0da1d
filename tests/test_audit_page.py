"""The auditors' web page in a real headless browser (Debian's chromium, selenium).

The page is static; every call it makes carries the key typed into it, so a non-auditor key
is refused (and the refusal recorded) and an auditor sees records and the chain verified.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.audit_support import AuditedGateway, audited_gateway
from tests.conftest import REQUIRE_SERVICES

CHROMIUM = Path(os.environ.get("SWITCHBOARD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SWITCHBOARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 20


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
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
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
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
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
    from selenium.webdriver.common.by import By

    return [
        [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        for row in driver.find_elements(By.CSS_SELECTOR, "#records tbody tr")
    ]


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
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

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

    Select(browser.find_element(By.ID, "search-kind")).select_by_value("customerId")
    browser.find_element(By.ID, "search-value").send_keys(hub_id)
    browser.find_element(By.ID, "search").click()
    wait_for(browser, lambda d: len(table_rows(d)) == 1)
    (row,) = table_rows(browser)
    assert row[2:6] == ["test-agent", "agent", "agent", "service"]
    assert "customerByMsisdn.profile.name" in row[8]  # went out clear
    assert bundle.customer.name not in browser.page_source
    assert msisdn not in browser.page_source

    Select(browser.find_element(By.ID, "search-kind")).select_by_value("principal")
    value = browser.find_element(By.ID, "search-value")
    value.clear()
    value.send_keys("test-app")
    browser.find_element(By.ID, "search").click()
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
