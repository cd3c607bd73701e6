"""The one thread that runs a worker's `init()` and every `run()`, with what the process model needs to know.

An `Executor` that runs calls one at a time, as Azure ML's server does, and also: says since when the
current call has been running (so a stuck `run()` is seen and its worker replaced), refuses calls that
waited too long for the thread (overload is answered 503, not by hanging), and can fail every waiting
call at once (the worker is being replaced or stops). The thread is a daemon: a `run()` that never
returns cannot keep the process from exiting.

`run()` goes through `call()`, which hands the result straight to an event loop future: every request
crosses threads twice, and `loop.run_in_executor` plus `asyncio.wait_for` (a concurrent future with its
own lock and callbacks, chained to an asyncio future, and a task for the timeout) cost about as much
CPU as the seed's whole `run()` there (benchmarks/RESULTS.md). `submit()` stays for the rare calls.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from typing import Any, Callable, Optional, Union

RETRY_AFTER_S = 1
"""What 503 answers put in `Retry-After`: another worker (or the replacement) is usually there by then."""


class Unavailable(Exception):
    """The call was not run and may be retried: answered 503 with `Retry-After`."""


class _Call:
    """A call waiting for the scoring thread, delivering its outcome to a concurrent future."""

    __slots__ = ("fn", "args", "kwargs", "queued_at", "future")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict, future: Future):
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.queued_at = time.monotonic()
        self.future = future

    def claim(self) -> bool:
        """Whether the call is still wanted; the thread runs it if so (called under the thread's lock)."""
        return self.future.set_running_or_notify_cancel()

    def finish(self, value: Any, error: Optional[BaseException]) -> None:
        if error is None:
            self.future.set_result(value)
        else:
            self.future.set_exception(error)

    def fail(self, error: BaseException) -> None:
        """Fail a call that never ran (waited too long, or refused)."""
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(error)

    def cancel(self) -> None:
        self.future.cancel()


class _LoopCall:
    """A call whose outcome goes to an asyncio future, resolved on its loop's thread."""

    __slots__ = ("fn", "args", "kwargs", "queued_at", "future", "loop", "timer")

    def __init__(self, fn: Callable[..., Any], args: tuple, loop: asyncio.AbstractEventLoop):
        self.fn, self.args, self.kwargs = fn, args, {}
        self.queued_at = time.monotonic()
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.timer: Optional[asyncio.TimerHandle] = None

    def claim(self) -> bool:
        # Done before it started: timed out (set under the thread's lock, as this is called) or its
        # task cancelled (the worker is stopping). A future's state is a plain read from this thread.
        return not self.future.done()

    def finish(self, value: Any, error: Optional[BaseException]) -> None:
        try:
            self.loop.call_soon_threadsafe(self._resolve, value, error)
        except RuntimeError:
            pass  # the loop is closed (the worker has stopped): nobody waits for the outcome

    def fail(self, error: BaseException) -> None:
        self.finish(None, error)

    def cancel(self) -> None:
        self.fail(asyncio.CancelledError())

    def _resolve(self, value: Any, error: Optional[BaseException]) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.future.done():
            return  # timed out meanwhile: the caller has had its answer
        if error is None:
            self.future.set_result(value)
        else:
            self.future.set_exception(error)


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
        self._queue: deque[Union[_Call, _LoopCall]] = deque()
        self._refusal: Optional[Unavailable] = None
        self._shutdown = False
        self._thread: Optional[threading.Thread] = None

    @property
    def waiting(self) -> int:
        """Calls queued behind the running one."""
        return len(self._queue)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        self._enqueue(_Call(fn, args, kwargs, future))
        return future

    def call(self, loop: asyncio.AbstractEventLoop, timeout_s: float, fn: Callable[..., Any],
             *args: Any) -> "asyncio.Future[Any]":
        """Run `fn(*args)` on the thread; the future (of `loop`, whose thread must call this) has its
        outcome, or `asyncio.TimeoutError` once `timeout_s` has passed since the call was queued. A call
        that times out before it started is never run."""
        call = _LoopCall(fn, args, loop)
        self._enqueue(call)
        # Armed once queued (a refused call is resolved already): both run on this loop's thread.
        if not call.future.done():
            call.timer = loop.call_later(timeout_s, self._time_out, call)
        return call.future

    def _time_out(self, call: _LoopCall) -> None:
        # Under the lock the thread claims calls with: one not started by now is never run.
        with self._lock:
            if not call.future.done():
                call.future.set_exception(asyncio.TimeoutError())

    def _enqueue(self, call: Union[_Call, _LoopCall]) -> None:
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot run new calls after shutdown")
            if self._refusal is None:
                self._queue.append(call)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                    self._thread.start()
                self._wake.notify()
                return
        call.fail(self._refusal)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._shutdown:
                    self._wake.wait()
                if not self._queue:
                    return
                call = self._queue.popleft()
                if not call.claim():
                    continue
                started = time.monotonic()
                if self.max_queue_wait_s is not None and started - call.queued_at > self.max_queue_wait_s:
                    call.finish(None, self._waited_too_long())
                    continue
                self.started_at = started
            if self.on_start is not None:
                self.on_start(started)
            try:
                result = call.fn(*call.args, **call.kwargs)
            except BaseException as err:  # noqa: BLE001 - the caller gets whatever user code raised
                self._finished()
                call.finish(None, err)
            else:
                self._finished()
                call.finish(result, None)

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
            while self._queue and self._queue[0].queued_at < limit:
                expired.append(self._queue.popleft())
        for call in expired:
            call.fail(self._waited_too_long())
        return len(expired)

    def refuse(self, reason: Unavailable) -> None:
        """Fail every waiting call, and every later one, with `reason`; the running call goes on."""
        with self._lock:
            self._refusal = reason
            waiting = list(self._queue)
            self._queue.clear()
        for call in waiting:
            call.fail(reason)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            cancelled = list(self._queue) if cancel_futures else []
            if cancel_futures:
                self._queue.clear()
            self._wake.notify_all()
            thread = self._thread
        for call in cancelled:
            call.cancel()
        if wait and thread is not None:
            thread.join()
