"""The same scripts and requests against this runtime and Azure ML's server, compared answer by answer.

Needs the reference server in `.venv-reference` (`bash benchmarks/run` makes it, or
`python3 -m venv .venv-reference && .venv-reference/bin/pip install 'azureml-inference-server-http>=1.5,<1.6'
'inference-schema[numpy-support,pandas-support]>=1.8,<1.9' 'pandas>=2.2,<3'`); skipped without it,
so CI does not depend on it. Where the reference answers 2xx, status, body, content type and Azure
ML's own headers must be the same; where it answers an error, this runtime's status must be the
one the README's table of deliberate differences gives.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

from tests import serving_scripts as scripts
from tests.helpers import ROOT, STARTUP_S, free_port, serve, write_script

REFERENCE = ROOT / ".venv-reference" / "bin" / "azmlinfsrv"
pytestmark = pytest.mark.skipif(
    not REFERENCE.exists(),
    reason=f"Azure ML's reference server is not installed at {REFERENCE} (bash benchmarks/run installs it)",
)

# Azure ML's own headers, compared by value; the timing and version headers only by presence.
SAME_VALUE = ("content-type", "x-ms-run-function-failed", "x-ms-client-request-id", "x-multi", "x-one",
              "access-control-allow-origin", "access-control-allow-methods", "access-control-allow-headers", "vary")
PRESENT = ("x-ms-run-fn-exec-ms", "x-ms-server-version", "x-request-id", "x-ms-request-id")


@dataclass
class Case:
    method: str
    path: str
    body: Optional[bytes] = None
    headers: dict[str, str] = field(default_factory=dict)
    ours: Optional[int] = None
    """This runtime's status where it deliberately differs from an error the reference answers."""
    files: Optional[dict] = None
    data: Optional[dict] = None
    body_differs: str = ""
    """Why this runtime's 2xx body deliberately differs from the reference's (status must still match)."""


JSON = {"content-type": "application/json"}
TEXT = {"content-type": "text/plain"}
CASES: dict[str, tuple[str, list[Case]]] = {
    "plain": (scripts.PLAIN, [
        Case("POST", "/score", b"world", TEXT),
        Case("POST", "/score", b"world"),
        Case("POST", "/score", b"world", JSON),
        *[Case("POST", "/score", v.encode(), TEXT)
          for v in ("none", "dumps", "dict", "list", "float", "nan", "unicode", "error", "env")],
        Case("POST", "/score", b"caf\xc3\xa9", {"content-type": "application/octet-stream"}),
        Case("POST", "/score", b"a=1&b=two", {"content-type": "application/x-www-form-urlencoded"},
             body_differs="the reference hands run() an empty string for a form body (Flask consumed it)"),
        Case("POST", "/score", b"<x/>", {"content-type": "application/xml"}),
        Case("POST", "/score", b"", TEXT),
        Case("GET", "/score?a=1&b=[1,2]&c=x&c=y&d=null"),
        Case("GET", "/score"),
        Case("OPTIONS", "/score"),
        Case("POST", "/score", b"\xff\xfe", {"content-type": "application/octet-stream"}),
        Case("PUT", "/score", b"x"),
        Case("DELETE", "/score"),
        Case("POST", "/score", b"raise", TEXT),
        Case("POST", "/score", b"bytes", TEXT, ours=200),  # reference: 500 (json.dumps of bytes)
        Case("POST", "/score", b"numpy", TEXT, ours=200),  # reference: 500 (json.dumps of an ndarray)
        Case("POST", "/score", b"x", {**TEXT, "x-ms-client-request-id": "client-1"}),
        Case("POST", "/score", b"x", {**TEXT, "x-ms-request-id": "legacy-1"}),
        Case("POST", "/score", b"x", {**TEXT, "x-request-id": "r" * 101}),
        Case("GET", "/"),
        Case("OPTIONS", "/"),
        Case("OPTIONS", "/swagger.json"),
        Case("HEAD", "/"),
        Case("GET", "/swagger.json"),
        Case("GET", "/swagger.json?version=3"),
        Case("GET", "/swagger.json?version=3.1"),
        Case("GET", "/swagger.json?version=2.0"),
        Case("GET", "/swagger.json?version=4"),
    ]),
    "headers": (scripts.HEADERS, [
        Case("POST", "/score", b"x", {**TEXT, "x-custom": "hello", "x-ms-client-request-id": "c-2"}),
        Case("POST", "/score", b"{}", {**JSON, "X-Custom": "upper"}),
    ]),
    "numpy": (scripts.NUMPY_SCHEMA, [
        Case("POST", "/score", b'{"data": [[1, 2], [3, 4.5]]}', JSON),
        Case("POST", "/score", b'{"data": [[1, 2]], "method": "predict"}', JSON),
        Case("POST", "/score", b'{"data": [[1, 2]]}', {"content-type": "application/json; charset=utf-8"}),
        Case("POST", "/score", b'{"data": [[1, 2]]}', {"content-type": "application/vnd.api+json"}),
        Case("GET", "/score?data=[[1,2]]"),
        Case("POST", "/score", b"{}", JSON),
        Case("POST", "/score", b"", JSON),
        Case("POST", "/score", b"[1]", JSON),
        Case("POST", "/score", b"{bad", JSON),
        Case("POST", "/score", b'{"data": [[1, 2]]}', TEXT),
        Case("POST", "/score", b'{"data": "not an array"}', JSON, ours=400),  # reference: 500
        Case("GET", "/swagger.json"),
        Case("GET", "/swagger.json?version=3"),
        Case("GET", "/swagger.json?version=3.1"),
    ]),
    "pandas": (scripts.PANDAS_SCHEMA, [
        Case("POST", "/score", b'{"data": [{"a": 1, "b": 2.5, "c": "y"}, {"a": 2, "b": 0, "c": "z"}], "scale": 3}', JSON),
        Case("POST", "/score", b'{"data": [{"a": 1, "b": 2.5, "c": "y"}], "scale": 1, "extra": true}', JSON),
        Case("POST", "/score", b'{"data": [{"a": "one", "b": 2.5, "c": "y"}], "scale": 1}', JSON, ours=400),
        Case("POST", "/score", b'{"data": [{"a": 1, "b": 2.5, "c": "y"}]}', JSON),
        Case("GET", "/swagger.json"),
        Case("GET", "/swagger.json?version=3"),
    ]),
    "standard": (scripts.STANDARD_SCHEMA, [
        Case("POST", "/score", b'{"text": "hello"}', JSON),
        Case("POST", "/score", b'{"text": 5}', JSON, ours=400),  # reference: 500 (int.upper in run)
        Case("GET", "/score?text=hi"),
        Case("GET", "/swagger.json"),
    ]),
    "raw": (scripts.RAW, [
        Case("GET", "/score?a=1&b=2"),
        Case("POST", "/score?a=1&a=2", b'{"j": 1}', {**JSON, "x-custom": "c"}),
        Case("POST", "/score", b"a=1&b=two", {"content-type": "application/x-www-form-urlencoded"}),
        Case("POST", "/score", b"\x00\x01binary", {"content-type": "application/octet-stream"}),
        *[Case("POST", f"/score?case={c}", b"x", TEXT)
          for c in ("dict", "str", "none", "json_str", "png", "failed", "multi")],
        Case("POST", "/score?case=file", files={"image": ("cat.png", b"\x89PNG" + b"\x00" * 100, "image/png")},
             data={"label": "cat"}),
        Case("PUT", "/score", b"x"),
        Case("GET", "/swagger.json"),
    ]),
    "stream": (scripts.STREAM, [
        Case("POST", "/score", b'{"items": ["s1", "s2", "s3"]}', JSON),
    ]),
    "werkzeug": (scripts.WERKZEUG_RESPONSE, [
        # The reference passes Flask responses through but JSON-encodes (and fails on) Werkzeug's.
        Case("POST", "/score", b"x", TEXT, ours=200),
    ]),
    "cors": (scripts.PLAIN, [
        Case("POST", "/score", b"x", {**TEXT, "origin": "http://a.example"}),
        Case("POST", "/score", b"x", {**TEXT, "origin": "http://other.example"}),
        Case("POST", "/score", b"x", TEXT),
        Case("OPTIONS", "/score", None, {"origin": "http://b.example", "access-control-request-method": "POST",
                                         "access-control-request-headers": "Content-Type, Authorization"}),
        Case("GET", "/", None, {"origin": "http://b.example"}),
    ]),
}
ENV = {"cors": {"AML_CORS_ORIGINS": "http://a.example, http://b.example"}}


@contextmanager
def reference_server(script: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = script.parent / f"reference-{port}.log"
    proc = subprocess.Popen(
        [str(REFERENCE), "--entry_script", str(script), "--port", str(port)], cwd=script.parent,
        env={**os.environ, "AML_APP_ROOT": str(script.parent), **env},
        stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url
    finally:
        # gunicorn's master and its workers: the session this test started for them.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ask(url: str, case: Case) -> httpx.Response:
    return httpx.request(case.method, url + case.path, content=case.body, headers=case.headers,
                         files=case.files, data=case.data, timeout=30)


def _compare(name: str, case: Case, ref: httpx.Response, ours: httpx.Response) -> list[str]:
    where = f"{name}: {case.method} {case.path} {case.body!r:.60}"
    if not 200 <= ref.status_code < 300:
        want = case.ours if case.ours is not None else ref.status_code
        if ours.status_code != want:
            return [f"{where}: reference {ref.status_code}, ours {ours.status_code}, expected {want}"]
        return []
    problems = []
    if ours.status_code != ref.status_code:
        problems.append(f"{where}: status reference {ref.status_code}, ours {ours.status_code}")
    if not case.body_differs and ours.content != ref.content:
        problems.append(f"{where}: body reference {ref.content!r:.300}, ours {ours.content!r:.300}")
    for header in SAME_VALUE:
        if ref.headers.get_list(header) != ours.headers.get_list(header):
            problems.append(f"{where}: {header} reference {ref.headers.get_list(header)}, "
                            f"ours {ours.headers.get_list(header)}")
    for header in PRESENT:
        if (header in ref.headers) != (header in ours.headers):
            problems.append(f"{where}: {header} present in reference {header in ref.headers}, ours {header in ours.headers}")
    return problems


@pytest.mark.parametrize("name", list(CASES))
def test_answers_match_the_reference_server(name, tmp_path):
    source, cases = CASES[name]
    script = write_script(tmp_path, source)
    env = ENV.get(name, {})
    with reference_server(script, env) as ref_url:
        expected = [_ask(ref_url, c) for c in cases]
    with serve(script, tmp_path, None, **env) as ours:
        got = [_ask(ours.url, c) for c in cases]
    problems = [p for case, ref, mine in zip(cases, expected, got) for p in _compare(name, case, ref, mine)]
    same = sum(1 for c, r in zip(cases, expected) if 200 <= r.status_code < 300)
    print(f"{name}: {len(cases)} requests, {same} answered 2xx by the reference, "
          f"{sum(1 for c in cases if c.ours is not None or c.body_differs)} deliberate differences")
    assert not problems, "\n".join(problems)
