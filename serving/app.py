"""The scoring web app: a plain ASGI application around one scoring script.

Written against ASGI directly rather than a framework: every request passes through this code,
and routing four fixed paths needs none of a framework's machinery (see the benchmark).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
import uuid
from typing import Any, Awaitable, Callable, Optional

from serving import settings as names
from serving.collector import Collector
from serving.script import BadInput, ScoringScript, as_response, format_exception, to_json
from serving.scoring_thread import RETRY_AFTER_S, ScoringThread, Unavailable
from serving.settings import Settings

log = logging.getLogger("serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
INIT_FAILED_EXIT = 3
_JSON_TYPES = (b"application/json", b"text/json")
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_S).encode())


class _TooLarge(Exception):
    pass


class ScoringApp:
    """ASGI app serving `/score`, `/`, `/ready` and `/swagger.json` for one script."""

    def __init__(self, settings: Settings, script: ScoringScript, collector: Optional[Collector] = None):
        self.settings = settings
        self.script = script
        self.collector = collector
        # One thread runs init() and then every run(): scripts written for Azure ML assume one
        # caller at a time per worker, and a thread (not the event loop) lets a timeout answer.
        self.executor = ScoringThread(max_queue_wait_s=settings.max_queue_wait_ms / 1000)
        self.ready = False
        self.in_flight = 0
        self.swagger = json.dumps(script.swagger(os.path.basename(settings.entry_script))).encode()
        self.keys = [k.encode() for k in settings.auth_keys]

    # ---- lifespan -------------------------------------------------------------------------
    def _start_init(self) -> None:
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.script.init)
        future.add_done_callback(self._init_done)

    def _init_done(self, future: asyncio.Future) -> None:
        err = future.exception()
        if err is None:
            self.ready = True
            log.info("init() of %s finished: ready", self.script.path)
            return
        log.error("init() of %s failed: %r\n%s", self.script.path, err, format_exception(err))
        for handler in logging.getLogger().handlers + log.handlers:
            handler.flush()
        sys.stderr.flush()
        # Never ready, and exit non-zero so the orchestrator (or the master process) restarts
        # or reports it; a server that stays up unready would only time out its callers.
        os._exit(INIT_FAILED_EXIT)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start_init()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.executor.shutdown(wait=False, cancel_futures=True)
                if self.collector is not None:
                    # Off the loop: the last flush does network I/O.
                    await asyncio.get_running_loop().run_in_executor(None, self.collector.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- requests -------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        request_id = (headers.get(b"x-request-id") or headers.get(b"x-ms-request-id") or b"").decode(
            "latin-1"
        ) or str(uuid.uuid4())
        reply = _Replier(send, request_id)
        path, method = scope["path"], scope["method"]

        if path == names.SCORE_PATH:
            if method != "POST":
                await reply.error(405, f"{method} {path} is not supported; POST the input as JSON",
                                  [(b"allow", b"POST")])
                return
            await self._score(headers, receive, reply)
        elif path == names.LIVENESS_PATH and method in ("GET", "HEAD"):
            await reply.send(200, b'"Healthy"')
        elif path == names.READINESS_PATH and method in ("GET", "HEAD"):
            if self.ready:
                await reply.send(200, b'{"ready": true}')
            else:
                await reply.send(503, b'{"ready": false}')
        elif path == names.SWAGGER_PATH and method in ("GET", "HEAD"):
            await reply.send(200, self.swagger)
        elif path in (names.LIVENESS_PATH, names.READINESS_PATH, names.SWAGGER_PATH):
            await reply.error(405, f"{method} {path} is not supported", [(b"allow", b"GET")])
        else:
            await reply.error(404, f"no route {path}; the scoring route is POST {names.SCORE_PATH}")

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        if not self.keys:
            return True
        given = headers.get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        # Compare against every key (constant time each) so timing reveals neither key nor which.
        matched = False
        for key in self.keys:
            matched |= hmac.compare_digest(token.strip(), key)
        return matched

    async def _score(self, headers: dict[bytes, bytes], receive: Receive, reply: "_Replier") -> None:
        if not self._authorized(headers):
            await reply.error(401, "missing or invalid key: send 'Authorization: Bearer <key>'",
                              [(b"www-authenticate", b"Bearer")])
            return
        if not self.ready:
            await reply.error(503, "the service is starting: init() has not finished", [_RETRY_AFTER])
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type and content_type not in _JSON_TYPES and not (
            content_type.endswith(b"+json") or (not self.script.decorated and content_type.startswith(b"text/"))
        ):
            await reply.error(415, f"unsupported media type {content_type.decode('latin-1')!r}; send application/json")
            return
        limit = self.settings.max_request_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await reply.error(413, f"the request body is over the {limit}-byte limit")
            return
        try:
            body = await _read_body(receive, limit)
        except _TooLarge:
            await reply.error(413, f"the request body is over the {limit}-byte limit")
            return
        try:
            parsed = self.script.parse(body)
        except BadInput as err:
            await reply.error(400, str(err))
            return

        cap = self.settings.max_concurrent_requests
        if cap and self.in_flight >= cap:
            await reply.error(503, f"over {cap} requests in flight on this replica; retry", [_RETRY_AFTER])
            return
        self.in_flight += 1
        started = time.perf_counter()
        try:
            future = asyncio.get_running_loop().run_in_executor(self.executor, self.script.call, parsed)
            result = await asyncio.wait_for(future, self.settings.timeout_ms / 1000)
        except asyncio.TimeoutError:
            log.error("run() exceeded %d ms (request %s)", self.settings.timeout_ms, reply.request_id)
            await reply.error(504, f"run() did not finish within {self.settings.timeout_ms} ms")
            return
        except Unavailable as err:
            await reply.error(503, str(err), [_RETRY_AFTER])
            return
        except BadInput as err:
            await reply.error(400, str(err))
            return
        except Exception as err:  # noqa: BLE001 - any failure of user code is a 500, logged in full
            log.error("run() failed (request %s): %r\n%s", reply.request_id, err, format_exception(err))
            await reply.error(500, f"run() raised {type(err).__name__}; see the service log for request "
                              f"{reply.request_id}", [(b"x-ms-run-function-failed", b"True")])
            return
        finally:
            self.in_flight -= 1
        elapsed = f"{(time.perf_counter() - started) * 1000:.3f}".encode()
        response = as_response(result)
        if response is not None:
            await reply.send(response.status, response.body, response.headers)
            return
        try:
            payload = to_json(result)
        except TypeError as err:
            log.error("run() result not serializable (request %s): %s", reply.request_id, err)
            await reply.error(500, str(err), [(b"x-ms-run-function-failed", b"True")])
            return
        await reply.send(200, payload, [(b"x-ms-run-duration-ms", elapsed)])
        if self.collector is not None:
            self.collector.record(reply.request_id, body, payload)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


class _Replier:
    """Sends one response with the request id headers Azure ML clients look for."""

    __slots__ = ("send_", "request_id", "_id")

    def __init__(self, send: Send, request_id: str):
        self.send_ = send
        self.request_id = request_id
        self._id = request_id.encode("latin-1", "replace")

    async def send(self, status: int, body: bytes, extra: Optional[list[tuple[bytes, bytes]]] = None) -> None:
        headers = [(b"content-type", JSON), (b"content-length", str(len(body)).encode()),
                   (b"x-request-id", self._id), (b"x-ms-request-id", self._id)]
        if extra:
            names_given = {k for k, _ in extra}
            headers = [h for h in headers if h[0] not in names_given] + list(extra)
        await self.send_({"type": "http.response.start", "status": status, "headers": headers})
        await self.send_({"type": "http.response.body", "body": body})

    async def error(self, status: int, message: str, extra: Optional[list[tuple[bytes, bytes]]] = None) -> None:
        body = json.dumps({"error": message, "request_id": self.request_id}).encode()
        await self.send(status, body, extra)
