"""The `local` target: a folder workspace, local image bundles and scoring services as processes on 127.0.0.1.

Each piece is a Pulumi dynamic resource, so the real engine diffs, updates and deletes them like
cloud resources: a model version is a folder in the registry, an image is a content-tagged bundle
(the same files the container image is built from), a service is a `python -m serving` process.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components import TOKEN_PREFIX
from components.bundle import APP_DIR, SCRIPT_NAME, Source, content_tag, model_dir, scoring_bundle, write_bundle
from components.model import BundledModel
from serving import settings as runtime

READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


class _FolderProvider(ResourceProvider):
    """A content-addressed folder: any change of its address replaces it; reading checks it is there."""

    ADDRESS: tuple[str, ...] = ()
    """The inputs that name the folder."""

    def exists(self, path: Path) -> bool:
        return path.is_dir()

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = [k for k in self.ADDRESS if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(keys), replaces=keys, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_ if self.exists(Path(id_)) else None, outs=props)  # type: ignore[arg-type]

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        shutil.rmtree(id_, ignore_errors=True)


class _Folder(Resource):
    """A folder managed by a `_FolderProvider`; `path` is where it was written."""

    path: pulumi.Output[str]

    def __init__(self, provider: _FolderProvider, name: str, props: dict[str, Any],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(provider, name, {**props, "path": None}, opts)


# ---- model registry ---------------------------------------------------------------------------

class _ModelVersionProvider(_FolderProvider):
    """A model version: its files copied to `<registry>/<model>/<version>/`."""

    ADDRESS = ("registry", "model", "version")

    def _write(self, props: dict[str, Any]) -> str:
        target = Path(props["registry"]) / props["model"] / props["version"]
        if not target.exists():
            partial = target.with_name(target.name + f".partial-{os.getpid()}")
            for source, relative in props["files"]:
                dest = partial / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            partial.rename(target)
        return str(target)

    def create(self, props: dict[str, Any]) -> CreateResult:
        path = self._write(props)
        return CreateResult(id_=path, outs={**props, "path": path})


@dataclass(frozen=True)
class LocalModelArgs:
    """Inputs of a LocalModel."""

    registry: str
    """The folder holding `<model>/<version>/` folders."""
    model: BundledModel


class LocalModel(pulumi.ComponentResource):
    """A model registered in the folder registry under the same content version as in Azure ML."""

    version: str
    path: pulumi.Output[str]

    def __init__(self, name: str, args: LocalModelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalModel", name, None, opts)
        self.version = args.model.version
        files = [[str(f.source.resolve()), str(f.relative)] for f in args.model.files]
        resource = _Folder(
            _ModelVersionProvider(),
            f"{name}-version",
            {"registry": args.registry, "model": args.model.name, "version": self.version, "files": files},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.path = resource.path
        self.register_outputs({"version": self.version, "path": self.path})


# ---- image store --------------------------------------------------------------------------------

class _BundleProvider(_FolderProvider):
    """An image bundle: the scoring bundle written to `<store>/<image>/<tag>/`."""

    ADDRESS = ("store", "image", "tag")

    def exists(self, path: Path) -> bool:
        return (path / ".complete").exists()

    def create(self, props: dict[str, Any]) -> CreateResult:
        sources: dict[PurePosixPath, Source] = {
            PurePosixPath(rel): Path(value) if kind == "file" else value for rel, kind, value in props["sources"]
        }
        path = write_bundle(Path(props["store"]) / props["image"] / props["tag"], sources)
        return CreateResult(id_=str(path), outs={**props, "path": str(path)})


@dataclass(frozen=True)
class LocalImageArgs:
    """Inputs of a LocalImage."""

    store: str
    execution_script: Path
    conda_file: Path
    models: list[BundledModel]
    runtime_root: Path
    base_image: str
    """Only part of the generated Dockerfile here; it keeps the tag equal to the container image's."""
    depends_on: list[pulumi.Resource]
    """The registered models, so a bundle never exists before its models are registered."""


class LocalImage(pulumi.ComponentResource):
    """The scoring bundle of an image, stored locally and tagged by content like the container image."""

    tag: str
    image_ref: pulumi.Output[str]
    """`local/<image>:<tag>`."""
    path: pulumi.Output[str]
    model_dir: str
    """`AZUREML_MODEL_DIR` relative to the bundle's app folder."""

    def __init__(self, name: str, args: LocalImageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalImage", name, None, opts)
        sources = scoring_bundle(
            args.execution_script, args.conda_file, args.models, args.runtime_root, args.base_image
        )
        self.tag = content_tag(sources)
        self.model_dir = str(model_dir(args.models))
        bundle = _Folder(
            _BundleProvider(),
            f"{name}-bundle",
            {"store": args.store, "image": name, "tag": self.tag,
             # Plain data for the provider process: a file's absolute path, or generated text.
             "sources": [[str(rel), "file", str(src.resolve())] if isinstance(src, Path) else [str(rel), "text", src]
                         for rel, src in sorted(sources.items())]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.path = bundle.path
        self.image_ref = pulumi.Output.concat("local/", name, ":", self.tag)
        self.register_outputs({"image_ref": self.image_ref, "path": self.path})


# ---- services -----------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_alive(pid: int) -> bool:
    """Whether `pid` is a running process (a zombie, dead but not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not a service: reap it if it is our child, and check the state otherwise.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _start(props: dict[str, Any], port: int, key: str) -> int:
    bundle = Path(props["bundle"])
    log = Path(props["log_dir"]) / f"{props['service']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    settings = runtime.Settings(
        entry_script=str(bundle / APP_DIR / SCRIPT_NAME),
        model_dir=str(bundle / APP_DIR / props["model_dir"]),
        port=port,
        workers=int(props["workers"]),
        timeout_ms=int(props["timeout_ms"]),
        auth_keys=(key,) if key else (),
    )
    env = {**os.environ, **settings.environ(), "PYTHONPATH": str(bundle)}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serving", "--host", "127.0.0.1"],
            cwd=bundle / APP_DIR, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            # Its own session: the service outlives the provider process that started it.
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"service {props['service']} exited with {proc.returncode} before it was ready:\n{tail}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{runtime.READINESS_PATH}", timeout=1) as r:
                if r.status == 200:
                    return proc.pid
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    _stop(proc.pid, port)
    raise RuntimeError(f"service {props['service']} was not ready within {READY_TIMEOUT_S}s; see {log}")


def _stop(pid: int, port: int) -> None:
    if process_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and (process_alive(pid) or not _port_free(port)):
        time.sleep(0.05)
    if process_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _outputs(props: dict[str, Any], pid: int, port: int, key: str) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    # `port` stays what was asked for (0: any), so a diff against the config never sees a change.
    return {**props, "pid": pid, "bound_port": port, "primary_key": key,
            "scoring_uri": base + runtime.SCORE_PATH, "swagger_uri": base + runtime.SWAGGER_PATH}


class _ServiceProvider(ResourceProvider):
    """A scoring service: `python -m serving` over a bundle, as a process on 127.0.0.1."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        port = int(props["port"]) or _free_port()
        key = secrets.token_urlsafe(32) if props["auth_enabled"] else ""
        pid = _start(props, port, key)
        return CreateResult(id_=f"{props['service']}:{pid}", outs=_outputs(props, pid, port, key))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("bundle", "model_dir", "workers", "timeout_ms", "auth_enabled", "port", "service", "log_dir")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=["service"] if "service" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _stop(int(olds["pid"]), int(olds["bound_port"]))
        port = int(news["port"]) or int(olds["bound_port"])
        # The key survives restarts, so clients keep working; one is made if auth was just turned on.
        key = (olds.get("primary_key") or secrets.token_urlsafe(32)) if news["auth_enabled"] else ""
        pid = _start(news, port, key)
        return UpdateResult(outs=_outputs(news, pid, port, key))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        pid = int(props.get("pid") or 0)
        return ReadResult(id_=id_ if pid and process_alive(pid) else None, outs=props)  # type: ignore[arg-type]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _stop(int(props["pid"]), int(props["bound_port"]))


class _LocalServiceProcess(Resource):
    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    pid: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        outs = {"pid": None, "bound_port": None, "scoring_uri": None, "swagger_uri": None, "primary_key": None}
        super().__init__(_ServiceProvider(), name, {**props, **outs}, opts)


@dataclass(frozen=True)
class LocalServiceArgs:
    """Inputs of a LocalService."""

    bundle_path: pulumi.Input[str]
    model_dir: str
    log_dir: str
    port: int = 0
    """0 picks a free port at create time and keeps it across updates."""
    workers: int = 1
    auth_enabled: bool = False
    scoring_timeout_ms: int = runtime.DEFAULT_TIMEOUT_MS


class LocalService(pulumi.ComponentResource):
    """The scoring runtime serving an image bundle on 127.0.0.1, restarted when the bundle or settings change."""

    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    """The auth key (secret); empty when auth is off."""

    def __init__(self, name: str, args: LocalServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalService", name, None, opts)
        process = _LocalServiceProcess(
            f"{name}-process",
            {"service": name, "bundle": args.bundle_path, "model_dir": args.model_dir, "log_dir": args.log_dir,
             "port": args.port, "workers": args.workers, "auth_enabled": args.auth_enabled,
             "timeout_ms": args.scoring_timeout_ms},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["primary_key"]),
        )
        self.scoring_uri = process.scoring_uri
        self.swagger_uri = process.swagger_uri
        self.primary_key = pulumi.Output.secret(process.primary_key)
        self.register_outputs({"scoring_uri": self.scoring_uri, "primary_key": self.primary_key})
