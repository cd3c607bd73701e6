"""Run the scoring app: a master process that owns the port and WORKER_COUNT forked workers.

    python -m serving --entry-script score.py --model-dir DIR --port 5001

See `serving.supervisor` (the master) and `serving.worker` (a worker) for the process model.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import socket
import sys
from dataclasses import replace
from typing import Callable

from serving import settings as names
from serving.settings import Settings, from_environ
from serving.supervisor import Supervisor
from serving.tls import server_context

log = logging.getLogger("serving")


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


BACKLOG = 2048


def _bind(settings: Settings) -> socket.socket:
    """The listening socket; with `reuse_port` only bound: the supervisor listens once a worker is ready."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if settings.reuse_port:
        # The process this one replaces holds the port with SO_REUSEPORT too (the local target
        # starts the new version before it stops the old one). A socket that is bound but not
        # listening takes no connections: while our init() runs, every one goes to the old process.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    if not settings.reuse_port:
        sock.listen(BACKLOG)
    return sock


def notifier(address: str | None) -> Callable[[str], None] | None:
    """A function sending one sd_notify state (`READY=1`) to `address`, or None without one.

    The whole protocol, from sd_notify(3)'s NOTES (https://www.freedesktop.org/software/systemd/man/sd_notify.html):
    "a single datagram with the state string as payload to the AF_UNIX socket referenced in the
    $NOTIFY_SOCKET environment variable. If the first character of $NOTIFY_SOCKET is '@', the
    string is understood as Linux abstract namespace socket." The receiver learns the sender's pid
    from the credentials the kernel attaches (SCM_CREDENTIALS), so nothing else identifies us.
    """
    if not address:
        return None
    target = "\0" + address[1:] if address.startswith("@") else address

    def notify(state: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(state.encode(), target)
        except OSError as err:  # whoever waits for it times out and says so; serving goes on
            log.warning("could not send %s to %s=%s: %s", state, names.NOTIFY_SOCKET, address, err)

    return notify


def _raise_open_files_limit() -> None:
    # Each connection is a descriptor; the soft limit is often 1024, below MAX_CONNECTIONS per worker.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code (0, or 3 when init() fails)."""
    if settings.tls_cert_file and settings.tls_key_file:
        server_context(settings.tls_cert_file, settings.tls_key_file)  # fail here, once, if unusable
    _raise_open_files_limit()
    # Taken out of the environment, so that the scoring script's own processes never report for us.
    notify = notifier(os.environ.pop(names.NOTIFY_SOCKET, None))
    sock = _bind(settings)
    log.info("serving %s on %s://%s:%d with %d worker(s)%s", settings.entry_script, settings.scheme, settings.host,
             settings.port, settings.workers,
             " (port shared: listening once a worker is ready)" if settings.reuse_port else "")
    return Supervisor(settings, sock, listen_backlog=BACKLOG if settings.reuse_port else 0,
                      on_ready=(lambda: notify("READY=1")) if notify else None).run()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    sys.exit(serve(settings))
