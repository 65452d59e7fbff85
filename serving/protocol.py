"""uvicorn's httptools protocol with a deadline on every phase of a connection and a ceiling on
request headers, so a slow, silent or oversized client cannot hold a connection open.

uvicorn 0.54 bounds only the pause between two requests on a keep-alive connection
(`timeout_keep_alive`), and any byte received cancels even that: a connection that never sends a
request, one that sends its headers or body a byte at a time, and one that stalls mid-body stay
open for as long as the client likes, each holding a request (and for a body, the route awaiting
it) in memory. httptools (llhttp) has no limit on header size either; uvicorn has one only for
h11 (`h11_max_incomplete_event_size`). This subclass adds, on the same event loop and with no
task per connection:

- idle: uvicorn's keep-alive timer, also armed when a connection opens, cancelled only when a
  request begins (not by blank lines between requests), and closing only a connection with
  nothing being read or answered;
- headers: a request's headers must arrive whole within `header_timeout_s` of its first byte;
- body: its body must arrive whole within `body_timeout_s` of its headers, whether or not the
  route reads it;
- size: request line and headers over `max_header_bytes` are refused with 431, counted while they
  arrive (never more than the limit plus one read of the socket is held).

A timed-out or refused client still listening gets our JSON error body, and the connection is
closed. A client that goes away before its answer is logged in one line, and the status the
request is counted under in /metrics (see `metrics.CUT_SHORT`) says what happened: 408 when this
protocol cut the body off, 499 when the client left.

Timers are armed only when a phase outlives the read that started it: a request that arrives
whole in one read (nearly all of them) costs two clock reads and no timer: about 5 us a request
in all, against uvicorn's own protocol in process (a /predict takes about 1 ms).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from serving.errors import CLIENT_CLOSED_REQUEST, error_body
from serving.metrics import CUT_SHORT
from serving.settings import Settings

#: What the parser is reading; None between requests or once a request is whole.
_HEADERS, _BODY = "headers", "body"


def _cut_short(cycle: RequestResponseCycle, status: int) -> bool:
    """Count a request still being answered under `status`, unless already; True if so."""
    scope = cast("dict[str, Any]", cycle.scope)
    if cycle.response_complete or CUT_SHORT in scope:
        return False
    scope[CUT_SHORT] = status
    return True


class _HeadersTooLargeError(Exception):
    """Raised from a parser callback: stops httptools mid-feed so nothing more is parsed."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int

    @classmethod
    def configured(cls, settings: Settings) -> type[LimitedHttpToolsProtocol]:
        """This protocol with the settings' limits, for `uvicorn.run(http=...)`."""
        limits = {
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
            "max_header_bytes": settings.max_header_bytes,
        }
        return cast("type[LimitedHttpToolsProtocol]", type(cls.__name__, (cls,), limits))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading: str | None = None
        self._phase_started = 0.0
        # The sizes of the reads since the current request began (an upper bound on its header
        # bytes: the read it began in may hold the end of the previous request too), of that
        # first read, and of the read being parsed.
        self._header_bytes = 0
        self._first_read = 0
        self._read_bytes = 0
        self._began_in_read = False
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_at = 0.0

    # Connection events

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_idle()  # uvicorn arms it only after a response: a silent client stayed forever

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, but the idle timer is cancelled when a request begins, not by any byte,
        # and an oversized header gets its 431 rather than the parser's 400.
        self._read_bytes = len(data)
        self._began_in_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadersTooLargeError):
                self._refuse_headers()
                return
            self._invalid()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._reading is _HEADERS:
            if self._began_in_read:
                self._first_read = len(data)
            self._header_bytes += len(data)
            if self._header_bytes - self._first_read > self.max_header_bytes:
                self._refuse_headers()  # still arriving and already over: refused before the rest
                return
        self._settle_timers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        cycle = self.cycle
        if cycle is not None and _cut_short(cycle, CLIENT_CLOSED_REQUEST):
            when = "while sending the body of" if self._reading is _BODY else "before the answer to"
            self.logger.info(
                "%s went away %s %s %s",
                self._client(),
                when,
                cycle.scope["method"],
                cycle.scope["path"],
            )
        super().connection_lost(exc)

    def timeout_keep_alive_handler(self) -> None:
        cycle = self.cycle
        if self._reading is None and (cycle is None or cycle.response_complete):
            super().timeout_keep_alive_handler()
        else:
            # Armed by uvicorn as an answer went out while the next request (or the rest of
            # this one's body) was arriving: that has its own deadline, and once it is in,
            # the connection is idle only after its answer.
            self.timeout_keep_alive_task = None

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()
        self._reading = _HEADERS
        self._phase_started = self.loop.time()
        self._header_bytes = 0
        self._began_in_read = True

    def on_headers_complete(self) -> None:
        # Measured exactly only when the reads they came in could hold more than the limit.
        limit = self.max_header_bytes
        if self._header_bytes + self._read_bytes > limit and self._header_size() > limit:
            raise _HeadersTooLargeError
        super().on_headers_complete()
        self._reading = _BODY
        self._phase_started = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading = None
        if self.flow.read_paused and not self.pipeline:
            # uvicorn pauses reading while a body is buffered and resumes when the route asks
            # for more, so after the last chunk it stays paused until the answer is sent: a
            # client leaving meanwhile went unseen. The body is whole; read on, and its EOF
            # arrives as it leaves. (With requests queued, the pause is uvicorn's bound on them.)
            self.flow.resume_reading()

    # Deadlines

    def _arm_idle(self) -> None:
        if self.timeout_keep_alive_task is None and not self.transport.is_closing():
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def _settle_timers(self) -> None:
        """After each read: the deadline of what is still arriving, or the idle one."""
        if self._reading is None:
            self._cancel_deadline()
            cycle = self.cycle
            if (cycle is None or cycle.response_complete) and not self.pipeline:
                self._arm_idle()  # once answered early, the rest of a body has now arrived
            return
        budget = self.header_timeout_s if self._reading is _HEADERS else self.body_timeout_s
        due = self._phase_started + budget
        if self._deadline is None or self._deadline_at != due:
            self._cancel_deadline()
            self._deadline = self.loop.call_at(due, self._deadline_passed)
            self._deadline_at = due

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if self._reading is _HEADERS:
            message = (
                f"request headers not received within {self.header_timeout_s:g} s "
                "(CHURN_API_HEADER_TIMEOUT_S)"
            )
            # no request of this connection still being answered: the client may read ours
            answer = cycle is None or cycle.response_complete
            field = None
        else:
            message = (
                f"request body not received within {self.body_timeout_s:g} s "
                "(CHURN_API_BODY_TIMEOUT_S)"
            )
            answer = cycle is not None and not cycle.response_started
            field = "body"
            if cycle is not None and _cut_short(cycle, 408):
                # the route awaiting the body gets http.disconnect, and its answer goes nowhere
                cycle.disconnected = True
                cycle.message_event.set()
        self.logger.info("%s: %s; connection closed", self._client(), message)
        if answer:
            self._answer(408, "request_timeout", message, field)
        self.transport.close()

    # Refusals

    def _header_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_headers(self) -> None:
        message = (
            f"request headers are over the limit of {self.max_header_bytes:,} bytes "
            "(CHURN_API_MAX_HEADER_BYTES)"
        )
        self.logger.warning("%s: %s; refused with 431", self._client(), message)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._answer(431, "headers_too_large", message, None)
        self.transport.close()

    def _invalid(self) -> None:
        if self.cycle is not None:
            _cut_short(self.cycle, 400)  # a malformed body: not the client leaving
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)

    def _answer(self, status: int, code: str, message: str, field: str | None) -> None:
        body = orjson.dumps(error_body(code, message, field))
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)

    def _client(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
