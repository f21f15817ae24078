"""Request body caps, enforced while the body streams in and answered with a JSON 413.

Starlette parses a multipart body completely before a handler runs, so a size check inside the
handler comes too late. This ASGI middleware answers 413 from `Content-Length` before reading
anything, and otherwise counts the bytes of a chunked body as they arrive and stops at the cap by
raising `HTTPException(413)` from `receive`, which FastAPI passes through to the app's JSON error
handler. (FastAPI's own `max_body_size` answers in plain text, which breaks the rule that every
error body is JSON.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimitMiddleware", "endpoint_limits"]

_FEATURES = re.compile(r"^/subnets/[^/]+/features/?$")


def _message(limit: int) -> str:
    return f"request body exceeds this endpoint's limit of {limit} bytes"


class BodyLimitMiddleware:
    """413 for bodies over the per-endpoint cap chosen by `limit_for(method, path)`."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            body = json.dumps({"detail": _message(limit)}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 413,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, detail=_message(limit))
            return message

        await self.app(scope, limited_receive, send)


def endpoint_limits(max_upload: int, max_features: int, max_json: int) -> Callable[[str, str], int]:
    """The cap of each endpoint: dataset archives, feature images, or anything else (JSON)."""

    def limit_for(method: str, path: str) -> int:
        if method == "POST" and path.rstrip("/") == "/datasets":
            return max_upload
        if method == "POST" and _FEATURES.match(path):
            return max_features
        return max_json

    return limit_for
