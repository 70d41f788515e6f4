"""What every request and response of the service passes through (plain ASGI, so that server-sent events stream):

- ``BodyLimit``: a request body is counted as it arrives, however it is sent (Content-Length or chunked); past the
  limit the request gets 413 with one line and the application never sees it, so nothing is written;
- ``SecurityHeaders``: a Content-Security-Policy that allows scripts from the server only (no inline script, no
  ``eval``), no framing, no other origin to talk to; ``nosniff``, no referrer, nothing cached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# plotly draws with inline styles, so styles may be inline; scripts may not
CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; font-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-store"),
           (b"cross-origin-opener-policy", b"same-origin")]


async def send_error(send: Send, status: int, message: str) -> None:
    """One line as ``{"error": ...}``, for a request the application never saw."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *HEADERS]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """``limit`` bytes of body at most. A refused body is read on (and dropped) up to ``DRAIN_BYTES`` before the 413
    goes out: a client sends its whole body before it reads the answer, and a connection closed under it loses the
    answer."""

    DRAIN_BYTES, DRAIN_S = 128 * 2**20, 10.0

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def refuse(self, receive: Receive, send: Send, status: int, message: str, more: bool) -> None:
        drained, deadline = 0, time.monotonic() + self.DRAIN_S
        while more and drained < self.DRAIN_BYTES and time.monotonic() < deadline:
            chunk = await receive()
            drained += len(chunk.get("body", b""))
            more = chunk["type"] == "http.request" and chunk.get("more_body", False)
        await send_error(send, status, message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = f"request body over {self.limit // 1024} KB: a sweep file is a few KB"
        declared = dict(scope["headers"]).get(b"content-length", b"")  # the HTTP parser refused a malformed one
        if declared.isdigit() and int(declared) > self.limit:
            await self.refuse(receive, send, 413, too_big, more=int(declared) <= self.DRAIN_BYTES)
            return
        chunks, size = [], 0
        while True:  # the whole body, counted, before the application starts
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its body ended: nothing to answer, nothing done
            size += len(message.get("body", b""))
            if size > self.limit:
                await self.refuse(receive, send, 413, too_big, more=message.get("more_body", False))
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()  # then: the disconnect, as the application expects

        await self.app(scope, replayed, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), *(h for h in HEADERS if h[0] not in names)]
            await send(message)

        await self.app(scope, receive, with_headers)
