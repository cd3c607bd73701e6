"""The scoring runtime's process model, limits and HTTPS, over real connections on 127.0.0.1.

Each test starts `python -m serving` as a process on a small score.py and stops it by PID. Assertions
are on outcomes (statuses, which worker answered, exit codes, who answered first), with generous
deadlines rather than timings, so they hold on two loaded cores.
"""

from __future__ import annotations

import os
import resource
import select
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

from serving import settings as names
from serving.settings import Settings, from_environ
from serving.tls import write_self_signed
from tests.helpers import ROOT, free_port

STARTUP_S = 60
DEADLINE_S = 60
TEXT = {"content-type": "text/plain"}

# run("sleep 1.5") sleeps, run("crash") kills its worker, run("hold-gil") runs a regular expression
# that backtracks for hours without releasing the GIL, anything else answers which worker ran it.
SCRIPT = """
    import os, pathlib, re, time, uuid
    MARKERS = pathlib.Path(__file__).parent / "started"
    def init():
        MARKERS.mkdir(exist_ok=True)
    def run(raw):
        command, _, arg = raw.partition(" ")
        if command == "sleep":
            (MARKERS / uuid.uuid4().hex).write_text(str(os.getpid()))
            time.sleep(float(arg))
        elif command == "crash":
            os._exit(1)
        elif command == "hold-gil":
            (MARKERS / uuid.uuid4().hex).write_text(str(os.getpid()))
            re.match(r"(a+)+$", "a" * 64 + "b")
        return {"pid": os.getpid()}
"""


class Service:
    """A running `python -m serving` and a client that opens a new connection per request."""

    def __init__(self, proc: subprocess.Popen, port: int, log: Path, folder: Path, verify: ssl.SSLContext | bool):
        self.proc, self.port, self.log, self.folder, self.verify = proc, port, log, folder, verify
        self.url = f"{'https' if verify is not False else 'http'}://127.0.0.1:{port}"

    def post(self, body: str, timeout: float = 30, headers: Optional[dict] = None) -> httpx.Response:
        return httpx.post(self.url + "/score", content=body.encode(), headers={**TEXT, **(headers or {})},
                          timeout=timeout, verify=self.verify)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=30, verify=self.verify)

    def started(self) -> int:
        """How many `sleep` calls have begun running."""
        markers = self.folder / "started"
        return len(list(markers.iterdir())) if markers.is_dir() else 0

    def clients(self) -> int:
        """How many client connections to the service's port the kernel holds established (whether or
        not the server has accepted them yet): /proc/net/tcp's sockets whose local port is ours."""
        established = 0
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            established += int(local.rsplit(":", 1)[1], 16) == self.port and state == "01"  # TCP_ESTABLISHED
        return established

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log.read_text()}"
            try:
                if self.get(names.READINESS_PATH).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"not ready within {STARTUP_S}s:\n{self.log.read_text()}")

    def worker_pids(self, count: int) -> set[int]:
        """Score until `count` different workers have answered (each worker has finished init())."""
        pids: set[int] = set()
        deadline = time.monotonic() + STARTUP_S
        while len(pids) < count:
            assert time.monotonic() < deadline, f"saw workers {pids}:\n{self.log.read_text()}"
            r = self.post("who")
            if r.status_code == 200:
                pids.add(r.json()["pid"])
        return pids


def start(tmp_path: Path, script: str = SCRIPT, tls: bool = False, **env: str) -> Service:
    folder = tmp_path / f"svc-{len(list(tmp_path.glob('svc-*')))}"
    folder.mkdir()
    (folder / "score.py").write_text(textwrap.dedent(script))
    port = free_port()
    verify: ssl.SSLContext | bool = False
    if tls:
        cert, key = write_self_signed(folder / "tls")
        env = {names.TLS_CERT_FILE: str(cert), names.TLS_KEY_FILE: str(key), **env}
        verify = ssl.create_default_context(cafile=str(cert))
    log = folder / "serving.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--entry-script", str(folder / "score.py"), "--port", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )
    return Service(proc, port, log, folder, verify)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def serve(tmp_path: Path, script: str = SCRIPT, tls: bool = False, **env: str) -> Iterator[Service]:
    svc = start(tmp_path, script, tls, **env)
    try:
        svc.wait_ready()
        yield svc
    finally:
        stop(svc.proc)


def in_background(fn, *args) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def call() -> None:
        try:
            out["r"] = fn(*args)
        except Exception as err:  # noqa: BLE001 - the test looks at it
            out["error"] = err

    t = threading.Thread(target=call, daemon=True)
    t.start()
    return t, out


def until(condition, what: str, deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---- a stuck run() costs one request, not the replica -------------------------------------

def test_a_stuck_run_gets_504_and_its_worker_is_replaced(tmp_path):
    with serve(tmp_path, SCORING_TIMEOUT_MS="500") as svc:
        (stuck_pid,) = svc.worker_pids(1)
        r = svc.post("sleep 3600")
        assert r.status_code == 504 and "500 ms" in r.json()["error"]
        # The only worker is replaced: meanwhile callers get 503 with Retry-After, never a hang.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert time.monotonic() < deadline, svc.log.read_text()
            r = svc.post("who")
            if r.status_code == 200:
                break
            assert r.status_code == 503 and r.headers["retry-after"], r.text
        assert r.json()["pid"] != stuck_pid
        assert svc.proc.poll() is None
    assert "being replaced" in svc.log.read_text()


def test_with_two_workers_the_healthy_one_serves_while_the_stuck_one_is_replaced(tmp_path):
    with serve(tmp_path, WORKER_COUNT="2", SCORING_TIMEOUT_MS="500") as svc:
        first = svc.worker_pids(2)
        assert svc.post("sleep 3600").status_code == 504
        stuck = int((svc.folder / "started").iterdir().__next__().read_text())
        # Every request after the 504 is answered, and the replica stays ready throughout.
        answered = []
        for _ in range(10):
            r = svc.post("who")
            assert r.status_code == 200, r.text
            answered.append(r.json()["pid"])
            assert svc.get(names.READINESS_PATH).status_code == 200
        assert stuck not in answered
        until(lambda: len(svc.worker_pids(2) - first) == 1, "a replacement worker")
        assert svc.proc.poll() is None


def test_a_run_that_blocks_its_worker_entirely_is_killed_by_the_master(tmp_path):
    with serve(tmp_path, SCORING_TIMEOUT_MS="500") as svc:
        # Holding the GIL, the run() freezes its worker's event loop: no 504 can be sent, and the
        # worker cannot replace itself. The master kills it a few seconds past the timeout.
        with pytest.raises(httpx.TransportError):
            svc.post("hold-gil", timeout=DEADLINE_S)
        deadline = time.monotonic() + DEADLINE_S
        while (r := svc.post("who")).status_code != 200:
            assert r.status_code == 503 and time.monotonic() < deadline, r.text
        assert svc.proc.poll() is None
    assert "did not replace itself; killing it" in svc.log.read_text()


def test_slow_requests_spread_across_workers(tmp_path):
    with serve(tmp_path, WORKER_COUNT="2") as svc:
        svc.worker_pids(2)
        # Sent one after another, each once the ones before are running, so every worker decides with
        # its peer's current load: the guarantee is about that decision, not about which of two
        # starved processes the kernel wakes first (4 requests at one instant on a loaded 2-core
        # machine were once split 3/1, the idle worker not scheduled before the busy one re-checked).
        calls = []
        for n in range(2):
            calls.append(in_background(svc.post, "sleep 2"))
            until(lambda: svc.started() == n + 1, f"run() number {n + 1}")
        calls += [in_background(svc.post, "sleep 2") for _ in range(2)]
        for t, _ in calls:
            t.join(DEADLINE_S)
        statuses = [out["r"].status_code for _, out in calls]
        assert statuses == [200] * 4, [out["r"].text for _, out in calls]
        # Two each: no worker took a third request while the other held only one.
        assert sorted(Counter(out["r"].json()["pid"] for _, out in calls).values()) == [2, 2]


def test_workers_accept_for_themselves_the_master_serves_no_connection(tmp_path):
    with serve(tmp_path, WORKER_COUNT="2") as svc:
        svc.worker_pids(2)
        # A stopped master can neither accept nor hand out connections: every answer below comes
        # from a worker that took the connection from the listening socket itself.
        svc.proc.send_signal(signal.SIGSTOP)
        try:
            answered = [svc.post("who") for _ in range(20)]
        finally:
            svc.proc.send_signal(signal.SIGCONT)
        assert [r.status_code for r in answered] == [200] * 20, [r.text for r in answered]
        assert svc.proc.pid not in {r.json()["pid"] for r in answered}


def test_a_busy_worker_leaves_new_connections_to_an_idle_one(tmp_path):
    with serve(tmp_path, WORKER_COUNT="2") as svc:
        svc.worker_pids(2)
        slow, out = in_background(svc.post, "sleep 3")
        until(lambda: svc.started() == 1, "the slow run")
        busy = int(next((svc.folder / "started").iterdir()).read_text())
        # Each on a new connection while the slow run() goes on: all go to the idle worker, none waits.
        assert all(svc.post("who").json()["pid"] != busy for _ in range(10))
        assert slow.is_alive()
        slow.join(DEADLINE_S)
        assert out["r"].status_code == 200


def test_a_crashed_worker_is_restarted(tmp_path):
    with serve(tmp_path, WORKER_COUNT="2") as svc:
        before = svc.worker_pids(2)
        with pytest.raises(httpx.TransportError):
            svc.post("crash")
        until(lambda: len(svc.worker_pids(2) - before) == 1, "a restarted worker")
        assert svc.proc.poll() is None
    assert "exited with code 1" in svc.log.read_text()


def test_a_failing_init_exits_3_and_is_not_restarted(tmp_path):
    svc = start(tmp_path, """
        def init():
            raise RuntimeError("model file missing")
        def run(raw):
            return raw
    """, WORKER_COUNT="2")
    try:
        assert svc.proc.wait(timeout=STARTUP_S) == 3
    finally:
        stop(svc.proc)
    log = svc.log.read_text()
    assert "score.py" in log and "model file missing" in log


# ---- SIGTERM ------------------------------------------------------------------------------

def test_sigterm_finishes_requests_in_flight_and_exits_0(tmp_path):
    with serve(tmp_path, WORKER_COUNT="2") as svc:
        svc.worker_pids(2)
        calls = [in_background(svc.post, "sleep 2") for _ in range(4)]
        until(lambda: svc.started() >= 2, "two runs in flight")
        svc.proc.send_signal(signal.SIGTERM)
        for t, _ in calls:
            t.join(DEADLINE_S)
        assert [out["r"].status_code for _, out in calls] == [200] * 4, [out["r"].text for _, out in calls]
        assert svc.proc.wait(timeout=DEADLINE_S) == 0


def test_sigterm_stops_waiting_at_the_grace_period_and_exits_0(tmp_path):
    with serve(tmp_path, SHUTDOWN_GRACE_SECONDS="1") as svc:
        call, out = in_background(svc.post, "sleep 3600", 120)
        until(lambda: svc.started() == 1, "the run in flight")
        svc.proc.send_signal(signal.SIGTERM)
        # The run would take an hour: the service gives up on it after the grace period.
        assert svc.proc.wait(timeout=DEADLINE_S) == 0
        call.join(DEADLINE_S)
        assert "error" in out or out["r"].status_code >= 500


# ---- limits --------------------------------------------------------------------------------

def test_a_16_mb_header_is_431_and_not_echoed(tmp_path):
    with serve(tmp_path) as svc:
        r = svc.post("who", headers={"x-request-id": "a" * 16 * 1024 * 1024})
        assert r.status_code == 431 and "over the 32768-byte limit" in r.json()["error"]
        assert len(r.content) < 1024 and len(r.headers["x-request-id"]) < 100
        assert svc.post("who").status_code == 200


def test_silent_connections_do_not_lock_out_new_requests(tmp_path, request):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if max(soft, hard) < 1200:
        pytest.skip("needs 1,200 open files")
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        request.addfinalizer(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    with serve(tmp_path) as svc:  # the defaults: one worker, 1,000 connections, 10 s for the headers
        silent = [socket.create_connection(("127.0.0.1", svc.port)) for _ in range(1050)]
        try:
            assert svc.post("who").status_code == 200
            # And none of them is kept for ever: every silent connection is closed by the server.
            with selectors.DefaultSelector() as waiting:  # select() stops at descriptor 1023
                for s in silent:
                    waiting.register(s, selectors.EVENT_READ)
                deadline = time.monotonic() + DEADLINE_S
                while waiting.get_map():
                    assert time.monotonic() < deadline, f"{len(waiting.get_map())} silent connections still open"
                    for key, _ in waiting.select(1.0):
                        try:
                            assert key.fileobj.recv(1024) == b""  # type: ignore[union-attr]
                        except ConnectionResetError:
                            pass
                        waiting.unregister(key.fileobj)
            assert svc.post("who").status_code == 200
        finally:
            for s in silent:
                s.close()


def _read_until_closed(sock: socket.socket, deadline_s: float = DEADLINE_S) -> bytes:
    sock.settimeout(deadline_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_dribbled_headers_are_cut_off_with_408(tmp_path):
    with serve(tmp_path, HEADER_TIMEOUT_SECONDS="1") as svc:
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\n")
            answer = b""
            for i in range(600):  # a header line every 0.1 s would take a minute
                readable, _, _ = select.select([s], [], [], 0.1)
                if readable:
                    answer = _read_until_closed(s)
                    break
                try:
                    s.sendall(b"x-slow-%d: 1\r\n" % i)
                except (BrokenPipeError, ConnectionResetError):
                    break
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"did not arrive within 1 s" in answer
        assert svc.post("who").status_code == 200


def test_a_body_that_stops_arriving_is_408(tmp_path):
    with serve(tmp_path, BODY_TIMEOUT_SECONDS="1") as svc:
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nwho")
            answer = _read_until_closed(s)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body did not arrive" in answer, answer
        assert svc.post("who").status_code == 200


def test_an_idle_kept_alive_connection_is_closed(tmp_path):
    with serve(tmp_path, KEEPALIVE_TIMEOUT_SECONDS="1") as svc:
        with socket.create_connection(("127.0.0.1", svc.port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_until_closed(s)  # returns once the server closes the idle connection
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


def test_overload_is_answered_503_with_retry_after_not_by_hanging(tmp_path):
    with serve(tmp_path, MAX_QUEUE_WAIT_MS="300") as svc:
        busy, busy_out = in_background(svc.post, "sleep 5")
        until(lambda: svc.started() == 1, "the first run")
        r = svc.post("who")
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"]
        assert busy.is_alive()  # answered while the scoring thread was still busy, not after
        busy.join(DEADLINE_S)
        assert busy_out["r"].status_code == 200


def test_past_the_connection_limit_a_new_request_gets_503_while_all_are_busy(tmp_path):
    with serve(tmp_path, MAX_CONNECTIONS="2") as svc:
        calls = [in_background(svc.post, "sleep 3") for _ in range(2)]
        until(lambda: svc.started() == 1, "the first run")
        # Both calls' connections queued before the probe's: the server takes them in that order, so
        # the probe is the third whatever the machine's load (CI once saw it beat the second).
        until(lambda: svc.clients() == 2, "both calls connected")
        r = svc.get("/")
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert "open connections" in r.json()["error"]
        for t, out in calls:
            t.join(DEADLINE_S)
            assert out["r"].status_code == 200
        assert svc.get("/").status_code == 200


# ---- HTTPS ---------------------------------------------------------------------------------

def test_https_with_a_certificate_generated_here(tmp_path):
    with serve(tmp_path, tls=True, WORKER_COUNT="2") as svc:  # wait_ready already used /ready over HTTPS
        assert svc.url.startswith("https://")
        assert svc.get(names.LIVENESS_PATH).status_code == 200
        assert len(svc.worker_pids(2)) == 2
        with pytest.raises(httpx.TransportError):
            httpx.get(f"https://127.0.0.1:{svc.port}/", timeout=30)  # not trusted without the CA
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{svc.port}/", timeout=30)  # no plain HTTP on the port
        r = svc.post("who", headers={"x-request-id": "a" * 100_000})
        assert r.status_code == 431


def test_tls_needs_both_files(tmp_path):
    with pytest.raises(SystemExit, match=f"{names.TLS_CERT_FILE} and {names.TLS_KEY_FILE}"):
        from_environ({names.ENTRY_SCRIPT: "score.py", names.TLS_CERT_FILE: "cert.pem"})
    svc = start(tmp_path, **{names.TLS_CERT_FILE: str(tmp_path / "missing.pem"),
                             names.TLS_KEY_FILE: str(tmp_path / "missing.key")})
    assert svc.proc.wait(timeout=STARTUP_S) != 0
    assert names.TLS_CERT_FILE in svc.log.read_text()


def test_settings_round_trip_through_the_environment():
    settings = Settings(entry_script="score.py", workers=3, max_queue_wait_ms=700, max_header_bytes=4096,
                        header_timeout_s=3, body_timeout_s=9, keepalive_timeout_s=2, max_connections=50,
                        shutdown_grace_s=7, tls_cert_file="c.pem", tls_key_file="k.pem")
    assert from_environ(settings.environ()) == settings
    assert settings.scheme == "https" and Settings(entry_script="s.py").scheme == "http"
