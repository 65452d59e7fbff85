"""The retention console in process (TestClient) over a real graph's kept scores: nobody reads
a page unauthenticated, the list filters and sorts as the scores file says, a lead's download
is the filtered scores and is audited, a viewer cannot download, and typed text is a value."""

import html
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from churn_assets.ml.campaigns import ledger
from churn_assets.ml.evaluation import drift, realized
from churn_assets.ml.files import keep_json
from churn_assets_tests.conftest import PromotedStore, copied_store
from console.app import create_app
from console.settings import ConsoleSettings
from console.users import Role, add

PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def store(promoted_store: PromotedStore, tmp_path_factory: pytest.TempPathFactory) -> PromotedStore:
    """A copy of the session's store: the console's MLflow reads stay off the shared file."""
    return copied_store(promoted_store, tmp_path_factory.mktemp("console") / "state")


@pytest.fixture
def settings(store: PromotedStore, tmp_path: Path) -> ConsoleSettings:
    users = tmp_path / "users.yaml"
    add(users, "lea", PASSWORD, Role.lead)
    add(users, "vic", PASSWORD, Role.viewer)
    return ConsoleSettings(
        CHURN_STATE_DIR=tmp_path / "state",
        CHURN_SCORES_DIR=store.state_dir / "scores",
        # the registry it reads, with training's public key (read-only: no signing key)
        MLFLOW_TRACKING_URI=store.tracking_uri,
        CHURN_VERIFY_KEY=str(store.state_dir / "signing" / "verify-key.pem"),
        CHURN_CONSOLE_USERS=users,
        CHURN_CONSOLE_PAGE_ROWS=20,
    )


@pytest.fixture
def scores(settings: ConsoleSettings) -> pd.DataFrame:
    return pd.read_parquet(settings.scores_folder / "churn_scores.parquet")


def _token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def _client(settings: ConsoleSettings, name: str | None) -> TestClient:
    client = TestClient(create_app(settings))
    if name is not None:
        token = _token(client.get("/login").text)
        answer = client.post(
            "/login",
            data={"name": name, "password": PASSWORD, "csrf": token},
            follow_redirects=False,
        )
        assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
def lead(settings: ConsoleSettings) -> Iterator[TestClient]:
    yield _client(settings, "lea")


def _count(html: str) -> int:
    found = re.search(r"([\d,]+) customers", html)
    assert found is not None
    return int(found.group(1).replace(",", ""))


def _ids(html: str) -> list[str]:
    return re.findall(r'href="/customer/([^"]+)"', html)


def test_nobody_reads_a_page_without_logging_in(settings: ConsoleSettings) -> None:
    client = _client(settings, None)
    for page in ("/", "/list", "/list.csv", "/customer/0002-ORFBO"):
        answer = client.get(page, follow_redirects=False)
        assert (answer.status_code, answer.headers["location"]) == (303, "/login"), page
    token = _token(client.get("/login").text)
    wrong = client.post("/login", data={"name": "lea", "password": "nope", "csrf": token})
    assert wrong.status_code == 401 and "wrong name or password" in wrong.text
    unknown = client.post("/login", data={"name": "eve", "password": PASSWORD, "csrf": token})
    assert unknown.status_code == 401
    forged = client.post("/login", data={"name": "lea", "password": PASSWORD, "csrf": "x"})
    assert forged.status_code == 400  # a login form the console did not sign
    client.cookies.set("churn_console", "made-up")
    assert client.get("/", follow_redirects=False).status_code == 303


def test_the_list_filters_sorts_and_pages_as_the_scores_file_says(
    lead: TestClient, scores: pd.DataFrame
) -> None:
    page = lead.get("/list?Contract=Month-to-month&show=offer&sort=churn_probability&desc=1")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    expected = scores.loc[(scores["Contract"] == "Month-to-month") & scores["offer"]]
    expected = expected.sort_values(["churn_probability", "rank"], ascending=[False, True])
    assert _count(page.text) == len(expected) > 20
    assert _ids(page.text) == list(expected["customerID"].head(20))
    second = lead.get(
        "/list?Contract=Month-to-month&show=offer&sort=churn_probability&desc=1&page=2"
    )
    assert _ids(second.text) == list(expected["customerID"].iloc[20:40])
    # every page is the package's own: no script, no address elsewhere
    assert "<script" not in page.text and "http" not in page.text.split("<body")[1]


def test_the_list_says_when_its_scoring_has_no_reasons(
    lead: TestClient, settings: ConsoleSettings, tmp_path: Path
) -> None:
    assert "This scoring has no reasons" not in lead.get("/list").text  # 3 by default
    bare = tmp_path / "bare"
    bare.mkdir()
    scores = pd.read_parquet(settings.scores_folder / "churn_scores.parquet")
    assert [c for c in scores.columns if c.startswith("reason_")] == [
        "reason_1",
        "reason_2",
        "reason_3",
    ]
    scores.filter(regex="^(?!reason_)").to_parquet(bare / "churn_scores.parquet")
    unexplained = settings.model_copy(update={"scores_dir": bare})
    page = _client(unexplained, "lea").get("/list").text
    assert "This scoring has no reasons" in page and "CHURN_SCORES_REASONS=3" in page


def test_typed_text_is_a_value_never_sql(lead: TestClient, scores: pd.DataFrame) -> None:
    for typed in ("' or 1=1 --", "%", "_", '"; drop table x; --'):
        answer = lead.get("/list", params={"search": typed, "sort": "rank; drop"})
        assert answer.status_code == 200
        assert _count(answer.text) == 0, typed
    first = str(scores["customerID"].iloc[0])
    found = lead.get("/list", params={"search": first[:6]})
    assert first in _ids(found.text)
    bad_segment = lead.get("/list", params={"Contract": "' or 1=1 --"})
    assert _count(bad_segment.text) == 0


def test_a_lead_downloads_the_filtered_list_and_it_is_audited(
    lead: TestClient, settings: ConsoleSettings, scores: pd.DataFrame
) -> None:
    answer = lead.get("/list.csv?Contract=Two year&show=no offer")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    got = pd.read_csv(StringIO(answer.text), dtype={"customerID": str})
    expected = scores.loc[(scores["Contract"] == "Two year") & ~scores["offer"]]
    assert list(got["customerID"]) == list(expected.sort_values("rank")["customerID"])
    assert got["churn_probability"].to_numpy() == pytest.approx(
        expected.sort_values("rank")["churn_probability"].to_numpy()
    )
    (entry,) = [json.loads(line) for line in settings.audit_log.read_text().splitlines()]
    assert (entry["user"], entry["role"], entry["rows"]) == ("lea", "lead", len(expected))
    assert entry["filters"]["segments"] == {"Contract": "Two year"}


def test_a_viewer_reads_but_does_not_download(settings: ConsoleSettings) -> None:
    viewer = _client(settings, "vic")
    page = viewer.get("/list")
    assert page.status_code == 200 and "Only a lead downloads lists" in page.text
    assert viewer.get("/list.csv").status_code == 403
    assert not settings.audit_log.exists()


def test_a_customer_page_shows_every_kept_scoring_and_the_arms(
    lead: TestClient, settings: ConsoleSettings, scores: pd.DataFrame
) -> None:
    customer = str(scores["customerID"].iloc[0])
    page = lead.get(f"/customer/{customer}")
    assert page.status_code == 200
    assert f"{scores['churn_probability'].iloc[0]:.4f}" in page.text
    assert page.text.count("<tr>") >= 2  # the kept scoring's row, under its header
    assert "In the latest scoring" in page.text and 'src="data:image/png;base64,' in page.text
    kept = [c for c in scores.columns if c not in ("customerID", "model_version")]
    assert {"Contract", "tenure_band", "rank"} <= set(kept)
    for column in kept:  # each scoring as it was kept
        assert f">{column.replace('_', ' ')}</th>" in page.text
        value = scores[column].iloc[0]
        shown = (
            f"{value:.4f}"
            if isinstance(value, float)
            else ("yes" if value else "no")
            if column == "offer"
            else str(value)
        )
        assert f">{html.escape(shown)}</" in page.text, column
    assert lead.get("/customer/nobody-by-that-id").status_code == 404
    # a newer version's kept scoring of a later date (as before a rollback re-scored by the
    # version the scores file holds): the page's current row is still the scores file's
    kept = realized.scorings(settings.scores_folder)[-1]
    later = realized.keep_scores(
        settings.scores_folder / "churn_scores.parquet",
        settings.scores_folder,
        kept[0] + timedelta(days=7),
        "9",
        "customerID",
    )
    try:
        again = lead.get(f"/customer/{customer}").text
        assert f"In the latest scoring ({kept[0].isoformat()}, model version 1)" in again
        assert f"{kept[0].isoformat()}, by version 1" in lead.get("/").text
    finally:
        shutil.rmtree(later.parent.parent)
    campaign = ledger.campaigns(settings.scores_folder)[-1]
    arms = ledger.read_assignments(settings.scores_folder, campaign.id)
    treated = int((arms["arm"] == "treatment").sum())
    shown = lead.get("/list?show=treatment")
    assert _count(shown.text) == treated > 0
    assert f"arms from campaign {campaign.id}" in shown.text


def test_logging_out_needs_the_sessions_token(lead: TestClient) -> None:
    page = lead.get("/")
    assert page.status_code == 200 and "Customers scored" in page.text
    assert lead.post("/logout", data={"csrf": "forged"}).status_code == 400
    out = lead.post("/logout", data={"csrf": _token(page.text)}, follow_redirects=False)
    assert out.status_code == 303
    assert lead.get("/", follow_redirects=False).status_code == 303


def test_the_models_page_lists_verdicts_attestations_and_compares_two_versions(
    lead: TestClient,
) -> None:
    page = lead.get("/models")
    assert page.status_code == 200
    text = html.unescape(re.sub(r"<[^>]+>", " ", page.text))
    row = re.search(r"1 \(production\)\s+\S+ \S+\s+passed: [^<]*?auc >= min_auc", text)
    assert row is not None, text[:2000]
    assert " yes " in text  # its attestation verifies with training's public key
    assert "churn-uplift" in text and "No version yet." in text
    same = lead.get("/models?model=churn-classifier&a=1&b=1")
    assert "version 1 against 1" in same.text and "The same." in same.text
    assert "holdout_auc" in same.text
    assert "against" not in lead.get("/models?model=elsewhere&a=1&b=2").text


def test_the_campaigns_and_overview_pages_read_what_the_graph_kept(
    lead: TestClient, settings: ConsoleSettings
) -> None:
    page = lead.get("/campaigns")
    assert page.status_code == 200
    # the campaign was made today: nothing has an outcome yet, and the page says so
    assert (settings.scores_folder / "campaigns" / "effects.csv").exists()
    assert "No campaign has been measured yet." in page.text
    assert "not enough outcomes for an uplift model yet" in page.text
    overview = lead.get("/")
    assert "Realized performance" in overview.text
    assert (settings.scores_folder / "realized" / "realized.csv").exists()
    # no extract has landed on this store (test_retraining checks the record the drift check
    # keeps); then the kept record, as the overview shows it; and the schedule's next tick
    assert "not checked yet: no extract has landed" in overview.text
    # the churn model in production, its gate verdict and attestation, and the last scoring
    assert re.search(r"version 1</a>, gate passed: auc &gt;= min_auc [\d.]+ vs", overview.text)
    assert "attested: yes" in overview.text
    last = realized.scorings(settings.scores_folder)[-1][0].isoformat()
    assert f"{last}, by version 1" in overview.text
    record = drift.kept_record(None, "1", "drift not measured: <reason>")
    keep_json(settings.scores_folder / drift.KEPT, record)
    assert "drift not measured: &lt;reason&gt;" in lead.get("/").text
    (settings.scores_folder / drift.KEPT).unlink()  # the store is the module's
    assert "on the weekly schedule at Monday " in overview.text


def test_behind_a_trusted_proxy_its_header_names_the_user_and_nothing_else_does(
    settings: ConsoleSettings, tmp_path: Path
) -> None:
    add(settings.users_path, "carol", None, Role.lead)  # signs in only through the proxy
    behind = ConsoleSettings(
        **{
            **settings.model_dump(by_alias=True, exclude_none=True),
            "CHURN_CONSOLE_TRUSTED_HEADER": "X-Forwarded-User",
            "CHURN_CONSOLE_TRUSTED_PROXIES": "10.0.0.0/24, 192.168.7.1",
        }
    )
    app = create_app(behind)
    proxy = TestClient(app, client=("10.0.0.5", 40000))
    for name, download in (("lea", 200), ("carol", 200), ("vic", 403)):
        page = proxy.get("/", headers={"X-Forwarded-User": name})
        assert page.status_code == 200 and f"{name} (" in page.text
        assert "signed in by the proxy" in page.text and 'action="/logout"' not in page.text
        answer = proxy.get("/list.csv", headers={"X-Forwarded-User": name})
        assert answer.status_code == download
    assert proxy.get("/").status_code == 403  # the proxy sent nobody
    # a client's own value that the proxy appended to, instead of replacing: refused
    twice = [("X-Forwarded-User", "mallory"), ("X-Forwarded-User", "lea")]
    assert proxy.get("/", headers=twice).status_code == 403
    # an IPv4 proxy as a dual-stack listener sees it
    mapped = TestClient(app, client=("::ffff:10.0.0.5", 40000))
    assert mapped.get("/", headers={"X-Forwarded-User": "lea"}).status_code == 200
    # health checks and probes answer in either mode, without a session
    assert TestClient(app, client=("172.17.0.1", 1)).get("/healthz").status_code == 200
    assert proxy.get("/", headers={"X-Forwarded-User": "mallory"}).status_code == 403
    # the header from anywhere but the proxy, even with a forwarded-for naming the proxy
    elsewhere = TestClient(app, client=("10.0.1.5", 40000))
    faked = {"X-Forwarded-User": "lea", "X-Forwarded-For": "10.0.0.5"}
    assert elsewhere.get("/", headers=faked).status_code == 403
    assert TestClient(app).get("/", headers=faked).status_code == 403  # not an address at all
    # no password login behind the proxy, and none for a proxy-only user without it
    assert proxy.get("/login", follow_redirects=False).status_code == 303
    form = {"name": "lea", "password": PASSWORD, "csrf": "x"}
    assert proxy.post("/login", data=form).status_code == 404
    direct = TestClient(create_app(settings))
    token = _token(direct.get("/login").text)
    refused = direct.post("/login", data={"name": "carol", "password": PASSWORD, "csrf": token})
    assert refused.status_code == 401
    with pytest.raises(ValueError, match="CHURN_CONSOLE_TRUSTED_PROXIES"):
        ConsoleSettings(CHURN_CONSOLE_TRUSTED_HEADER="X-Forwarded-User")
    for loose in ("10.0.0.5/8", "0.0.0.0/0"):  # host bits set, or every address
        with pytest.raises(ValueError):
            ConsoleSettings(
                CHURN_CONSOLE_TRUSTED_HEADER="X-Forwarded-User",
                CHURN_CONSOLE_TRUSTED_PROXIES=loose,
            )


def test_a_query_past_the_limits_fails_alone_and_says_which_settings_bound_it(
    settings: ConsoleSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tight = settings.model_copy(update={"query_memory": "1MB", "query_spill": "1MB"})
    client = _client(tight, "lea")
    page = client.get("/list?sort=churn_probability&desc=1")
    assert page.status_code == 503, page.text[:500]
    assert "CHURN_CONSOLE_QUERY_MEMORY" in page.text and "CHURN_CONSOLE_QUERY_SPILL" in page.text
    assert "Out of Memory" not in page.text  # DuckDB's words are for the log
    assert client.get("/healthz").status_code == 200
    # a download that fails leaves no half-written list in the temporary folder (this test's
    # own: other workers' consoles write theirs in the shared one)
    own = tmp_path / "tmp"
    own.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(own))
    assert client.get("/list.csv?sort=churn_probability").status_code == 503
    assert list(own.iterdir()) == []


def test_the_spill_cap_fails_a_query_that_would_spill_more_and_the_next_one_answers(
    settings: ConsoleSettings,
) -> None:
    """Memory enough for the pages, 1MB of spill: a sort of 3 million rows must spill more,
    and fails with DuckDB's own reason (the cap, not the memory); the next query answers."""
    capped = settings.model_copy(update={"query_memory": "64MB", "query_spill": "1MB"})
    data = create_app(capped).state.console.data
    big = "select i, random() as r, repeat('x', 40) as s from range(3000000) t(i)"
    with pytest.raises(duckdb.OutOfMemoryException, match="max_temp_directory_size"):
        data._cursor().execute(f"select * from ({big}) order by r limit 5 offset 2000000")
    assert data.current_version() == "1"


def test_duckdb_holds_what_the_setting_allows_and_the_setting_is_a_size(
    settings: ConsoleSettings,
) -> None:
    sized = settings.model_copy(update={"query_memory": "512MB", "query_spill": "2GB"})
    data = create_app(sized).state.console.data
    limit = data._cursor().execute("select current_setting('memory_limit')").fetchone()
    assert limit is not None and limit[0] in ("488.2 MiB", "512.0 MB", "488.2MiB")
    spill = data._cursor().execute("select current_setting('max_temp_directory_size')").fetchone()
    assert spill is not None and spill[0] in ("1.8 GiB", "2.0 GB", "1.8GiB"), spill
    folder = data._cursor().execute("select current_setting('temp_directory')").fetchone()
    assert folder is not None and Path(folder[0]).name.startswith("churn-console-duckdb-")
    for hostile in ("1GB'; attach 'x'", "90%", ""):
        with pytest.raises(ValueError):
            ConsoleSettings(CHURN_CONSOLE_QUERY_MEMORY=hostile)
        with pytest.raises(ValueError):
            ConsoleSettings(CHURN_CONSOLE_QUERY_SPILL=hostile)
