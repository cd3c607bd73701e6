"""The local target's dynamic providers: content-addressed folders (model versions, image bundles,
environment venvs) and scoring services as `python -m serving` processes on 127.0.0.1.

The real engine diffs, updates and deletes these like cloud resources. Their classes are pickled
into the stack state by reference (module and name): `components.local` re-exports them so that
state written before they moved here still loads.
"""

from __future__ import annotations

import fcntl
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from content import environment
from content.bundle import (
    APP_DIR,
    COMPLETE,
    CONDA_NAME,
    PIP_NAME,
    RUNTIME_DIR,
    SCRIPT_NAME,
    BundleMismatch,
    Source,
    bundled_models,
    copy_bundle,
    manifest,
    write_bundle,
)
from serving import settings as runtime

READY_TIMEOUT_S = 120
_UNVERIFIED = ssl._create_unverified_context()
STOP_TIMEOUT_S = 30
PIP_TIMEOUT_S = 1800


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


class Folder(Resource):
    """A folder managed by a `_FolderProvider`; `path` is where it was written."""

    path: pulumi.Output[str]

    def __init__(self, provider: _FolderProvider, name: str, props: dict[str, Any],
                 opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(provider, name, {**props, "path": None}, opts)


# ---- model registry ---------------------------------------------------------------------------

class ModelVersionProvider(_FolderProvider):
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


# ---- image store --------------------------------------------------------------------------------

class BundleProvider(_FolderProvider):
    """An image bundle: the scoring bundle written to `<store>/<image>/<tag>/`."""

    ADDRESS = ("store", "image", "tag")

    def exists(self, path: Path) -> bool:
        return (path / COMPLETE).exists()

    def create(self, props: dict[str, Any]) -> CreateResult:
        sources: dict[PurePosixPath, Source] = {
            PurePosixPath(rel): Path(value) if kind == "file" else value for rel, kind, value in props["sources"]
        }
        path = write_bundle(bundle_dir(props["store"], props["image"], props["tag"]), sources)
        return CreateResult(id_=str(path), outs={**props, "path": str(path)})


def bundle_dir(store: str, image: str, tag: str) -> Path:
    """Where an image store keeps the bundle of `image` with content tag `tag`."""
    return Path(store) / image / tag


class PromotedBundleProvider(_FolderProvider):
    """A bundle another stack built, copied from its image store into this stack's and checked
    against the pinned digest, so the promoted stack owns exactly those bytes whatever the source
    stack does next (its `up` deletes the bundles it replaces)."""

    # Only what names the folder: a replacement at the same path would delete the new copy.
    ADDRESS = ("store", "image", "tag", "digest")

    def exists(self, path: Path) -> bool:
        return (path / COMPLETE).exists()

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        source, store = news.get("source_store"), news.get("store")
        if isinstance(source, str) and isinstance(store, str) and Path(source).resolve() == Path(store).resolve():
            return CheckResult(news, [CheckFailure("source_store", (
                f"stack {news.get('source_stack')!r} keeps its images in {source}, this stack's own image store: "
                "give this stack its own workspace.path (a promoted stack needs its own copy)"))])
        return CheckResult(news, [])

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in self.ADDRESS if olds.get(k) != news.get(k)]
        changed = replaces + [k for k in ("models", "source_store", "source_stack") if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def _check_models(self, path: Path, props: dict[str, Any]) -> None:
        found = bundled_models(manifest(path))
        expected = {name: version for name, version in props["models"]}
        if found != expected:
            raise RuntimeError(
                f"image {props['image']}: the bundle pinned from stack {props['source_stack']!r} carries models "
                f"{found}, but this stack's images entry declares {expected}: make `images[].models` list the "
                "models the source stack built the image with")

    def create(self, props: dict[str, Any]) -> CreateResult:
        target = bundle_dir(props["store"], props["image"], props["tag"])
        source = bundle_dir(props["source_store"], props["image"], props["tag"])
        existed = target.exists()
        try:
            copy_bundle(source, target, props["digest"])
        except FileNotFoundError:
            raise RuntimeError(
                f"image {props['image']}: stack {props['source_stack']!r} no longer has the pinned bundle "
                f"sha256:{props['digest']} (looked at {source}); it has moved on since the pin was written. "
                f"Pin what it runs now with `ml-deploy promote --from {props['source_stack']} --to <this stack>`"
            ) from None
        except BundleMismatch as err:
            raise RuntimeError(f"image {props['image']}: {err}; a promoted stack runs only the pinned bytes") from None
        try:
            self._check_models(target, props)
        except RuntimeError:
            if not existed:
                shutil.rmtree(target, ignore_errors=True)
            raise
        return CreateResult(id_=str(target), outs={**props, "path": str(target)})

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        path = bundle_dir(news["store"], news["image"], news["tag"])
        self._check_models(path, news)
        return UpdateResult(outs={**news, "path": str(path)})


# ---- environments -------------------------------------------------------------------------------

class EnvironmentProvider(_FolderProvider):
    """An image's environment as a venv at `<cache>/<key>/`: made by `interpreter -m venv`, then
    `pip install` of its requirement lines. The key addresses the lines and the Python version, so
    one venv serves every stack and image with the same environment."""

    ADDRESS = ("cache", "key")

    def exists(self, path: Path) -> bool:
        return (path / ".complete").exists()

    def create(self, props: dict[str, Any]) -> CreateResult:
        if props.get("bundle"):
            # A promoted bundle: its environment file is known once the bundle is copied, now.
            interpreter, requirements, source = bundle_environment(Path(props["bundle"]))
        else:
            interpreter, requirements, source = props["interpreter"], props["requirements"], props["source"]
        path = build_venv(Path(props["cache"]), props["key"], interpreter, requirements, source)
        return CreateResult(id_=str(path), outs={**props, "path": str(path)})

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        """Nothing: the venv is a cache entry that other stacks with the same environment share
        (clear the cache folder to reclaim it)."""


@functools.lru_cache(maxsize=None)
def find_interpreter(version: Optional[str]) -> tuple[str, str]:
    """(path, exact version) of the Python that makes a venv: `python<version>` from PATH when a
    `major.minor` is asked for, else the one running this program. LookupError when there is none."""
    candidate = os.path.realpath(sys.executable) if version is None else shutil.which(f"python{version}")
    if candidate is None:
        raise LookupError(f"no python{version} on this machine (looked on PATH)")
    probe = subprocess.run(
        [candidate, "-c", "import os, sys; print(os.path.realpath(sys.executable)); print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True, text=True,
    )
    lines = probe.stdout.split()
    if probe.returncode != 0 or len(lines) != 2 or (version is not None and not lines[1].startswith(version + ".")):
        raise LookupError(f"python{version or ''} on PATH does not run ({(probe.stderr or probe.stdout).strip()[:200]})")
    return lines[0], lines[1]


@dataclass(frozen=True)
class ResolvedEnvironment:
    """An image's environment, ready to be a venv: its Python and pip requirement lines."""

    interpreter: str
    python_version: str
    requirements: list[str]
    """The environment's lines, then the scoring runtime's."""
    source: Path

    @property
    def key(self) -> str:
        return environment.environment_key(self.requirements, self.python_version)


def resolve_environment(env: environment.Environment, runtime_requirements: Path) -> ResolvedEnvironment:
    """`env` with the runtime's requirements added and the Python it asks for found.

    Raises LookupError when this machine has no such Python.
    """
    interpreter, version = find_interpreter(env.python)
    lines = list(env.requirements) + environment.requirement_lines(runtime_requirements.read_text())
    return ResolvedEnvironment(interpreter, version, lines, env.source)


def bundle_environment(bundle: Path) -> tuple[str, list[str], str]:
    """(interpreter, requirement lines, environment file) of a bundle's own environment file and
    runtime: what a promoted bundle carries, which the promoted stack's config does not name."""
    app = bundle / APP_DIR
    pip, conda = app / PIP_NAME, app / CONDA_NAME
    try:
        env = environment.load(None, pip) if pip.is_file() else environment.load(conda, None)
        resolved = resolve_environment(env, bundle / RUNTIME_DIR / "requirements.txt")
    except (environment.UnresolvableEnvironment, LookupError) as err:
        raise RuntimeError(f"promoted bundle {bundle}: {err}") from None
    return resolved.interpreter, resolved.requirements, str(resolved.source)


def build_venv(cache: Path, key: str, interpreter: str, requirements: list[str], source: str) -> Path:
    """The venv `<cache>/<key>`, built unless a complete one is there. Built in place (a venv holds
    its own path), under a lock so that two stacks never build the same one at once."""
    target = cache / key
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".complete").exists():
            return target
        shutil.rmtree(target, ignore_errors=True)  # an interrupted build
        log = cache / f"{key}.log"
        with log.open("w") as out:
            subprocess.run([interpreter, "-m", "venv", str(target)], check=True, stdout=out, stderr=subprocess.STDOUT)
            (target / "requirements.txt").write_text("".join(line + "\n" for line in requirements))
            pip = subprocess.run(
                [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                 "--no-input", "-r", str(target / "requirements.txt")],
                stdout=out, stderr=subprocess.STDOUT, timeout=PIP_TIMEOUT_S,
            )
        if pip.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise RuntimeError(pip_failure(source, log.read_text(errors="replace")))
        (target / ".complete").write_text("")
        log.unlink()
        return target


def pip_failure(source: str, output: str) -> str:
    """What went wrong in a venv's `pip install`, naming the environment file and the package."""
    missing = re.findall(r"No matching distribution found for (\S+)", output)
    if missing:
        return (f"environment {source}: {missing[0]} cannot be had from PyPI (no matching distribution); "
                f"fix its name or version in that file")
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"environment {source}: pip could not install it:\n{tail}"


# ---- services -----------------------------------------------------------------------------------

def free_port() -> int:
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


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def log_path(log_dir: str, service: str) -> Path:
    """Where a local service's runtime writes its log (what `ml-deploy logs` reads)."""
    return Path(log_dir) / f"{service}.log"


def _start(props: dict[str, Any], port: int, keys: tuple[str, ...]) -> int:
    bundle = Path(props["bundle"])
    log = log_path(props["log_dir"], props["service"])
    log.parent.mkdir(parents=True, exist_ok=True)
    settings = runtime.Settings(
        entry_script=str(bundle / APP_DIR / SCRIPT_NAME),
        model_dir=str(bundle / APP_DIR / props["model_dir"]),
        port=port,
        workers=int(props["workers"]),
        timeout_ms=int(props["timeout_ms"]),
        auth_keys=tuple(k for k in keys if k),
        tls_cert_file=props.get("tls_cert_file"),
        tls_key_file=props.get("tls_key_file"),
        service_name=props["service"],
    )
    env = {**os.environ, **settings.environ(), "PYTHONPATH": str(bundle)}
    # The environment's venv is what runs the service, not the project's own (or the provider's).
    env.pop("VIRTUAL_ENV", None)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [props["python"], "-m", "serving", "--host", "127.0.0.1"],
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
            # Our own child on loopback: its certificate names the service's public name, not 127.0.0.1.
            with urllib.request.urlopen(f"{settings.scheme}://127.0.0.1:{port}{runtime.READINESS_PATH}", timeout=1,
                                        context=_UNVERIFIED if settings.scheme == "https" else None) as r:
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
    while time.monotonic() < deadline and (process_alive(pid) or not port_free(port)):
        time.sleep(0.05)
    if process_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _outputs(props: dict[str, Any], pid: int, port: int, keys: tuple[str, str]) -> dict[str, Any]:
    base = f"{'https' if props.get('tls_cert_file') else 'http'}://127.0.0.1:{port}"
    # `port` stays what was asked for (0: any), so a diff against the config never sees a change.
    return {**props, "pid": pid, "bound_port": port, "primary_key": keys[0], "secondary_key": keys[1],
            "scoring_uri": base + runtime.SCORE_PATH, "swagger_uri": base + runtime.SWAGGER_PATH}


def _keys(auth_enabled: bool, olds: Optional[dict[str, Any]] = None) -> tuple[str, str]:
    """(primary, secondary): kept across restarts so clients keep working; made when auth turns on."""
    if not auth_enabled:
        return "", ""
    olds = olds or {}
    return (olds.get("primary_key") or secrets.token_urlsafe(32), olds.get("secondary_key") or secrets.token_urlsafe(32))


class ServiceProvider(ResourceProvider):
    """A scoring service: `python -m serving` over a bundle, as a process on 127.0.0.1."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        port = int(props["port"]) or free_port()
        keys = _keys(bool(props["auth_enabled"]))
        pid = _start(props, port, keys)
        return CreateResult(id_=f"{props['service']}:{pid}", outs=_outputs(props, pid, port, keys))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("bundle", "python", "model_dir", "workers", "timeout_ms", "auth_enabled", "port", "service", "log_dir",
                "tls_cert_file", "tls_key_file")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=["service"] if "service" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _stop(int(olds["pid"]), int(olds["bound_port"]))
        port = int(news["port"]) or int(olds["bound_port"])
        keys = _keys(bool(news["auth_enabled"]), olds)
        pid = _start(news, port, keys)
        return UpdateResult(outs=_outputs(news, pid, port, keys))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        pid = int(props.get("pid") or 0)
        return ReadResult(id_=id_ if pid and process_alive(pid) else None, outs=props)  # type: ignore[arg-type]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _stop(int(props["pid"]), int(props["bound_port"]))


class ServiceProcess(Resource):
    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    secondary_key: pulumi.Output[str]
    pid: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        outs = {"pid": None, "bound_port": None, "scoring_uri": None, "swagger_uri": None,
                "primary_key": None, "secondary_key": None}
        super().__init__(ServiceProvider(), name, {**props, **outs}, opts)
