"""The two halves of the one-process ceiling a scoring server can reach on this machine.

    python -m benchmarks.ceiling loop SCRIPT BODY_FILE SECONDS   # prints calls/s
    python -m benchmarks.ceiling bare PORT                       # serves until SIGTERM

`loop` times what every request costs whatever the server: the body's JSON parsed into run()'s
arguments, run() itself, its result serialized (through this runtime's own ScoringScript, so a script
with schema decorators is called as it is when served). `bare` is an HTTP/1.1 server with nothing in
it (uvloop and httptools, as this runtime's workers use, no framework): each request, its body read,
gets an empty 200. A request cannot cost less than the two together: requests/s of the ceiling =
1 / (1/loop + 1/bare).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Optional

import httptools
import uvloop

_EMPTY = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_EMPTY_CLOSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def loop(script_path: str, body: bytes, seconds: float) -> float:
    """Calls per second of parse -> run() -> serialize, in one thread, after a warm-up."""
    from serving.script import ScoringScript, to_result

    script = ScoringScript(script_path)
    script.init()

    def one() -> bytes:
        return to_result(script.call(script.parse("POST", "application/json", b"", body))).body

    for _ in range(200):
        one()
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        for _ in range(100):
            one()
        calls += 100
    return calls / elapsed


class _Bare(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.should_keep_alive():
            self.transport.write(_EMPTY)
        else:
            self.transport.write(_EMPTY_CLOSE)
            self.transport.close()


def bare(port: int) -> None:
    """Serve empty answers on 127.0.0.1:`port` until SIGTERM."""

    async def main() -> None:
        loop_ = asyncio.get_running_loop()
        server = await loop_.create_server(_Bare, "127.0.0.1", port, backlog=2048)
        stop = asyncio.Event()
        loop_.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    uvloop.run(main())


if __name__ == "__main__":
    if sys.argv[1:2] == ["loop"]:
        print(f"{loop(sys.argv[2], Path(sys.argv[3]).read_bytes(), float(sys.argv[4])):.1f}")
    elif sys.argv[1:2] == ["bare"]:
        bare(int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
