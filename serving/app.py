"""The scoring web app: a plain ASGI application around one scoring script.

Written against ASGI directly rather than a framework: every request passes through this code,
and routing four fixed paths needs none of a framework's machinery (see the benchmark).
Where Azure ML's inference server answers 2xx, this app answers the same status, body and content
type, with the same response headers; client mistakes get a precise 4xx with a JSON error.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import sys
import time
from typing import Any, Awaitable, Callable, Optional

from serving import aml_env
from serving import settings as names
from serving.aml_env import AmlEnv
from serving.collector import Collector
from serving.script import (
    RUN_FAILED,
    RUN_OK,
    BadInput,
    RequestError,
    Result,
    ScoringScript,
    format_exception,
    request_headers,
    to_result,
)
from serving.protocol import new_request_id
from serving.scoring_thread import RETRY_AFTER_S, ScoringThread, Unavailable
from serving.settings import Settings
from serving.swagger import Swagger, SwaggerNotFound

log = logging.getLogger("serving")
access_log = logging.getLogger("azmlinfsrv")
"""Where the access lines go, under the name Azure ML's server logs them with (settings.ACCESS_LOG)."""

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
INIT_FAILED_EXIT = 3
REQUEST_ID_LIMIT = 100
"""Longest request id echoed, as Azure ML's server (longer ones are answered 431)."""
_SCORE_METHODS = ("GET", "POST", "OPTIONS")
_GET_ROUTE_ALLOW = (b"allow", b"GET, HEAD, OPTIONS")
_END = object()
_RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_S).encode())


class _TooLarge(Exception):
    pass


class _Cors:
    """CORS for `AML_CORS_ORIGINS`, answering as Azure ML's server (flask-cors) does."""

    METHODS = b"GET, POST"

    def __init__(self, origins: tuple[str, ...]):
        self.any = "*" in origins
        self.origins = {o.encode("latin-1") for o in origins if o != "*"}
        self.first = min(self.origins) if self.origins else b""

    def headers(self, request: dict[bytes, bytes], preflight: bool) -> Headers:
        origin = request.get(b"origin")
        if origin is not None:
            if not (self.any or origin in self.origins):
                return []
            allowed: list[tuple[bytes, bytes]] = [(b"access-control-allow-origin", origin)]
        elif self.any:
            return [(b"access-control-allow-origin", b"*")]
        else:
            # flask-cors names an allowed origin even when the request sent none.
            allowed = [(b"access-control-allow-origin", self.first)]
        if preflight:
            asked = request.get(b"access-control-request-headers")
            if asked:
                names_ = sorted({h.strip() for h in asked.split(b",") if h.strip()})
                allowed.append((b"access-control-allow-headers", b", ".join(names_)))
            allowed.append((b"access-control-allow-methods", self.METHODS))
        allowed.append((b"vary", b"Origin"))
        return allowed


class ScoringApp:
    """ASGI app serving `/score`, `/`, `/ready` and `/swagger.json` for one script."""

    def __init__(self, settings: Settings, script: ScoringScript, collector: Optional[Collector] = None,
                 env: Optional[AmlEnv] = None):
        self.settings = settings
        self.script = script
        self.collector = collector
        self.env = env or aml_env.from_environ()
        # One thread runs init() and then every run(): scripts written for Azure ML assume one
        # caller at a time per worker, and a thread (not the event loop) lets a timeout answer.
        self.executor = ScoringThread(max_queue_wait_s=settings.max_queue_wait_ms / 1000)
        self.ready = False
        self._ready_event: Optional[asyncio.Event] = None
        """Set once init() finished: what `GET /` and `/score` wait for while it runs."""
        self.in_flight = 0
        self.swagger = Swagger(script.run, script.decorated, script.app_root, self.env)
        self.keys = [k.encode() for k in settings.auth_keys]
        self.cors = _Cors(self.env.cors_origins) if self.env.cors_origins else None
        self.server_version = self.env.server_version.encode() if self.env.server_version else None
        self.access_log = settings.access_log
        self.timeout_s = settings.timeout_ms / 1000

    # ---- lifespan -------------------------------------------------------------------------
    def _start_init(self) -> None:
        self._ready_event = asyncio.Event()
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.script.init)
        future.add_done_callback(self._init_done)

    def _init_done(self, future: asyncio.Future) -> None:
        err = future.exception()
        if err is None:
            self.ready = True
            if self._ready_event is not None:
                self._ready_event.set()
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
    def _id_headers(self, headers: dict[bytes, bytes]) -> tuple[str, Headers, Optional[str]]:
        """The request id, the id headers to send back (as Azure ML does), or why the ids are refused."""
        given = headers.get(b"x-request-id") or headers.get(b"x-ms-request-id") or b""
        request_id = given.decode("latin-1") or new_request_id()
        # x-ms-request-id is the old name of x-ms-client-request-id: either one names the client's
        # id, and x-ms-request-id falls back to the request id.
        client = headers.get(b"x-ms-client-request-id") or headers.get(b"x-ms-request-id") or b""
        legacy = headers.get(b"x-ms-request-id") or client or request_id.encode("latin-1")
        refused = None
        if len(request_id) > REQUEST_ID_LIMIT or len(legacy) > REQUEST_ID_LIMIT or len(client) > REQUEST_ID_LIMIT:
            refused = f"x-request-id, x-ms-request-id and x-ms-client-request-id must not exceed {REQUEST_ID_LIMIT} characters"
            request_id = new_request_id()
            legacy, client = request_id.encode(), b""
        out: Headers = [(b"x-request-id", request_id.encode("latin-1")), (b"x-ms-request-id", legacy)]
        if client:
            out.append((b"x-ms-client-request-id", client))
        trace = headers.get(b"traceid")
        if trace is not None and not refused:
            out.append((b"traceid", trace))
        if self.server_version:
            out.append((b"x-ms-server-version", self.server_version))
        return request_id, out, refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.access_log:
            await self._logged(scope, receive, send)
            return
        await self._http(scope, receive, send)

    async def _logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request and log it as Azure ML's server does: `POST /score 200 1.234ms 17`.

        Logged when the response starts, as the reference logs it before its body is sent: a streamed
        body's length is not known then (`N/A`), and its client sees the line before the body ends.
        """
        started = time.perf_counter()
        path = scope["path"]
        if path not in (names.SCORE_PATH, names.SWAGGER_PATH):
            await self._http(scope, receive, send)
            return

        async def logging_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                elapsed_ms = (time.perf_counter() - started) * 1000
                length = next((v.decode("latin-1") for k, v in message["headers"] if k == b"content-length"), "N/A")
                query = scope.get("query_string", b"")
                shown = f"{path}?{query.decode('latin-1')}" if query else path
                access_log.info("%s %s %d %.3fms %s", scope["method"], shown, message["status"], elapsed_ms, length)
            await send(message)

        await self._http(scope, receive, logging_send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers: Headers = scope["headers"]
        headers = dict(raw_headers)
        path, method = scope["path"], scope["method"]
        request_id, common, refused = self._id_headers(headers)
        preflight = method == "OPTIONS" and b"access-control-request-method" in headers
        if self.cors is not None:
            common += self.cors.headers(headers, preflight)
        reply = _Replier(send, request_id, common)
        if refused:
            await reply.error(431, refused)
            return

        if not self.ready and self._ready_event is not None and (
                path == names.SCORE_PATH or (path == names.LIVENESS_PATH and method in ("GET", "HEAD"))):
            # As Azure ML's server, whose worker takes requests only once init() has run: `GET /` and
            # `/score` are answered after init(), never with "starting", so a client that polls `/` and
            # then scores is never refused. `/ready` answers at once (503 until then) for probes.
            await self._ready_event.wait()
        if path == names.SCORE_PATH:
            await self._score(scope, method, raw_headers, headers, preflight, receive, reply)
        elif path == names.LIVENESS_PATH and method in ("GET", "HEAD"):
            await reply.send(200, b"Healthy", content_type=HTML)
        elif path == names.READINESS_PATH and method in ("GET", "HEAD"):
            if self.ready:
                await reply.send(200, b'{"ready": true}')
            else:
                await reply.send(503, b'{"ready": false}')
        elif path == names.SWAGGER_PATH and method in ("GET", "HEAD"):
            await self._swagger(scope, reply)
        elif path in (names.LIVENESS_PATH, names.READINESS_PATH, names.SWAGGER_PATH) and method == "OPTIONS":
            # As Azure ML's server (Flask's automatic OPTIONS): 200, no body, the route's methods.
            await reply.send(200, b"", [_GET_ROUTE_ALLOW], content_type=HTML)
        elif path in (names.LIVENESS_PATH, names.READINESS_PATH, names.SWAGGER_PATH):
            await reply.error(405, f"{method} {path} is not supported", [_GET_ROUTE_ALLOW])
        else:
            await reply.error(404, f"no route {path}; the scoring route is POST {names.SCORE_PATH}")

    async def _swagger(self, scope: Scope, reply: "_Replier") -> None:
        version = None
        for part in scope.get("query_string", b"").split(b"&"):
            key, _, value = part.partition(b"=")
            if key == b"version":
                version = value.decode("latin-1")
                break
        try:
            document = self.swagger.get(version)
        except SwaggerNotFound as err:
            await reply.error(404, str(err))
            return
        await reply.send(200, document, [RUN_OK])

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

    async def _score(self, scope: Scope, method: str, raw_headers: Headers, headers: dict[bytes, bytes],
                     preflight: bool, receive: Receive, reply: "_Replier") -> None:
        script = self.script
        raw = script.raw
        if method not in _SCORE_METHODS and not (raw and method == "HEAD"):
            await reply.error(405, f"{method} {names.SCORE_PATH} is not supported; POST the input",
                              [(b"allow", b"GET, POST, OPTIONS")])
            return
        if method == "OPTIONS" and (preflight or not raw):
            # Answered here, without a key: browsers send CORS preflights without credentials.
            await reply.send(200, b"", [RUN_OK], content_type=HTML)
            return
        if not self._authorized(headers):
            await reply.error(401, "missing or invalid key: send 'Authorization: Bearer <key>'",
                              [(b"www-authenticate", b"Bearer")])
            return
        if not self.ready:
            await reply.error(503, "the service is starting: init() has not finished", [_RETRY_AFTER])
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
            if raw:
                from serving.raw import build_request  # Werkzeug only for the scripts that want it.

                args: dict[str, Any] = {script.input_name: build_request(method, scope, raw_headers, body)}
            else:
                content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
                args = script.parse(method, content_type.decode("latin-1"), scope.get("query_string", b""), body)
        except RequestError as err:
            await reply.error(err.status, str(err), list(err.headers))
            return
        passed_headers = request_headers(raw_headers) if script.wants_headers else None

        cap = self.settings.max_concurrent_requests
        if cap and self.in_flight >= cap:
            await reply.error(503, f"over {cap} requests in flight on this replica; retry", [_RETRY_AFTER])
            return
        self.in_flight += 1
        try:
            value, elapsed_ms = await self.executor.call(asyncio.get_running_loop(), self.timeout_s, self._timed_call,
                                                         args, passed_headers)
        except asyncio.TimeoutError:
            log.error("run() exceeded %d ms (request %s)", self.settings.timeout_ms, reply.request_id)
            await reply.error(504, f"run() did not finish within {self.settings.timeout_ms} ms", [RUN_FAILED])
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
                              f"{reply.request_id}", [RUN_FAILED])
            return
        finally:
            self.in_flight -= 1
        try:
            result = to_result(value)
        except (TypeError, ValueError) as err:
            log.error("run() result not serializable (request %s): %s", reply.request_id, err)
            await reply.error(500, f"run() returned a value that is not JSON serializable: {err}", [RUN_FAILED])
            return
        timing = (b"x-ms-run-fn-exec-ms", f"{elapsed_ms:.3f}".encode())
        if result.chunks is not None:
            await self._stream(result, timing, reply)
            return
        await reply.send(result.status, result.body, result.headers + [timing], content_type=None)
        if self.collector is not None and result.status < 300:
            self.collector.record(reply.request_id, body, result.body)

    def _timed_call(self, args: dict[str, Any], headers: Optional[dict[str, str]]) -> tuple[Any, float]:
        started = time.perf_counter()
        value = self.script.call(args, headers)
        return value, (time.perf_counter() - started) * 1000

    async def _stream(self, result: Result, timing: tuple[bytes, bytes], reply: "_Replier") -> None:
        """Send a response whose body is a generator, each chunk as soon as the script yields it."""
        chunks = result.chunks
        assert chunks is not None
        loop = asyncio.get_running_loop()
        await reply.start(result.status, result.headers + [timing], content_type=None, length=None)
        try:
            while True:
                # On the scoring thread: the generator is the script's code, and may block.
                chunk = await loop.run_in_executor(self.executor, next, chunks, _END)
                if not isinstance(chunk, bytes):  # _END
                    break
                if chunk:
                    await reply.body(chunk, more=True)
        except Exception as err:  # noqa: BLE001 - the status is sent: log it and end the body
            log.error("the response generator of run() failed (request %s): %r\n%s", reply.request_id, err,
                      format_exception(err))
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                await loop.run_in_executor(self.executor, close)
            await reply.body(b"", more=False)


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
    """Sends one response with the request id, server version and CORS headers."""

    __slots__ = ("send_", "request_id", "common")

    def __init__(self, send: Send, request_id: str, common: Headers):
        self.send_ = send
        self.request_id = request_id
        self.common = common

    async def start(self, status: int, extra: Optional[Headers], content_type: Optional[bytes] = JSON,
                    length: Optional[int] = None) -> None:
        headers: Headers = []
        if content_type is not None:
            headers.append((b"content-type", content_type))
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        given = {k for k, _ in extra} if extra else set()
        headers += [h for h in self.common if h[0] not in given]
        if extra:
            headers += extra
        await self.send_({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, chunk: bytes, more: bool) -> None:
        await self.send_({"type": "http.response.body", "body": chunk, "more_body": more})

    async def send(self, status: int, body: bytes, extra: Optional[Headers] = None,
                   content_type: Optional[bytes] = JSON) -> None:
        await self.start(status, extra, content_type, len(body))
        await self.send_({"type": "http.response.body", "body": body})

    async def error(self, status: int, message: str, extra: Optional[Headers] = None) -> None:
        # "message" is Azure ML's field; "error" and "request_id" this runtime's.
        body = json.dumps({"error": message, "message": message, "request_id": self.request_id}).encode()
        await self.send(status, body, extra)

