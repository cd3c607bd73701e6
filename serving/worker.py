"""A worker process: the scoring app on uvicorn, serving the connections the master hands it.

The worker never accepts from the listening socket: the master passes each accepted connection over a
Unix socket (SCM_RIGHTS), to the worker with the least work, so slow requests spread across workers.
The worker publishes its state in the shared table (ready, load, since when its run() is running),
replaces itself when a run() is stuck (past SCORING_TIMEOUT_MS: the caller has had its 504 by then),
and on SIGTERM drains its requests for up to SHUTDOWN_GRACE_SECONDS and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Callable, Generator, Optional

import uvicorn

from serving import settings as names
from serving import shared
from serving.app import INIT_FAILED_EXIT, ScoringApp
from serving.collector import from_environ as collector_from_environ
from serving.protocol import Guard, LimitedHttpProtocol
from serving.script import ScoringScript, ScriptLoadError, format_exception
from serving.scoring_thread import Unavailable
from serving.settings import Settings
from serving.tls import server_context

log = logging.getLogger("serving")

REPLACED_EXIT = 75
"""A worker that exits to be replaced (its run() is stuck) exits with this; the master starts another."""
RETIRE_DRAIN_S = 3
"""How long a worker being replaced lets its other requests finish (they are answered 503 to retry)."""


def run_worker(settings: Settings, slot: int, table: shared.WorkerTable, channel: socket.socket) -> int:
    """Load the script and serve until stopped; returns the process's exit code."""
    if settings.model_dir:
        # Scripts read the model folder from the environment, as in Azure ML.
        os.environ[names.MODEL_DIR] = os.path.abspath(settings.model_dir)
    try:
        script = ScoringScript(settings.entry_script)
    except ScriptLoadError as err:
        log.error("cannot load %s: %s\n%s", settings.entry_script, err,
                  format_exception(err.__cause__) if err.__cause__ else "")
        return INIT_FAILED_EXIT
    # Each worker has its own collector: its thread and blob name must not be shared across a fork.
    app = _PublishingApp(settings, script, collector_from_environ())
    app.on_ready = lambda ready: table.set(slot, shared.READY, 1.0 if ready else 0.0)
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        timeout_keep_alive=settings.keepalive_timeout_s,
    )
    server = WorkerServer(config, settings, app, slot, table, channel)
    server.run()
    return server.exit_code


class _PublishingApp(ScoringApp):
    """The scoring app, telling the master the moment it becomes ready (so connections go to it at once)."""

    on_ready: Optional[Callable[[bool], None]] = None
    _ready = False

    # A property over the app's plain `ready` attribute: the app sets it when init() finishes.
    @property  # type: ignore[override]
    def ready(self) -> bool:
        return self._ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value
        if self.on_ready is not None:
            self.on_ready(value)


class WorkerServer(uvicorn.Server):
    """uvicorn's server, fed connections by the master instead of listening itself."""

    def __init__(self, config: uvicorn.Config, settings: Settings, app: ScoringApp, slot: int,
                 table: shared.WorkerTable, channel: socket.socket):
        super().__init__(config)
        self.settings = settings
        self.app = app
        self.slot = slot
        self.table = table
        self.channel = channel
        self.exit_code = 0
        self.retiring = False
        self.ssl = server_context(settings.tls_cert_file, settings.tls_key_file) if (
            settings.tls_cert_file and settings.tls_key_file) else None
        self.guard = Guard(settings, self.server_state.connections,
                           on_active=lambda n: table.set(slot, shared.ACTIVE, n))
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._opening: set[asyncio.Task] = set()
        self._reading = False
        executor = app.executor
        executor.on_start = lambda t: table.set(slot, shared.RUN_STARTED, t)
        executor.on_finish = lambda: table.set(slot, shared.RUN_STARTED, 0.0)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises a caught SIGTERM once drained, so the process would die by it: a worker
        # exits 0 instead. SIGINT (Ctrl+C reaches the whole process group) is the master's to handle.
        signal.signal(signal.SIGTERM, self.handle_exit)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        yield

    async def startup(self, sockets: Optional[list[socket.socket]] = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(INIT_FAILED_EXIT)
        self._loop = asyncio.get_running_loop()
        self.servers = []
        self.channel.setblocking(False)
        self._loop.add_reader(self.channel.fileno(), self._take_connections)
        self._reading = True
        self.started = True

    def _stop_reading(self) -> None:
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self.channel.fileno())
            self._reading = False

    def _take_connections(self) -> None:
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.channel, 16, 1)
            except BlockingIOError:
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:
                # The master is gone: nobody hands out connections or replaces workers any more.
                log.error("worker %d: the master process is gone; stopping", os.getpid())
                self._stop_reading()
                self.should_exit = True
                return
            for fd in fds:
                self._take(socket.socket(fileno=fd))

    def _take(self, sock: socket.socket) -> None:
        self.table.add(self.slot, shared.RECEIVED, 1)
        self.guard.activate()  # handed to the protocol, which releases it once the connection is idle
        over_limit = self.guard.count() >= self.settings.max_connections and not self.guard.make_room()
        self.guard.opening += 1
        protocol = LimitedHttpProtocol(self.config, self.server_state, self.lifespan.state, self.guard,
                                       over_limit=over_limit, _loop=self._loop)
        assert self._loop is not None
        task = self._loop.create_task(self._open(sock, protocol))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self, sock: socket.socket, protocol: LimitedHttpProtocol) -> None:
        assert self._loop is not None
        try:
            if self.ssl is None:
                await self._loop.connect_accepted_socket(lambda: protocol, sock)
            else:
                await self._loop.connect_accepted_socket(
                    lambda: protocol, sock, ssl=self.ssl, ssl_handshake_timeout=self.settings.header_timeout_s)
        except (Exception, asyncio.CancelledError):  # noqa: BLE001 - a failed handshake is the client's problem
            protocol.release()
            sock.close()

    async def on_tick(self, counter: int) -> bool:
        now = time.monotonic()
        if self.app.ready and not self.retiring:
            started = self.app.executor.started_at
            if started and now - started > self.settings.timeout_ms / 1000:
                self.retire(f"a run() has been running for over {self.settings.timeout_ms} ms")
            else:
                self.app.executor.expire(now)
        self.guard.flush_notes(now)
        return await super().on_tick(counter)

    def retire(self, reason: str) -> None:
        """Stop taking work, answer what waits with 503 (retry), and exit to be replaced."""
        self.retiring = True
        self.table.set(self.slot, shared.RETIRING, 1.0)
        self.app.ready = False
        log.error("worker %d: %s; this worker is being replaced", os.getpid(), reason)
        refusal = Unavailable(f"this worker is being replaced ({reason}); retry")
        self.guard.refusal = str(refusal)
        self.app.executor.refuse(refusal)
        self.config.timeout_graceful_shutdown = RETIRE_DRAIN_S
        self.exit_code = REPLACED_EXIT
        self.should_exit = True

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        # Connections the master handed over before it stopped were accepted with a request on its
        # way: they are served too (then closed), not dropped with the channel.
        self.guard.stopping = True
        self.guard.flush_notes(force=True)
        if self._reading:
            self._take_connections()
        self._stop_reading()
        grace = self.config.timeout_graceful_shutdown or 0
        if not self.retiring and self._loop is not None:
            # Calls still waiting for the scoring thread when the grace period ends would be cut
            # without an answer: a moment before, they are answered 503 so clients retry elsewhere.
            self._loop.call_later(max(0.0, grace - 1.0), self.app.executor.refuse,
                                  Unavailable("the service is shutting down; retry"))
        await super().shutdown(sockets)
