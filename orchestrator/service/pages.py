"""The service's web pages, rendered on the server from templates (``templates/``, Jinja2 with autoescape): the
queue, a sweep's live page (progress, the model-wise table and the charts, refreshed as its events arrive), a trial's
page (curves, best and worst panels), the finished report, and every refusal a browser meets, as a page with its one
line.

No page holds a script of its own: ``static/segsweep.js`` draws the charts from JSON data blocks (``tojson`` escapes
``<``, so no string closes its block) and builds the live table from JSON as text. The report page draws the
report's sections (``reports.build.report_sections``, what report.md and report.html hold) here: markdown-it with raw
HTML off, each section's charts as data blocks. The run's own report.html, whose plotly scripts are inline, is offered
only as a download (served with a CSP ``sandbox``, it never runs in the service's origin). plotly.js is served from
the plotly package itself: the pages work offline."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import plotly
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markdown_it import MarkdownIt
from markupsafe import Markup

from orchestrator.rundir import RunDir
from orchestrator.service.access import (
    COOKIE,
    SESSION_S,
    client_address,
    first_line,
    from_store,
    progress,
    run_store,
    user_of,
    visible_sweep,
)
from orchestrator.service.db import SweepRow, User
from reports.build import comparison_frame, report_sections
from reports.collect import load_run
from reports.figures import metric_by, training_curves

TRIAL_ID = re.compile(r"^[A-Za-z0-9_]+$")
HERE = Path(__file__).parent
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATIC = {"segsweep.js": (HERE / "static" / "segsweep.js", "text/javascript"),
          "segsweep.css": (HERE / "static" / "segsweep.css", "text/css"),
          "plotly.min.js": (PLOTLY_JS, "text/javascript")}
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined)
MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")  # raw HTML in the report shows as text
# a run's own report.html: its inline scripts and any string in it stay inert in the service's origin
DOWNLOAD_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


def render(template: str, status: int = 200, **values: Any) -> HTMLResponse:
    """A page; ``charts``: it loads plotly.js; ``user``: who is signed in (the navigation shows them)."""
    context = {"charts": False, "user": None, **values}
    return HTMLResponse(TEMPLATES.get_template(template).render(**context), status_code=status)


def error_page(status: int, message: str, user: User | None = None) -> HTMLResponse:
    """A refusal as a browser shows it: a page with the one line."""
    return render("error.html", status, title=f"{status}", message=first_line(message), user=user)


def wants_html(request: Request) -> bool:
    """A browser's navigation asks for HTML; the API's clients (and the pages' own fetches) for JSON."""
    return "text/html" in request.headers.get("accept", "")


def page_routes(app: FastAPI) -> None:
    db = app.state.db

    def viewer(request: Request) -> User:
        user = user_of(request)
        if user is None:
            raise _Login()
        return user

    @app.exception_handler(_Login)
    async def to_login(request: Request, e: _Login) -> RedirectResponse:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in STATIC:
            raise HTTPException(404, f"no such page or endpoint: /static/{name}")
        path, media = STATIC[name]
        return FileResponse(path, media_type=media)

    @app.get("/login", response_class=HTMLResponse)
    def login_form(next: str = "/") -> HTMLResponse:
        return render("login.html", title="sign in", next=_local(next), failed=False)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        user = await run_in_threadpool(db.user_for, str(form.get("token", "")).strip())
        if user is None:
            await app.state.throttle.failed(client_address(request))
            return render("login.html", 401, title="sign in", next=_local(str(form.get("next", "/"))), failed=True)
        response = RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)
        response.set_cookie(COOKIE, app.state.signer.dumps([user.name, user.session]), max_age=SESSION_S,
                            httponly=True, samesite="strict")
        return response

    @app.api_route("/logout", methods=["GET", "POST"])
    def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def queue(request: Request) -> HTMLResponse:
        user = viewer(request)
        rows = [{**r.public(), "progress": progress(r) or ""}
                for r in reversed(db.sweeps(None if user.admin else user.name))]
        return render("queue.html", title="queue", rows=rows, user=user)

    @app.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
    def live(sweep_id: str, request: Request) -> HTMLResponse:
        user = viewer(request)
        row = visible_sweep(db, sweep_id, user)
        return render("live.html", title=f"{row.name} ({row.id})", row=row, user=user, charts=True)

    @app.get("/sweeps/{sweep_id}/fragment")
    def fragment(sweep_id: str, request: Request) -> JSONResponse:
        return JSONResponse(live_fragment(visible_sweep(db, sweep_id, viewer(request))))

    @app.get("/sweeps/{sweep_id}/report", response_class=HTMLResponse)
    def finished_report(sweep_id: str, request: Request) -> HTMLResponse:
        user = viewer(request)
        row = visible_sweep(db, sweep_id, user)
        if not RunDir(row.run_dir).report_md.is_file():
            raise HTTPException(404, f"sweep {row.id} has no report yet ({row.state})")
        # the one place HTML is not escaped here: markdown-it's output, with raw HTML off (it escapes every string)
        sections = [{"html": Markup(MARKDOWN.render("\n".join(section.lines))),
                     "figures": [json.loads(fig.to_json()) for fig in section.figures]}
                    for section in report_sections(load_run(row.run_dir))]
        return render("report.html", title=f"report of {row.name} ({row.id})", row=row, sections=sections,
                      user=user, charts=True)

    @app.get("/sweeps/{sweep_id}/report.html")
    def report_download(sweep_id: str, request: Request) -> FileResponse:
        row = visible_sweep(db, sweep_id, viewer(request))
        path = RunDir(row.run_dir).report_html
        if not path.is_file():
            raise HTTPException(404, f"sweep {row.id} has no report yet ({row.state})")
        return FileResponse(path, media_type="text/html", filename=f"{row.name}-{row.id}-report.html",
                            headers={"content-security-policy": DOWNLOAD_CSP})

    @app.get("/sweeps/{sweep_id}/trials/{trial_id}", response_class=HTMLResponse)
    def trial_page(sweep_id: str, trial_id: str, request: Request) -> HTMLResponse:
        user = viewer(request)
        row = visible_sweep(db, sweep_id, user)
        run = load_run(row.run_dir) if run_store(row) else None
        trial = next((t for t in run.trials if t.id == trial_id), None) if run else None
        if trial is None:
            raise HTTPException(404, f"no trial {trial_id!r} in sweep {row.id}")
        history = run.history[run.history["id"] == trial.id] if not run.history.empty else run.history
        figures = [json.loads(fig.to_json()) for fig in (training_curves(history, run.meta["metric"]),
                                                         training_curves(history, "val/loss"))]
        panels = sorted(RunDir(row.run_dir).trial(trial.id).best_worst.glob("*.png"))
        return render("trial.html", title=f"trial {trial.id} of {row.name}", row=row, trial=trial, figures=figures,
                      panels=panels, user=user, charts=True)

    @app.get("/sweeps/{sweep_id}/trials/{trial_id}/panels/{name}")
    def panel(sweep_id: str, trial_id: str, name: str, request: Request) -> FileResponse:
        row = visible_sweep(db, sweep_id, viewer(request))
        folder = RunDir(row.run_dir).trial(trial_id).best_worst if TRIAL_ID.match(trial_id) else None
        found = {p.name: p for p in folder.glob("*.png")} if folder and folder.is_dir() else {}
        if name not in found:  # only the files that are there: no path reaches outside the run
            raise HTTPException(404, f"no panel {name!r}")
        return FileResponse(found[name], media_type="image/png")


class _Login(Exception):
    """A page asked for without a session: to the login page."""


def _local(target: str) -> str:
    """Only paths on this server (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def live_fragment(row: SweepRow) -> dict[str, Any]:
    """What the live page redraws: state, progress, the model-wise table (columns and rows of text) and the charts
    (plotly JSON). Nothing in it is markup."""
    def results(_) -> dict[str, Any]:
        run = load_run(row.run_dir)
        table = comparison_frame(run)
        metric = run.meta["metric"]
        figures = [metric_by(run.results, metric, "model.arch", f"{metric} by architecture"),
                   training_curves(run.history, metric)]
        return {"table": None if table.empty else {
                    "columns": [str(c) for c in table.columns],
                    "rows": [[_cell(v) for v in values] for values in table.itertuples(index=False)]},
                "figures": [json.loads(fig.to_json()) for fig in figures]}

    return {"state": row.state, "progress": progress(row) or "", "error": row.error,
            **(from_store(row, "fragment", results) or {"table": None, "figures": []})}

