"""Run the scoring app: one process, or a master with WORKER_COUNT forked workers on one socket.

    python -m serving --entry-script score.py --model-dir DIR --port 5001
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from dataclasses import replace

import uvicorn

from serving import settings as names
from serving.app import INIT_FAILED_EXIT, ScoringApp
from serving.collector import from_environ as collector_from_environ
from serving.script import ScoringScript, ScriptLoadError, format_exception
from serving.settings import Settings, from_environ

log = logging.getLogger("serving")
GRACEFUL_SHUTDOWN_S = 30


def parse_args(argv: list[str] | None = None) -> Settings:
    """Settings from the environment, overridden by command-line flags."""
    parser = argparse.ArgumentParser(prog="python -m serving", description="Serve an Azure ML scoring script.")
    parser.add_argument("--entry-script", help=f"the score.py to serve (default: ${names.ENTRY_SCRIPT})")
    parser.add_argument("--model-dir", help=f"folder holding the model files (default: ${names.MODEL_DIR})")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help=f"port (default: ${names.PORT} or {names.DEFAULT_PORT})")
    parser.add_argument("--workers", type=int, help=f"worker processes (default: ${names.WORKER_COUNT} or 1)")
    parser.add_argument("--timeout-ms", type=int, help=f"run() time limit (default: ${names.SCORING_TIMEOUT_MS})")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    if args.entry_script:
        env[names.ENTRY_SCRIPT] = args.entry_script
    settings = from_environ(env)
    overrides: dict = {"host": args.host}
    if args.model_dir:
        overrides["model_dir"] = args.model_dir
    for flag, field in (("port", "port"), ("workers", "workers"), ("timeout_ms", "timeout_ms")):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                parser.error(f"--{flag.replace('_', '-')} must be at least 1")
            overrides[field] = value
    return replace(settings, **overrides)


def _bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(settings: Settings, sock: socket.socket) -> None:
    """One worker: load the script, serve until SIGTERM, finish requests in flight."""
    if settings.model_dir:
        # Scripts read the model folder from the environment, as in Azure ML.
        os.environ[names.MODEL_DIR] = os.path.abspath(settings.model_dir)
    try:
        script = ScoringScript(settings.entry_script)
    except ScriptLoadError as err:
        log.error("cannot load %s: %s\n%s", settings.entry_script, err,
                  format_exception(err.__cause__) if err.__cause__ else "")
        sys.exit(INIT_FAILED_EXIT)
    # Each worker has its own collector: its thread and blob name must not be shared across a fork.
    app = ScoringApp(settings, script, collector_from_environ())
    config = uvicorn.Config(
        app,
        lifespan="on",
        http="httptools",
        loop="uvloop",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    uvicorn.Server(config).run(sockets=[sock])


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    sock = _bind(settings)
    log.info("serving %s on http://%s:%d with %d worker(s)", settings.entry_script, settings.host,
             settings.port, settings.workers)
    if settings.workers == 1:
        _worker(settings, sock)
        return 0

    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_worker, args=(settings, sock), name=f"worker-{i}") for i in range(settings.workers)]
    for w in workers:
        w.start()
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    alive = list(workers)
    while alive:
        multiprocessing.connection.wait([w.sentinel for w in alive])
        for w in [w for w in alive if not w.is_alive()]:
            alive.remove(w)
            if w.exitcode and not stopping:
                # A worker that died on its own (init failed, crash): stop the rest and report it,
                # so the orchestrator sees one failed service instead of a half-sized one.
                log.error("%s exited with code %s; stopping the service", w.name, w.exitcode)
                code = w.exitcode if w.exitcode > 0 else 1
                stop(signal.SIGTERM, None)
    sock.close()
    return code


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    sys.exit(serve(settings))
