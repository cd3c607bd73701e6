"""The traffic router in front of a service's deployments on this machine (`target: local` with
`deployments`): one listening port, each request sent to one deployment by weight, a copy of a
share of them to a mirrored deployment whose answer is dropped.

    python -m serving.router --config FILE --status FILE --port N [--host ADDR] [--health-port N] [--reuse-port]
                             [--tls-cert F --tls-key F]

The deployments are scoring runtimes, each behind its own address (a loopback port on this machine, a
Service's cluster IP on Kubernetes, where the router runs as pods of its own); they keep the service's
contract themselves (keys, limits, timeouts, errors), so the router forwards requests and answers as
they are. What the router adds:

- **The split.** Smooth weighted round robin (nginx's `upstream` weights) over the deployments with
  traffic: exact shares over any run of requests, no randomness to wait out. A request with the
  `azureml-model-deployment: <name>` header goes to that deployment whatever the weights, as Azure
  ML's endpoints route it.
- **Mirroring.** A deployment's mirror share gets that percent of the requests copied to it (by a
  counter, so exactly); its answer is read and dropped, never delaying or changing the client's.
- **Reconfiguration without a restart.** SIGHUP re-reads the config file (the split, the mirror,
  the deployments' ports); requests in flight finish where they started, connections to a deployment
  that left are closed once idle. The applied generation is written to the status file.
- **TLS**, terminated here with the service's certificate; the deployments speak plain HTTP on loopback.
- **Draining.** SIGTERM accepts what is queued on the listener, closes it, finishes the requests in
  flight, and exits; a successor started with `--reuse-port` on the same port takes new connections.

Requests are forwarded as the parser read them (method, target, headers, body), with the hop-by-hop
headers dropped and the body as `content-length`; answers are relayed byte for byte as they arrive.
A request that meets a reused connection the deployment had just closed (its idle timeout, a restart
during an update) is sent again once on a new connection: nothing of it was answered, and scoring
requests carry no state between them.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, cast

import httptools

from serving.protocol import error_response, new_request_id
from serving.server import notifier
from serving import settings as names

log = logging.getLogger("serving.router")

DEPLOYMENT_HEADER = b"azureml-model-deployment"
"""The header that sends a request to one named deployment: Azure ML's ("to invoke the deployment directly
without going through traffic rules, set the following HTTP header: azureml-model-deployment",
learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-online-endpoints)."""
# Connection-level headers (RFC 9110 section 7.6.1), and the framing this router sets itself.
_DROPPED = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te",
                      b"trailer", b"upgrade", b"expect", b"content-length"))
MIRRORS_IN_FLIGHT = 64
"""Mirrored requests outstanding to one deployment at most; past it a copy is skipped, not queued."""
MAX_HEADER_BYTES = 65_536
HEALTH_READ_TIMEOUT_S = 5.0
MAX_PIPELINED = 32
"""Requests one client may have waiting on its connection; past it the router stops reading it."""
UPSTREAM_MAX_AGE_S = 30.0
"""A kept-alive connection to a deployment is closed once this old: through a Service's cluster IP a
connection stays with the pod it reached, so pods the autoscaler adds get their share only as
connections are made anew."""


@dataclass
class Route:
    """One deployment: where it listens, its share, and the idle connections to it."""

    name: str
    port: int
    weight: int
    mirror: int = 0
    host: str = "127.0.0.1"
    current: int = 0
    """Smooth weighted round robin's running weight."""
    mirror_count: int = 0
    mirrors_in_flight: int = 0
    idle: list["Upstream"] = field(default_factory=list)
    retired: bool = False

    def close_idle(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Table:
    """The deployments and the split, as one config generation says."""

    def __init__(self, routes: list[Route], generation: int):
        self.routes = {r.name: r for r in routes}
        self.live = [r for r in routes if r.weight > 0]
        self.total = sum(r.weight for r in self.live)
        self.mirrored = [r for r in routes if r.mirror > 0]
        self.generation = generation

    def pick(self, name: Optional[bytes]) -> Optional[Route]:
        """The deployment for the next request: the named one, else by weight (None: none takes traffic)."""
        # Smooth weighted round robin as nginx's upstream module does it (the change that introduced it:
        # github.com/phusion/nginx/commit/27e94984486058d73157038f7950a0a36ecc6e35): each pick adds every
        # weight to its running total, takes the largest and subtracts the sum from it.
        if name is not None:
            return self.routes.get(name.decode("latin-1").strip())
        best: Optional[Route] = None
        for route in self.live:
            route.current += route.weight
            if best is None or route.current > best.current:
                best = route
        if best is not None:
            best.current -= self.total
        return best

    def other(self, failed: Route) -> Optional[Route]:
        """Where a request goes when `failed` cannot be reached: the live deployment with the largest
        share, else any other deployment (None: there is no other)."""
        others = [r for r in self.routes.values() if r is not failed and not r.retired]
        return max(others, key=lambda r: r.weight, default=None)

    def mirrors(self) -> list[Route]:
        """The deployments this request is copied to: each gets exactly its percent over every 100."""
        chosen = []
        for route in self.mirrored:
            route.mirror_count += route.mirror
            if route.mirror_count >= 100:
                route.mirror_count -= 100
                chosen.append(route)
        return chosen


def read_table(path: Path, old: Optional[Table] = None) -> Table:
    """The config file's table; routes kept from `old` (same name and port) keep their connections.
    Everything is read and checked before any kept route changes, so a bad file changes nothing."""
    data = json.loads(path.read_text())
    mirror = {str(k): int(v) for k, v in (data.get("mirror") or {}).items()}
    entries = [(str(e["name"]), str(e.get("host", "127.0.0.1")), int(e["port"]), int(e["traffic"]))
               for e in data["routes"]]
    generation = int(data.get("generation", 0))
    routes = []
    for name, host, port, traffic in entries:
        previous = old.routes.get(name) if old else None
        if previous is not None and (previous.host, previous.port) == (host, port):
            previous.weight, previous.mirror = traffic, mirror.get(name, 0)
            previous.current = previous.mirror_count = 0
            routes.append(previous)
        else:
            routes.append(Route(name, port, traffic, mirror.get(name, 0), host))
    return Table(routes, generation)


class Exchange:
    """One request on its way to a deployment, and where its answer goes."""

    __slots__ = ("route", "request", "head", "sink", "answered", "retry", "started", "client", "fallback")

    def __init__(self, route: Route, request: bytes, head: bool, sink: Optional[Callable[[bytes], None]],
                 answered: Callable[..., None], retry: bool, client: Optional["Client"] = None,
                 fallback: bool = False):
        self.route, self.request, self.head, self.sink = route, request, head, sink
        self.fallback = fallback
        """Whether another deployment may take it when this one cannot be reached (a request the
        split placed, not one that names its deployment, nor a mirror's copy)."""
        self.answered = answered
        """`answered(upstream, error[, status])`, once, when the answer ended or could not be had."""
        self.retry = retry
        self.started = 0.0
        self.client = client
        """The client the answer goes to (none for a mirror): its write buffer paces the reading."""


class Upstream(asyncio.Protocol):
    """One connection to a deployment, carrying one request at a time."""

    def __init__(self, route: Route, router: "Router"):
        self.route = route
        self.router = router
        self.transport: Optional[asyncio.Transport] = None
        self.parser: Any = httptools.HttpResponseParser(self)
        self.exchange: Optional[Exchange] = None
        """The request in flight on this connection, if any."""
        self.sink: Optional[Callable[[bytes], None]] = None
        """Where the answer's bytes go (the client's transport), None to drop them (a mirror)."""
        self.answered = False
        self.keep_alive = True
        self.fresh_parser = True
        self.complete = False
        self.reading_paused = False
        self.used = 0
        self.closed = False
        self.opened = time.monotonic()

    # ---- asyncio ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.exchange is None:
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self.answered = True
        if self.sink is not None:
            self.sink(data)
        self.complete = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self.keep_alive = False
            self._finish(f"unreadable answer from deployment {self.route.name}: {err}")
            return
        # Finished here, after the parser returned, never from inside its callbacks: finishing hands
        # the connection to the next request, which must not meet this answer's parser mid-feed.
        if self.complete:
            self._finish(None)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.closed = True
        if self in self.route.idle:
            self.route.idle.remove(self)
        self.router.busy.discard(self)
        if self.exchange is not None:
            self.keep_alive = False
            self._finish(f"deployment {self.route.name} closed the connection" + (f": {exc}" if exc else ""))

    # ---- httptools callbacks ----
    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        exchange = self.exchange
        if exchange is not None and exchange.head:
            # A HEAD's answer has no body whatever its content-length says (the parser, not knowing
            # the request, would wait for one): it ends here, and the parser is replaced before reuse.
            self.fresh_parser = False
            self.complete = True

    def on_message_complete(self) -> None:
        self.complete = True

    # ----
    def send(self, exchange: Exchange) -> None:
        if not self.fresh_parser:
            self.parser = httptools.HttpResponseParser(self)
            self.fresh_parser = True
        self.exchange, self.sink = exchange, exchange.sink
        self.answered, self.keep_alive = False, True
        self.used += 1
        exchange.started = time.monotonic()
        self.router.busy.add(self)
        assert self.transport is not None
        client = exchange.client
        if client is not None:
            client.upstream = self
            if client.write_paused:
                self.pause_reading()
        self.transport.write(exchange.request)

    def pause_reading(self) -> None:
        """Stop reading the answer: the client cannot take it as fast (its write buffer is full)."""
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
            self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self.reading_paused = False

    def _finish(self, error: Optional[str]) -> None:
        client = self.exchange.client if self.exchange is not None else None
        if client is not None and client.upstream is self:
            client.upstream = None
        self.resume_reading()
        exchange, self.exchange, self.sink = self.exchange, None, None
        if exchange is not None:
            self.router.busy.discard(self)
            self.router.done(self, exchange, error)

    def release(self) -> None:
        """Back to the route's idle connections, or closed when it cannot carry another request."""
        if (self.closed or not self.keep_alive or self.route.retired or self.router.stopping
                or time.monotonic() - self.opened > UPSTREAM_MAX_AGE_S):
            self.close()
        else:
            self.route.idle.append(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Client(asyncio.Protocol):
    """One client connection: requests parsed, queued in order, each forwarded to its deployment."""

    def __init__(self, router: "Router"):
        self.router = router
        self.transport: Optional[asyncio.Transport] = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.queue: deque[tuple[bytes, bool, bool, Optional[bytes]]] = deque()
        """Parsed requests not answered yet: (bytes to send, HEAD, keep-alive, deployment named)."""
        self.busy = False
        self.closing = False
        self.refused = False
        self.paused = False
        self.write_paused = False
        self.upstream: Optional[Upstream] = None
        """The connection whose answer is being relayed to this client."""

    # ---- asyncio ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.router.clients.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as err:
            self._refuse(400, f"malformed HTTP request: {err}")

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None
        self.queue.clear()
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()  # the rest of the answer is read and dropped
        self.router.clients.discard(self)
        self.router.check_drained()

    def pause_writing(self) -> None:
        # The client reads slower than the deployment answers: stop reading the answer until it catches up.
        self.write_paused = True
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.upstream is not None:
            self.upstream.resume_reading()

    # ---- httptools callbacks ----
    def on_message_begin(self) -> None:
        self.url, self.headers, self.header_bytes, self.body, self.body_bytes = b"", [], 0, [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            raise httptools.HttpParserError("request line and headers over the limit")

    def on_headers_complete(self) -> None:
        for name, value in self.headers:
            if name.lower() == b"expect" and value.strip().lower() == b"100-continue" and self.transport:
                # The whole body is read here before it is forwarded: tell the client to send it.
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_bytes += len(body)
        if self.body_bytes > self.router.max_request_bytes:
            raise httptools.HttpParserError("body over the limit")

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        version = self.parser.get_http_version()
        keep_alive = self.parser.should_keep_alive()
        named: Optional[bytes] = None
        lines = [method, b" ", self.url, b" HTTP/1.1\r\n"]
        for name, value in self.headers:
            lower = name.lower()
            if lower in _DROPPED:
                continue
            if lower == DEPLOYMENT_HEADER:
                named = value
            lines += (name, b": ", value, b"\r\n")
        body = b"".join(self.body)
        if body or method not in (b"GET", b"HEAD", b"OPTIONS", b"DELETE"):
            lines += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        lines += (b"\r\n", body)
        self.queue.append((b"".join(lines), method == b"HEAD", keep_alive and version != "1.0", named))
        if len(self.queue) >= MAX_PIPELINED and self.transport is not None and not self.paused:
            self.transport.pause_reading()  # read on once answers have caught up (_next)
            self.paused = True
        self.body = []
        if not self.busy:
            self._next()

    # ----
    def _next(self) -> None:
        if self.paused and self.transport is not None and len(self.queue) < MAX_PIPELINED:
            self.paused = False
            self.transport.resume_reading()
        if not self.queue or self.transport is None:
            self.busy = False
            if self.closing and self.transport is not None:
                self.transport.close()
            self.router.check_drained()
            return
        self.busy = True
        request, head, keep_alive, named = self.queue[0]
        router = self.router
        route = router.table.pick(named)
        if route is None:
            self.queue.popleft()
            if named is not None:
                self._answer_error(404, f"no deployment named {named.decode('latin-1')!r} behind this service "
                                   f"(deployments: {', '.join(router.table.routes)})")
            else:
                self._answer_error(503, "no deployment of this service takes traffic (every weight is 0): "
                                   f"name one in the {DEPLOYMENT_HEADER.decode()} header")
            return
        if named is None:
            for mirror in router.table.mirrors():
                router.mirror(mirror, request, head)
        router.forward(route, request, head, self._relay, self._answered, retry=True, client=self,
                       fallback=named is None)

    def _relay(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _answered(self, upstream: Optional[Upstream], error: Optional[str], status: int = 502) -> None:
        if self.transport is None or not self.queue:
            return  # the client left while its request was out: nothing to answer, nothing queued
        _, _, keep_alive, _ = self.queue.popleft()
        if error is not None:
            if upstream is not None and upstream.answered:
                # Part of the answer went out: the client can only be told by closing.
                log.warning("%s; closing the client connection mid-answer", error)
                self.queue.clear()
                if self.transport is not None:
                    self.transport.close()
                return
            log.warning("%s", error)
            self._answer_error(status, error)
            return
        if not keep_alive or (upstream is not None and not upstream.keep_alive):
            # The deployment's `connection: close` went to the client as it was; close as it said.
            self.closing = True
            self.queue.clear()
        self._next()

    def _answer_error(self, status: int, message: str) -> None:
        if self.transport is not None:
            self.transport.write(error_response(status, message, new_request_id()))
            self.transport.close()
        self.queue.clear()
        self.busy = False
        self.router.check_drained()

    def _refuse(self, status: int, message: str) -> None:
        self.refused = True
        if not self.busy:
            self._answer_error(status, message)
        else:
            self.closing = True

    def idle(self) -> bool:
        return not self.busy and not self.queue


class Router:
    """The listener, the table and the connections to the deployments."""

    def __init__(self, config: Path, status: Path, max_request_bytes: int, timeout_s: float):
        self.config = config
        self.status = status
        self.table = read_table(config)
        self.max_request_bytes = max_request_bytes
        self.timeout_s = timeout_s
        self.clients: set[Client] = set()
        self.busy: set[Upstream] = set()
        """Connections with a request in flight (the timeout sweep's)."""
        self.stopping = False
        self.drained: Optional[asyncio.Future[None]] = None
        self.loop = asyncio.get_running_loop()

    def write_status(self) -> None:
        partial = self.status.with_name(f".{self.status.name}.{os.getpid()}")
        partial.write_text(json.dumps({"generation": self.table.generation, "pid": os.getpid(),
                                       "routes": {r.name: r.port for r in self.table.routes.values()}}))
        partial.replace(self.status)

    def reload(self) -> None:
        try:
            table = read_table(self.config, self.table)
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.error("router: cannot apply %s: %s; keeping generation %d", self.config, err, self.table.generation)
            return
        for name, route in self.table.routes.items():
            if table.routes.get(name) is not route:
                route.retired = True
                route.close_idle()
        self.table = table
        self.write_status()
        shares = ", ".join(f"{r.name}={r.weight}" + (f" (mirror {r.mirror})" if r.mirror else "")
                           for r in table.routes.values())
        log.info("router: applied generation %d: %s", table.generation, shares)

    def forward(self, route: Route, request: bytes, head: bool, sink: Optional[Callable[[bytes], None]],
                answered: Callable[..., None], retry: bool, client: Optional[Client] = None,
                fallback: bool = False) -> None:
        """Send `request` to `route` on an idle connection, or a new one; `answered(upstream, error)` at the end."""
        self._send(Exchange(route, request, head, sink, answered, retry, client, fallback))

    def _send(self, exchange: Exchange) -> None:
        route = exchange.route
        while route.idle:
            upstream = route.idle.pop()
            if not upstream.closed:
                upstream.send(exchange)
                return
        self.loop.create_task(self._connect(exchange))

    async def _connect(self, exchange: Exchange) -> None:
        route = exchange.route
        try:
            _, upstream = await self.loop.create_connection(lambda: Upstream(route, self), route.host, route.port)
        except OSError as err:
            problem = f"deployment {route.name} ({route.host}:{route.port}) cannot be reached: {err.strerror or err}"
            other = self.table.other(route) if exchange.fallback else None
            if other is not None:
                # Nothing was sent: another deployment answers rather than nobody (a deployment being
                # removed while a router that still lists it drains, or one that is down).
                log.warning("%s; sent to %s instead", problem, other.name)
                exchange.route, exchange.fallback = other, False
                self._send(exchange)
                return
            exchange.answered(None, problem)
            return
        upstream.send(exchange)

    def done(self, upstream: Upstream, exchange: Exchange, error: Optional[str], status: int = 502) -> None:
        """An answer ended (`error` None), or could not be had."""
        if error is not None and exchange.retry and upstream.used > 1 and not upstream.answered:
            # A kept-alive connection the deployment closed as the request went out: once more, anew.
            upstream.close()
            exchange.retry = False
            self.loop.create_task(self._connect(exchange))  # a new connection: pooled ones may be as stale
            return
        if error is None:
            upstream.release()
        else:
            upstream.close()
        exchange.answered(upstream, error, status)

    def sweep(self) -> None:
        """Every second: a deployment that has not answered within the timeout gets a 504 of the router's."""
        self.loop.call_later(1.0, self.sweep)
        now = time.monotonic()
        for upstream in [u for u in self.busy if u.exchange is not None and now - u.exchange.started > self.timeout_s]:
            exchange, upstream.exchange, upstream.sink = upstream.exchange, None, None
            self.busy.discard(upstream)
            upstream.close()
            if exchange is None:
                continue
            try:
                exchange.answered(upstream, f"deployment {exchange.route.name} did not answer within "
                                            f"{self.timeout_s:.0f}s", 504)
            except Exception:  # noqa: BLE001 - one exchange's failure must not stop the sweep
                log.exception("router: answering a timed-out request failed")

    def mirror(self, route: Route, request: bytes, head: bool) -> None:
        if route.mirrors_in_flight >= MIRRORS_IN_FLIGHT:
            return
        route.mirrors_in_flight += 1

        def answered(_upstream: Optional[Upstream], error: Optional[str], _status: int = 502) -> None:
            route.mirrors_in_flight -= 1
            if error is not None:
                log.info("mirror to %s: %s", route.name, error)

        self.forward(route, request, head, None, answered, retry=False)

    def check_drained(self) -> None:
        if not self.stopping or self.drained is None or self.drained.done():
            return
        for client in list(self.clients):
            if client.idle() and client.transport is not None:
                client.transport.close()
        if not self.clients:
            self.drained.set_result(None)


class Health(asyncio.Protocol):
    """The router's own readiness, on a port of its own (`--health-port`): `200 ready` while it
    accepts requests, `503 stopping` once it drains, so an orchestrator takes it out of rotation then.
    Apart from the service's port, whose every path (`/ready` too) is forwarded to a deployment."""

    def __init__(self, router: "Router"):
        self.router = router
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # A probe sends its request at once; a connection that never does is closed.
        self.timer = asyncio.get_running_loop().call_later(HEALTH_READ_TIMEOUT_S, self.transport.close)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" not in self.received and len(self.received) < MAX_HEADER_BYTES:
            return  # the rest of the request's head is still coming
        self.timer.cancel()
        status, text = (b"503 Service Unavailable", b"stopping") if self.router.stopping else (b"200 OK", b"ready")
        self.transport.write(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\ncontent-length: "
                             + str(len(text)).encode() + b"\r\nconnection: close\r\n\r\n" + text)
        self.transport.close()


def listening_socket(port: int, reuse_port: bool, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    router = Router(Path(args.config), Path(args.status), args.max_request_bytes, args.timeout_ms / 1000 + names.ROUTER_EXTRA_WAIT_S)
    tls: Optional[ssl.SSLContext] = None
    if args.tls_cert:
        from serving.tls import server_context

        tls = server_context(args.tls_cert, args.tls_key)
    sock = listening_socket(args.port, args.reuse_port, args.host)
    server = await loop.create_server(lambda: Client(router), sock=sock, ssl=tls, backlog=1024)
    health = await loop.create_server(lambda: Health(router), args.host, args.health_port) \
        if args.health_port else None
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, router.reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    router.write_status()
    router.sweep()
    log.info("router: serving %s on %s:%d, generation %d", ", ".join(router.table.routes), args.host, args.port,
             router.table.generation)
    notify = notifier(os.environ.pop(names.NOTIFY_SOCKET, None))
    if notify is not None:
        notify("READY=1")
    await stop.wait()
    # What is queued on the listener was meant for this process: take it before closing.
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            break
        except OSError as err:
            if err.errno in (errno.EMFILE, errno.ENFILE):
                break
            raise
        try:
            await loop.connect_accepted_socket(lambda: Client(router), conn, ssl=tls)
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as err:
            log.info("router: a connection queued at the stop failed its start: %s", err)
            conn.close()
    server.close()
    router.stopping = True  # from here the health port answers 503
    router.drained = loop.create_future()
    router.check_drained()
    try:
        await asyncio.wait_for(router.drained, router.timeout_s)
    except asyncio.TimeoutError:
        log.warning("router: %d connections still busy at the stop deadline", len(router.clients))
    for route in router.table.routes.values():
        route.close_idle()
    if health is not None:
        health.close()
    log.info("router: stopped")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.router", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--config", required=True, help="the routes and the split (JSON; re-read on SIGHUP)")
    parser.add_argument("--status", required=True, help="where the applied generation is written")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0 in a pod)")
    parser.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (beside a predecessor)")
    parser.add_argument("--health-port", type=int, help="answer readiness probes on this port (GET: 200, 503 once draining)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--timeout-ms", type=int, default=names.DEFAULT_TIMEOUT_MS)
    parser.add_argument("--max-request-bytes", type=int, default=names.DEFAULT_MAX_REQUEST_BYTES)
    args = parser.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args))
    else:
        uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
