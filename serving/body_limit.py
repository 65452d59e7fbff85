"""A ceiling on request bodies, enforced while they arrive rather than after.

A declared Content-Length over the limit is refused before the app runs or a byte of the body is
read, with our JSON error body and `Connection: close` (the client may still be sending); a body
without one is counted as it arrives and refused once over the limit.

What the pinned versions offer instead, and why it is not used (checked with Starlette 1.10.0 and
FastAPI 0.165.0): Starlette's `RequestBodyLimitMiddleware`, which `Starlette(max_body_size=...)`,
`FastAPI(max_body_size=...)` and a route's or mount's `max_body_size` install, counts the body
only once the route first reads it, so routing, the API-key check and the served-model dependency
run first; a declared Content-Length over the limit is answered with a plain-text "Content Too
Large" that replaces whatever the app's error handlers answer (a streamed body over it does reach
them); and it sends no `Connection: close`, so uvicorn reads the unread rest of the upload as the
next request (it logs "Invalid HTTP request received" and resets the connection). Starlette's
other limits, `Request.form(max_part_size=..., max_files=..., max_fields=...)`, bound multipart
forms only, not JSON or CSV bodies. uvicorn has no body limit, and a reverse proxy in front (which
has one) is not always there.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.errors import BODY_TOO_LARGE, error_body


class BodyTooLargeError(HTTPException):
    """Raised from `receive` mid-body; the app's HTTP error handler turns it into a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, _message(limit))


def _message(limit: int) -> str:
    return f"request body is over the limit of {limit:,} bytes (CHURN_MAX_BODY_BYTES)"


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _refuse(send, self.max_bytes)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, limit: int) -> None:
    body = orjson.dumps(error_body(BODY_TOO_LARGE, _message(limit), "body"))
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            # the client may still be sending: tell it the connection ends here
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
