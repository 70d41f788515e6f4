"""The CLI's side of the service: HTTP calls with the user's token; the server's one-line refusals become one-line
errors here too. The server and token come from the options or ``SEGSWEEP_SERVER`` / ``SEGSWEEP_TOKEN``."""

from __future__ import annotations

import os
from typing import Any

import httpx

from orchestrator.errors import SegsweepError

DEFAULT_SERVER = "http://127.0.0.1:8765"


class Client:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or os.environ.get("SEGSWEEP_SERVER") or DEFAULT_SERVER).rstrip("/")
        token = token or os.environ.get("SEGSWEEP_TOKEN")
        if not token:
            raise SegsweepError("no token: set SEGSWEEP_TOKEN or --token (orchestrate token add NAME makes one)")
        self.http = httpx.Client(base_url=self.server, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise SegsweepError(f"cannot reach the segsweep server at {self.server} ({type(e).__name__}: {e}); "
                                f"is 'orchestrate serve' running there?") from None
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise SegsweepError(f"{self.server}: {response.status_code}: {message}")
        return response.json()
