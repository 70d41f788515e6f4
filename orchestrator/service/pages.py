"""The service's web pages, rendered on the server: the queue, a sweep's live page (progress, the model-wise table
and the charts, refreshed as its events arrive), a trial's page (curves, best and worst panels), and the finished
report. plotly.js is served from the plotly package itself: the pages work offline."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import plotly
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from orchestrator.rundir import RunDir
from orchestrator.service.access import COOKIE, SESSION_S, SWEEP_ID, progress, run_store, user_of
from orchestrator.service.db import SweepRow, User
from reports.build import comparison_frame
from reports.collect import load_run
from reports.figures import metric_by, training_curves

TRIAL_ID = re.compile(r"^[A-Za-z0-9_]+$")
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STYLE = ("body{font-family:sans-serif;margin:2em} table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:3px 6px} .state{font-weight:bold} nav a{margin-right:1em}")


def page(title: str, body: str, user: User | None, plotly_js: bool = False) -> HTMLResponse:
    who = f"{html.escape(user.name)}{' (admin)' if user and user.admin else ''}" if user else ""
    script = "<script src='/static/plotly.min.js'></script>" if plotly_js else ""
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)} — segsweep"
                        f"</title><style>{STYLE}</style>{script}</head><body><nav><a href='/'>queue</a>{who}</nav>"
                        f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def page_routes(app: FastAPI) -> None:
    db = app.state.db

    def viewer(request: Request) -> User:
        user = user_of(request)
        if user is None:
            raise _Login()
        return user

    def visible(sweep_id: str, user: User) -> SweepRow:
        row = db.sweep(sweep_id) if SWEEP_ID.match(sweep_id) else None
        if row is None or (row.user != user.name and not user.admin):
            raise HTTPException(404, f"no sweep {sweep_id!r}")
        return row

    @app.exception_handler(_Login)
    async def to_login(request: Request, e: _Login) -> RedirectResponse:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.get("/static/plotly.min.js")
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="application/javascript")

    @app.get("/login", response_class=HTMLResponse)
    def login_form(next: str = "/") -> HTMLResponse:
        return page("sign in", f"<form method='post' action='/login'><input type='hidden' name='next' "
                               f"value='{html.escape(_local(next))}'><label>token <input name='token' "
                               "type='password' size='50'></label> <button>sign in</button></form>", None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = await request.form()
        user = db.user_for(str(form.get("token", "")).strip())
        if user is None:
            return page("sign in", "<p>That token is not valid: <code>orchestrate token add NAME</code> makes one."
                                   "</p><p><a href='/login'>again</a></p>", None)
        response = RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)
        response.set_cookie(COOKIE, app.state.signer.dumps(user.name), max_age=SESSION_S, httponly=True,
                            samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse)
    def queue(request: Request) -> HTMLResponse:
        user = viewer(request)
        rows = db.sweeps(None if user.admin else user.name)
        body = "".join(f"<tr><td><a href='/sweeps/{r.id}'>{r.id}</a></td><td>{html.escape(r.name)}</td>"
                       f"<td>{html.escape(r.user)}</td><td class='state'>{r.state}</td><td>{r.priority}</td>"
                       f"<td>{html.escape(progress(r) or '')}</td><td>{html.escape(r.error or '')}</td></tr>"
                       for r in reversed(rows))
        return page("queue", "<table id='queue'><tr><th>sweep</th><th>name</th><th>user</th><th>state</th>"
                             f"<th>priority</th><th>progress</th><th>error</th></tr>{body}</table>", user)

    @app.get("/sweeps/{sweep_id}", response_class=HTMLResponse)
    def live(sweep_id: str, request: Request) -> HTMLResponse:
        user = viewer(request)
        row = visible(sweep_id, user)
        body = (f"<p>state <span id='state' class='state'>{row.state}</span> · <span id='progress'></span></p>"
                f"<p><a href='/sweeps/{row.id}/report'>report</a></p><div id='table'></div><div id='charts'></div>"
                f"<script>{LIVE_JS % {'id': row.id}}</script>")
        return page(f"{row.name} ({row.id})", body, user, plotly_js=True)

    @app.get("/sweeps/{sweep_id}/fragment")
    def fragment(sweep_id: str, request: Request) -> JSONResponse:
        row = visible(sweep_id, viewer(request))
        return JSONResponse(live_fragment(row))

    @app.get("/sweeps/{sweep_id}/report", response_class=HTMLResponse)
    def finished_report(sweep_id: str, request: Request) -> Response:
        row = visible(sweep_id, viewer(request))
        path = RunDir(row.run_dir).report_html
        if not path.is_file():
            raise HTTPException(404, f"sweep {row.id} has no report yet ({row.state})")
        return HTMLResponse(path.read_text())

    @app.get("/sweeps/{sweep_id}/trials/{trial_id}", response_class=HTMLResponse)
    def trial_page(sweep_id: str, trial_id: str, request: Request) -> HTMLResponse:
        user = viewer(request)
        row = visible(sweep_id, user)
        run = load_run(row.run_dir) if run_store(row) else None
        trial = next((t for t in run.trials if t.id == trial_id), None) if run else None
        if trial is None:
            raise HTTPException(404, f"no trial {trial_id!r} in sweep {row.id}")
        history = run.history[run.history["id"] == trial.id] if not run.history.empty else run.history
        charts = "".join(f"<div id='c{i}'></div><script>Plotly.newPlot('c{i}', {fig.to_json()})</script>"
                         for i, fig in enumerate([training_curves(history, run.meta["metric"]),
                                                  training_curves(history, "val/loss")]))
        panels = sorted(RunDir(row.run_dir).trial(trial.id).best_worst.glob("*.png"))
        images = "".join(f"<figure><img src='/sweeps/{row.id}/trials/{trial.id}/panels/{p.name}'>"
                         f"<figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in panels)
        config = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
                         for k, v in trial.config.items())
        body = (f"<p>{trial.status}, {trial.epochs} epochs{' · ' + html.escape(trial.error) if trial.error else ''}</p>"
                f"{charts}<h2>best and worst validation images</h2>{images or '<p>none saved</p>'}"
                f"<h2>config</h2><table>{config}</table>")
        return page(f"trial {trial.id} of {row.name}", body, user, plotly_js=True)

    @app.get("/sweeps/{sweep_id}/trials/{trial_id}/panels/{name}")
    def panel(sweep_id: str, trial_id: str, name: str, request: Request) -> FileResponse:
        row = visible(sweep_id, viewer(request))
        folder = RunDir(row.run_dir).trial(trial_id).best_worst if TRIAL_ID.match(trial_id) else None
        found = {p.name: p for p in folder.glob("*.png")} if folder and folder.is_dir() else {}
        if name not in found:  # only the files that are there: no path reaches outside the run
            raise HTTPException(404, f"no panel {name!r}")
        return FileResponse(found[name], media_type="image/png")


class _Login(Exception):
    """A page asked for without a session: to the login page."""


def _local(target: str) -> str:
    """Only paths on this server (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def live_fragment(row: SweepRow) -> dict[str, Any]:
    """What the live page redraws: state, progress, the model-wise table, the charts (plotly JSON)."""
    out: dict[str, Any] = {"state": row.state, "progress": progress(row) or "", "error": row.error, "table": "",
                           "figures": []}
    if run_store(row) is None:
        return out
    run = load_run(row.run_dir)
    table = comparison_frame(run)
    if not table.empty:
        links = table.assign(trial=[f"<a href='/sweeps/{row.id}/trials/{t}'>{t}</a>" for t in table["trial"]])
        out["table"] = links.to_html(index=False, escape=False, na_rep="–", table_id="comparison",
                                     float_format=lambda v: f"{v:.4g}")
    metric = run.meta["metric"]
    figures = [metric_by(run.results, metric, "model.arch", f"{metric} by architecture"),
               training_curves(run.history, metric)]
    out["figures"] = [json.loads(fig.to_json()) for fig in figures]
    return out


# the live page: each server-sent event (a state or progress change) redraws the table and the charts
LIVE_JS = """
const id = '%(id)s';
async function redraw() {
  const r = await fetch('/sweeps/' + id + '/fragment');
  const f = await r.json();
  document.getElementById('state').textContent = f.state;
  document.getElementById('progress').textContent = f.progress + (f.error ? ' · ' + f.error : '');
  document.getElementById('table').innerHTML = f.table;
  const charts = document.getElementById('charts');
  f.figures.forEach((fig, i) => {
    let div = document.getElementById('chart' + i);
    if (!div) { div = document.createElement('div'); div.id = 'chart' + i; div.className = 'chart';
                charts.appendChild(div); }
    Plotly.react(div, fig.data, fig.layout);
  });
}
redraw();
const events = new EventSource('/api/sweeps/' + id + '/events');
events.onmessage = () => redraw();
events.onerror = () => events.close();
"""
