"""Requests/s and latency of this scoring runtime and of azureml-inference-server-http, side by side.

Both serve the same score.py and model, with one worker and then two, one after the other, each
driven by wrk on 127.0.0.1 with the same request, connections and duration; then this runtime once
more over HTTPS (a self-signed certificate made for the run).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from serving import settings as names
from serving.tls import write_self_signed

ROOT = Path(__file__).resolve().parents[1]
SEED = {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_scoring(url: str, proc: subprocess.Popen, timeout_s: float = 120,
                 context: ssl.SSLContext | None = None) -> None:
    body = json.dumps(SEED).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering")
        try:
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=2, context=context) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {timeout_s}s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(url: str, lua: Path, duration: int, connections: int) -> tuple[float, float, float, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua), url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, errs.groups())) if errs else 0)
    return rps, p50, p99, errors


def measure(name: str, cmd: list[str], env: dict[str, str], url: str, lua: Path, args: argparse.Namespace,
            context: ssl.SSLContext | None = None) -> Result:
    log = open(Path(tempfile.gettempdir()) / f"bench-{name.replace(' ', '-')}.log", "wb")
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)
    try:
        wait_scoring(url, proc, context=context)
        wrk(url, lua, max(2, args.duration // 5), args.connections)  # warm-up, not counted
        rps, p50, p99, errors = wrk(url, lua, args.duration, args.connections)
    finally:
        stop(proc)
    return Result(name, rps, p50, p99, errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--reference-venv", type=Path, required=True)
    parser.add_argument("--script", type=Path, default=ROOT / "scoring_templates" / "sklearn" / "score.py")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load per server")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every server this many times, interleaved; the median run is shown")
    args = parser.parse_args()

    lua = Path(tempfile.mkdtemp()) / "post.lua"
    lua.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(SEED))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    env = {"AZUREML_MODEL_DIR": str(args.model_dir.resolve())}

    def ours(workers: int, tls: bool = False) -> Result:
        port = free_port()
        extra, context, scheme = {}, None, "http"
        if tls:
            cert, key = write_self_signed(Path(tempfile.mkdtemp()) / "tls")
            extra = {names.TLS_CERT_FILE: str(cert), names.TLS_KEY_FILE: str(key)}
            context, scheme = ssl.create_default_context(cafile=str(cert)), "https"
        return measure(
            f"ml-deploy serving, {workers}w{', TLS' if tls else ''}",
            [str(ROOT / ".venv" / "bin" / "python"), "-m", "serving", "--entry-script", str(args.script),
             "--model-dir", str(args.model_dir), "--port", str(port), "--workers", str(workers)],
            {**env, **extra}, f"{scheme}://127.0.0.1:{port}/score", lua, args, context,
        )

    def reference(workers: int) -> Result:
        port, health = free_port(), free_port()
        return measure(
            f"azureml-inference-server, {workers}w",
            [str(args.reference_venv.resolve() / "bin" / "azmlinfsrv"), "--entry_script", str(args.script),
             "--model_dir", str(args.model_dir), "--port", str(port), "--health_port", str(health),
             "--worker_count", str(workers)],
            env, f"http://127.0.0.1:{port}/score", lua, args,
        )

    runs: list[list[Result]] = [[ours(1), reference(1), ours(2), reference(2), ours(1, tls=True)]
                                for _ in range(args.rounds)]
    # Per server, the run with the median requests/s (on a shared machine one run can be an outlier).
    results = [sorted(column, key=lambda r: r.rps)[len(column) // 2] for column in zip(*runs)]
    print(f"score.py: {args.script.relative_to(ROOT) if args.script.is_relative_to(ROOT) else args.script}; "
          f"wrk -t1 -c{args.connections} -d{args.duration}s on 127.0.0.1; {os.cpu_count()} cores; "
          f"median of {args.rounds} run(s)")
    print(f"{'server':<36}{'requests/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for r in results:
        print(f"{r.name:<36}{r.rps:>12.0f}{r.p50_ms:>10.2f}{r.p99_ms:>10.2f}{r.errors:>8}")
    if args.rounds > 1:
        for column in zip(*runs):
            print(f"  {column[0].name}: {', '.join(f'{r.rps:.0f}' for r in column)} requests/s")
    for workers, (mine, ref) in ((1, results[0:2]), (2, results[2:4])):
        print(f"ratio with {workers} worker(s) (ml-deploy / reference): {mine.rps / ref.rps:.2f}x requests/s, "
              f"p99 {mine.p99_ms / ref.p99_ms:.2f}x")
    sys.exit(1 if any(r.errors for column in runs for r in column) else 0)


if __name__ == "__main__":
    main()
