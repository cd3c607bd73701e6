"""The scoring thread's hand-off to the event loop: every call answered once, none run when unwanted."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.scoring_thread import ScoringThread, Unavailable


def run(coro):
    """Run `coro` on a loop of its own. Not asyncio.run: it leaves the thread with no current loop
    set, and the Pulumi mock tests that follow in the same process need one."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_a_call_answers_on_its_loop():
    thread = ScoringThread()

    async def main():
        return await thread.call(asyncio.get_running_loop(), 5, lambda x: (x * 2, threading.current_thread().name), 21)

    assert run(main()) == (42, "score")
    thread.shutdown()


def test_an_error_in_the_call_reaches_the_caller():
    thread = ScoringThread()

    def fail():
        raise ValueError("bad row")

    async def main():
        with pytest.raises(ValueError, match="bad row"):
            await thread.call(asyncio.get_running_loop(), 5, fail)

    run(main())
    thread.shutdown()


@pytest.mark.parametrize("how", ["timed out", "cancelled"])
def test_a_call_its_caller_gave_up_on_before_it_started_is_never_run(how):
    thread = ScoringThread()
    release = threading.Event()
    ran: list[str] = []

    async def main():
        loop = asyncio.get_running_loop()
        busy = thread.call(loop, 5, release.wait)
        if how == "timed out":
            with pytest.raises(asyncio.TimeoutError):
                await thread.call(loop, 0.05, ran.append, how)
        else:
            waiter = asyncio.ensure_future(thread.call(loop, 5, ran.append, how))
            await asyncio.sleep(0)
            waiter.cancel()
        release.set()
        await busy
        # The thread has moved on past the dropped call: a later call runs, the dropped one did not.
        await thread.call(loop, 5, ran.append, "later")

    run(main())
    assert ran == ["later"]
    thread.shutdown()


def test_refused_calls_are_answered_unavailable():
    thread = ScoringThread()

    async def main():
        loop = asyncio.get_running_loop()
        thread.refuse(Unavailable("being replaced"))
        with pytest.raises(Unavailable, match="being replaced"):
            await thread.call(loop, 5, lambda: None)

    run(main())
    thread.shutdown()


def test_a_call_that_ends_after_its_loop_closed_does_not_stop_the_thread():
    # A slow run() that returns after its worker's loop is gone: the outcome has nowhere to go, but
    # the thread must live on for the calls after it.
    thread = ScoringThread()
    release = threading.Event()
    loop = asyncio.new_event_loop()
    thread.call(loop, 5, release.wait)
    loop.close()
    release.set()
    done = thread.submit(lambda: "still serving")
    assert done.result(timeout=5) == "still serving"
    thread.shutdown()


def test_a_call_waiting_past_max_queue_wait_is_answered_unavailable():
    thread = ScoringThread(max_queue_wait_s=0.05)

    async def main():
        loop = asyncio.get_running_loop()
        busy = thread.call(loop, 5, time.sleep, 0.2)
        queued = thread.call(loop, 5, lambda: "late")
        with pytest.raises(Unavailable, match="overloaded"):
            await queued
        await busy

    run(main())
    thread.shutdown()
