"""Who is calling, and which sweeps they may see: a bearer token, or the login page's signed cookie; a user's own
sweeps, an admin's all; a missing sweep and someone else's are the same 404. Every refusal is one line.

A cookie holds the user's name and a tag of the token it was opened with, so rotating or revoking the token ends
every browser session opened with it. A cookie is honoured for reading only (GET): anything that changes a sweep
takes the bearer token, so no other page a browser has open can act with the cookie. A wrong token waits before
its 401, longer the more wrong tokens came from its address lately, one at a time (``Throttle``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from itsdangerous import BadSignature

from orchestrator.rundir import RunDir
from orchestrator.service.db import ServiceDB, SweepRow, User
from orchestrator.store import Store, progress_line

T = TypeVar("T")
COOKIE = "segsweep_session"
SESSION_S = 7 * 24 * 3600
SWEEP_ID = re.compile(r"^[0-9a-f]{12}$")
READING = ("GET", "HEAD")
NO_TOKEN = "no valid token: send 'Authorization: Bearer <token>' (orchestrate token add NAME)"


def one_line(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": first_line(message)}, status_code=status)


def first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else "error"


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else None


def user_of(request: Request) -> User | None:
    """The caller by their bearer token, else (for reading) by the login cookie; None if neither holds."""
    db: ServiceDB = request.app.state.db
    token = bearer(request)
    user = db.user_for(token) if token is not None else session_user(request)
    if user is not None:
        db.touch(user.name)
    return user


def session_user(request: Request) -> User | None:
    cookie = request.cookies.get(COOKIE)
    if not cookie or request.method not in READING:
        return None
    try:
        name, tag = request.app.state.signer.loads(cookie, max_age=SESSION_S)
    except (BadSignature, ValueError, TypeError):  # forged, expired, or a cookie of an older server
        return None
    return request.app.state.db.user_for_session(str(name), str(tag))


async def current_user(request: Request) -> User:
    """The API's caller; a wrong bearer token is slowed down before its 401."""
    user = await run_in_threadpool(user_of, request)
    if user is None:
        if bearer(request) is not None:
            await request.app.state.throttle.failed(client_address(request))
        raise HTTPException(401, NO_TOKEN)
    return user


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


class Throttle:
    """Failed logins slowed down: each waits ``BASE_S`` doubled for every earlier failure from its address in the
    last ``FORGET_S`` (at most ``MAX_S``), and an address's failures wait one at a time, so parallel guesses queue."""

    BASE_S, MAX_S, FORGET_S = 0.25, 4.0, 600.0

    def __init__(self) -> None:
        self.failures: dict[str, tuple[int, float]] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    async def failed(self, address: str) -> None:
        now = time.monotonic()
        if len(self.failures) > 10_000:  # forget the quiet addresses
            for old in [a for a, (_, at) in self.failures.items() if now - at > self.FORGET_S]:
                self.failures.pop(old)
                self.locks.pop(old, None)
        count, last = self.failures.get(address, (0, now))
        count = 1 if now - last > self.FORGET_S else count + 1
        self.failures[address] = (count, now)
        async with self.locks.setdefault(address, asyncio.Lock()):
            await asyncio.sleep(min(self.MAX_S, self.BASE_S * 2 ** (count - 1)))


def visible_sweep(db: ServiceDB, sweep_id: str, user: User) -> SweepRow:
    """The sweep if ``user`` may see it; a missing one and someone else's are the same 404."""
    row = db.sweep(sweep_id) if SWEEP_ID.match(sweep_id) else None
    if row is None or (row.user != user.name and not user.admin):
        raise HTTPException(404, f"no sweep {sweep_id!r} (orchestrate queue lists yours)")
    return row


def owned_sweep(sweep_id: str, request: Request, user: User = Depends(current_user)) -> SweepRow:
    return visible_sweep(request.app.state.db, sweep_id, user)


def run_store(row: SweepRow) -> Store | None:
    path = RunDir(row.run_dir).store
    return Store(path) if path.is_file() else None


_READS: dict[tuple[str, str], tuple[tuple[int, int, bytes], Any]] = {}


def from_store(row: SweepRow, what: str, compute: Callable[[Store], T]) -> T | None:
    """``compute(store)`` of the sweep's results store (None before there is one), kept until the store changes (its
    modification time, size and SQLite's file change counter, which every commit bumps: two commits within one tick
    of a coarse file clock leave the time and size alike): every client polls the same sweep, so it is read once per
    change however many ask, and fewer readers hold the driver's writes back."""
    path = RunDir(row.run_dir).store
    try:
        stat = path.stat()
        with open(path, "rb") as f:
            counter = f.read(28)[24:28]  # the database header's file change counter
    except FileNotFoundError:
        return None
    version, key = (stat.st_mtime_ns, stat.st_size, counter), (str(path), what)
    hit = _READS.get(key)
    if hit is not None and hit[0] == version:
        return hit[1]
    value = compute(Store(path))  # read after the stat: at worst newer than its version, never older
    if len(_READS) > 1024:
        _READS.clear()
    _READS[key] = (version, value)
    return value


def progress(row: SweepRow) -> str | None:
    return from_store(row, "progress", lambda store: progress_line(store).removeprefix("[segsweep] "))
