"""The container target's dynamic provider: a pushed scoring image run by a Docker engine with host
networking, each container on its own port of 127.0.0.1.

Create waits until the runtime answers `/ready`; read notices a container that is gone or no longer
running; update replaces the container (same port, same keys) when its image or settings change;
delete removes it and waits until its port is free. With TLS the certificate is copied into the
container before it starts (providers/serving_process.py's `tls_archive`). The engine's `docker` CLI does the work, with
`-H <docker_host>` when the workspace names an engine.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from content.bundle import SCORING_UID
from components.service import TLS_CERT_NAME, TLS_DIR, TLS_KEY_NAME
from providers import serving_process as process

READY_TIMEOUT_S = 180
"""Start-up may include pulling the image from the registry."""
STOP_TIMEOUT_S = 30
LABEL = "org.ml-deploy.service"


class DockerError(RuntimeError):
    """A `docker` command failed; the message has its output."""


def docker(docker_host: str, *args: str, check: bool = True, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess[str]:
    """`docker [-H host] args...`, output captured; `stdin` is fed to it (a tar for `docker cp -`)."""
    command = ["docker", *(["-H", docker_host] if docker_host else []), *args]
    raw = subprocess.run(command, capture_output=True, input=stdin if stdin is not None else b"")
    result = subprocess.CompletedProcess(command, raw.returncode, raw.stdout.decode(errors="replace"),
                                         raw.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise DockerError(f"`{' '.join(command)}` failed ({result.returncode}): {(result.stderr or result.stdout).strip()}")
    return result


def running(docker_host: str, container: str) -> bool:
    """Whether `container` exists and runs."""
    state = docker(docker_host, "inspect", "-f", "{{.State.Running}}", container, check=False)
    return state.returncode == 0 and state.stdout.strip() == "true"


def _start(props: dict[str, Any], port: int, keys: tuple[str, str]) -> str:
    """Run the image as a new container listening on 127.0.0.1:`port`; return its name once ready."""
    host = props["docker_host"]
    name = f"ml-deploy-{props['service']}-{secrets.token_hex(4)}"
    tls_files = (f"{TLS_DIR}/{TLS_CERT_NAME}", f"{TLS_DIR}/{TLS_KEY_NAME}") if process.has_tls(props) else None
    settings = process.settings(props, port, keys, tls_files)
    # The keys go in a file readable only by us, never on a command line.
    with tempfile.NamedTemporaryFile("w", prefix="ml-deploy-env-", suffix=".list") as env_file:
        env_file.write("".join(f"{k}={v}\n" for k, v in settings.environ().items()))
        env_file.flush()
        # Host networking: the engine has no bridge (the lab's), and the runtime binds 127.0.0.1 only.
        docker(host, "create", "--name", name, "--network", "host", "--env-file", env_file.name,
               "--label", f"{LABEL}={props['service']}", props["image"],
               "python", "-m", "serving", "--host", "127.0.0.1")
    # The certificate goes in before the start, owned by the image's user and readable by it only, the
    # way ACI and Kubernetes mount it at TLS_DIR (`docker cp` works with a remote engine too).
    archive = process.tls_archive(props, TLS_DIR, SCORING_UID)
    if archive is not None:
        docker(host, "cp", "-", f"{name}:/", stdin=archive)
    docker(host, "start", name)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if not running(host, name):
            logs = docker(host, "logs", "--tail", "40", name, check=False)
            docker(host, "rm", "--force", name, check=False)
            raise RuntimeError(f"container of service {props['service']} ({props['image']}) exited before it was "
                               f"ready:\n{(logs.stdout + logs.stderr)[-3000:]}")
        if process.answers_ready(settings.scheme, port):
            return name
        time.sleep(0.2)
    _stop(host, name, port)
    raise RuntimeError(f"container of service {props['service']} was not ready within {READY_TIMEOUT_S}s")


def _stop(docker_host: str, container: str, port: int) -> None:
    """Remove the container (stopping it first) and wait until its port is free."""
    docker(docker_host, "rm", "--force", container, check=False)
    if not process.wait_port_free(port, STOP_TIMEOUT_S):
        raise RuntimeError(f"port {port} is still in use after removing container {container}")


def _outputs(props: dict[str, Any], container: str, port: int, keys: tuple[str, str]) -> dict[str, Any]:
    # `port` stays what was asked for (0: any), so a diff against the config never sees a change.
    return {**props, "container": container, "bound_port": port, "primary_key": keys[0], "secondary_key": keys[1],
            **process.uris(props, port)}


class ContainerProvider(ResourceProvider):
    """A scoring container: the image's runtime on 127.0.0.1, one port per container."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        port = int(props["port"]) or process.free_port()
        keys = process.keys(bool(props["auth_enabled"]))
        container = _start(props, port, keys)
        return CreateResult(id_=f"{props['service']}-{secrets.token_hex(4)}", outs=_outputs(props, container, port, keys))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("image", "port", "service", "docker_host", *process.RUNTIME_INPUTS)
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        # Another engine or service name is another container; the rest restarts this one.
        replaces = [k for k in ("service", "docker_host") if k in changed]
        return DiffResult(changes=bool(changed), replaces=replaces)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _stop(olds["docker_host"], olds["container"], int(olds["bound_port"]))
        port = int(news["port"]) or int(olds["bound_port"])
        keys = process.keys(bool(news["auth_enabled"]), olds)
        container = _start(news, port, keys)
        return UpdateResult(outs=_outputs(news, container, port, keys))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        alive = bool(props.get("container")) and running(props.get("docker_host", ""), props["container"])
        return ReadResult(id_=id_ if alive else None, outs=props)  # type: ignore[arg-type]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _stop(props["docker_host"], props["container"], int(props["bound_port"]))


class ScoringContainer(Resource):
    """A scoring image running as a container on 127.0.0.1."""

    container: pulumi.Output[str]
    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    secondary_key: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        outs = {"container": None, "bound_port": None, "scoring_uri": None, "swagger_uri": None,
                "primary_key": None, "secondary_key": None}
        super().__init__(ContainerProvider(), name, {**props, **outs}, opts)

