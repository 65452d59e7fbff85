"""`create_app(settings)`: the console's pages, behind a login.

Server-rendered (FastAPI + Jinja2, autoescaped), no script at all, one stylesheet shipped in the
package: it works offline and its Content-Security-Policy allows nothing from elsewhere.

Sessions are a cookie signed with itsdangerous (HttpOnly, SameSite=Strict, Secure behind TLS),
holding the user's name and a CSRF token; every request re-reads the user's role from the users
file, so removing a user or demoting a lead takes effect at once. Every form posts its session's
CSRF token (the login form a signed, short-lived one); a download is written to the audit log
with who, when, which filters and how many rows before it is sent.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import duckdb
import pandas as pd
from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.background import BackgroundTask

from churn_assets.ml import retraining
from churn_assets.ml.campaigns import ledger, measured
from churn_assets.ml.evaluation import drift, plots
from churn_assets.ml.evaluation.realized import REALIZED_FILE, REALIZED_FOLDER, REALIZED_PLOT
from churn_assets.ml.files import kept_json
from console import models, users
from console.data import ARMS, ConsoleData, ListQuery, NoScoresError
from console.settings import ConsoleSettings
from console.users import Role, User

log = logging.getLogger("console")

HERE = Path(__file__).parent
COOKIE = "churn_console"
_LOGIN_TOKEN_S = 600
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequiredError(Exception):
    """No valid session: the page sends the browser to the login form."""


def _secret(settings: ConsoleSettings) -> str:
    """CHURN_CONSOLE_SECRET, else a random key kept (owner-only) in the console's folder."""
    if settings.session_secret is not None:
        return settings.session_secret.get_secret_value()
    path = settings.console_folder / "session.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class Console:
    """What every page uses: settings, templates, the session signer and the queries."""

    settings: ConsoleSettings
    pages: Environment
    signer: URLSafeTimedSerializer
    data: ConsoleData

    @property
    def max_age(self) -> int:
        return int(self.settings.session_hours * 3600)

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = self.pages.get_template(template).render(**values)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def session(self, request: Request) -> tuple[User, str]:
        """The logged-in user (their role as the users file says now) and the CSRF token."""
        if self.settings.trusted_header:
            return self.proxied(request, self.settings.trusted_header)
        try:
            found = self.signer.loads(request.cookies.get(COOKIE, ""), max_age=self.max_age)
            name, token = str(found["user"]), str(found["csrf"])
        except (BadSignature, KeyError, TypeError):
            raise LoginRequiredError from None
        known = users.load(self.settings.users_path).get(name)
        if known is None:
            raise LoginRequiredError
        return User(name, known[1]), token

    def proxied(self, request: Request, header: str) -> tuple[User, str]:
        """The user an authenticating proxy vouches for, in `header`, if the request comes from
        the proxy; no CSRF token (there is no form to post: the proxy signs users out)."""
        peer = request.client.host if request.client else ""
        try:
            address = ip_address(peer)
        except ValueError:  # not an IP address (a Unix socket)
            address = None
        if address is not None and address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped  # a dual-stack listener's view of an IPv4 proxy
        if address is None or not any(address in n for n in self.settings.proxy_networks):
            raise HTTPException(403, "sign in through the authenticating proxy")
        # one value: a proxy that appends to a client's own header instead of replacing it
        # would otherwise let the client's value win
        values = request.headers.getlist(header)
        name = values[0] if len(values) == 1 else ""
        known = users.load(self.settings.users_path).get(name) if name else None
        if known is None:
            raise HTTPException(403, "your account is not a console user: ask a lead to add it")
        return User(name, known[1]), ""

    def query(self, request: Request) -> ListQuery:
        """The list's filters, sort and page from the query string (anything else ignored)."""
        args = request.query_params
        segments = {c: args.get(c, "") for c in self.data.segment_columns() if args.get(c)}
        try:
            page = max(1, min(int(args.get("page", "1")), 10**7))
        except ValueError:
            page = 1
        show = args.get("show", "")
        return ListQuery(
            segments=segments,
            show=show if show in ("offer", "no offer", *ARMS) else "",
            search=args.get("search", "")[:128],
            sort=args.get("sort", "rank")[:64],
            descending=args.get("desc", "") == "1",
            page=page,
        )


def create_app(settings: ConsoleSettings | None = None) -> FastAPI:
    settings = settings or ConsoleSettings()
    app = FastAPI(title="Churn retention console", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.console = Console(
        settings,
        Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
        ),
        URLSafeTimedSerializer(_secret(settings), salt="churn-console-session"),
        ConsoleData(
            settings.scores_folder, settings.page_rows, settings.query_memory, settings.query_spill
        ),
    )
    app.include_router(router)
    app.add_exception_handler(LoginRequiredError, _to_login)
    app.add_exception_handler(NoScoresError, _no_scores)
    app.add_exception_handler(duckdb.OutOfMemoryException, _too_big)
    return app


def _console(request: Request) -> Console:
    return request.app.state.console


async def _to_login(request: Request, _: Exception) -> Response:
    return RedirectResponse("/login", status_code=303, headers=_HEADERS)


async def _no_scores(request: Request, error: Exception) -> Response:
    return _console(request).render("empty.html", 404, message=str(error), user=None)


async def _too_big(request: Request, error: Exception) -> Response:
    """A query past the console's memory and spill limits fails alone: the page says which
    settings bound it, the log has DuckDB's words, and every other page still answers."""
    log.warning("a console query outgrew its limits: %s", str(error).splitlines()[0])
    message = (
        "This page needs more memory than the console may use (CHURN_CONSOLE_QUERY_MEMORY, "
        "then CHURN_CONSOLE_QUERY_SPILL on disk): narrow the filters, or raise those settings."
    )
    return _console(request).render("empty.html", 503, message=message, user=None)


router = APIRouter()


@router.get("/healthz")
def health() -> Response:
    """For health checks and probes: the process answers (no session, no data read), in
    either login mode."""
    return Response("ok", media_type="text/plain", headers=_HEADERS)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    console = _console(request)
    if console.settings.trusted_header:
        return RedirectResponse("/", status_code=303, headers=_HEADERS)
    return console.render("login.html", token=console.signer.dumps("login"), error=None, user=None)


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=users.MAX_NAME)],
    password: Annotated[str, Form(max_length=1024)],
    csrf: Annotated[str, Form(max_length=200)],
) -> Response:
    console = _console(request)
    if console.settings.trusted_header:
        raise HTTPException(404, "users sign in through the authenticating proxy")
    try:
        console.signer.loads(csrf, max_age=_LOGIN_TOKEN_S)
    except BadSignature:
        raise HTTPException(400, "the login form expired: reload it") from None
    user = users.verify(console.settings.users_path, name, password)
    if user is None:
        token = console.signer.dumps("login")
        return console.render(
            "login.html", 401, token=token, error="wrong name or password", user=None
        )
    cookie = console.signer.dumps({"user": user.name, "csrf": secrets.token_urlsafe(16)})
    answer = RedirectResponse("/", status_code=303, headers=_HEADERS)
    answer.set_cookie(
        COOKIE,
        cookie,
        max_age=console.max_age,
        httponly=True,
        samesite="strict",
        secure=console.settings.secure_cookies,
    )
    return answer


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form(max_length=200)]) -> Response:
    _, token = _console(request).session(request)
    if not token or not secrets.compare_digest(csrf, token):
        raise HTTPException(400, "stale form: reload the page")
    answer = RedirectResponse("/login", status_code=303, headers=_HEADERS)
    answer.delete_cookie(COOKIE)
    return answer


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    console = _console(request)
    user, token = console.session(request)
    data = console.data
    first = data.page(ListQuery())
    version = first.rows[0][first.columns.index("model_version")] if first.rows else None
    return console.render(
        "overview.html",
        user=user,
        csrf=token,
        scored=first.total,
        offers=data.page(ListQuery(show="offer")).total,
        version=version,
        campaign=data.latest_campaign(),
        verdict=_uplift_verdict(console.settings),
        realized=_table(console.settings.scores_folder / REALIZED_FOLDER / REALIZED_FILE),
        realized_plot=_image(console.settings.scores_folder / REALIZED_FOLDER / REALIZED_PLOT),
        uplift="uplift_version" in first.columns,
        production=_production(console.settings),
        last_scoring=data.last_scoring(),
        drift=kept_json(console.settings.scores_folder / drift.KEPT),
        next_retrain=retraining.next_weekly(datetime.now(UTC)),
    )


@router.get("/list", response_class=HTMLResponse)
def customer_list(request: Request) -> HTMLResponse:
    console = _console(request)
    user, token = console.session(request)
    query = console.query(request)
    page = console.data.page(query)
    base = {k: v for k, v in request.query_params.items() if k != "page"}
    return console.render(
        "list.html",
        user=user,
        csrf=token,
        page=page,
        query=query,
        segments=console.data.segment_values(),
        shows=("offer", "no offer", *ARMS),
        pages_total=max(1, -(-page.total // console.data.page_rows)),
        link=lambda **change: "/list?" + urlencode({**base, **change}),
        download="/list.csv?" + urlencode(base),
        lead=user.role is Role.lead,
        reasons=any(column.startswith("reason_") for column in page.columns),
    )


@router.get("/list.csv")
def download(request: Request) -> Response:
    console = _console(request)
    user, _ = console.session(request)
    if user.role is not Role.lead:
        raise HTTPException(403, "only a lead downloads lists")
    query = console.query(request)
    folder = Path(tempfile.mkdtemp(prefix="churn-console-"))
    target = folder / "customers.csv"
    try:
        rows = console.data.download(query, target)
    except BaseException:  # a query past the limits (503): no half-written list left behind
        _remove(folder)
        raise
    _audit(console.settings, user, query, rows)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return FileResponse(
        target,
        media_type="text/csv",
        filename=f"churn-list-{stamp}.csv",
        headers=_HEADERS,
        background=BackgroundTask(_remove, folder),
    )


@router.get("/customer/{customer_id}", response_class=HTMLResponse)
def customer(request: Request, customer_id: str) -> HTMLResponse:
    console = _console(request)
    user, token = console.session(request)
    shown = customer_id[:128]
    current, history = console.data.customer(shown)
    if not history:
        message = "no such customer in the kept scorings"
        return console.render("empty.html", 404, message=message, user=user, csrf=token)
    reasons = [v for k, v in (current or {}).items() if k.startswith("reason_") and v]
    id_column = console.data.id_column()
    first = ["scoring_date", "model_version", "churn_probability", "offer"]
    rest = {c: None for row in history for c in row if c not in (*first, id_column)}
    return console.render(
        "customer.html",
        user=user,
        csrf=token,
        customer_id=shown,
        current=current,
        history=history,
        shown=[*first, *rest],
        reasons=reasons,
        chart=_customer_chart(history),
    )


@router.get("/campaigns", response_class=HTMLResponse)
def campaigns(request: Request) -> HTMLResponse:
    console = _console(request)
    user, token = console.session(request)
    kept = console.settings.scores_folder / ledger.FOLDER
    return console.render(
        "campaigns.html",
        user=user,
        csrf=token,
        effects=_table(kept / measured.EFFECTS_FILE),
        duels=_table(kept / measured.DUELS_FILE),
        plot=_image(kept / measured.EFFECTS_PLOT),
        verdict=_uplift_verdict(console.settings),
    )


@router.get("/models", response_class=HTMLResponse)
def model_versions(request: Request) -> HTMLResponse:
    console = _console(request)
    user, token = console.session(request)
    settings = console.settings
    names = (settings.model_name, settings.uplift_model_name)
    listed = {name: models.versions(settings, name) for name in names}
    args = request.query_params
    chosen = args.get("model", settings.model_name)
    compared = None
    if chosen in names and args.get("a") and args.get("b"):
        compared = models.compare(settings, chosen, args["a"][:20], args["b"][:20])
    return console.render(
        "models.html", user=user, csrf=token, listed=listed, compared=compared, chosen=chosen
    )


def _production(settings: ConsoleSettings) -> models.VersionRow | str | None:
    """The churn model in production, or why the registry could not say (the overview reads
    the kept files whatever happens to the registry)."""
    try:
        return models.production(settings, settings.model_name)
    except Exception as error:  # any failure to reach or read the store: shown by kind only
        return f"the registry could not be read ({type(error).__name__})"


def _customer_chart(history: list[dict[str, Any]]) -> str:
    """The customer's probability at each kept scoring, inline like the graph's plots."""
    png = plots.customer_plot(
        [row["scoring_date"] for row in history],
        [row["churn_probability"] for row in history],
        [bool(row["offer"]) for row in history],
    )
    return _inline(png)


def _table(path: Path) -> list[dict[str, Any]]:
    """A small CSV the platform keeps (effects, comparisons), as rows; none if absent."""
    try:
        return pd.read_csv(path).to_dict("records")
    except (FileNotFoundError, pd.errors.EmptyDataError):  # none yet, or a table of none
        return []


def _image(path: Path) -> str | None:
    """A PNG the platform renders (matplotlib), inline: the page asks nothing elsewhere."""
    return _inline(path.read_bytes()) if path.exists() else None


def _inline(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _uplift_verdict(settings: ConsoleSettings) -> dict[str, Any] | None:
    """The uplift model's latest judgement, with the warning the `uplift_pays` check gives
    (`warning`, None when none) while the version it names is still in production: the team
    sees it where it reads the verdict."""
    from churn_assets.ml.campaigns import uplift

    verdict = uplift.latest_verdict(settings.scores_folder)
    if verdict is None:
        return None

    def production_now() -> str | None:
        now = models.production(settings, settings.uplift_model_name)
        return None if now is None else now.version

    try:
        warning = uplift.production_alert(verdict, production_now)
    except Exception as error:  # the overview reads the kept files whatever happens
        warning = f"the registry could not be read ({type(error).__name__})"
    return {**verdict, "warning": warning}


def _audit(settings: ConsoleSettings, user: User, query: ListQuery, rows: int) -> None:
    """One JSON line: who downloaded which list, before it is sent."""
    settings.audit_log.parent.mkdir(parents=True, exist_ok=True)
    entry = {
        "at": datetime.now(UTC).isoformat(),
        "user": user.name,
        "role": user.role.value,
        "rows": rows,
        "filters": {"segments": query.segments, "show": query.show, "search": query.search},
        "sort": query.sort,
    }
    with settings.audit_log.open("a") as log:
        log.write(json.dumps(entry) + "\n")


def _remove(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
