"""The master process: forks the workers, replaces those that crash or whose run() is stuck, and stops them.

It loads no scoring script, runs no user code and serves no connection: the workers accept from the
listening socket they inherit (see `serving.worker` for when each one does). So the master stays small
and responsive, and a request costs it nothing. What it knows of the workers it reads from the shared
table: whether one is ready (the service is announced ready then), and since when a run() is running
(a worker whose event loop is frozen cannot replace itself, and is killed).
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, NoReturn, Optional

from serving import shared
from serving.app import INIT_FAILED_EXIT
from serving.settings import Settings
from serving.worker import REPLACED_EXIT, RETIRE_DRAIN_S, run_worker

log = logging.getLogger("serving")

TICK_S = 0.1
KILL_MARGIN_S = 5.0
"""A worker whose run() is this long past SCORING_TIMEOUT_MS has not replaced itself (its event loop is
blocked, e.g. by C code holding the GIL): it is killed."""
EARLY_DEATHS = 3
"""Workers dying before their init() finishes this many times in a row: the script cannot start, exit 3."""
MAX_BACKOFF_S = 10.0
_MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


@dataclass
class _Slot:
    index: int
    pid: int = 0
    lifeline: Optional[socket.socket] = None
    """The master's end of a socket pair: the worker reads end-of-file from its end once the master is gone."""
    was_ready: bool = False
    early_deaths: int = 0
    crashes: list[float] = field(default_factory=list)
    start_at: float = 0.0
    retiring_seen: float = 0.0
    killed: bool = False


class Supervisor:
    """Runs WORKER_COUNT workers on one listening socket until SIGTERM/SIGINT; `run()` returns the exit code."""

    def __init__(self, settings: Settings, listener: socket.socket, listen_backlog: int = 0,
                 on_ready: Optional[Callable[[], None]] = None):
        """`listen_backlog` > 0: `listener` is only bound, and the first worker to finish init() makes it
        listen with that backlog (so a script whose init() fails never takes a connection). `on_ready`
        is called once, when the first worker is ready and the socket listens."""
        self.settings = settings
        self.listener = listener
        self.listen_backlog = listen_backlog
        self.on_ready = on_ready
        self.was_ready = False
        self.table = shared.WorkerTable(settings.workers)
        self.slots = [_Slot(i) for i in range(settings.workers)]
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.signals: list[int] = []
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_code = 0

    # ---- main loop ------------------------------------------------------------------------
    def run(self) -> int:
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in _MASTER_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        for slot in self.slots:
            self._spawn(slot)
        while True:
            if self.selector.select(TICK_S):
                self._drain_wakeups()
            self._handle_signals()
            self._reap()
            self._tick()
            if self.stopping and not any(s.pid for s in self.slots):
                return self.exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def _drain_wakeups(self) -> None:
        try:
            while self.wake_r.recv(512):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT) and not self.stopping:
                log.info("%s: draining requests in flight for up to %d s", signal.Signals(signum).name,
                         self.settings.shutdown_grace_s)
                self._stop()

    # ---- workers --------------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair()
        self.table.reset(slot.index)
        slot.was_ready = False
        slot.retiring_seen = 0.0
        slot.killed = False
        # A SIGTERM reaching the child before it resets its handlers would run the master's handler
        # there and be lost: the signals stay blocked across the fork until the child is ready for them.
        signal.pthread_sigmask(signal.SIG_BLOCK, _MASTER_SIGNALS)
        pid = os.fork()
        if pid == 0:
            ours.close()
            self._child(slot, theirs)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
        theirs.close()
        slot.pid, slot.lifeline = pid, ours
        log.info("worker %d started (slot %d)", pid, slot.index)

    def _child(self, slot: _Slot, lifeline: socket.socket) -> NoReturn:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
            self.selector.close()
            self.wake_r.close()
            self.wake_w.close()
            for other in self.slots:
                # Other workers' lifelines: held here, they would not read end-of-file when the master dies.
                if other.lifeline is not None:
                    other.lifeline.close()
            code = run_worker(self.settings, slot.index, self.table, self.listener, self.listen_backlog, lifeline)
        except SystemExit as err:
            code = err.code if isinstance(err.code, int) else 1
        except BaseException:  # noqa: BLE001 - logged; the master restarts the worker
            log.exception("worker %d failed", os.getpid())
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if slot.lifeline is not None:
                slot.lifeline.close()
            slot.pid, slot.lifeline = 0, None
            self.table.reset(slot.index)
            if not self.stopping:
                self._replace(slot, pid, code)

    def _replace(self, slot: _Slot, pid: int, code: int) -> None:
        now = time.monotonic()
        if code == INIT_FAILED_EXIT:
            log.error("worker %d: init() failed (exit code %d); stopping the service", pid, code)
            self.exit_code = INIT_FAILED_EXIT
            self._stop()
            return
        if code == REPLACED_EXIT:
            slot.start_at = now
            return
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if not slot.was_ready:
            slot.early_deaths += 1
            if slot.early_deaths >= EARLY_DEATHS:
                log.error("worker %d %s before init() finished, %d times in a row; stopping the service",
                          pid, how, slot.early_deaths)
                self.exit_code = INIT_FAILED_EXIT
                self._stop()
                return
        slot.crashes = [t for t in slot.crashes if now - t < 60] + [now]
        delay = 0.0 if len(slot.crashes) == 1 else min(MAX_BACKOFF_S, 0.5 * 2 ** (len(slot.crashes) - 2))
        log.error("worker %d %s; starting another in %.1f s", pid, how, delay)
        slot.start_at = now + delay

    def _tick(self) -> None:
        now = time.monotonic()
        timeout_s = self.settings.timeout_ms / 1000
        for slot in self.slots:
            if not slot.pid:
                if not self.stopping and now >= slot.start_at:
                    self._spawn(slot)
                continue
            i = slot.index
            if self.table.get(i, shared.READY):
                if not slot.was_ready:
                    slot.was_ready, slot.early_deaths = True, 0
                started = self.table.get(i, shared.RUN_STARTED)
                if started and now - started > timeout_s + KILL_MARGIN_S and not slot.killed:
                    log.error("worker %d: run() still running %.0f s past the timeout and the worker did not "
                              "replace itself; killing it", slot.pid, now - started - timeout_s)
                    self._kill(slot)
            if self.table.get(i, shared.RETIRING):
                slot.retiring_seen = slot.retiring_seen or now
                if now - slot.retiring_seen > RETIRE_DRAIN_S + KILL_MARGIN_S and not slot.killed:
                    log.error("worker %d: being replaced but still running; killing it", slot.pid)
                    self._kill(slot)
        if not self.was_ready and not self.stopping and any(s.was_ready for s in self.slots):
            self._first_ready()
        if self.stopping and now > self.stop_deadline:
            for slot in self.slots:
                if slot.pid and not slot.killed:
                    log.error("worker %d: still running past the grace period; killing it", slot.pid)
                    self._kill(slot)

    def _first_ready(self) -> None:
        # The worker made the socket listen before it said it was ready (serving.worker).
        self.was_ready = True
        if self.listen_backlog:
            log.info("a worker is ready: listening")
        if self.on_ready is not None:
            self.on_ready()

    def _kill(self, slot: _Slot) -> None:
        slot.killed = True
        try:
            os.kill(slot.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _stop(self) -> None:
        """Ask every worker to drain and exit (each takes what waits in the backlog first)."""
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.settings.shutdown_grace_s + KILL_MARGIN_S
        # The workers hold the socket too: it closes, and the port with it, once the last one has drained.
        self.listener.close()
        for slot in self.slots:
            if slot.pid:
                try:
                    os.kill(slot.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
