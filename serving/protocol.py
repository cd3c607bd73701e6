"""HTTP/1.1 connections with the limits a public endpoint needs.

uvicorn's httptools protocol, plus: a cap on the request line and headers together (431), a time
limit for the headers (from the connection's opening, or from a kept-alive request's first byte) and
one for the body (408), the worker's connection count with the longest-idle connection closed to make
room, and refusals (503 with `Retry-After`) answered here without reaching the app. Errors answered
here close the connection after a short lingering read, so the client reads the answer instead of a
reset while it is still sending.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import os
import random
import time
from collections import Counter
from typing import Any, Callable, Optional

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from serving import settings as names
from serving.scoring_thread import RETRY_AFTER_S
from serving.settings import Settings

log = logging.getLogger("serving")

_IDLE, _HEADERS, _BODY = 0, 1, 2
LINGER_S = 2.0
"""After an error answered here, how long the rest of the request is read and dropped before closing."""
_NOTE_EVERY_S = 5.0
FRESH_S = 1.0
"""A connection opened this recently and still without a request is not closed by a shutdown."""
_SCORE = names.SCORE_PATH.encode()


def new_request_id() -> str:
    """A random (version 4) UUID as text, as Azure ML's server makes request ids.

    From a `random.Random`, not `os.urandom` as uuid.uuid4() is: an id names a request, it guards
    nothing, and a system call for every request that brings no id of its own showed in the worker's
    profile. The generator is this module's and is seeded again in every forked worker."""
    # RFC 9562 section 5.4: version 4 in bits 76-79, variant 10 in bits 62-63.
    return _uuid_text((_random_bits(128) & ~_UUID_FIXED) | _UUID_V4)


# A generator of this module's own: a script that seeds `random` (in init() or run()) must not make
# every worker, or every request after it, draw the same ids.
_ids = random.Random()
os.register_at_fork(after_in_child=_ids.seed)
_random_bits = _ids.getrandbits
_UUID_FIXED = 0xF << 76 | 0x3 << 62
_UUID_V4 = 0x4 << 76 | 0x2 << 62


def _uuid_text(n: int) -> str:
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def error_response(status: int, message: str, request_id: str, retry_after: bool = False) -> bytes:
    """A complete `Connection: close` response with the runtime's JSON error body."""
    body = json.dumps({"error": message, "message": message, "request_id": request_id}).encode()
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}", "content-type: application/json",
             f"content-length: {len(body)}", f"x-request-id: {request_id}", f"x-ms-request-id: {request_id}",
             "connection: close"]
    if retry_after:
        lines.append(f"retry-after: {RETRY_AFTER_S}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name in (b"x-request-id", b"x-ms-request-id") and 0 < len(value) <= 256:
            return value.decode("latin-1")
    return new_request_id()


def refusal_app(message: str) -> Callable[..., Any]:
    """An ASGI app that answers every request 503 with `message` and closes the connection."""

    async def refuse(scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = _request_id(scope["headers"])
        body = json.dumps({"error": message, "message": message, "request_id": request_id}).encode()
        rid = request_id.encode("latin-1")
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", rid), (b"x-ms-request-id", rid), (b"retry-after", str(RETRY_AFTER_S).encode()),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return refuse


class Guard:
    """A worker's limits and connection-wide state, shared by all its connections."""

    def __init__(self, settings: Settings, connections: set, on_active: Callable[[int], None]):
        self.max_header_bytes = settings.max_header_bytes
        self.header_timeout_s = settings.header_timeout_s
        self.body_timeout_s = settings.body_timeout_s
        self.max_connections = settings.max_connections
        self.connections = connections
        self.idle: dict[LimitedHttpProtocol, None] = {}
        """Connections no request is being answered on (never used, idle, or headers still arriving),
        longest-idle first: the ones closed to make room at the connection limit."""
        self.active = 0
        """Connections with a request in progress or not sent yet: the load the master balances."""
        self.opening = 0
        """Connections taken from the master whose protocol is not connected yet (TLS handshakes)."""
        self.refusal: Optional[str] = None
        """While set (the worker is being replaced), `/score` requests are answered 503 with it."""
        self.stopping = False
        """Once set, every response closes its connection."""
        self._publish = on_active
        self._notes: Counter[str] = Counter()
        self._noted_at = 0.0

    def activate(self) -> None:
        self.active += 1
        self._publish(self.active)

    def deactivate(self) -> None:
        self.active -= 1
        self._publish(self.active)

    def count(self) -> int:
        return len(self.connections) + self.opening

    def make_room(self) -> bool:
        """Close the connection idle the longest (no request being answered); False if there is none."""
        while self.idle:
            victim = next(iter(self.idle))
            del self.idle[victim]
            if not victim.transport.is_closing():
                victim.transport.close()
                self.note("idle connection closed at the connection limit")
                return True
        return False

    def note(self, what: str) -> None:
        """Count a refusal; logged in batches, so an attack cannot flood the log."""
        self._notes[what] += 1
        self.flush_notes()

    def flush_notes(self, now: Optional[float] = None, force: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if self._notes and (force or now - self._noted_at >= _NOTE_EVERY_S):
            log.warning("refused: %s", ", ".join(f"{n} x {what}" for what, n in sorted(self._notes.items())))
            self._notes.clear()
            self._noted_at = now


class _BatchedWrites(asyncio.Transport):
    """A transport whose writes of one event-loop turn go out in one send.

    uvicorn writes a response's status line and headers, then its body, each at once: two system calls
    and two packets for every answer. Held until the loop's next turn, they leave together (and
    pipelined answers with them). Everything that ends the connection sends what is held first.
    """

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._held))

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header size, read timeouts and refusals."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any], guard: Guard,
                 over_limit: bool = False, _loop: Optional[asyncio.AbstractEventLoop] = None):
        super().__init__(config, server_state, app_state, _loop)
        self.guard = guard
        self.made = False
        self.made_at = 0.0
        self._app = self.app
        # Opened past the connection limit with no idle connection to close then: checked again
        # when its request arrives (connections that were still opening may be idle by then).
        self._over_limit = over_limit
        self._phase = _IDLE
        self._seen = 0
        self._headers_done = True
        self._timer: Optional[asyncio.TimerHandle] = None
        self._discarding = False
        # The worker counted this connection as active when it took it; this protocol now owns that.
        self._active = True

    # ---- connection -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.made = True
        self.made_at = self.loop.time()
        self.guard.opening -= 1
        self.guard.idle[self] = None
        super().connection_made(transport)
        # After uvicorn's setup, which reads addresses and flow control from the real transport.
        self.transport = _BatchedWrites(transport, self.loop)
        self._timer = self.loop.call_later(self.guard.header_timeout_s, self._read_timed_out)

    def release(self) -> None:
        """The connection failed before it was made (a TLS handshake that failed or timed out)."""
        if not self.made:
            self.guard.opening -= 1
            self._set_idle()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._cancel_timer()
        self.guard.idle.pop(self, None)
        self._set_idle()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._discarding:
            return
        if not self._active:
            self._active = True
            self.guard.activate()
        if self._phase != _BODY:
            room = self.guard.max_header_bytes - self._seen
            if len(data) > room:
                # Parse no further than the limit: if the headers have not ended by then, refuse.
                super().data_received(data[:room])
                if self.transport.is_closing() or self._discarding:
                    return
                if not self._headers_done:
                    self.guard.note("431 headers too large")
                    self._reject(431, f"the request line and headers are over the {self.guard.max_header_bytes}"
                                      "-byte limit")
                    return
                data = data[room:]
            else:
                self._seen += len(data)
        super().data_received(data)
        if self._timer is None and self._phase != _IDLE and not self.transport.is_closing():
            timeout = self.guard.header_timeout_s if self._phase == _HEADERS else self.guard.body_timeout_s
            self._timer = self.loop.call_later(timeout, self._read_timed_out)

    # ---- parser callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEADERS
        self._headers_done = False

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._headers_done = True
        self._cancel_timer()
        self.guard.idle.pop(self, None)
        refusal = None
        if self._over_limit:
            self._over_limit = False
            if self.guard.count() > self.guard.max_connections and not self.guard.make_room():
                refusal = f"over {self.guard.max_connections} open connections on this worker; retry"
        if refusal is None and self.guard.refusal is not None and self.url.split(b"?", 1)[0] == _SCORE:
            refusal = self.guard.refusal
        if refusal is None:
            super().on_headers_complete()
            if self.guard.stopping and self.cycle is not None:
                self.cycle.keep_alive = False
            return
        self.guard.note("503 refused")
        self.app = refusal_app(refusal)
        try:
            super().on_headers_complete()
        finally:
            self.app = self._app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _IDLE
        self._seen = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.cycle is not None and self.cycle.response_complete:
            self._maybe_idle()  # answered before its body ended (413, 401, ...)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._maybe_idle()

    def shutdown(self) -> None:
        if self.cycle is None and self.made and self.loop.time() - self.made_at < FRESH_S:
            # Accepted just before the worker began to stop: its request is on the way. It is answered
            # (and the connection closed, as `guard.stopping` is set); the header timeout bounds a silent one.
            return
        super().shutdown()

    # ---- limits ---------------------------------------------------------------------------
    def _maybe_idle(self) -> None:
        if self._active and self._phase == _IDLE and not self.pipeline and (
            self.cycle is None or self.cycle.response_complete
        ):
            self._set_idle()
            self.guard.idle[self] = None  # now the most recently idle

    def _set_idle(self) -> None:
        if self._active:
            self._active = False
            self.guard.deactivate()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _read_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self._discarding:
            return
        if self._phase == _HEADERS:
            self.guard.note("408 headers too slow")
            self._reject(408, f"the request headers did not arrive within {self.guard.header_timeout_s} s")
        elif self._phase == _BODY and not (self.cycle is not None and self.cycle.response_started):
            self.guard.note("408 body too slow")
            self._reject(408, f"the request body did not arrive within {self.guard.body_timeout_s} s")
        else:
            # Silent since it opened, or answered already and the rest of the body never came.
            if self._phase == _IDLE:
                self.guard.note("silent connection closed")
            self.transport.close()

    def _reject(self, status: int, message: str) -> None:
        """Answer an error from here, then read and drop what the client still sends, then close."""
        self._cancel_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # An app task waiting for this request's body sees a disconnect; its answer goes nowhere.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.write(error_response(status, message, new_request_id()))
        self._discarding = True
        self.guard.idle.pop(self, None)
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
