"""The HTTP side of ``orchestrate serve`` (FastAPI): JSON endpoints under ``/api/``, live progress as server-sent
events, and the web pages (``pages``). Every call needs a user: a bearer token, or (to read) the signed cookie the
login page sets. A user sees and acts on their own sweeps, an admin on all; someone else's sweep is a 404 like a
missing one. A submitted spec passes the service's policy (``policy``) before it is validated. Every refusal is one
line: ``{"error": "..."}``, or a page with the line for a browser. Every request passes ``edge`` (the body limit,
counted; the security headers).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from itsdangerous import URLSafeTimedSerializer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.errors import KNOWN_ERRORS
from orchestrator.service.access import Throttle, current_user, from_store, one_line, owned_sweep, progress
from orchestrator.service.db import ACTIVE, ServiceDB, SweepRow, User
from orchestrator.service.edge import HEADERS, BodyLimit, SecurityHeaders
from orchestrator.service.pages import error_page, page_routes, wants_html
from orchestrator.service.policy import UNSET_ON_SERVER, SubmitPolicy
from orchestrator.service.queue import Scheduler
from orchestrator.spec.load import load_spec_text
from orchestrator.store import Store
from reports.build import report_json

MAX_BODY = 256 * 1024  # a spec is a few KB; anything near this is a mistake


class Submit(BaseModel):
    spec: str = Field(description="the sweep file's text")
    sets: list[str] = Field(default_factory=list, description="--set key=value overrides (applied before ${VAR})")
    env: dict[str, str] = Field(default_factory=dict, description="values of the spec's ${VAR}s, from the client's "
                                "environment: the server never reads its own")
    priority: int = Field(0, ge=-1000, le=1000)
    filename: str = Field("spec.yaml", max_length=200)  # names the file in one-line errors, as the CLI's do


class Extend(BaseModel):
    trials: int = Field(ge=1, le=10_000)


def secret_key(data: Path) -> str:
    """The cookie-signing key, made once per data folder (readable by its owner only)."""
    path = data / "secret"
    if not path.is_file():  # created with its owner-only mode: never readable by others, even for a moment
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def create_app(data: Path, scheduler: Scheduler, policy: SubmitPolicy = SubmitPolicy()) -> FastAPI:
    db: ServiceDB = scheduler.db
    signer = URLSafeTimedSerializer(secret_key(data), salt="segsweep-login")
    app = FastAPI(title="segsweep", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.db, app.state.scheduler, app.state.signer, app.state.data = db, scheduler, signer, data
    app.state.throttle = Throttle()
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    app.add_middleware(SecurityHeaders)  # added last: outermost, so the body limit's refusals carry the headers too

    def refusal(request: Request, status: int, message: str) -> Response:
        return error_page(status, message) if wants_html(request) else one_line(status, message)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's HTTPException is one too; so is an unknown path
    async def http_error(request: Request, e: StarletteHTTPException) -> Response:
        detail = str(e.detail) if e.status_code != 404 or e.detail != "Not Found" else \
            f"no such page or endpoint: {request.url.path}"
        return refusal(request, e.status_code, detail)

    @app.exception_handler(Exception)  # a bug: one line, and (Starlette answers it outside the middleware) the headers
    async def server_error(request: Request, e: Exception) -> Response:
        response = one_line(500, f"internal error ({type(e).__name__}); the server's log has the traceback")
        response.headers.update({k.decode(): v.decode() for k, v in HEADERS})
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, e: RequestValidationError) -> Response:
        first = e.errors()[0]
        if first.get("type") == "json_invalid":
            return refusal(request, 422, f"request body: not valid JSON "
                                         f"({first.get('ctx', {}).get('error', 'decode error')})")
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request body"
        return refusal(request, 422, f"{where}: {first.get('msg', 'invalid')}")

    @app.get("/api/sweeps")
    def list_sweeps(user: User = Depends(current_user)) -> list[dict[str, Any]]:
        return [row.public() for row in db.sweeps(None if user.admin else user.name)]

    @app.post("/api/sweeps", status_code=201)
    def submit(body: Submit, user: User = Depends(current_user)) -> dict[str, Any]:
        try:
            sweep = load_spec_text(body.spec, body.sets, body.filename, environ=body.env, hint=UNSET_ON_SERVER,
                                   screen=policy.screen)
        except KNOWN_ERRORS as e:
            raise HTTPException(422, str(e)) from None
        sweep_id = secrets.token_hex(6)
        row = db.add_sweep(sweep_id, user.name, sweep.spec.name, sweep.resolved_yaml(), body.priority,
                           str(data / "runs" / sweep_id))
        return row.public()

    @app.get("/api/sweeps/{sweep_id}")
    def sweep_detail(row: SweepRow = Depends(owned_sweep)) -> dict[str, Any]:
        return {**row.public(), "spec": row.spec, "progress": progress(row)}

    @app.get("/api/sweeps/{sweep_id}/trials")
    def trials(row: SweepRow = Depends(owned_sweep)) -> list[dict[str, Any]]:
        def rows(store: Store) -> list[dict[str, Any]]:
            metric = store.meta().get("metric", "val/miou")
            return [{"id": t.id, "status": t.status, "epochs": t.epochs, metric: t.best.get(metric), "error": t.error,
                     "config": t.config} for t in store.trials()]
        return from_store(row, "trials", rows) or []

    @app.get("/api/sweeps/{sweep_id}/report")
    def report(row: SweepRow = Depends(owned_sweep)) -> dict[str, Any]:
        found = from_store(row, "report", lambda _: report_json(row.run_dir))
        if found is None:
            raise HTTPException(404, f"sweep {row.id} has no results yet ({row.state})")
        return found

    @app.get("/api/sweeps/{sweep_id}/logs")
    def logs(offset: int = Query(0, ge=0, le=2**40), row: SweepRow = Depends(owned_sweep)) -> dict[str, Any]:
        path = data / "logs" / f"{row.id}.log"
        text = b""
        if path.is_file():
            with open(path, "rb") as f:
                f.seek(max(0, offset))
                text = f.read(1 << 20)
        return {"text": text.decode(errors="replace"), "offset": max(0, offset) + len(text), "state": row.state}

    @app.get("/api/sweeps/{sweep_id}/events")
    async def events(request: Request, row: SweepRow = Depends(owned_sweep)) -> StreamingResponse:
        def snapshot() -> dict[str, Any]:
            current = db.sweep(row.id)
            return {"state": current.state, "progress": progress(current), "error": current.error}

        async def stream():
            last = None
            while not await request.is_disconnected():
                state = await run_in_threadpool(snapshot)  # SQLite: off the event loop, which serves every client
                if state != last:
                    yield f"data: {json.dumps(state)}\n\n"
                    last = state
                if state["state"] not in ACTIVE:
                    return
                await asyncio.sleep(1.0)
        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.post("/api/sweeps/{sweep_id}/cancel")
    def cancel(row: SweepRow = Depends(owned_sweep)) -> dict[str, Any]:
        if row.state not in ACTIVE:
            raise HTTPException(409, f"sweep {row.id} is {row.state}: nothing to cancel")
        scheduler.cancel(row)
        return db.sweep(row.id).public()

    @app.post("/api/sweeps/{sweep_id}/resume")
    def resume(row: SweepRow = Depends(owned_sweep)) -> dict[str, Any]:
        if row.state not in ("failed", "cancelled"):
            raise HTTPException(409, f"sweep {row.id} is {row.state}: only a failed or cancelled sweep resumes")
        db.requeue(row.id, "resume")
        return db.sweep(row.id).public()

    @app.post("/api/sweeps/{sweep_id}/extend")
    def extend(body: Extend, row: SweepRow = Depends(owned_sweep)) -> dict[str, Any]:
        if row.state in ACTIVE:
            raise HTTPException(409, f"sweep {row.id} is {row.state}: extend it once it has ended")
        db.requeue(row.id, f"extend:{body.trials}")
        return db.sweep(row.id).public()

    page_routes(app)
    return app
