"""GraphiQL served by the gateway itself, in a real headless browser that can reach loopback only.

strawberry's own page loads React and GraphiQL from a CDN: on an operator's network without
internet it stays blank. Here the browser's only route out is a dead proxy (loopback excepted),
and the page must still render, run the README's 360 query with the agent key pasted into the
Headers editor, and show the customer's name masked (no purpose stated).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.graphiql.page import STATIC_DIR
from tests.conftest import REQUIRE_SERVICES
from tests.harness import REPO, free_ports

CHROMIUM = Path(os.environ.get("SWITCHBOARD_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("SWITCHBOARD_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
WAIT_S = 30
ASSET_BUDGET_BYTES = 5 * 1024 * 1024
README_360 = re.compile(r"## The 360 query\n\n```graphql\n(.*?)```", re.DOTALL)

# The editors are CodeMirror instances; pasting is setValue, as a paste into them does.
EDITOR_JS = """
const cms = [...document.querySelectorAll('.CodeMirror')].map((e) => e.CodeMirror);
const pick = (where) => {
  const holder = document.querySelector(where);
  return cms.find((cm) => holder && holder.contains(cm.getWrapperElement()));
};
const query = pick('.graphiql-query-editor');
const headers = cms.find((cm) => cm !== query && cm.getValue().includes('X-Api-Key'));
const editors = {query, headers, result: pick('.result-window')};
"""


def _browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (path.exists() and os.access(path, os.X_OK)):
            return f"{path} not found (apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Chromium whose every request off loopback goes to a proxy port nothing listens on."""
    reason = _browser_missing()
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1: CI must not skip)")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    (dead_port,) = free_ports(1)
    profile = tmp_path_factory.mktemp("chromium-graphiql")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        # Loopback goes direct (Chromium's implicit bypass); anything else, CDNs included,
        # to a closed port: no network beyond this machine.
        f"--proxy-server=http://127.0.0.1:{dead_port}",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition)


def _editor_value(driver, name: str) -> str | None:
    return driver.execute_script(
        EDITOR_JS + f"return editors.{name} ? editors.{name}.getValue() : null;"
    )


def _readme_360_for(msisdn: str) -> str:
    query = README_360.search((REPO / "README.md").read_text(encoding="utf-8")).group(1)
    assert '"18899407311"' in query  # the demo customer's line; the test dataset has others
    return query.replace('"18899407311"', json.dumps(msisdn))


def test_the_page_and_its_assets_come_from_the_gateway_under_a_self_only_policy(gateway):
    page = httpx.get(f"{gateway.url}/graphql", headers={"Accept": "text/html"}, timeout=10)
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "http" not in page.text.replace("http-equiv", "")  # no URL off this origin
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/graphiql/") for s in sources), sources
    assert "<script>" not in page.text  # no inline script: the policy would refuse it
    for source in sources:
        asset = httpx.get(f"{gateway.url}{source}", timeout=10)
        assert asset.status_code == 200, source
        assert asset.headers["x-content-type-options"] == "nosniff"
    css = httpx.get(f"{gateway.url}/graphiql/graphiql.min.css", timeout=10).text
    assert "data:" not in css  # fonts and images are files of this origin too
    font = re.search(r"url\((assets/[0-9a-f]+\.woff2)\)", css).group(1)
    assert httpx.get(f"{gateway.url}/graphiql/{font}", timeout=10).status_code == 200
    assert httpx.get(f"{gateway.url}/graphiql/%2e%2e/page.py", timeout=10).status_code == 404


def test_the_shipped_assets_stay_within_their_budget():
    total = sum(p.stat().st_size for p in STATIC_DIR.rglob("*") if p.is_file())
    assert total < ASSET_BUDGET_BYTES, f"gateway/graphiql/static holds {total} bytes"


def test_graphiql_renders_offline_and_runs_the_360_query_with_a_pasted_key(
    offline_browser, gateway, customers
):
    from selenium.webdriver.common.by import By

    driver = offline_browser
    bundle = customers[7]
    msisdn = next(s.msisdn for s in bundle.subscribers if s.status != "D")
    clear_name = bundle.customer.name

    driver.get(f"{gateway.url}/graphql")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".graphiql-query-editor .CodeMirror"))
    template = json.loads(_editor_value(driver, "headers"))
    assert set(template) == {"X-Api-Key", "X-Purpose"}  # shown open, ready for the key

    # The agent key, no purpose: personal fields come back masked.
    headers = json.dumps({"X-Api-Key": gateway.keys["agent"]}, indent=2)
    driver.execute_script(EDITOR_JS + "editors.headers.setValue(arguments[0]);", headers)
    driver.execute_script(
        EDITOR_JS + "editors.query.setValue(arguments[0]);", _readme_360_for(msisdn)
    )
    driver.find_element(By.CSS_SELECTOR, ".graphiql-execute-button").click()
    _wait(driver, lambda d: '"customerByMsisdn"' in (_editor_value(d, "result") or ""))
    answer = json.loads(_editor_value(driver, "result"))
    name = answer["data"]["customerByMsisdn"]["profile"]["name"]
    assert name != clear_name and "*" in name and name[0] == clear_name[0], name
    assert clear_name not in driver.page_source
    assert answer["data"]["customerByMsisdn"]["subscriptions"]

    # With the key, the page fetched the schema: the docs explorer knows the root type.
    driver.find_element(By.CSS_SELECTOR, "button[aria-label='Show Documentation Explorer']").click()
    _wait(
        driver,
        lambda d: (
            "SubscriptionRoot"
            in "".join(e.text for e in d.find_elements(By.CSS_SELECTOR, ".graphiql-doc-explorer"))
        ),
    )

    loaded = driver.execute_script(
        "return performance.getEntriesByType('resource').map((e) => e.name);"
    )
    assert loaded and all(u.startswith(gateway.url) for u in loaded), loaded
    refused = [e["message"] for e in driver.get_log("browser") if "Security Policy" in e["message"]]
    assert refused == []
