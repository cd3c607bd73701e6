"""The master process: owns the listening socket, forks the workers, hands each connection to one, and
replaces workers that crash or whose run() is stuck.

It loads no scoring script and runs no user code, so it stays small and responsive. Each accepted
connection goes, as a file descriptor over the worker's Unix socket, to the ready worker with the least
work in progress (connections with a request under way, plus one while its scoring thread is busy):
a worker busy with a slow run() gets new connections only when every worker is busy. Workers still in
init() get connections only while no worker is ready, so a readiness probe says 503 only then.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections import deque
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
MAX_HELD = 4096
"""Accepted connections the master holds while workers' channels are full; past it, accepting pauses
(new connections wait in the kernel's backlog)."""


@dataclass
class _Slot:
    index: int
    pid: int = 0
    channel: Optional[socket.socket] = None
    sent: int = 0
    held: deque[socket.socket] = field(default_factory=deque)
    """Connections for this worker that its channel had no room for yet, in order."""
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
        """`listen_backlog` > 0: `listener` is only bound, and listens with that backlog once a worker has
        finished init() (so a script whose init() fails never takes a connection). `on_ready` is called
        once, when the first worker is ready and the socket listens."""
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
        self.listening = False
        self.accept_paused_until = 0.0
        self.waiting: deque[socket.socket] = deque()
        """Accepted connections no worker could take yet (all being replaced): dispatched first."""
        self._rr = 0

    # ---- main loop ------------------------------------------------------------------------
    def run(self) -> int:
        self.listener.setblocking(False)
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for sig in _MASTER_SIGNALS:
            signal.signal(sig, self._on_signal)
        self.selector.register(self.wake_r, selectors.EVENT_READ)
        for slot in self.slots:
            self._spawn(slot)
        while True:
            for key, _ in self.selector.select(TICK_S):
                if key.fileobj is self.listener:
                    self._accept()
                elif key.fileobj is self.wake_r:
                    self._drain_wakeups()
                else:
                    self._flush(key.data)
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

    # ---- connections ----------------------------------------------------------------------
    def _set_listening(self, on: bool) -> None:
        if on != self.listening:
            if on:
                self.selector.register(self.listener, selectors.EVENT_READ)
            else:
                self.selector.unregister(self.listener)
            self.listening = on

    def _candidates(self) -> list[_Slot]:
        alive = [s for s in self.slots if s.pid and s.channel is not None and not s.killed
                 and not self.table.get(s.index, shared.RETIRING)]
        ready = [s for s in alive if self.table.get(s.index, shared.READY)]
        pool = ready or alive
        n = len(self.slots)

        def load(s: _Slot) -> tuple[float, int]:
            # Held or sent but not yet taken, plus what the worker reports; ties go round-robin.
            waiting = len(s.held) + s.sent - self.table.get(s.index, shared.RECEIVED)
            return waiting + self.table.load(s.index), (s.index - self._rr) % n

        return sorted(pool, key=load)

    def _accept(self, limit: int = 128) -> None:
        if not self._candidates():
            # The only workers are being replaced: connections wait in the backlog for the next one.
            self._set_listening(False)
            return
        for _ in range(limit):
            if len(self.waiting) + sum(len(s.held) for s in self.slots) >= MAX_HELD:
                self._set_listening(False)
                return
            try:
                conn, _addr = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: leave connections in the backlog for a moment
                    # rather than spin on accept().
                    log.error("accept() failed: %s; pausing accepting for a second", err)
                    self.accept_paused_until = time.monotonic() + 1.0
                    self._set_listening(False)
                    return
                continue  # the client went away between connect and accept
            self._dispatch(conn)

    def _dispatch(self, conn: socket.socket) -> None:
        for slot in self._candidates():
            if slot.held:
                slot.held.append(conn)  # behind the ones already waiting for this worker
            else:
                sent = self._send(slot, conn)
                if sent is None:
                    continue  # it just died: the next worker
                if not sent:
                    slot.held.append(conn)
                    self._want_write(slot, True)
            self._rr = (slot.index + 1) % len(self.slots)
            return
        # No worker can take it now (the only ones are being replaced): it waits for the next one.
        self.waiting.append(conn)

    def _send(self, slot: _Slot, conn: socket.socket) -> Optional[bool]:
        """Pass the connection to the worker (and close the master's copy): True if sent, False if its
        channel is full, None if the worker is gone."""
        assert slot.channel is not None
        try:
            socket.send_fds(slot.channel, [b"c"], [conn.fileno()])
        except BlockingIOError:
            return False
        except OSError:
            slot.killed = True  # dead but not reaped yet: no more connections for it
            return None
        slot.sent += 1
        conn.close()
        return True

    def _flush(self, slot: _Slot) -> None:
        while slot.held and slot.channel is not None:
            sent = self._send(slot, slot.held[0])
            if sent is None:
                break  # it died: once reaped, its held connections go to another worker
            if not sent:
                return
            slot.held.popleft()
        self._want_write(slot, False)

    def _want_write(self, slot: _Slot, on: bool) -> None:
        if slot.channel is None:
            return
        registered = slot.channel in self.selector.get_map()
        if on and not registered:
            self.selector.register(slot.channel, selectors.EVENT_WRITE, slot)
        elif not on and registered:
            self.selector.unregister(slot.channel)

    # ---- workers --------------------------------------------------------------------------
    def _spawn(self, slot: _Slot) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.table.reset(slot.index)
        slot.sent = 0
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
        ours.setblocking(False)
        slot.pid, slot.channel = pid, ours
        log.info("worker %d started (slot %d)", pid, slot.index)

    def _child(self, slot: _Slot, channel: socket.socket) -> NoReturn:
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _MASTER_SIGNALS)
            # Only the master accepts: a worker holding the listening socket open would keep the port
            # taking connections that nobody answers after the master closed it.
            self.selector.close()
            self.listener.close()
            self.wake_r.close()
            self.wake_w.close()
            for other in self.slots:
                if other.channel is not None:
                    other.channel.close()
                for conn in other.held:  # or the client would not see it closed when the master closes it
                    conn.close()
            for conn in self.waiting:
                conn.close()
            code = run_worker(self.settings, slot.index, self.table, channel)
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
            if slot.channel is not None:
                self._want_write(slot, False)
                slot.channel.close()
            slot.pid, slot.channel = 0, None
            held, slot.held = slot.held, deque()
            self.table.reset(slot.index)
            if not self.stopping:
                self._replace(slot, pid, code)
            for conn in held:  # not sent yet: another worker takes them
                if self.stopping:
                    conn.close()
                else:
                    self._dispatch(conn)

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
        if self.waiting and not self.stopping and self._candidates():
            waiting, self.waiting = self.waiting, deque()
            for conn in waiting:
                self._dispatch(conn)
        if self.stopping:
            if now > self.stop_deadline:
                for slot in self.slots:
                    if slot.pid and not slot.killed:
                        log.error("worker %d: still running past the grace period; killing it", slot.pid)
                        self._kill(slot)
            return
        self._set_listening(bool(self._candidates()) and now >= self.accept_paused_until and not self.listen_backlog)

    def _first_ready(self) -> None:
        self.was_ready = True
        if self.listen_backlog:
            self.listener.listen(self.listen_backlog)
            self.listen_backlog = 0
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
        """Stop accepting, and ask every worker to drain and exit."""
        if self.listening:
            # Clients already in the backlog have sent their requests: they are served, not reset.
            self._accept(limit=self.settings.workers * self.settings.max_connections)
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.settings.shutdown_grace_s + KILL_MARGIN_S
        self._set_listening(False)
        self.listener.close()
        while self.waiting:  # no worker is coming for these
            self.waiting.popleft().close()
        for slot in self.slots:
            if slot.pid:
                try:
                    os.kill(slot.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
