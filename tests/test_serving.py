"""The scoring runtime over real HTTP on 127.0.0.1: templates, bad input, init, timeouts, auth, workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from serving.protocol import new_request_id
from tests.helpers import (SEED, STARTUP_S, TEMPLATES, Served, serve, start_process, stop_process, wait_ready,
                           write_script)

@pytest.fixture
def sklearn_service(tmp_path, model_files) -> Iterator[Served]:
    with serve(TEMPLATES / "sklearn" / "score.py", tmp_path, model_dir=model_files[0].parent) as s:
        yield s


# ---- the templates ------------------------------------------------------------------------

def test_sklearn_template_scores_the_seed_example(sklearn_service):
    r = sklearn_service.post(httpx.Request("POST", "/", json=SEED).content)
    assert r.status_code == 200, r.text
    predictions = r.json()
    assert len(predictions) == 2 and all(isinstance(p, float) for p in predictions)


def test_onnx_template_gives_the_same_predictions(tmp_path, model_files, sklearn_service):
    expected = sklearn_service.post(httpx.Request("POST", "/", json=SEED).content).json()
    onnx_dir = tmp_path / "onnx"
    onnx_dir.mkdir()
    (onnx_dir / model_files[1].name).write_bytes(model_files[1].read_bytes())
    with serve(TEMPLATES / "onnx" / "score.py", tmp_path, model_dir=onnx_dir) as s:
        got = s.post(httpx.Request("POST", "/", json=SEED).content).json()
    assert got == pytest.approx(expected, rel=1e-4)


def test_decorated_script_has_a_swagger_from_its_schema(sklearn_service):
    doc = sklearn_service.get("/swagger.json").json()
    # Azure ML's layout: the schemas are definitions that /score refers to.
    assert doc["paths"]["/score"]["post"]["parameters"][0]["schema"] == {"$ref": "#/definitions/ServiceInput"}
    assert doc["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    assert doc["definitions"]["ServiceOutput"]["type"] == "array"


def test_request_ids_are_echoed(sklearn_service):
    r = sklearn_service.post(httpx.Request("POST", "/", json=SEED).content, {"x-ms-request-id": "abc-123"})
    assert r.headers["x-ms-request-id"] == "abc-123" and r.headers["x-request-id"] == "abc-123"
    generated = sklearn_service.post(b"{bad")
    assert generated.headers["x-request-id"] == generated.json()["request_id"]
    # Made here when the client sends none: a random version-4 UUID, as Azure ML's server makes them.
    assert uuid.UUID(generated.headers["x-request-id"]).version == 4


def test_generated_request_ids_are_distinct_version_4_uuids():
    ids = [new_request_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_script_that_seeds_random_does_not_repeat_request_ids():
    import random

    random.seed(1234)
    first = new_request_id()
    random.seed(1234)
    assert new_request_id() != first


def test_forked_workers_do_not_repeat_each_others_request_ids():
    # Workers are forked from one master: each must draw its own ids, not the master's sequence.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then exit at once
        os.close(read)
        os.write(write, " ".join(new_request_id() for _ in range(5)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    assert len(child) == 5 and not child & {new_request_id() for _ in range(5)}


# ---- bad input: precise JSON errors, and the server stays up ------------------------------

@pytest.mark.parametrize("body,status,words", [
    (b"{bad", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (b'{"rows": [[1]]}', 400, "missing input 'data'"),  # other keys are ignored, as in Azure ML
    (b"{}", 400, "missing input 'data'"),
    (b"\xff\xfe", 400, "not valid UTF-8"),
])
def test_bad_input_is_a_400_with_a_reason(sklearn_service, body, status, words):
    r = sklearn_service.post(body)
    assert r.status_code == status and words in r.json()["error"]
    assert sklearn_service.post(httpx.Request("POST", "/", json=SEED).content).status_code == 200


def test_unsupported_media_type(sklearn_service):
    r = sklearn_service.post(b"data=1", {"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "unsupported media type" in r.json()["error"]


def test_unknown_route_and_method(sklearn_service):
    assert sklearn_service.get("/nope").status_code == 404
    r = httpx.put(sklearn_service.url + "/score", content=b"{}")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST, OPTIONS" and r.json()["error"]


def test_body_over_the_limit_is_a_413(tmp_path, model_files):
    with serve(TEMPLATES / "sklearn" / "score.py", tmp_path, model_dir=model_files[0].parent,
               MAX_REQUEST_BYTES="32") as s:
        r = s.post(httpx.Request("POST", "/", json=SEED).content)
        assert r.status_code == 413 and "32-byte limit" in r.json()["error"]
        # Chunked, without a content length: cut off while reading.
        chunks = iter([b'{"data": [' + b"1," * 40, b"1]}"])
        r = httpx.post(s.url + "/score", content=chunks, headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_exception_in_run_is_a_500_with_traceback_only_in_the_log(tmp_path):
    script = write_script(tmp_path, """
        def init():
            pass
        def run(raw):
            if raw == "boom":
                raise KeyError("secret-internal-detail")
            return {"echo": raw}
    """)
    with serve(script, tmp_path) as s:
        r = s.post(b"boom", {"content-type": "text/plain", "x-request-id": "req-9"})
        assert r.status_code == 500
        assert "secret-internal-detail" not in r.text and r.json()["request_id"] == "req-9"
        assert r.headers["x-ms-run-function-failed"] == "True"
        assert s.post(b"fine").json() == {"echo": "fine"}
    log = s.log.read_text()
    assert "req-9" in log and "Traceback" in log and "secret-internal-detail" in log


def test_run_over_the_timeout(tmp_path):
    script = write_script(tmp_path, """
        import time
        def init():
            pass
        def run(raw):
            time.sleep(float(raw))
            return "done"
    """)
    with serve(script, tmp_path, SCORING_TIMEOUT_MS="300") as s:
        r = s.post(b"2")
        assert r.status_code == 504 and "300 ms" in r.json()["error"]


def test_response_object_is_passed_through(tmp_path):
    script = write_script(tmp_path, """
        class AMLResponse:
            def __init__(self, message, status_code):
                self.status_code = status_code
                self.headers = {"Content-Type": "text/plain", "X-Custom": "yes"}
                self._body = message.encode()
            def get_data(self):
                return self._body
        def init():
            pass
        def run(raw):
            return AMLResponse("created " + raw, 201)
    """)
    with serve(script, tmp_path) as s:
        r = s.post(b"x")
    assert r.status_code == 201 and r.text == "created x"
    assert r.headers["content-type"] == "text/plain" and r.headers["x-custom"] == "yes"


# ---- auth -----------------------------------------------------------------------------------

def test_auth_keys(sklearn_service, tmp_path, model_files):
    body = httpx.Request("POST", "/", json=SEED).content
    with serve(TEMPLATES / "sklearn" / "score.py", tmp_path, model_dir=model_files[0].parent,
               SCORING_AUTH_KEYS="primary-key,secondary-key") as s:
        assert s.post(body).status_code == 401
        assert s.post(body, {"authorization": "Bearer wrong"}).status_code == 401
        assert s.post(body, {"authorization": "Basic primary-key"}).status_code == 401
        assert s.post(body, {"authorization": "Bearer primary-key"}).status_code == 200
        assert s.post(body, {"authorization": "Bearer secondary-key"}).status_code == 200
        assert s.get("/").status_code == 200  # probes need no key


# ---- lifecycle ------------------------------------------------------------------------------

def test_init_failure_exits_non_zero_naming_the_script(tmp_path):
    script = write_script(tmp_path, """
        def init():
            raise RuntimeError("model file missing")
        def run(raw):
            return raw
    """, name="broken_score.py")
    proc, url, log = start_process(script, None, {}, tmp_path)
    assert proc.wait(timeout=STARTUP_S) != 0
    text = log.read_text()
    assert "broken_score.py" in text and "model file missing" in text


def test_script_without_run_fails_to_start(tmp_path):
    script = write_script(tmp_path, "def init():\n    pass\n")
    proc, url, log = start_process(script, None, {}, tmp_path)
    assert proc.wait(timeout=STARTUP_S) != 0
    assert "must define init() and run()" in log.read_text()


def in_thread(fn):
    import threading

    out: dict = {}

    def call() -> None:
        out["r"] = fn()

    t = threading.Thread(target=call, daemon=True)
    t.start()
    return t, out


def test_not_ready_until_init_finishes(tmp_path):
    gate = tmp_path / "gate"
    script = write_script(tmp_path, f"""
        import pathlib, time
        def init():
            while not pathlib.Path({str(gate)!r}).exists():
                time.sleep(0.02)
        def run(raw):
            return "ok"
    """)
    proc, url, log = start_process(script, None, {}, tmp_path)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:  # wait until the server answers at all
            try:
                ready = httpx.get(url + "/ready", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.05)
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        # `/` and `/score` are answered once init() is done, as Azure ML's server answers them: held, not refused.
        held = [in_thread(lambda: httpx.get(url + "/", timeout=30)),
                in_thread(lambda: httpx.post(url + "/score", content=b"x", headers={"content-type": "text/plain"},
                                             timeout=30))]
        time.sleep(0.5)
        assert all(t.is_alive() for t, _ in held)
        gate.write_text("go")
        for t, out in held:
            t.join(30)
        assert [out["r"].status_code for _, out in held] == [200, 200] and held[1][1]["r"].text == '"ok"'
        wait_ready(proc, url, log)
        # A string from run() is a JSON string, as in Azure ML.
        assert httpx.post(url + "/score", content=b"x", headers={"content-type": "text/plain"}).text == '"ok"'
    finally:
        stop_process(proc)


def test_several_workers_share_the_port(tmp_path):
    script = write_script(tmp_path, """
        import os
        def init():
            pass
        def run(raw):
            return os.getpid()
    """)
    with serve(script, tmp_path, WORKER_COUNT="2") as s:
        # Wait until both workers have finished init and accept connections.
        pids: set[int] = set()
        deadline = time.monotonic() + STARTUP_S
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client() as fresh:  # a new connection each time, so the kernel spreads them
                r = fresh.post(s.url + "/score", content=b"x", headers={"content-type": "text/plain"})
                if r.status_code == 200:
                    pids.add(r.json())
        assert len(pids) == 2 and s.proc.pid not in pids


def test_sigterm_finishes_requests_in_flight(tmp_path):
    started = tmp_path / "started"
    script = write_script(tmp_path, f"""
        import pathlib, time
        def init():
            pass
        def run(raw):
            pathlib.Path({str(started)!r}).write_text("in flight")
            time.sleep(1.0)
            return "finished"
    """)
    proc, url, log = start_process(script, None, {}, tmp_path)
    try:
        wait_ready(proc, url, log)
        result: dict = {}

        def call() -> None:
            result["r"] = httpx.post(url + "/score", content=b"x", headers={"content-type": "text/plain"}, timeout=30)

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 10
        while not started.exists():
            assert time.monotonic() < deadline, "run() never started"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        t.join(timeout=30)
        assert result["r"].status_code == 200 and result["r"].json() == "finished"
        # uvicorn re-raises the SIGTERM it caught once it has drained, so the exit is by that signal.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        stop_process(proc)
