"""The local target's traffic split: a service's keys, shared by its deployments, and its router
(`python -m serving.router`), the process on the service's port that sends each request to one
deployment by weight.

A change of the split (or of the mirror, or of a deployment's port) rewrites the router's config and
signals it (SIGHUP): the router applies it between requests and reports the generation it applied, so
`pulumi up` returns only once the new split is what answers. A change of what the process itself
runs (its port, TLS, the runtime it runs from) starts a new router beside the old one on the same
port (SO_REUSEPORT) and stops the old one once the new one is ready, as a service update does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from providers import serving_process as process
from providers.local import (ReadySignal, check_port, launch, log_path, release_wait, service_running, stop_process,
                             tls_dir)
from providers.serving_process import free_port
from serving import settings as runtime

APPLY_TIMEOUT_S = 10
"""How long a running router may take to apply a new config after SIGHUP."""
RESTART_INPUTS = ("service", "port", "log_dir", "python", "runtime_root", "runtime_digest", "timeout_ms", "tls_cert_pem",
                  "tls_key_pem")
"""What the router process runs with: a change of any starts a new process."""
CONFIG_INPUTS = ("routes", "mirror")
"""What the running router re-reads on SIGHUP."""


def router_dir(props: dict[str, Any]) -> Path:
    """Where a service's router keeps its config and status (the workspace's `routers/<service>/`)."""
    return Path(props["log_dir"]).parent / "routers" / props["service"]


def _write_config(props: dict[str, Any], generation: int) -> Path:
    folder = router_dir(props)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    partial = folder / f".config.json.{os.getpid()}"
    partial.write_text(json.dumps({"generation": generation, "routes": props["routes"], "mirror": props["mirror"]}))
    partial.replace(path)
    return path


def _stop_timeout(props: dict[str, Any]) -> float:
    # The router drains for up to the scoring timeout plus its own margin (serving/router.py).
    return int(props["timeout_ms"]) / 1000 + 15


def _status(props: dict[str, Any]) -> dict[str, Any]:
    """What the router last wrote to its status file (empty: nothing readable)."""
    try:
        status = json.loads((router_dir(props) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _reported(props: dict[str, Any]) -> int:
    """The generation the status file names, whoever wrote it (0: none)."""
    return int(_status(props).get("generation") or 0)


def _applied(props: dict[str, Any], pid: int) -> Optional[int]:
    """The generation the router with `pid` last reported applying, if it did."""
    status = _status(props)
    return int(status["generation"]) if status.get("pid") == pid and "generation" in status else None


def _start(props: dict[str, Any], port: int, generation: int) -> tuple[int, Optional[int]]:
    """Start a router on `port` (beside a running one, if any) and wait until it is ready: (pid, start time)."""
    config = _write_config(props, generation)
    log = log_path(props["log_dir"], props["service"])
    command = [props["python"], "-m", "serving.router", "--config", str(config),
               "--status", str(router_dir(props) / "status.json"), "--port", str(port), "--reuse-port",
               "--timeout-ms", str(int(props["timeout_ms"]))]
    tls = process.write_tls(tls_dir(props), props)
    if tls is not None:
        command += ["--tls-cert", tls[0], "--tls-key", tls[1]]
    ready = ReadySignal()
    env = {**os.environ, "PYTHONPATH": props["runtime_root"], runtime.NOTIFY_SOCKET: ready.address}
    env.pop("VIRTUAL_ENV", None)
    try:
        return launch(props["service"], "router ", command, Path(props["runtime_root"]), env, log, ready.wait)
    finally:
        ready.close()


def _outputs(props: dict[str, Any], pid: int, started: Optional[int], port: int, generation: int) -> dict[str, Any]:
    return {**props, "pid": pid, "started": started, "bound_port": port, "generation": generation,
            **process.uris(props, port)}


class RouterProvider(ResourceProvider):
    """A service's router: created after its deployments (it routes to their ports), so a deployment
    never gets traffic before it is ready; changed before a removed deployment is deleted."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        port = int(props["port"]) or free_port()
        check_port(props["service"], port)
        pid, started = _start(props, port, 1)
        return CreateResult(id_=f"{props['service']}:{pid}", outs=_outputs(props, pid, started, port, 1))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in (*RESTART_INPUTS, *CONFIG_INPUTS) if olds.get(k) != news.get(k)]
        if olds.get("pid") and not service_running(olds):
            changed.append("pid")
        return DiffResult(changes=bool(changed), replaces=["service"] if "service" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        old_pid, old_port = int(olds.get("pid") or 0), int(olds.get("bound_port") or 0)
        port = int(news["port"]) or old_port or free_port()
        # Above both what the state and the router last said: a late report of an earlier, failed
        # attempt can never pass for this one.
        generation = max(int(olds.get("generation") or 0), _reported(olds)) + 1
        running = service_running(olds)
        restart = any(olds.get(k) != news.get(k) for k in RESTART_INPUTS) or port != old_port
        if running and not restart:
            _write_config(news, generation)
            os.kill(old_pid, signal.SIGHUP)
            deadline = time.monotonic() + APPLY_TIMEOUT_S
            while _applied(news, old_pid) != generation:
                if time.monotonic() > deadline or not service_running(olds):
                    # Put the split the state records back, so what serves and what the state says agree.
                    _write_config(olds, generation + 1)
                    if service_running(olds):
                        os.kill(old_pid, signal.SIGHUP)
                    raise RuntimeError(f"service {news['service']}: the router (pid {old_pid}) did not apply the new "
                                       f"traffic split within {APPLY_TIMEOUT_S}s; the previous split was written back; "
                                       f"see {log_path(news['log_dir'], news['service'])}")
                time.sleep(0.02)
            return UpdateResult(outs=_outputs(news, old_pid, olds.get("started"), port, generation))
        if not running or port != old_port:
            check_port(news["service"], port, release_wait(olds, port))
        try:
            pid, started = _start(news, port, generation)
        except RuntimeError as err:
            if running:
                raise RuntimeError(f"{err}\nThe previous router (pid {old_pid}) is still serving on port {old_port}") from None
            raise
        if running:
            # It drains what it holds; new connections already go to the new one.
            stop_process(old_pid, timeout_s=_stop_timeout(olds))
        return UpdateResult(outs=_outputs(news, pid, started, port, generation))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_ if service_running(props) else None, outs=props)  # type: ignore[arg-type]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if service_running(props):
            stop_process(int(props["pid"]), int(props["bound_port"]), timeout_s=_stop_timeout(props))
        shutil.rmtree(router_dir(props), ignore_errors=True)
        if process.has_tls(props):
            shutil.rmtree(tls_dir(props), ignore_errors=True)


class TrafficRouter(Resource):
    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    bound_port: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        outs = {"pid": None, "started": None, "bound_port": None, "generation": None,
                "scoring_uri": None, "swagger_uri": None}
        super().__init__(RouterProvider(), name, {**props, **outs}, opts)


class KeysProvider(ResourceProvider):
    """A service's two keys, made once and kept: what each of its deployments accepts."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        primary, secondary = process.keys(True)
        return CreateResult(id_=props["service"], outs={**props, "primary_key": primary, "secondary_key": secondary})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = olds.get("service") != news.get("service")
        return DiffResult(changes=changed, replaces=["service"] if changed else [])


class ServiceKeys(Resource):
    primary_key: pulumi.Output[str]
    secondary_key: pulumi.Output[str]

    def __init__(self, name: str, service: str, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(KeysProvider(), name, {"service": service, "primary_key": None, "secondary_key": None},
                         pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(
                             additional_secret_outputs=["primary_key", "secondary_key"])))
