"""The retention console in a real browser: Playwright driving Debian's chromium against a real
`python -m console`, as a team lead would use it. Over a real graph's kept scores: log in,
reach the list by keyboard, filter it, find the ten riskiest of a segment with their reasons,
download the list and find it equal to the scores file, open a customer. Over weeks of
campaigns (the session's `churn demo-campaigns` world): the last campaigns' measured effects
with their intervals, champion against challenger, the uplift model, realized performance and
a customer's probability over many scorings. No page logs an error or fails a request, every
chart is drawn, and axe-core finds no violation (contrast, labels, names, landmarks) on any
page. Screenshots of each page land in the test's folder (`CHURN_CONSOLE_SCREENSHOTS` names
another: the README's come from there).

Chromium is Debian's (`apt-get install chromium`; `.ci/run` installs it where it is missing),
never a browser Playwright downloads.
"""

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page

from churn_assets.ml.campaigns import ledger
from churn_assets.ml.evaluation import realized
from churn_assets_tests.browser import (
    checked,
    console,
    launched,
    log_in,
    screenshots,
    watched,
)
from churn_assets_tests.conftest import CampaignsDemo, PromotedStore, copied_store


@pytest.fixture
def console_url(promoted_store: PromotedStore, tmp_path: Path) -> Iterator[str]:
    store = copied_store(promoted_store, tmp_path / "store")  # its process off the shared file
    with console(store.state_dir, store.state_dir / "scores", tmp_path) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    with launched() as opened:
        yield opened


def _the_other_pages(page: Page, axe: Axe, shots: Path) -> None:
    """Campaigns and models, reached from the menu, each without a violation."""
    for name in ("Campaigns", "Models"):
        page.get_by_role("link", name=name, exact=True).click()
        assert page.get_by_role("heading", name=name, exact=True).is_visible()
        checked(page, axe, name)
        page.screenshot(path=str(shots / f"{name.lower()}.png"), full_page=True)
    assert page.get_by_text("(production)").first.is_visible()


def _log_in(page: Page, console_url: str, axe: Axe, shots: Path) -> None:
    page.goto(f"{console_url}/list")
    assert page.url.endswith("/login")  # nobody reads the list unauthenticated
    checked(page, axe, "login")
    page.screenshot(path=str(shots / "login.png"))
    log_in(page, console_url)
    assert page.get_by_role("heading", name="Overview").is_visible()
    checked(page, axe, "overview")
    page.screenshot(path=str(shots / "overview.png"), full_page=True)


def test_a_lead_finds_filters_opens_and_downloads_in_a_real_browser(
    console_url: str, browser: Browser, promoted_store: PromotedStore, tmp_path: Path
) -> None:
    shots = screenshots(tmp_path / "screenshots")
    scores = pd.read_parquet(promoted_store.state_dir / "scores" / "churn_scores.parquet")
    context = browser.new_context(accept_downloads=True, viewport={"width": 1366, "height": 800})
    page = context.new_page()
    problems = watched(page)
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
    checked(page, axe, "list")
    page.screenshot(path=str(shots / "list.png"))

    with page.expect_download() as downloading:
        page.get_by_role("link", name="Download these as CSV").click()
    saved = tmp_path / "downloaded.csv"
    downloading.value.save_as(saved)
    got = pd.read_csv(saved, dtype={"customerID": str})
    assert list(got["customerID"]) == list(expected["customerID"])

    page.get_by_role("link", name=shown[0], exact=True).click()
    assert page.get_by_role("heading", name=f"Customer {shown[0]}").is_visible()
    assert checked(page, axe, "customer") == 1  # the probability over the kept scorings
    page.screenshot(path=str(shots / "customer.png"), full_page=True)
    _the_other_pages(page, axe, shots)

    assert not problems, problems
    context.close()


def test_after_weeks_of_campaigns_a_lead_sees_what_the_offers_did(
    campaigns_demo: CampaignsDemo, browser: Browser, tmp_path: Path
) -> None:
    """The demo's world as a lead meets it: measured effects with their intervals (the latest
    campaigns' too), champion against challenger, the uplift model's verdict, realized
    performance, and a customer at every weekly scoring."""
    out = campaigns_demo.out
    shots = screenshots(tmp_path / "screenshots")
    context = browser.new_context(viewport={"width": 1366, "height": 800})
    page = context.new_page()
    problems = watched(page)
    axe = Axe()
    with console(out, out / "scores", tmp_path) as url:
        page.goto(f"{url}/campaigns")
        log_in(page, url)
        assert page.get_by_text("Realized performance").is_visible()
        assert page.get_by_text("uplift targeting").first.is_visible()  # its verdict
        assert checked(page, axe, "overview after weeks") == 1  # realized AUC over time
        page.screenshot(path=str(shots / "weeks-overview.png"), full_page=True)

        page.get_by_role("link", name="Campaigns", exact=True).click()
        effects = pd.read_csv(out / "scores" / ledger.FOLDER / "effects.csv")
        closed = effects.loc[effects["window_complete"] & effects["reduction"].notna()]
        assert len(closed) >= 2
        for row in closed.itertuples():  # each measured, with its interval, as kept
            cells = page.get_by_role("row").filter(has_text=row.campaign)
            shown = f"{row.reduction:+.3f} [{row.reduction_low:+.3f}, {row.reduction_high:+.3f}]"
            assert cells.filter(has_text=shown).count() >= 1, shown
        assert page.get_by_role("heading", name="Champion against challenger").is_visible()
        assert checked(page, axe, "campaigns after weeks") == 1  # effects and the Qini curve
        page.screenshot(path=str(shots / "weeks-campaigns.png"), full_page=True)

        kept = pd.read_parquet(realized.scorings(out / "scores")[-1][2])
        everywhere = kept.iloc[0, 0]
        page.goto(f"{url}/customer/{everywhere}")
        rows = page.locator("tbody tr").count()
        assert rows == sum(
            everywhere in set(pd.read_parquet(path).iloc[:, 0])
            for *_, path in realized.scorings(out / "scores")
        )
        assert rows >= 4  # a scoring a week
        assert checked(page, axe, "customer after weeks") == 1
        page.screenshot(path=str(shots / "weeks-customer.png"), full_page=True)
    assert not problems, problems
    context.close()
