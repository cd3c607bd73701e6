"""The local target's dynamic providers: content-addressed folders (model versions, image bundles,
environment venvs) and scoring services as `python -m serving` processes on 127.0.0.1.

The real engine diffs, updates and deletes these like cloud resources. Their classes are pickled
into the stack state by reference (module and name): `components.local` re-exports them so that
state written before they moved here still loads.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
import secrets
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, Optional

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
from providers import serving_process as process
from providers.serving_process import free_port, port_free
from serving import settings as runtime

READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30
PIP_TIMEOUT_S = 1800


class _FolderProvider(ResourceProvider):
    """A content-addressed folder: any change of its address replaces it; reading checks it is there,
    and so does a diff: a folder recorded in the state but gone from disk is written again.

    Two resources can point at one folder. A replacement whose address comes back to an earlier one
    does that: an update that failed after its new bundle was written leaves the old bundle resource
    pending delete, and reverting the change creates a new resource at the old address, which the
    pending delete would then remove from under the service using it. So each resource records a
    claim, a token in its outputs and a file `<folder>.claims/<token>` beside the folder (beside, not
    in it: a bundle's bytes are what its digest names), and its delete removes only its own claim;
    the folder goes with the last one. State written before claims existed has no token: its delete
    removes the folder only when no resource claims it.
    """

    ADDRESS: tuple[str, ...] = ()
    """The inputs that name the folder."""
    COMPARED: tuple[str, ...] = ()
    """Other inputs whose change updates the resource in place."""
    CLAIMED = True
    """Whether deletes remove the folder (and so claims guard it)."""

    def exists(self, path: Path) -> bool:
        return path.is_dir()

    def _write(self, props: dict[str, Any]) -> Path:
        """Write the folder unless it is there already; return where it is."""
        raise NotImplementedError

    def _written(self, props: dict[str, Any], claim: Optional[str] = None) -> dict[str, Any]:
        """The folder written and (if CLAIMED) claimed by `claim` or a new token: the outputs."""
        if not self.CLAIMED:
            return {**props, "path": str(self._write(props))}
        # The parent's lock orders this against a delete of the same folder by another resource.
        with _locked(self._parent(props)):
            path = self._write(props)
            claim = claim or secrets.token_hex(8)
            claims = _claims_dir(path)
            claims.mkdir(exist_ok=True)
            (claims / claim).touch()
        return {**props, "path": str(path), "claim": claim}

    def _parent(self, props: dict[str, Any]) -> Path:
        return Path(*(props[k] for k in self.ADDRESS[:-1]))

    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = self._written(props)
        return CreateResult(id_=outs["path"], outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = [k for k in self.ADDRESS if olds.get(k) != news.get(k)]
        changed = replaces + [k for k in self.COMPARED if olds.get(k) != news.get(k)]
        # Only when the state records a path. Under the offline plan's mocks (cli/diff.py asks this
        # method) the path is where the folder would be and is usually absent; that only ever adds
        # an in-place update, never a replacement, which is all cli/diff.py reads.
        path = olds.get("path")
        if not changed and isinstance(path, str) and not self.exists(Path(path)):
            changed = ["path"]
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        """The folder written again if it went missing, keeping this resource's claim."""
        return UpdateResult(outs=self._written(news, olds.get("claim")))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_ if self.exists(Path(id_)) else None, outs=props)  # type: ignore[arg-type]

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        path = Path(id_)
        if not path.parent.is_dir():
            return
        with _locked(path.parent):
            claims = _claims_dir(path)
            if props.get("claim"):
                (claims / props["claim"]).unlink(missing_ok=True)
            if claims.is_dir() and any(claims.iterdir()):
                return  # another resource in a stack's state still points at this folder
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(claims, ignore_errors=True)


def _claims_dir(path: Path) -> Path:
    return path.with_name(path.name + ".claims")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` (made if missing), for changes to the folders and claims in it."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


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

    def _write(self, props: dict[str, Any]) -> Path:
        target = Path(props["registry"]) / props["model"] / props["version"]
        if not target.exists():
            partial = target.with_name(target.name + f".partial-{os.getpid()}")
            for source, relative in props["files"]:
                dest = partial / relative
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, dest)
            partial.rename(target)
        return target


# ---- image store --------------------------------------------------------------------------------

class BundleProvider(_FolderProvider):
    """An image bundle: the scoring bundle written to `<store>/<image>/<tag>/`."""

    ADDRESS = ("store", "image", "tag")

    def exists(self, path: Path) -> bool:
        return (path / COMPLETE).exists()

    def _write(self, props: dict[str, Any]) -> Path:
        sources: dict[PurePosixPath, Source] = {
            PurePosixPath(rel): Path(value) if kind == "file" else value for rel, kind, value in props["sources"]
        }
        return write_bundle(bundle_dir(props["store"], props["image"], props["tag"]), sources)


def bundle_dir(store: str, image: str, tag: str) -> Path:
    """Where an image store keeps the bundle of `image` with content tag `tag`."""
    return Path(store) / image / tag


class PromotedBundleProvider(_FolderProvider):
    """A bundle another stack built, copied from its image store into this stack's and checked
    against the pinned digest, so the promoted stack owns exactly those bytes whatever the source
    stack does next (its `up` deletes the bundles it replaces)."""

    # Only what names the folder: a replacement at the same path would delete the new copy.
    ADDRESS = ("store", "image", "tag", "digest")
    COMPARED = ("models", "source_store", "source_stack")

    def _parent(self, props: dict[str, Any]) -> Path:
        return bundle_dir(props["store"], props["image"], props["tag"]).parent

    def exists(self, path: Path) -> bool:
        return (path / COMPLETE).exists()

    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        source, store = news.get("source_store"), news.get("store")
        if isinstance(source, str) and isinstance(store, str) and Path(source).resolve() == Path(store).resolve():
            return CheckResult(news, [CheckFailure("source_store", (
                f"stack {news.get('source_stack')!r} keeps its images in {source}, this stack's own image store: "
                "give this stack its own workspace.path (a promoted stack needs its own copy)"))])
        return CheckResult(news, [])

    def _check_models(self, path: Path, props: dict[str, Any]) -> None:
        found = bundled_models(manifest(path))
        expected = {name: version for name, version in props["models"]}
        if found != expected:
            raise RuntimeError(
                f"image {props['image']}: the bundle pinned from stack {props['source_stack']!r} carries models "
                f"{found}, but this stack's images entry declares {expected}: make `images[].models` list the "
                "models the source stack built the image with")

    def _write(self, props: dict[str, Any]) -> Path:
        """The bundle copied (or, already there, checked) and its models checked; an update does the
        same, so a changed `models` entry is checked against the bundle it names."""
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
        return target


# ---- environments -------------------------------------------------------------------------------

class EnvironmentProvider(_FolderProvider):
    """An image's environment as a venv at `<cache>/<key>/`: made by `interpreter -m venv`, then
    `pip install` of its requirement lines. The key addresses the lines and the Python version, so
    one venv serves every stack and image with the same environment."""

    ADDRESS = ("cache", "key")
    # Never deleted (see delete), so never claimed.
    CLAIMED = False

    def exists(self, path: Path) -> bool:
        return (path / ".complete").exists()

    def _write(self, props: dict[str, Any]) -> Path:
        if props.get("bundle"):
            # A promoted bundle: its environment file is known once the bundle is copied, now.
            interpreter, requirements, source = bundle_environment(Path(props["bundle"]))
        else:
            interpreter, requirements, source = props["interpreter"], props["requirements"], props["source"]
        return build_venv(Path(props["cache"]), props["key"], interpreter, requirements, source)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
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


def process_started(pid: int) -> Optional[int]:
    """When `pid` started, in clock ticks after boot (`/proc/<pid>/stat`'s 22nd field); None if unknown.

    Recorded with the pid, it names one process: a later process given the same number (after a
    reboot, say) is not taken for the service, nor signalled as if it were.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def service_running(props: dict[str, Any]) -> bool:
    """Whether the process a service's state records (`pid`, `started`) is running."""
    pid = int(props.get("pid") or 0)
    if not pid or not process_alive(pid):
        return False
    started = props.get("started")
    return started is None or process_started(pid) in (None, int(started))


def log_path(log_dir: str, service: str) -> Path:
    """Where a local service's runtime writes its log (what `ml-deploy logs` reads)."""
    return Path(log_dir) / f"{service}.log"


def runtime_shares_ports(bundle: Path) -> bool:
    """Whether the scoring runtime in `bundle` can take over a port from a running process and report
    readiness (`serving.settings.REUSE_PORT`, `NOTIFY_SOCKET`). A bundle carries the runtime it was
    built with: one promoted from a stack built by an earlier ml-deploy may not."""
    try:
        return runtime.REUSE_PORT in (bundle / RUNTIME_DIR / "settings.py").read_text()
    except OSError:
        return False


class ReadySignal:
    """Where a starting service reports readiness: systemd's sd_notify protocol (sd_notify(3), NOTES:
    "a single datagram with the state string as payload to the AF_UNIX socket referenced in the
    $NOTIFY_SOCKET environment variable"; `@name` is an abstract socket, so no file to clean up).
    The service sends `READY=1` once it listens with a worker ready (`serving.server`).

    Only the process we started counts: with SO_PASSCRED the kernel attaches the sender's
    credentials (SCM_CREDENTIALS) to each datagram, and a report from any other pid is ignored.
    """

    _CREDENTIALS = struct.calcsize("3i")  # struct ucred: pid, uid, gid

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        name = f"ml-deploy-ready-{secrets.token_hex(8)}"
        self.sock.bind("\0" + name)
        self.address = "@" + name

    def wait(self, proc: subprocess.Popen, deadline: float) -> bool:
        """True once `proc` reported READY=1, False if it exited first; TimeoutError at `deadline`."""
        try:
            # Readable when the process exits: no polling for it.
            exited: Optional[int] = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            exited = None
        try:
            while proc.poll() is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                watched: list[Any] = [self.sock] if exited is None else [self.sock, exited]
                readable, _, _ = select.select(watched, [], [], remaining if exited is not None else min(remaining, 0.1))
                if self.sock in readable and self._ready_from(proc.pid):
                    return True
            return False
        finally:
            if exited is not None:
                os.close(exited)

    def _ready_from(self, pid: int) -> bool:
        msg, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(self._CREDENTIALS))
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                sender = struct.unpack("3i", data[:self._CREDENTIALS])[0]
                return sender == pid and "READY=1" in msg.decode(errors="replace").split("\n")
        return False

    def close(self) -> None:
        self.sock.close()


def _poll_ready(proc: subprocess.Popen, settings: runtime.Settings, deadline: float) -> bool:
    """Readiness of a runtime that does not report it (see runtime_shares_ports): /ready polled."""
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise TimeoutError
        if process.answers_ready(settings.scheme, settings.port):
            return True
        time.sleep(0.1)
    return False


FAILURE_OUTPUT_CHARS = 4000
"""How much of a failed start's own output its error message shows (its end)."""


def first_error_line(output: str) -> Optional[str]:
    """The first error in a process's output: the exception line closing its first traceback, else
    its first line logged at ERROR, else its last line (a `sys.exit("...")` message)."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last):"):
            # The frames and source lines are indented; the exception line is the first that is not.
            found = next((later for later in lines[i + 1:] if later.strip() and not later[0].isspace()), None)
            if found:
                return found.strip()
    logged = next((line for line in lines if " ERROR " in line), None)
    if logged:
        return logged.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), None)


def start_failure(service: str, what: str, output: str, log: Path) -> str:
    """The message of a failed start: what happened and its first error on the first line, then
    this start's own output (not the earlier runs' that the append-only log also holds)."""
    first = first_error_line(output)
    shown = output.strip()
    if len(shown) > FAILURE_OUTPUT_CHARS:
        shown = f"[{len(shown) - FAILURE_OUTPUT_CHARS} characters before this; all of it in {log}]\n" + \
            shown[-FAILURE_OUTPUT_CHARS:]
    return (f"service {service} {what}" + (f": {first}" if first else "") +
            f"\nits output (from {log}):\n{shown or '(nothing)'}")


def read_from(log: Path, offset: int) -> str:
    with log.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def _start(props: dict[str, Any], port: int, keys: tuple[str, ...], share_port: bool) -> tuple[int, Optional[int]]:
    """Start the service on `port` and wait until it is ready: (pid, start time; see process_started).

    `share_port`: bind with SO_REUSEPORT (next to a running predecessor) and wait for its READY=1.
    Raises RuntimeError, with the process stopped, when it exits or is not ready in time.
    """
    bundle = Path(props["bundle"])
    log = log_path(props["log_dir"], props["service"])
    settings = process.settings(
        props, port, keys, process.write_tls(tls_dir(props), props),
        entry_script=str(bundle / APP_DIR / SCRIPT_NAME), model_dir=str(bundle / APP_DIR / props["model_dir"]),
        reuse_port=share_port,
    )
    env = {**os.environ, **settings.environ(), "PYTHONPATH": str(bundle)}
    # The environment's venv is what runs the service, not the project's own (or the provider's).
    env.pop("VIRTUAL_ENV", None)
    env.pop(runtime.NOTIFY_SOCKET, None)  # pulumi's own, were it run by systemd
    ready_signal = ReadySignal() if share_port else None
    if ready_signal is not None:
        env[runtime.NOTIFY_SOCKET] = ready_signal.address
    try:
        return launch(props["service"], "", [props["python"], "-m", "serving", "--host", "127.0.0.1"],
                      bundle / APP_DIR, env, log,
                      ready_signal.wait if ready_signal else lambda proc, deadline: _poll_ready(proc, settings, deadline))
    finally:
        if ready_signal is not None:
            ready_signal.close()


def launch(service: str, what: str, command: list[str], cwd: Path, env: dict[str, str], log: Path,
           wait_ready: Callable[[subprocess.Popen, float], bool]) -> tuple[int, Optional[int]]:
    """Start `command` in a session of its own (it outlives the provider process), its output appended
    to `log`, and wait until `wait_ready(proc, deadline)` says it is ready: (pid, start time; see
    process_started). RuntimeError naming `service` (and `what`, e.g. "router ") with this start's
    output when it exits or is not ready in time, the process stopped."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        # The log is appended to across starts: a failure shows this start's output only.
        offset = out.seek(0, os.SEEK_END)
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready = wait_ready(proc, time.monotonic() + READY_TIMEOUT_S)
    except TimeoutError:
        _stop_child(proc)
        raise RuntimeError(start_failure(service, f"{what}was not ready within {READY_TIMEOUT_S}s (stopped it)",
                                         read_from(log, offset), log)) from None
    except BaseException:
        _stop_child(proc)  # no process the state will not record is left running
        raise
    if not ready:
        proc.wait()
        raise RuntimeError(start_failure(service, f"{what}exited with {proc.returncode} before it was ready",
                                         read_from(log, offset), log))
    return proc.pid, process_started(proc.pid)


def _stop_child(proc: subprocess.Popen) -> None:
    """Stop a service process this provider started (and reap it)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_process(pid: int, port: Optional[int] = None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the service's process group and wait until it drained its requests and exited (and,
    given `port`, until that port is free); SIGKILL past `timeout_s`."""
    if process_alive(pid):
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and (process_alive(pid) or (port is not None and not port_free(port))):
        time.sleep(0.05)
    if process_alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _outputs(props: dict[str, Any], pid: int, started: Optional[int], port: int, keys: tuple[str, str],
             port_shared: bool) -> dict[str, Any]:
    # `port` stays what was asked for (0: any), so a diff against the config never sees a change.
    return {**props, "pid": pid, "started": started, "bound_port": port, "port_shared": port_shared,
            "primary_key": keys[0], "secondary_key": keys[1], **process.uris(props, port)}


def tls_dir(props: dict[str, Any]) -> Path:
    """Where a service's certificate and key are written for its process (the workspace's `tls/`)."""
    return Path(props["log_dir"]).parent / "tls" / props["service"]


PORT_RELEASE_S = 5.0
"""How long an update waits for the port of a service process found dead to be released: its workers
close their listening socket as they see the master gone (or are torn down with it) within moments."""


def check_port(service: str, port: int, release_s: float = 0.0) -> None:
    """Raise unless `port` is free, waiting up to `release_s` for it (the service's own dead process)."""
    # A port shared with SO_REUSEPORT would also be shared with a stray process left listening on it
    # (started with the same flag by hand, or orphaned from a lost state): both would answer.
    if not process.wait_port_free(port, release_s):
        raise RuntimeError(f"service {service}: port {port} on 127.0.0.1 is in use by another process")


def release_wait(olds: dict[str, Any], port: int) -> float:
    """How long to wait for `port` before starting a service's process again: a while if the process
    of the state held it and is gone (its workers may be closing it), not at all otherwise."""
    return PORT_RELEASE_S if olds.get("pid") and port == int(olds.get("bound_port") or 0) else 0.0


def _keys(props: dict[str, Any], olds: Optional[dict[str, Any]] = None) -> tuple[str, str]:
    """The keys a service accepts: given (a deployment takes its service's, `keys_given`), or its own."""
    given = props.get("keys_given")
    if props.get("auth_enabled") and given:
        return str(given[0]), str(given[1])
    return process.keys(bool(props["auth_enabled"]), olds)


class ServiceProvider(ResourceProvider):
    """A scoring service: `python -m serving` over a bundle, as a process on 127.0.0.1.

    An update starts the new version next to the old one, on the same port, and stops the old one
    only once the new one is ready, like a Kubernetes rolling update with maxUnavailable 0: a new
    version whose init() fails leaves the old one serving, and the state keeps its outputs. Both
    processes bind the port with SO_REUSEPORT; the new one listens only once a worker finished
    init() (so it takes no connection before), then reports READY=1 (see ReadySignal). On SIGTERM
    the old master accepts what is queued on its listener before closing it, and drains those
    requests: only connections arriving in the microseconds between its last accept() and close()
    can be reset (Linux's net.ipv4.tcp_migrate_req would hand even those over, but it is a
    machine-wide setting this tool does not change).
    """

    def create(self, props: dict[str, Any]) -> CreateResult:
        port = int(props["port"]) or free_port()
        check_port(props["service"], port)
        keys = _keys(props)
        shared = runtime_shares_ports(Path(props["bundle"]))
        pid, started = _start(props, port, keys, shared)
        return CreateResult(id_=f"{props['service']}:{pid}", outs=_outputs(props, pid, started, port, keys, shared))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # tls_cert_file and tls_key_file: the PEM paths an earlier ml-deploy passed, now the PEMs themselves.
        keys = ("bundle", "python", "model_dir", "port", "service", "log_dir", *process.RUNTIME_INPUTS,
                "keys_given", "tls_cert_file", "tls_key_file")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        # The process the state records is gone: an update starts it again, so that a plain preview
        # shows the drift. Only with a recorded pid: the offline plan's mock states (cli/diff.py) have none.
        if olds.get("pid") and not service_running(olds):
            changed.append("pid")
        return DiffResult(changes=bool(changed), replaces=["service"] if "service" in changed else [])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        service = news["service"]
        old_pid, old_port = int(olds.get("pid") or 0), int(olds.get("bound_port") or 0)
        port = int(news["port"]) or old_port or free_port()
        keys = _keys(news, olds)
        shared = runtime_shares_ports(Path(news["bundle"]))
        running = service_running(olds)
        if running and port == old_port and not (shared and olds.get("port_shared")):
            # The old process holds the port without SO_REUSEPORT (started by an earlier ml-deploy),
            # or the new bundle's runtime cannot share it: the port must be freed first.
            why = ("was started without a shareable port (by an earlier ml-deploy)" if not olds.get("port_shared")
                   else "cannot hand its port to the new bundle's runtime (built by an earlier ml-deploy)")
            pulumi.log.warn(f"service {service}: the running process (pid {old_pid}) {why}: stopping it before "
                            "starting the new version, so the service is down until that one is ready")
            stop_process(old_pid, old_port)
            running = False
        if not running or port != old_port:
            check_port(service, port, release_wait(olds, port))
        try:
            pid, started = _start(news, port, keys, shared)
        except RuntimeError as err:
            if running:
                raise RuntimeError(f"{err}\nThe previous version (pid {old_pid}) is still serving on port {old_port}; "
                                   "fix the script and run `up` again") from None
            raise
        if running:
            stop_process(old_pid)  # it drains the requests it has; new connections already go to the new one
        return UpdateResult(outs=_outputs(news, pid, started, port, keys, shared))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_ if service_running(props) else None, outs=props)  # type: ignore[arg-type]

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if service_running(props):
            stop_process(int(props["pid"]), int(props["bound_port"]))
        if process.has_tls(props):
            shutil.rmtree(tls_dir(props), ignore_errors=True)


class ServiceProcess(Resource):
    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    secondary_key: pulumi.Output[str]
    pid: pulumi.Output[int]
    bound_port: pulumi.Output[int]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        outs = {"pid": None, "bound_port": None, "scoring_uri": None, "swagger_uri": None,
                "primary_key": None, "secondary_key": None}
        super().__init__(ServiceProvider(), name, {**props, **outs}, opts)
