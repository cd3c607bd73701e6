"""What the local target's traffic router (serving/router.py) adds to a request, side by side.

One deployment of the seed's model (the scoring runtime, one worker, as the local target's provider
starts it) and a router in front of it sending it all the traffic; with nginx installed, also nginx
as the same kind of proxy (one worker process, kept-alive upstream connections): the peer, to tell
what any proxy hop costs on this machine from what this router costs. wrk measures the same request
on kept-alive connections, straight to the deployment, through the router and through nginx,
alternating, each round every way: at one connection (a request's latency with nothing else going
on) and at 16 (throughput). The table shows medians over rounds, as markdown for benchmarks/RESULTS.md.

    .venv/bin/python -m benchmarks.router_bench [--rounds 5] [--duration 5]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from benchmarks.serving_bench import ROOT, free_port, load_average, lua_script, median, wait_port, wrk
from content.bundle import APP_DIR, SCRIPT_NAME
from providers.local import ServiceProvider
from providers.router import RouterProvider


def bundle(folder: Path) -> Path:
    """The seed's script and model with this runtime, laid out as the local target's bundles are."""
    app = folder / "bundle" / APP_DIR
    (app / "models").mkdir(parents=True)
    shutil.copy(ROOT / "scoring_templates" / "sklearn" / "score.py", app / SCRIPT_NAME)
    shutil.copy(ROOT / "models" / "diabetes-ridge.pkl", app / "models" / "diabetes-ridge.pkl")
    shutil.copytree(ROOT / "serving", folder / "bundle" / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    return folder / "bundle"


NGINX_CONF = """daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {folder}/nginx-body;
  proxy_temp_path {folder}/nginx-proxy;
  upstream deployment {{ server 127.0.0.1:{upstream}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://deployment;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def start_nginx(folder: Path, upstream: int) -> Optional[tuple[subprocess.Popen, str]]:
    """nginx proxying to `upstream`, or None without nginx on PATH."""
    nginx = shutil.which("nginx") or (("/usr/sbin/nginx") if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        return None
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(folder=folder, upstream=upstream, port=port))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}/score"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    if not (ROOT / "models" / "diabetes-ridge.pkl").exists():
        raise SystemExit("no models/diabetes-ridge.pkl: run `bash scripts/setup` first")
    with tempfile.TemporaryDirectory(prefix="ml-deploy-router-bench-") as tmp:
        folder = Path(tmp)
        lua = lua_script(folder, close=False)
        service = ServiceProvider().create({
            "service": "bench-blue", "bundle": str(bundle(folder)), "python": sys.executable,
            "model_dir": "models", "log_dir": str(folder / "logs"), "port": 0, "workers": 1,
            "auth_enabled": False, "timeout_ms": 60000}).outs
        router = None
        nginx: Optional[tuple[subprocess.Popen, str]] = None
        try:
            router = RouterProvider().create({
                "service": "bench", "port": 0, "log_dir": str(folder / "logs"), "python": sys.executable,
                "runtime_root": str(ROOT), "runtime_digest": "bench", "timeout_ms": 60000,
                "routes": [{"name": "blue", "port": service["bound_port"], "traffic": 100}], "mirror": {}}).outs
            targets = {"direct": service["scoring_uri"], "router": router["scoring_uri"]}
            nginx = start_nginx(folder, int(service["bound_port"]))
            if nginx is not None:
                targets["nginx"] = nginx[1]
            results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
            for _ in range(args.rounds):
                for connections in (1, 16):
                    for name, url in targets.items():
                        results.setdefault((name, connections), []).append(wrk(url, lua, args.duration, connections))
        finally:
            if nginx is not None:
                nginx[0].send_signal(signal.SIGQUIT)
                nginx[0].wait(30)
            if router is not None:
                RouterProvider().delete("", router)
            ServiceProvider().delete("", service)
    print(f"Router overhead, {args.rounds} rounds x {args.duration}s, machine load before: {load_average()}\n")
    print("| connections | path | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    names = [n for n in ("direct", "router", "nginx") if (n, 1) in results]
    for connections in (1, 16):
        for name in names:
            runs = results[(name, connections)]
            print(f"| {connections} | {name} | {median([r[0] for r in runs]):,.0f} | {median([r[1] for r in runs]):.3f} "
                  f"| {median([r[2] for r in runs]):.3f} | {sum(r[3] for r in runs)} |")
        direct = median([r[1] for r in results[("direct", connections)]])
        for name in names[1:]:
            hop = median([r[1] for r in results[(name, connections)]])
            print(f"| {connections} | {name} adds to p50 | | {100 * (hop - direct) / direct:+.1f}% | | |")


if __name__ == "__main__":
    main()
