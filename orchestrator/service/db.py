"""The service's state: one SQLite file (WAL) under ``--data``: users (a token's hash, never the token; when it was
made and last used) and sweeps (the resolved spec, owner, priority, state, run directory, the GPUs it holds, its
runner's process)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import SegsweepError

STATES = ("queued", "running", "finished", "failed", "cancelled")
ACTIVE = ("queued", "running")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    last_used_at REAL
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


TOUCH_S = 60.0  # a user's last use is written at most this often (the API is polled)


def token_hash(token: str) -> str:
    """A token is 256 random bits, so a plain SHA-256 of it is all the store needs (no salt, no slow hash)."""
    return hashlib.sha256(token.encode()).hexdigest()


def session_tag(hashed: str) -> str:
    """What a browser session carries of the token it was opened with: a new token (rotate) or none (revoke) ends it."""
    return hashlib.sha256(f"session:{hashed}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class User:
    name: str
    admin: bool
    session: str = ""  # session_tag of the user's current token


@dataclass(frozen=True)
class UserInfo:
    """``token list``: never the token, nor its hash."""

    name: str
    admin: bool
    created_at: float
    last_used_at: float | None


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
        self._touched: dict[str, float] = {}
        self._local = threading.local()
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
            if "last_used_at" not in {row[1] for row in db.execute("PRAGMA table_info(users)")}:  # an older folder's
                db.execute("ALTER TABLE users ADD COLUMN last_used_at REAL")

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """One transaction, on this thread's connection (the server's threads answer every call: connecting anew each
        time was most of a call's cost)."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        with db:
            yield db

    # ---------------------------------------------------------------------------------------- users
    def add_user(self, name: str, admin: bool = False) -> str:
        """A new user and their token (returned once; only its hash is kept). An existing user is refused."""
        token = secrets.token_urlsafe(32)
        try:
            with self._db() as db:
                db.execute("INSERT INTO users (name, token_hash, admin, created_at) VALUES (?, ?, ?, ?)",
                           (name, token_hash(token), int(admin), time.time()))
        except sqlite3.IntegrityError:
            raise SegsweepError(f"user {name} exists: --rotate gives them a new token (ending their browser "
                                f"sessions), orchestrate token revoke {name} removes it") from None
        return token

    def rotate(self, name: str, admin: bool | None = None) -> str:
        """A new token for an existing user; the old one and its browser sessions end. ``admin``: None keeps the
        role."""
        token = secrets.token_urlsafe(32)
        with self._db() as db:
            done = db.execute("UPDATE users SET token_hash = ?, admin = COALESCE(?, admin) WHERE name = ?",
                              (token_hash(token), None if admin is None else int(admin), name))
        if done.rowcount == 0:
            raise SegsweepError(f"no user {name}: orchestrate token add {name} makes one")
        return token

    def revoke(self, name: str) -> None:
        """The user's token and browser sessions end now; their sweeps stay (an admin sees them)."""
        with self._db() as db:
            done = db.execute("DELETE FROM users WHERE name = ?", (name,))
        if done.rowcount == 0:
            raise SegsweepError(f"no user {name} (orchestrate token list shows them)")

    def users(self) -> list[UserInfo]:
        with self._db() as db:
            rows = db.execute("SELECT name, admin, created_at, last_used_at FROM users ORDER BY name").fetchall()
        return [UserInfo(r[0], bool(r[1]), r[2], r[3]) for r in rows]

    def user_for(self, token: str) -> User | None:
        """The token's user, its hash compared with every user's in constant time (all of them, match or not)."""
        hashed, found = token_hash(token), None
        with self._db() as db:
            rows = db.execute("SELECT name, admin, token_hash FROM users").fetchall()
        for name, admin, stored in rows:
            if hmac.compare_digest(stored, hashed):
                found = User(name, bool(admin), session_tag(stored))
        return found

    def user_for_session(self, name: str, tag: str) -> User | None:
        """The user of a browser session, if it was opened with their current token."""
        with self._db() as db:
            row = db.execute("SELECT name, admin, token_hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is None or not hmac.compare_digest(session_tag(row[2]), tag):
            return None
        return User(row[0], bool(row[1]), tag)

    def touch(self, name: str) -> None:
        """Record that ``name`` used their token (at most once a minute: the API is polled)."""
        now = time.time()
        if now - self._touched.get(name, 0.0) < TOUCH_S:
            return
        self._touched[name] = now
        with self._db() as db:
            db.execute("UPDATE users SET last_used_at = ? WHERE name = ?", (now, name))

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
