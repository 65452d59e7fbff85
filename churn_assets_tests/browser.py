"""The console in a real browser, shared by the browser tests: Debian's chromium driven by
Playwright (never a browser Playwright downloads), a real `python -m console` over a store's
kept files, and the checks every page gets (axe-core, charts drawn, no errors)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, sync_playwright

from churn_assets_tests.processes import base_env, free_port, running
from console.users import Role, add

PASSWORD = "a long enough password"


def chromium() -> str:
    """Debian's chromium; missing, the test fails in CI (`.ci/run` installs it) and is
    skipped elsewhere."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: .ci/run installs it with apt-get")
        pytest.skip("the browser tests need Debian's chromium: apt-get install chromium")
    return found


@contextmanager
def launched() -> Iterator[Browser]:
    path = chromium()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def console(state_dir: Path, scores: Path, folder: Path) -> Iterator[str]:
    """`python -m console` over `scores` and the registry in `state_dir`, with one lead, lea;
    yields its URL."""
    users = folder / "users.yaml"
    add(users, "lea", PASSWORD, Role.lead)
    port = free_port()
    env = base_env(
        CHURN_STATE_DIR=str(folder / "console-state"),
        CHURN_SCORES_DIR=str(scores),
        CHURN_CONSOLE_USERS=str(users),
        MLFLOW_TRACKING_URI=f"sqlite:///{state_dir / 'mlflow.db'}",
        CHURN_VERIFY_KEY=str(state_dir / "signing" / "verify-key.pem"),
        CHURN_CONSOLE_PORT=str(port),
    )
    url = f"http://127.0.0.1:{port}"
    with running(
        [".venv/bin/python", "-m", "console"], env, f"{url}/login", folder / "console.log"
    ):
        yield url


def checked(page: Page, axe: Axe, what: str) -> int:
    """No axe-core violation on the page, and every chart on it rendered (an image the browser
    decoded, with a size); returns how many charts it has."""
    results = axe.run(page)
    found = [f"{v['id']} ({v['impact']}): {v['help']}" for v in results.response["violations"]]
    assert not found, f"{what}: {found}"
    charts = page.eval_on_selector_all(
        "img", "all => all.map(i => [i.alt, i.complete && i.naturalWidth > 100])"
    )
    assert all(drawn for _, drawn in charts), f"{what}: {charts}"
    return len(charts)


def watched(page: Page) -> list[str]:
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


def log_in(page: Page, url: str) -> None:
    """From a page that needs a login, through the form, to the overview."""
    page.get_by_label("Name").fill("lea")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{url}/")


def screenshots(default: Path) -> Path:
    """Where screenshots go: CHURN_CONSOLE_SCREENSHOTS (the README's come from there)."""
    shots = Path(os.environ.get("CHURN_CONSOLE_SCREENSHOTS", default))
    shots.mkdir(parents=True, exist_ok=True)
    return shots
