"""Requests/s and latency of this scoring runtime and of azureml-inference-server-http, side by side.

Both serve the same score.py and model, at one worker and two, each driven by wrk on 127.0.0.1 with
the same request, connections and duration, on kept-alive connections and with one connection per
request; this runtime also over HTTPS (a self-signed certificate made for the run; the reference has
no TLS of its own). Then the ceiling (benchmarks/ceiling.py): the same run() in a loop, and a bare
server's empty answer, so the output says what share of it this runtime reaches. Every round measures
everything once, interleaved; the table shows medians, as markdown for benchmarks/RESULTS.md.
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


@dataclass(frozen=True)
class Server:
    """One server configuration: started once per round, then measured in each connection mode."""

    label: str
    kind: str
    """"ours", "reference" or "bare"."""
    workers: int
    tls: bool = False


MODES = ("kept-alive", "new connection")
"""wrk's connections kept open across requests, or one connection per request (`Connection: close`)."""


def lua_script(folder: Path, close: bool) -> Path:
    path = folder / ("close.lua" if close else "keep.lua")
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(SEED))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        + ('wrk.headers["Connection"] = "close"\n' if close else "")
    )
    return path


def start(server: Server, args: argparse.Namespace, folder: Path) -> tuple[subprocess.Popen, str, ssl.SSLContext | None]:
    port = free_port()
    env = {**os.environ, "AZUREML_MODEL_DIR": str(args.model_dir.resolve())}
    context, scheme = None, "http"
    if server.kind == "ours":
        cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "serving", "--entry-script", str(args.script),
               "--model-dir", str(args.model_dir), "--port", str(port), "--workers", str(server.workers)]
        if server.tls:
            cert, key = write_self_signed(folder / "tls")
            env.update({names.TLS_CERT_FILE: str(cert), names.TLS_KEY_FILE: str(key)})
            context, scheme = ssl.create_default_context(cafile=str(cert)), "https"
    elif server.kind == "reference":
        cmd = [str(args.reference_venv.resolve() / "bin" / "azmlinfsrv"), "--entry_script", str(args.script),
               "--model_dir", str(args.model_dir), "--port", str(port), "--health_port", str(free_port()),
               "--worker_count", str(server.workers)]
    else:
        cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "benchmarks.ceiling", "bare", str(port)]
    log = open(folder / f"{server.label.replace(' ', '-').replace(',', '')}.log", "ab")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    url = f"{scheme}://127.0.0.1:{port}/score"
    try:
        if server.kind == "bare":
            wait_port(port, proc)
        else:
            wait_scoring(url, proc, context=context)
    except BaseException:
        stop(proc)
        raise
    return proc, url, context


def wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"port {port} did not open within {timeout_s}s")


def measure_server(server: Server, args: argparse.Namespace, folder: Path, luas: dict[str, Path]) -> dict[str, Result]:
    proc, url, _context = start(server, args, folder)
    try:
        results = {}
        for mode in MODES:
            wrk(url, luas[mode], max(2, args.duration // 3), args.connections)  # warm-up, not counted
            rps, p50, p99, errors = wrk(url, luas[mode], args.duration, args.connections)
            results[mode] = Result(server.label, rps, p50, p99, errors)
        return results
    finally:
        stop(proc)


def loop_rate(args: argparse.Namespace, folder: Path) -> float:
    body = folder / "body.json"
    body.write_text(json.dumps(SEED))
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "python"), "-m", "benchmarks.ceiling", "loop", str(args.script), str(body),
         str(args.duration)],
        env={**os.environ, "AZUREML_MODEL_DIR": str(args.model_dir.resolve())}, cwd=ROOT, check=True,
        capture_output=True, text=True,
    ).stdout
    return float(out.strip().splitlines()[-1])


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--reference-venv", type=Path, required=True)
    parser.add_argument("--script", type=Path, default=ROOT / "scoring_templates" / "sklearn" / "score.py")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models")
    parser.add_argument("--duration", type=int, default=5, help="seconds of measured load per server and mode")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3,
                        help="measure everything this many times, interleaved; medians are shown")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    luas = {MODES[0]: lua_script(folder, close=False), MODES[1]: lua_script(folder, close=True)}
    servers = [Server("ml-deploy", "ours", 1), Server("reference", "reference", 1),
               Server("ml-deploy", "ours", 2), Server("reference", "reference", 2),
               Server("ml-deploy HTTPS", "ours", 1, tls=True), Server("ml-deploy HTTPS", "ours", 2, tls=True),
               Server("bare server", "bare", 1)]
    load_before = load_average()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs: dict[tuple[Server, str], list[Result]] = {}
    loops: list[float] = []
    for round_ in range(args.rounds):
        # Interleaved: each round measures every server once, ours next to the reference it is
        # compared with, so a machine that slows down mid-run slows both sides of each ratio.
        for server in servers:
            for mode, result in measure_server(server, args, folder, luas).items():
                runs.setdefault((server, mode), []).append(result)
        loops.append(loop_rate(args, folder))
        print(f"round {round_ + 1} of {args.rounds} done (load average {load_average()})", file=sys.stderr)

    med = {key: median([r.rps for r in results]) for key, results in runs.items()}

    def middle(key: tuple[Server, str]) -> Result:  # the run with the median requests/s, for its latencies
        return sorted(runs[key], key=lambda r: r.rps)[len(runs[key]) // 2]

    loop_median = median(loops)
    ceiling = {mode: 1 / (1 / loop_median + 1 / med[(servers[-1], mode)]) for mode in MODES}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    script = args.script.relative_to(ROOT) if args.script.is_relative_to(ROOT) else args.script
    print(f"## {started}, commit {commit}\n")
    print(f"`{script}`; wrk -t1 -c{args.connections} -d{args.duration}s on 127.0.0.1, POST of the seed's two rows; "
          f"{os.cpu_count()} cores; load average {load_before} before, {load_average()} after; "
          f"median of {args.rounds} interleaved round(s).\n")
    print("| server | workers | connections | req/s, each round | median | p50 / p99 ms | errors | "
          "vs reference (req/s, p99) | share of ceiling |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    reference = {(s.workers, mode): (s, mode) for s in servers if s.kind == "reference" for mode in MODES}
    for server in servers:
        for mode in MODES:
            key = (server, mode)
            mid = middle(key)
            compare = share = ""
            if server.kind == "ours" and not server.tls:
                ref = reference[(server.workers, mode)]
                compare = f"{med[key] / med[ref]:.2f}x, {mid.p99_ms / middle(ref).p99_ms:.2f}x"
            if server.kind == "ours" and server.workers == 1 and not server.tls:
                share = f"{med[key] / ceiling[mode]:.0%}"
            rounds = ", ".join(f"{r.rps:.0f}" for r in runs[key])
            print(f"| {server.label} | {server.workers} | {mode} | {rounds} | {med[key]:.0f} | "
                  f"{mid.p50_ms:.2f} / {mid.p99_ms:.2f} | {sum(r.errors for r in runs[key])} | {compare} | {share} |")
    print(f"\nCeiling of one process: run() in a loop (JSON in, run(), JSON out) {loop_median:.0f} calls/s "
          f"(rounds: {', '.join(f'{v:.0f}' for v in loops)}); with the bare server's empty answers, "
          + "; ".join(f"{mode} {ceiling[mode]:.0f} requests/s" for mode in MODES) + ".")
    sys.exit(1 if any(r.errors for results in runs.values() for r in results) else 0)


if __name__ == "__main__":
    main()
