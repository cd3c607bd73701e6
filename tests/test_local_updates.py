"""Updates of the local target that never leave it without a service (issue 18, items 12 and 13).

The provider is driven directly, with real `python -m serving` processes on 127.0.0.1 over small
bundles (a score.py and the runtime), and once through the real Pulumi engine on the local stack:
a new version whose init() fails leaves the old one serving, the state never records a process or
folder that is gone, and a failed start's message shows that start's own error first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
from pulumi import automation as auto

from cli.call import call
from providers.local import (
    BundleProvider,
    ServiceProvider,
    _start,
    check_port,
    first_error_line,
    process_alive,
    release_wait,
    service_running,
)
from serving import settings as names
from tests.helpers import ROOT, SEED, copy_project, free_port, local_engine_stack

DEADLINE_S = 60

V1 = """
    def init():
        pass
    def run(raw):
        return {"version": 1}
"""

V2 = """
    def init():
        pass
    def run(raw):
        return {"version": 2}
"""

FAILING = """
    def init():
        raise RuntimeError("the new model file is corrupt")
    def run(raw):
        return {"version": "never"}
"""

# init() tells the test it has begun, then waits for the test's go-ahead: the test sees the
# update while the new version is starting, without guessing how long that takes.
GATED = """
    import pathlib, time
    APP = pathlib.Path(__file__).parent
    def init():
        (APP / "init-started").write_text("")
        while not (APP / "go").exists():
            time.sleep(0.02)
    def run(raw):
        return {"version": 2}
"""


# ---- helpers ---------------------------------------------------------------------------------

def bundle(tmp_path: Path, script: str) -> Path:
    """A bundle as the provider runs it: app/score.py, an empty model folder, and this runtime."""
    folder = tmp_path / f"bundle-{len(list(tmp_path.glob('bundle-*')))}"
    (folder / "app" / "models").mkdir(parents=True)
    (folder / "app" / "score.py").write_text(textwrap.dedent(script))
    shutil.copytree(ROOT / "serving", folder / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def props(tmp_path: Path, bundle_path: Path, port: int = 0) -> dict[str, Any]:
    # The project's own python has what the runtime needs.
    return {"service": "svc", "bundle": str(bundle_path), "python": sys.executable, "model_dir": "models",
            "log_dir": str(tmp_path / "logs"), "port": port, "workers": 1, "auth_enabled": False,
            "timeout_ms": 60000}


def score(outs: dict[str, Any], timeout: float = 30) -> httpx.Response:
    # A new connection per request, so each one is routed by the kernel afresh.
    return httpx.post(outs["scoring_uri"], content=b"x", headers={"content-type": "text/plain"}, timeout=timeout)


def version(outs: dict[str, Any]) -> Any:
    r = score(outs)
    assert r.status_code == 200, r.text
    return r.json()["version"]


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def kill(pid: int) -> None:
    """Stop a process group this test started (directly or through the provider), by its pid."""
    if process_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        until(lambda: not process_alive(pid), f"process {pid} to exit")


@dataclass
class Traffic:
    """Requests sent one after another from a thread until stopped: what each got."""

    send: Callable[[], Any]
    answers: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.answers.append(self.send())
            except Exception as err:  # noqa: BLE001 - counted, then asserted on
                self.failures.append(repr(err))
            self.stop.wait(0.02)  # pacing only: two cores are shared with the service being updated


@contextmanager
def traffic(send: Callable[[], Any]) -> Iterator[Traffic]:
    t = Traffic(send)
    thread = threading.Thread(target=t.run, daemon=True)
    thread.start()
    try:
        yield t
    finally:
        t.stop.set()
        thread.join(DEADLINE_S)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[int]]:
    """Pids of the service processes a test starts: every one still running is stopped afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        kill(pid)


# ---- updates: the new version first, the old one stopped once it is ready ---------------------

def test_an_update_whose_init_fails_leaves_the_old_version_serving(tmp_path, started):
    provider = ServiceProvider()
    old = props(tmp_path, bundle(tmp_path, V1))
    outs = provider.create(old).outs or {}
    started.append(outs["pid"])
    new = props(tmp_path, bundle(tmp_path, FAILING))
    assert provider.diff("svc", outs, new).changes

    with traffic(lambda: version(outs)) as during:
        with pytest.raises(RuntimeError) as failed:
            provider.update("svc", outs, new)
    first_line = str(failed.value).splitlines()[0]
    assert "RuntimeError: the new model file is corrupt" in first_line, failed.value
    assert f"pid {outs['pid']}) is still serving" in str(failed.value)
    # Every request during the update was answered by the old version, and it still is.
    assert during.failures == [] and set(during.answers) == {1}, (during.failures, set(during.answers))
    assert version(outs) == 1
    # The state keeps the old outputs (the engine does, on a failed update): they are still true.
    assert service_running(outs)
    assert provider.read("svc", outs).id == "svc"
    assert not provider.diff("svc", outs, old).changes


def test_an_update_starts_the_new_version_before_it_stops_the_old_one(tmp_path, started):
    provider = ServiceProvider()
    outs = provider.create(props(tmp_path, bundle(tmp_path, V1))).outs or {}
    started.append(outs["pid"])
    new_bundle = bundle(tmp_path, GATED)
    result: dict[str, Any] = {}

    def update() -> None:
        began = time.monotonic()
        try:
            result["outs"] = provider.update("svc", outs, props(tmp_path, new_bundle)).outs
        except Exception as err:  # noqa: BLE001 - asserted on below
            result["error"] = err
        result["seconds"] = time.monotonic() - began

    with traffic(lambda: version(outs)) as during:
        updating = threading.Thread(target=update, daemon=True)
        updating.start()
        try:
            until(lambda: (new_bundle / "app" / "init-started").exists(), "the new version's init()")
            # The new process is bound to the port but not listening while its init() runs: every
            # connection still reaches the old version, which answers.
            assert [version(outs) for _ in range(20)] == [1] * 20
            assert process_alive(outs["pid"])
        finally:
            (new_bundle / "app" / "go").write_text("")  # whatever happened, the update ends
            updating.join(DEADLINE_S)
            if "outs" in result:
                started.append(result["outs"]["pid"])
        assert "error" not in result, result.get("error")
        new = result["outs"]
        # Wait until the new version answers (sharing the port, the old one may still take a request).
        until(lambda: version(new) == 2, "the new version's answer")
    print(f"\nupdate took {result['seconds']:.2f} s; {len(during.answers)} requests during it, "
          f"{len(during.failures)} failed")
    assert during.failures == [], during.failures
    assert set(during.answers) <= {1, 2}
    assert new["bound_port"] == outs["bound_port"] and new["scoring_uri"] == outs["scoring_uri"]
    assert new["pid"] != outs["pid"] and not process_alive(outs["pid"])
    assert [version(new) for _ in range(5)] == [2] * 5


def test_a_process_started_without_a_shareable_port_is_stopped_before_the_new_one_starts(tmp_path, started):
    """State written by earlier code records a process that holds its port alone (no SO_REUSEPORT,
    no `port_shared`): the update falls back to stop-then-start, and says so."""
    provider = ServiceProvider()
    old = props(tmp_path, bundle(tmp_path, V1), port=free_port())
    pid, _ = _start(old, old["port"], ("", ""), share_port=False)  # as the earlier code started it
    started.append(pid)
    uri = f"http://127.0.0.1:{old['port']}/score"
    olds = {**old, "pid": pid, "bound_port": old["port"], "primary_key": "", "secondary_key": "",
            "scoring_uri": uri, "swagger_uri": f"http://127.0.0.1:{old['port']}/swagger.json"}
    assert version(olds) == 1
    new = provider.update("svc", olds, props(tmp_path, bundle(tmp_path, V2), port=old["port"])).outs or {}
    started.append(new["pid"])
    assert not process_alive(pid)
    assert new["port_shared"] is True and version(new) == 2


# ---- the state never records a process that is gone -----------------------------------------

def test_a_dead_process_shows_as_a_change_and_an_update_starts_it_again(tmp_path, started):
    provider = ServiceProvider()
    inputs = props(tmp_path, bundle(tmp_path, V1))
    outs = provider.create(inputs).outs or {}
    started.append(outs["pid"])
    assert not provider.diff("svc", outs, inputs).changes
    kill(outs["pid"])

    assert provider.diff("svc", outs, inputs).changes
    assert provider.read("svc", outs).id is None
    again = provider.update("svc", outs, inputs).outs or {}
    started.append(again["pid"])
    assert again["scoring_uri"] == outs["scoring_uri"] and version(again) == 1
    assert not provider.diff("svc", again, inputs).changes


def test_an_update_waits_for_a_dead_services_port_and_no_longer(tmp_path):
    # The workers of a service found dead may still be closing its listening socket for a moment.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 is in use by another process"):
        check_port("svc", port)
    threading.Timer(0.3, listener.close).start()
    check_port("svc", port, release_wait({"pid": 1, "bound_port": port}, port))
    assert release_wait({"pid": 1, "bound_port": port}, port + 1) == 0 == release_wait({}, port)


def test_a_recorded_pid_now_used_by_another_process_is_not_the_service(tmp_path):
    # This test process is alive, but it did not start when the state says the service did.
    outs = {"pid": os.getpid(), "started": 1, "bound_port": 1}
    assert not service_running(outs)
    assert ServiceProvider().diff("svc", outs, {}).changes
    ServiceProvider().delete("svc", outs)  # must not signal it
    assert process_alive(os.getpid())


def test_mock_states_without_a_pid_or_path_show_no_drift(tmp_path):
    # cli/diff.py asks the providers offline, with the mocks' states: no pid, no path.
    inputs = props(tmp_path, tmp_path / "bundle")
    assert not ServiceProvider().diff("", {**inputs, "pid": None, "bound_port": None}, inputs).changes
    folder = {"store": str(tmp_path), "image": "img", "tag": "abc", "sources": []}
    assert not BundleProvider().diff("", {**folder, "path": None}, folder).changes


# ---- content-addressed folders stay while a resource points at them -------------------------

def folder_props(tmp_path: Path) -> dict[str, Any]:
    return {"store": str(tmp_path / "store"), "image": "img", "tag": "abc",
            "sources": [["app/score.py", "text", textwrap.dedent(V1)]]}


def test_deleting_a_replaced_bundle_keeps_the_folder_its_replacement_uses(tmp_path):
    """After a failed update and its revert, the old bundle (pending delete) and the new one are the
    same folder: the old one's delete must not remove it."""
    provider = BundleProvider()
    first = provider.create(folder_props(tmp_path))
    second = provider.create(folder_props(tmp_path))
    assert first.id == second.id
    provider.delete(first.id, first.outs or {})
    assert (Path(second.id) / "app" / "score.py").exists()
    assert provider.read(second.id, second.outs or {}).id == second.id
    provider.delete(second.id, second.outs or {})
    assert not Path(second.id).exists() and list((tmp_path / "store" / "img").iterdir()) == []


def test_state_written_before_claims_deletes_the_folder_only_when_nobody_claims_it(tmp_path):
    provider = BundleProvider()
    claimed = provider.create(folder_props(tmp_path))
    unclaimed = {k: v for k, v in (claimed.outs or {}).items() if k != "claim"}  # as earlier code wrote it
    provider.delete(claimed.id, unclaimed)
    assert Path(claimed.id).is_dir()
    provider.delete(claimed.id, claimed.outs or {})
    assert not Path(claimed.id).exists()
    # A folder earlier code wrote (no claims beside it) goes with its resource, as it always did.
    provider.create(folder_props(tmp_path))
    shutil.rmtree(claimed.id + ".claims")
    provider.delete(claimed.id, unclaimed)
    assert not Path(claimed.id).exists()


def test_a_folder_gone_from_disk_shows_as_a_change_and_is_written_again(tmp_path):
    provider = BundleProvider()
    inputs = folder_props(tmp_path)
    created = provider.create(inputs)
    outs = created.outs or {}
    assert not provider.diff(created.id, outs, inputs).changes
    shutil.rmtree(created.id)
    diff = provider.diff(created.id, outs, inputs)
    assert diff.changes and not diff.replaces
    assert provider.read(created.id, outs).id is None
    updated = provider.update(created.id, outs, inputs).outs or {}
    assert updated["path"] == created.id and updated["claim"] == outs["claim"]
    assert (Path(created.id) / "app" / "score.py").exists()


# ---- a failed start's message: this start's output, its first error first -----------------

def test_a_failed_start_shows_its_own_error_not_an_earlier_runs(tmp_path):
    inputs = props(tmp_path, bundle(tmp_path, FAILING))
    log = tmp_path / "logs" / "svc.log"
    log.parent.mkdir()
    log.write_text("2024-01-01 00:00:00,000 1 ERROR serving: init() of score.py failed\n"
                   "Traceback (most recent call last):\n  File \"score.py\", line 2, in init\n"
                   "ValueError: an earlier run's failure\n" + "x" * 3000 + "\n")
    with pytest.raises(RuntimeError) as failed:
        ServiceProvider().create(inputs)
    message = str(failed.value)
    first_line = message.splitlines()[0]
    assert first_line.startswith("service svc exited with 3 before it was ready")
    assert first_line.endswith("RuntimeError: the new model file is corrupt"), first_line
    assert "earlier run" not in message and "xxx" not in message
    assert "score.py" in message  # the traceback of this start


def test_first_error_line_prefers_the_exception_then_an_error_log_line():
    traceback = ("INFO starting\nTraceback (most recent call last):\n  File \"a.py\", line 1\n    x()\n"
                 "    ^^^\nKeyError: 'model'\n\nDuring handling...\nOSError: later")
    assert first_error_line(traceback) == "KeyError: 'model'"
    assert first_error_line("a\n2024 7 ERROR serving: worker died\nb") == "2024 7 ERROR serving: worker died"
    assert first_error_line("serving: PORT='x' is not a whole number\n") == "serving: PORT='x' is not a whole number"
    assert first_error_line("") is None


# ---- the runtime shares a port only when asked --------------------------------------------------

def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_servers_started_by_hand_on_one_port_do_not_share_it(tmp_path):
    app = bundle(tmp_path, V1) / "app"
    port = free_port()
    args = [sys.executable, "-m", "serving", "--entry-script", str(app / "score.py"), "--port", str(port)]
    env = {k: v for k, v in os.environ.items() if k != names.REUSE_PORT}
    first = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        until(lambda: listening(port), "the first server")
        # Sharing is the provider's choice for both processes, never the default.
        second = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
        assert second.returncode != 0 and "Address already in use" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(DEADLINE_S)


def test_with_a_shared_port_the_runtime_listens_and_reports_ready_only_after_init(tmp_path):
    app = bundle(tmp_path, GATED) / "app"
    port = free_port()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify"))
        notify.settimeout(DEADLINE_S)
        env = {**os.environ, names.REUSE_PORT: "1", names.NOTIFY_SOCKET: str(tmp_path / "notify")}
        proc = subprocess.Popen([sys.executable, "-m", "serving", "--entry-script", str(app / "score.py"),
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        try:
            until(lambda: (app / "init-started").exists(), "init()")
            assert not listening(port)  # bound, but no connection is taken while init() runs
            (app / "go").write_text("")
            assert notify.recv(4096) == b"READY=1"
            assert listening(port) and proc.poll() is None
        finally:
            (app / "go").write_text("")  # an init() still waiting would hold up the stop
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(DEADLINE_S) == 0


# ---- through the real engine: the local stack ---------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_files) -> Iterator[auto.Stack]:
    project = copy_project(tmp_path_factory.mktemp("project"), model_files[0])
    with local_engine_stack(project, tmp_path_factory.mktemp("state")) as stack:
        yield stack


def _service(stack: auto.Stack) -> dict[str, Any]:
    deployment = stack.export_stack().deployment or {}
    resource = next(r for r in deployment["resources"] if r["urn"].endswith("diabetes-local-process"))
    return resource["outputs"]


def _score(uri: str, key: str) -> list[float]:
    status, body = call(uri, json.dumps(SEED).encode(), key, timeout_s=30)
    assert status == 200, body
    return json.loads(body)


def test_a_failed_update_through_the_engine_keeps_serving_and_a_revert_recovers(stack):
    assert stack.up(on_output=lambda _: None).summary.result == "succeeded"
    out = stack.outputs()["services"].value["diabetes-local"]
    uri, key = out["scoring_uri"], out["primary_key"]
    before = _score(uri, key)
    script = Path(stack.workspace.work_dir) / "scoring_templates" / "sklearn" / "score.py"
    working = script.read_text()

    script.write_text(working.replace(
        "def init():", "def init():\n    raise RuntimeError('model file is corrupt')\n\n\ndef _unused():", 1))
    try:
        with traffic(lambda: _score(uri, key)) as during:
            with pytest.raises(auto.CommandError) as failed:
                stack.up(on_output=lambda _: None)
        assert "RuntimeError: model file is corrupt" in str(failed.value)
        assert during.failures == [] and during.answers and all(a == before for a in during.answers), \
            during.failures
        assert _score(uri, key) == before
    finally:
        script.write_text(working)

    assert stack.up(on_output=lambda _: None).summary.result == "succeeded"
    assert _score(uri, key) == before
    service = _service(stack)
    assert service_running(service) and Path(service["bundle"], "app", "score.py").exists()
    stack.preview(expect_no_changes=True, on_output=lambda _: None)

    # Killed by hand: a plain preview shows the drift, and `up` starts it again.
    os.kill(int(service["pid"]), signal.SIGTERM)
    until(lambda: not process_alive(int(service["pid"])), "the killed service to exit")
    with pytest.raises(auto.CommandError):
        stack.preview(expect_no_changes=True, on_output=lambda _: None)
    assert stack.up(on_output=lambda _: None).summary.result == "succeeded"
    assert _score(uri, key) == before
    stack.preview(expect_no_changes=True, on_output=lambda _: None)
