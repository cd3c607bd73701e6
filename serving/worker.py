"""A worker process: the scoring app on uvicorn, accepting connections from the shared listening socket.

Like gunicorn's sync workers (the reference server's), each worker accepts for itself, and only while
it has capacity: a ready worker accepts while it is idle, or while no other ready worker carries less
work (connections with a request under way, plus one while its scoring thread is busy). So a worker busy
with a slow run() leaves new connections to an idle one, and when all are busy they share them. A
worker still in init() accepts only while no worker is ready (its `/ready` says 503 then). The worker
publishes its state in the shared table, replaces itself when a run() is stuck (past
SCORING_TIMEOUT_MS: the caller has had its 504 by then), and on SIGTERM takes what waits in the backlog,
drains its requests for up to SHUTDOWN_GRACE_SECONDS and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
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


ACCEPT_BATCH = 64
"""Connections accepted in one go before the loop serves the others (and the capacity is looked at again)."""
ACCEPT_PAUSE_S = 1.0
"""After accept() fails for want of descriptors or memory, connections wait in the backlog this long."""


def run_worker(settings: Settings, slot: int, table: shared.WorkerTable, listener: socket.socket,
               listen_backlog: int, master: socket.socket) -> int:
    """Load the script and serve until stopped; returns the process's exit code.

    `listen_backlog` > 0: `listener` is only bound, and the first worker to finish init() makes it listen.
    `master` reads end-of-file once the master process is gone."""
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
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="httptools",
        loop="uvloop",
        access_log=False,
        # As Azure ML's server, whose Flask app applies no ProxyFix (azureml-inference-server-http 1.5.1's
        # source, read in .venv-reference): X-Forwarded-For does not change the client address.
        proxy_headers=False,
        log_level="warning",
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        timeout_keep_alive=settings.keepalive_timeout_s,
    )
    server = WorkerServer(config, settings, app, slot, table, listener, listen_backlog, master)
    server.run()
    return server.exit_code


class _PublishingApp(ScoringApp):
    """The scoring app, telling the worker the moment it becomes ready (so it accepts at once)."""

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
    """uvicorn's server, accepting from the shared listening socket while the worker has capacity."""

    def __init__(self, config: uvicorn.Config, settings: Settings, app: _PublishingApp, slot: int,
                 table: shared.WorkerTable, listener: socket.socket, listen_backlog: int, master: socket.socket):
        super().__init__(config)
        self.settings = settings
        self.app = app
        self.slot = slot
        self.table = table
        self.listener = listener
        self.listen_backlog = listen_backlog
        self.master = master
        self.exit_code = 0
        self.retiring = False
        self.ssl = server_context(settings.tls_cert_file, settings.tls_key_file) if (
            settings.tls_cert_file and settings.tls_key_file) else None
        self.guard = Guard(settings, self.server_state.connections, on_active=self._active_changed)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._opening: set[asyncio.Task] = set()
        self._accepting = False
        self._listening = not listen_backlog
        self._paused_until = 0.0
        self._others = [i for i in range(table.slots) if i != slot]
        executor = app.executor
        executor.on_start = lambda t: table.set(slot, shared.RUN_STARTED, t)
        executor.on_finish = lambda: table.set(slot, shared.RUN_STARTED, 0.0)
        app.on_ready = self._ready_changed

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
        self.listener.setblocking(False)
        self.master.setblocking(False)
        self._loop.add_reader(self.master.fileno(), self._master_readable)
        self._update_accepting()
        self.started = True

    # ---- when to accept -------------------------------------------------------------------
    def _ready_changed(self, ready: bool) -> None:
        if ready and not self._listening:
            # The first worker ready makes the bound socket listen (a later one repeats it, harmlessly):
            # before the master announces readiness, which it does once it sees READY below.
            self.listener.listen(self.listen_backlog)
            self._listening = True
        self.table.set(self.slot, shared.READY, 1.0 if ready else 0.0)
        self._update_accepting()

    def _active_changed(self, active: int) -> None:
        self.table.set(self.slot, shared.ACTIVE, active)
        self._update_accepting()

    def _has_capacity(self) -> bool:
        table = self.table
        if self.app.ready:
            mine = table.load(self.slot)
            if not mine:
                return True
            # Busy: accept only while no other ready worker carries less (when all are busy, they share).
            return all(table.load(i) >= mine for i in self._others if table.ready(i))
        if not self._listening:
            # Bound only (the port is shared with the version being replaced): nobody accepts before
            # a worker is ready, but once one has made the socket listen, its state applies here too.
            self._listening = bool(self.listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
            if not self._listening:
                return False
        return self._no_other_ready()

    def _no_other_ready(self) -> bool:
        return not any(self.table.ready(i) for i in self._others)

    def _update_accepting(self) -> None:
        """Watch the listening socket while this worker should take connections, and not otherwise."""
        loop = self._loop
        if loop is None:
            return
        want = (not self.retiring and not self.guard.stopping and not self.should_exit
                and loop.time() >= self._paused_until and self._has_capacity())
        if want != self._accepting:
            if want:
                loop.add_reader(self.listener.fileno(), self._accept)
            else:
                loop.remove_reader(self.listener.fileno())
            self._accepting = want

    def _accept(self, limit: int = ACCEPT_BATCH, drain: bool = False) -> None:
        """Take waiting connections while this worker should (all of them, up to `limit`, if `drain`)."""
        for _ in range(limit):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # another worker took it, or the backlog is empty
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: connections wait in the backlog (or go to another
                    # worker) for a moment, rather than this worker spinning on accept().
                    log.error("worker %d: accept() failed: %s; not accepting for %.0f s", os.getpid(), err,
                              ACCEPT_PAUSE_S)
                    assert self._loop is not None
                    self._paused_until = self._loop.time() + ACCEPT_PAUSE_S
                    self._update_accepting()
                    return
                if err.errno == errno.EINVAL:
                    return  # not listening (yet, or any more)
                continue  # the client went away between connect and accept
            self._take(sock)
            if not self._accepting and not drain:
                return  # the connection taken used up the capacity

    def _master_readable(self) -> None:
        try:
            if self.master.recv(1):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        # The master is gone: nobody replaces workers or stops them any more.
        log.error("worker %d: the master process is gone; stopping", os.getpid())
        assert self._loop is not None
        self._loop.remove_reader(self.master.fileno())
        self.should_exit = True
        self._update_accepting()

    # ---- connections ----------------------------------------------------------------------
    def _take(self, sock: socket.socket) -> None:
        over_limit = self.guard.count() >= self.settings.max_connections and not self.guard.make_room()
        self.guard.opening += 1
        protocol = LimitedHttpProtocol(self.config, self.server_state, self.lifespan.state, self.guard,
                                       over_limit=over_limit, _loop=self._loop)
        # Counted as active (work this worker holds) from here; the protocol releases it once idle.
        self.guard.activate()
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
        # Other workers' load changes tell this one nothing: it looks again here (and at its own changes).
        self._update_accepting()
        return await super().on_tick(counter)

    def retire(self, reason: str) -> None:
        """Stop taking work, answer what waits with 503 (retry), and exit to be replaced."""
        self.retiring = True
        self.table.set(self.slot, shared.RETIRING, 1.0)
        self.app.ready = False
        self._update_accepting()
        log.error("worker %d: %s; this worker is being replaced", os.getpid(), reason)
        refusal = Unavailable(f"this worker is being replaced ({reason}); retry")
        self.guard.refusal = str(refusal)
        self.app.executor.refuse(refusal)
        self.config.timeout_graceful_shutdown = RETIRE_DRAIN_S
        self.exit_code = REPLACED_EXIT
        self.should_exit = True

    async def shutdown(self, sockets: Optional[list[socket.socket]] = None) -> None:
        # Clients already in the backlog have sent their requests: they are served (then closed), not
        # reset when the last process holding the socket closes it. A worker still in init() leaves them
        # to a ready one unless none is.
        self.guard.stopping = True
        self.guard.flush_notes(force=True)
        if not self.retiring and self._listening and (self.app.ready or self._no_other_ready()):
            self._accept(limit=self.settings.max_connections, drain=True)
        self._update_accepting()
        self.listener.close()
        grace = self.config.timeout_graceful_shutdown or 0
        if not self.retiring and self._loop is not None:
            # Calls still waiting for the scoring thread when the grace period ends would be cut
            # without an answer: a moment before, they are answered 503 so clients retry elsewhere.
            self._loop.call_later(max(0.0, grace - 1.0), self.app.executor.refuse,
                                  Unavailable("the service is shutting down; retry"))
        await super().shutdown(sockets)
