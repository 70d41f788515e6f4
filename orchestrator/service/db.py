"""The service's state: one SQLite file (WAL) under ``--data``: users (a token's hash, never the token) and sweeps
(the resolved spec, owner, priority, state, run directory, the GPUs it holds, its runner's process)."""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY,
    user TEXT NOT NULL REFERENCES users(name),
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'finished', 'failed', 'cancelled')),
    action TEXT NOT NULL DEFAULT 'run',
    run_dir TEXT NOT NULL,
    gpus TEXT NOT NULL DEFAULT '[]',
    pid INTEGER,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL
);
"""


def token_hash(token: str) -> str:
    """A token is 256 random bits, so a plain SHA-256 of it is all the store needs (no salt, no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class User:
    name: str
    admin: bool


@dataclass(frozen=True)
class SweepRow:
    id: str
    user: str
    name: str
    spec: str
    priority: int
    state: str
    action: str  # what its runner does next: run, resume, extend:<n>
    run_dir: str
    gpus: list[int]
    pid: int | None
    error: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None

    def public(self) -> dict[str, Any]:
        """What the API shows of a sweep (its spec text only on its own page)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("spec", "pid")}


class ServiceDB:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:
                yield db
        finally:
            db.close()

    # ---------------------------------------------------------------------------------------- users
    def add_user(self, name: str, admin: bool = False) -> str:
        """A new token for ``name`` (a new user, or a new token for an existing one); only its hash is kept."""
        token = secrets.token_urlsafe(32)
        with self._db() as db:
            db.execute("INSERT INTO users VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                       "token_hash = excluded.token_hash, admin = excluded.admin",
                       (name, token_hash(token), int(admin), time.time()))
        return token

    def user_for(self, token: str) -> User | None:
        """The token's user. Looked up by its hash (unique, indexed): timing reveals nothing of a 256-bit token."""
        with self._db() as db:
            row = db.execute("SELECT name, admin FROM users WHERE token_hash = ?", (token_hash(token),)).fetchone()
        return User(row[0], bool(row[1])) if row else None

    def user(self, name: str) -> User | None:
        with self._db() as db:
            row = db.execute("SELECT name, admin FROM users WHERE name = ?", (name,)).fetchone()
        return User(row[0], bool(row[1])) if row else None

    # ---------------------------------------------------------------------------------------- sweeps
    def add_sweep(self, sweep_id: str, user: str, name: str, spec: str, priority: int, run_dir: str) -> SweepRow:
        with self._db() as db:
            db.execute("INSERT INTO sweeps (id, user, name, spec, priority, state, run_dir, created_at) "
                       "VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                       (sweep_id, user, name, spec, priority, run_dir, time.time()))
        return self.sweep(sweep_id)

    def sweep(self, sweep_id: str) -> SweepRow | None:
        found = self.sweeps(where="id = ?", args=(sweep_id,))
        return found[0] if found else None

    def sweeps(self, user: str | None = None, where: str = "1", args: tuple = ()) -> list[SweepRow]:
        """Sweeps, oldest first; ``user``: only theirs."""
        if user is not None:
            where, args = f"({where}) AND user = ?", (*args, user)
        with self._db() as db:
            rows = db.execute(f"SELECT id, user, name, spec, priority, state, action, run_dir, gpus, pid, error, "
                              f"created_at, started_at, ended_at FROM sweeps WHERE {where} ORDER BY created_at, id",
                              args).fetchall()
        return [SweepRow(*r[:8], json.loads(r[8]), *r[9:]) for r in rows]

    def update(self, sweep_id: str, **values: Any) -> None:
        if "gpus" in values:
            values["gpus"] = json.dumps(values["gpus"])
        columns = ", ".join(f"{k} = ?" for k in values)
        with self._db() as db:
            db.execute(f"UPDATE sweeps SET {columns} WHERE id = ?", (*values.values(), sweep_id))

    def requeue(self, sweep_id: str, action: str) -> None:
        """Back in the queue to ``action`` (resume, extend:<n>) its run directory."""
        self.update(sweep_id, state="queued", action=action, pid=None, error=None, ended_at=None, gpus=[])
