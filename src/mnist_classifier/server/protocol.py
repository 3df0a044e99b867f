"""Connection-level limits that uvicorn itself leaves open: slow or oversized request heads, stalled bodies.

uvicorn closes a keep-alive connection that stays idle after a response (``timeout_keep_alive``) and caps
connections (``limit_concurrency``), but a connection that opens and never finishes its request head, a
head of any size, or a body that stops arriving would each hold a connection (and the head's bytes) for
ever. ``GuardedHttpTools`` is uvicorn's own httptools protocol plus three timers and one counter:

    the request head must arrive within HEADER_TIMEOUT seconds of the connection (or of the start of
    the next request on a kept-alive one), and be at most MAX_HEADER_BYTES long -> 408 / 431, then closed
    the body may pause at most BODY_IDLE_TIMEOUT seconds between chunks, and must be complete within
    BODY_TIMEOUT seconds of the head                                         -> 408, then closed

The application sees such a request as a disconnected client. ``serve`` runs uvicorn with this protocol.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .limits import BODY_IDLE_TIMEOUT, BODY_TIMEOUT, HEADER_TIMEOUT, MAX_HEADER_BYTES

PROTOCOL = f"{__name__}:GuardedHttpTools"  # what uvicorn's ``http=`` takes (a string reaches worker processes)


class GuardedHttpTools(HttpToolsProtocol):
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._timer = None
        self._body_deadline = None
        self._reading_head = True
        self._head_bytes = 0  # received while the head is incomplete (the parser holds them)
        self._head_size = 0   # the parsed head: request target, header names and values
        self._arm(HEADER_TIMEOUT, 408, "request head not received in time")

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self._body_deadline is not None:
            self._body_deadline.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_head and self._head_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
            self._refuse(431, _HEAD_TOO_LARGE)

    def send_400_response(self, msg: str) -> None:
        if self._head_size > MAX_HEADER_BYTES:  # the parser stopped at on_header's complaint
            self._refuse(431, _HEAD_TOO_LARGE)
        else:
            super().send_400_response(msg)

    # ---- parser callbacks: where a request's head and body begin and end

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if not self._reading_head:  # the next request on a kept-alive connection
            self._reading_head = True
            self._head_bytes = 0
            self._arm(HEADER_TIMEOUT, 408, "request head not received in time")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEADER_BYTES:
            raise ValueError(_HEAD_TOO_LARGE)  # stops the parser; uvicorn then calls send_400_response

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()
        self._arm(BODY_IDLE_TIMEOUT, 408, "request body stalled")
        self._body_deadline = self.loop.call_later(BODY_TIMEOUT, self._refuse, 408, "request body not received in time")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._arm(BODY_IDLE_TIMEOUT, 408, "request body stalled")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    # ---- timers

    def _arm(self, seconds: float, status: int, detail: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._refuse, status, detail)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` if nothing has been answered yet, and close; the app sees a disconnect."""
        self._disarm()
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(_response(status, detail))
        if cycle is not None and not cycle.response_complete:
            # What connection_lost would do, at once, so that the app cannot write after our answer.
            cycle.disconnected = True
            cycle.message_event.set()
        self.logger.info("%s:%s - %d: %s, connection closed", *(self.client or ("-", 0)), status, detail)
        self.transport.close()


_HEAD_TOO_LARGE = f"request head over {MAX_HEADER_BYTES // 1024} KiB"


def _response(status: int, detail: str) -> bytes:
    reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}[status]
    body = json.dumps({"detail": detail}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body
