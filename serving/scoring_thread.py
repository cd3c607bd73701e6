"""The one thread that runs a worker's `init()` and every `run()`, with what the process model needs to know.

An `Executor` (the app calls it through `loop.run_in_executor`) that runs calls one at a time, as Azure
ML's server does, and also: says since when the current call has been running (so a stuck `run()` is
seen and its worker replaced), refuses calls that waited too long for the thread (overload is answered
503, not by hanging), and can fail every waiting call at once (the worker is being replaced or stops).
The thread is a daemon: a `run()` that never returns cannot keep the process from exiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Callable, Optional

RETRY_AFTER_S = 1
"""What 503 answers put in `Retry-After`: another worker (or the replacement) is usually there by then."""


class Unavailable(Exception):
    """The call was not run and may be retried: answered 503 with `Retry-After`."""


class ScoringThread(Executor):
    """Runs submitted calls one at a time, in order, on one daemon thread."""

    def __init__(self, max_queue_wait_s: Optional[float] = None, name: str = "score"):
        self.max_queue_wait_s = max_queue_wait_s
        self.started_at = 0.0
        """`time.monotonic()` when the running call started; 0.0 while the thread is idle."""
        self.on_start: Optional[Callable[[float], None]] = None
        self.on_finish: Optional[Callable[[], None]] = None
        self._name = name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queue: deque[tuple[Future, Callable[..., Any], tuple, dict, float]] = deque()
        self._refusal: Optional[Unavailable] = None
        self._shutdown = False
        self._thread: Optional[threading.Thread] = None

    @property
    def waiting(self) -> int:
        """Calls queued behind the running one."""
        return len(self._queue)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot run new calls after shutdown")
            if self._refusal is not None:
                future.set_exception(self._refusal)
                return future
            self._queue.append((future, fn, args, kwargs, time.monotonic()))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
            self._wake.notify()
        return future

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._shutdown:
                    self._wake.wait()
                if not self._queue:
                    return
                future, fn, args, kwargs, queued_at = self._queue.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                started = time.monotonic()
                if self.max_queue_wait_s is not None and started - queued_at > self.max_queue_wait_s:
                    future.set_exception(self._waited_too_long())
                    continue
                self.started_at = started
            if self.on_start is not None:
                self.on_start(started)
            try:
                result = fn(*args, **kwargs)
            except BaseException as err:  # noqa: BLE001 - the caller gets whatever user code raised
                self._finished()
                future.set_exception(err)
            else:
                self._finished()
                future.set_result(result)

    def _finished(self) -> None:
        self.started_at = 0.0
        if self.on_finish is not None:
            self.on_finish()

    def _waited_too_long(self) -> Unavailable:
        return Unavailable(f"over {(self.max_queue_wait_s or 0) * 1000:.0f} ms waiting for this worker's scoring "
                           "thread (the service is overloaded); retry")

    def expire(self, now: Optional[float] = None) -> int:
        """Fail the calls that have waited longer than `max_queue_wait_s`; returns how many."""
        if self.max_queue_wait_s is None:
            return 0
        limit = (time.monotonic() if now is None else now) - self.max_queue_wait_s
        expired = []
        with self._lock:
            while self._queue and self._queue[0][4] < limit:
                expired.append(self._queue.popleft()[0])
        for future in expired:
            if future.set_running_or_notify_cancel():
                future.set_exception(self._waited_too_long())
        return len(expired)

    def refuse(self, reason: Unavailable) -> None:
        """Fail every waiting call, and every later one, with `reason`; the running call goes on."""
        with self._lock:
            self._refusal = reason
            waiting = [item[0] for item in self._queue]
            self._queue.clear()
        for future in waiting:
            if future.set_running_or_notify_cancel():
                future.set_exception(reason)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            cancelled = [item[0] for item in self._queue] if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
            self._wake.notify_all()
            thread = self._thread
        for future in cancelled:
            future.cancel()
        if wait and thread is not None:
            thread.join()
