"""Who is calling, and which sweeps they may see: a bearer token or the login page's signed cookie; a user's own
sweeps, an admin's all; a missing sweep and someone else's are the same 404. Every refusal is one line."""

from __future__ import annotations

import re

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from itsdangerous import BadSignature

from orchestrator.rundir import RunDir
from orchestrator.service.db import ServiceDB, SweepRow, User
from orchestrator.store import Store, progress_line

COOKIE = "segsweep_session"
SESSION_S = 7 * 24 * 3600
SWEEP_ID = re.compile(r"^[0-9a-f]{12}$")


def one_line(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message.strip().splitlines()[0] if message.strip() else "error"}, status_code=status)


def user_of(request: Request) -> User | None:
    """The caller by their bearer token, else by the login cookie; None if neither holds."""
    db: ServiceDB = request.app.state.db
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return db.user_for(header[7:].strip())
    cookie = request.cookies.get(COOKIE)
    if cookie:
        try:
            return db.user(request.app.state.signer.loads(cookie, max_age=SESSION_S))
        except BadSignature:
            return None
    return None


def current_user(request: Request) -> User:
    user = user_of(request)
    if user is None:
        raise HTTPException(401, "no valid token: send 'Authorization: Bearer <token>' (orchestrate token add NAME)")
    return user


def owned_sweep(sweep_id: str, request: Request, user: User = Depends(current_user)) -> SweepRow:
    """The sweep if the caller may see it; a missing one and someone else's are the same 404."""
    row = request.app.state.db.sweep(sweep_id) if SWEEP_ID.match(sweep_id) else None
    if row is None or (row.user != user.name and not user.admin):
        raise HTTPException(404, f"no sweep {sweep_id!r} (orchestrate queue lists yours)")
    return row


def run_store(row: SweepRow) -> Store | None:
    path = RunDir(row.run_dir).store
    return Store(path) if path.is_file() else None


def progress(row: SweepRow) -> str | None:
    store = run_store(row)
    return progress_line(store).removeprefix("[segsweep] ") if store is not None else None
