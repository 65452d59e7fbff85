"""The retention console in a real browser: Playwright driving Debian's chromium against a real
`python -m console` over a real graph's kept scores, as a team lead would use it: log in, reach
the list by keyboard, filter it, open a customer, download the list and find it equal to the
scores file; no page logs an error or fails a request, and axe-core finds no violation (contrast,
labels, names, landmarks) on any page. Screenshots of each page land in the test's folder
(`CHURN_CONSOLE_SCREENSHOTS` names another: the README's come from there).

Chromium is Debian's (`apt-get install chromium`; `.ci/run` installs it where it is missing),
never a browser Playwright downloads.
"""

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright

from churn_assets_tests.conftest import PromotedStore, copied_store
from churn_assets_tests.processes import base_env, free_port, running
from console.users import Role, add

PASSWORD = "a long enough password"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("the browser tests need Debian's chromium: apt-get install chromium")
    return found


@pytest.fixture
def console_url(promoted_store: PromotedStore, tmp_path: Path) -> Iterator[str]:
    store = copied_store(promoted_store, tmp_path / "store")  # its process off the shared file
    users = tmp_path / "users.yaml"
    add(users, "lea", PASSWORD, Role.lead)
    port = free_port()
    env = base_env(
        CHURN_STATE_DIR=str(tmp_path / "state"),
        CHURN_SCORES_DIR=str(store.state_dir / "scores"),
        CHURN_CONSOLE_USERS=str(users),
        MLFLOW_TRACKING_URI=store.tracking_uri,
        CHURN_VERIFY_KEY=str(store.state_dir / "signing" / "verify-key.pem"),
        CHURN_CONSOLE_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    with running(
        [".venv/bin/python", "-m", "console"], env, f"{url}/login", tmp_path / "console.log"
    ):
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    path = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def _no_violations(page: Page, axe: Axe, what: str) -> None:
    results = axe.run(page)
    found = [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]]
    assert not found, f"{what}: {found}"


def _watched(page: Page) -> list[str]:
    """What goes wrong on the page as it is used: console errors, failed requests, 4xx/5xx."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on(
        "requestfailed",
        # a link that turns into a download ends its navigation so (Chromium's way)
        lambda r: (
            None
            if "/list.csv?" in r.url and r.failure == "net::ERR_ABORTED"
            else problems.append(f"failed: {r.url} ({r.failure})")
        ),
    )
    page.on(
        "response", lambda r: problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None
    )
    return problems


def _the_other_pages(page: Page, axe: Axe, shots: Path) -> None:
    """Campaigns and models, reached from the menu, each without a violation."""
    for name in ("Campaigns", "Models"):
        page.get_by_role("link", name=name, exact=True).click()
        assert page.get_by_role("heading", name=name, exact=True).is_visible()
        _no_violations(page, axe, name)
        page.screenshot(path=str(shots / f"{name.lower()}.png"), full_page=True)
    assert page.get_by_text("(production)").first.is_visible()


def _log_in(page: Page, console_url: str, axe: Axe, shots: Path) -> None:
    page.goto(f"{console_url}/list")
    assert page.url.endswith("/login")  # nobody reads the list unauthenticated
    _no_violations(page, axe, "login")
    page.screenshot(path=str(shots / "login.png"))
    page.get_by_label("Name").fill("lea")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{console_url}/")
    assert page.get_by_role("heading", name="Overview").is_visible()
    _no_violations(page, axe, "overview")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)


def test_a_lead_finds_filters_opens_and_downloads_in_a_real_browser(
    console_url: str, browser: Browser, promoted_store: PromotedStore, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("CHURN_CONSOLE_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    scores = pd.read_parquet(promoted_store.state_dir / "scores" / "churn_scores.parquet")
    context = browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 800})
    page = context.new_page()
    problems = _watched(page)
    axe = Axe()

    _log_in(page, console_url, axe, shots)

    # the keyboard reaches everything: the skip link first, then the pages
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Overview"
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{console_url}/list")

    # the ten riskiest two-year customers who are not offered anything, with their reasons
    page.get_by_label("Contract").select_option("Two year")
    page.get_by_label("Show").select_option("no offer")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*Contract=Two\+year.*"))
    expected = scores.loc[(scores["Contract"] == "Two year") & ~scores["offer"]].sort_values("rank")
    assert page.get_by_text(f"{len(expected):,} customers").is_visible()
    shown = page.locator("tbody tr td:nth-child(2) a").all_inner_texts()
    assert shown[:10] == list(expected["customerID"].head(10))
    # each with their reasons, as the scoring gave them
    columns = page.locator("thead th").all_inner_texts()
    reasons = page.locator(f"tbody tr td:nth-child({columns.index('reason_1') + 1})")
    assert reasons.all_inner_texts()[:10] == list(expected["reason_1"].head(10))
    assert all(text.strip() for text in reasons.all_inner_texts()[:10])
    _no_violations(page, axe, "list")
    page.screenshot(path=str(shots / "list.png"))

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download these as CSV").click()
    saved = tmp_path / "downloaded.csv"
    downloading.value.save_as(saved)
    got = pd.read_csv(saved, dtype={"customerID": str})
    assert list(got["customerID"]) == list(expected["customerID"])

    page.get_by_role("link", name=shown[0], exact=True).click()
    assert page.get_by_role("heading", name=f"Customer {shown[0]}").is_visible()
    _no_violations(page, axe, "customer")
    page.screenshot(path=str(shots / "customer.png"), full_page=True)
    _the_other_pages(page, axe, shots)

    assert not problems, problems
    context.close()
