"""Services with deployments and a traffic split: the config rules (Azure ML's, on every target), the
plan (a split change is one resource's change), and the local router for real, as processes."""

from __future__ import annotations

import collections
import shutil
import sys
import textwrap
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from providers.local import ServiceProvider, process_alive
from providers.router import RouterProvider
from tests.helpers import ROOT, TEMPLATES, assert_rejected, changed, run_config

DYNAMIC = "pulumi-python:dynamic:Resource"


def split_config(config: dict[str, Any], traffic: tuple[int, int] = (90, 10), **service: Any) -> dict[str, Any]:
    """The dev config on a local workspace, with a second image and a service of two deployments."""
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": ".ml-deploy/test-local", "protect": False}
    second = dict(config["ml-deploy:images"][0], name="diabetes-v2")
    config["ml-deploy:images"].append(second)
    config["ml-deploy:services"] = [{
        "name": "churn", "target": "local",
        "deployments": [{"name": "blue", "image": "diabetes", "traffic": traffic[0]},
                        {"name": "green", "image": "diabetes-v2", "traffic": traffic[1]}],
        **service,
    }]
    return config


# ---- the config rules -----------------------------------------------------------------------------

def test_traffic_must_sum_to_100(config):
    assert_rejected(split_config(config, (90, 20)), "services[0].deployments", "traffic sums to 110")


def test_traffic_may_be_0_everywhere(config):
    rec = run_config(split_config(config, (0, 0)))
    assert rec.outputs["services"]["churn"]["deployments"] == {
        "blue": {"image": "diabetes", "traffic": 0}, "green": {"image": "diabetes-v2", "traffic": 0}}


def test_deployment_names_are_unique(config):
    split_config(config)
    config["ml-deploy:services"][0]["deployments"][1]["name"] = "blue"
    assert_rejected(config, "services[0].deployments[1].name", "already used by deployments[0]")


def test_deployment_names_follow_azure_ml(config):
    split_config(config)
    config["ml-deploy:services"][0]["deployments"][1]["name"] = "Green_1"
    assert_rejected(config, "services[0].deployments[1].name", "should match pattern")


def test_a_deployment_names_an_image_of_the_stack(config):
    split_config(config)
    config["ml-deploy:services"][0]["deployments"][1]["image"] = "nope"
    assert_rejected(config, "services[0].deployments[1].image", "no image named 'nope'")


def test_image_and_deployments_exclude_each_other(config):
    assert_rejected(split_config(config, image="diabetes"), "services[0].image", "not with deployments")


def test_a_service_names_an_image_or_deployments(config):
    config["ml-deploy:services"][0].pop("image")
    assert_rejected(config, "services[0].image", "required")


def test_mirror_names_a_deployment(config):
    assert_rejected(split_config(config, (100, 0), mirror_traffic={"grey": 10}),
                    "services[0].mirror_traffic.grey", "no deployment named 'grey'")


def test_mirror_goes_to_a_deployment_without_live_traffic(config):
    assert_rejected(split_config(config, mirror_traffic={"green": 10}),
                    "services[0].mirror_traffic.green", "has live traffic (10%)")


def test_mirror_is_at_most_half_the_traffic(config):
    assert_rejected(split_config(config, (100, 0), mirror_traffic={"green": 60}),
                    "services[0].mirror_traffic", "at most 50%")


def test_deployments_on_a_target_without_a_split(config):
    config["ml-deploy:services"][0]["deployments"] = [{"name": "blue", "image": "diabetes", "traffic": 100}]
    assert_rejected(config, "services[0].deployments", "target 'aci' runs one image per service and does not split")


# ---- the plan --------------------------------------------------------------------------------------

def _named(rec, suffix: str) -> dict[str, Any]:
    return next(r.inputs for r in rec.resources if r.urn.endswith(f"::{suffix}"))


def test_a_split_is_two_processes_and_a_router(config):
    rec = run_config(split_config(config, auth_enabled=True))
    router = _named(rec, "churn-traffic")
    assert router["service"] == "churn" and router["mirror"] == {}
    assert [(r["name"], r["traffic"]) for r in router["routes"]] == [("blue", 90), ("green", 10)]
    blue, green = _named(rec, "churn-blue"), _named(rec, "churn-green")
    assert blue["service"] == "churn-blue" and green["service"] == "churn-green"
    assert blue["bundle"] != green["bundle"]  # each deployment runs its own image
    assert blue["keys_given"] == green["keys_given"]  # one service, one pair of keys
    services = rec.outputs["services"]["churn"]
    assert services["image"] is None and services["deployments"]["green"] == {"image": "diabetes-v2", "traffic": 10}


def test_a_traffic_shift_changes_the_router_alone(config):
    before = run_config(split_config(config))
    after = run_config(_shifted(config, (0, 100)))
    assert changed(before, after) == {"churn-traffic"}


def test_a_new_image_for_green_changes_green_alone(config, tmp_path):
    before = run_config(split_config(config))
    script = tmp_path / "score.py"
    script.write_text((TEMPLATES / "sklearn" / "score.py").read_text() + "\n# v2\n")
    config["ml-deploy:images"][1]["execution_script"] = str(script)
    after = run_config(config)
    assert changed(before, after) == {"diabetes-v2-bundle", "churn-green"}


def _shifted(config: dict[str, Any], traffic: tuple[int, int]) -> dict[str, Any]:
    for deployment, share in zip(config["ml-deploy:services"][0]["deployments"], traffic):
        deployment["traffic"] = share
    return config


# ---- the router, as processes ----------------------------------------------------------------------

def _bundle(tmp_path: Path, name: str, script: str) -> Path:
    folder = tmp_path / name
    (folder / "app" / "models").mkdir(parents=True)
    (folder / "app" / "score.py").write_text(textwrap.dedent(script))
    shutil.copytree(ROOT / "serving", folder / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


VERSION = """
    import os, pathlib
    def init():
        pass
    def run(data):
        seen = pathlib.Path(os.environ["AZUREML_MODEL_DIR"]) / "seen"
        with open(seen, "a") as f:
            f.write("x")
        return {{"version": {version!r}}}
"""


@pytest.fixture
def deployments(tmp_path) -> Iterator[dict[str, dict[str, Any]]]:
    """Two deployments (answering version 1 and 2) as the provider starts them, stopped afterwards."""
    provider, started = ServiceProvider(), {}
    try:
        for name, version in (("blue", 1), ("green", 2)):
            props = {"service": f"svc-{name}", "bundle": str(_bundle(tmp_path, name, VERSION.format(version=version))),
                     "python": sys.executable, "model_dir": "models", "log_dir": str(tmp_path / "logs"), "port": 0,
                     "workers": 1, "auth_enabled": True, "timeout_ms": 60000, "keys_given": ["k1", "k2"]}
            started[name] = provider.create(props).outs
        yield started
    finally:
        for outs in started.values():
            provider.delete("", outs)


def _router_props(tmp_path: Path, deployments: dict[str, dict[str, Any]], traffic: dict[str, int],
                  mirror: dict[str, int] | None = None) -> dict[str, Any]:
    return {"service": "svc", "port": 0, "log_dir": str(tmp_path / "logs"), "python": sys.executable,
            "runtime_root": str(ROOT), "runtime_digest": "test", "timeout_ms": 60000,
            "routes": [{"name": n, "port": d["bound_port"], "traffic": traffic[n]} for n, d in deployments.items()],
            "mirror": mirror or {}}


@pytest.fixture
def router(tmp_path, deployments) -> Iterator[tuple[RouterProvider, dict[str, Any]]]:
    provider = RouterProvider()
    outs = provider.create(_router_props(tmp_path, deployments, {"blue": 90, "green": 10}))
    state = {"outs": outs.outs}
    try:
        yield provider, state
    finally:
        provider.delete("", state["outs"])
        assert not process_alive(int(state["outs"]["pid"]))


KEY = {"authorization": "Bearer k1"}


@contextmanager
def load(uri: str, headers: dict[str, str], body: Any, clients: int) -> Iterator[collections.Counter]:
    """`clients` threads posting `body` to `uri` for as long as the block runs: the answers' statuses
    (and the names of transport errors), counted."""
    stop, results = threading.Event(), collections.Counter()

    def send() -> None:
        with httpx.Client(headers=headers, timeout=30) as client:
            while not stop.is_set():
                try:
                    results[client.post(uri, json=body).status_code] += 1
                except httpx.HTTPError as err:
                    results[type(err).__name__] += 1

    threads = [threading.Thread(target=send) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        yield results
    finally:
        stop.set()
        for t in threads:
            t.join()


def _versions(uri: str, n: int, **headers: str) -> collections.Counter:
    with httpx.Client(headers={**KEY, **headers}) as client:
        return collections.Counter(client.post(uri, json={"data": [1]}).json()["version"] for _ in range(n))


def test_the_router_splits_by_weight_exactly(router):
    _, state = router
    counts = _versions(state["outs"]["scoring_uri"], 2000)
    print(f"\n2,000 requests at 90/10: blue {counts[1]}, green {counts[2]}")
    assert abs(counts[1] / 2000 - 0.9) <= 0.03 and counts[1] + counts[2] == 2000


def test_the_deployments_keep_the_service_contract(router):
    _, state = router
    uri = state["outs"]["scoring_uri"]
    denied = httpx.post(uri, json={})
    assert denied.status_code == 401 and "key" in denied.json()["error"]  # each deployment checks the keys
    assert httpx.get(uri.rsplit("/", 1)[0] + "/").status_code == 200  # liveness, through the router


def test_the_deployment_header_names_one_deployment(router):
    _, state = router
    assert _versions(state["outs"]["scoring_uri"], 20, **{"azureml-model-deployment": "green"}) == {2: 20}
    missing = httpx.post(state["outs"]["scoring_uri"], json={}, headers={**KEY, "azureml-model-deployment": "red"})
    assert missing.status_code == 404 and "no deployment named 'red'" in missing.json()["error"]


def test_a_traffic_change_is_applied_by_the_running_router(router, tmp_path, deployments):
    provider, state = router
    before = state["outs"]
    news = _router_props(tmp_path, deployments, {"blue": 0, "green": 100})
    assert provider.diff("", before, news).changes
    state["outs"] = provider.update("", before, news).outs
    assert state["outs"]["pid"] == before["pid"]  # no restart
    assert _versions(state["outs"]["scoring_uri"], 50) == {2: 50}


def test_mirrored_requests_reach_the_mirror_and_never_change_an_answer(router, tmp_path, deployments):
    provider, state = router
    news = _router_props(tmp_path, deployments, {"blue": 100, "green": 0}, mirror={"green": 20})
    state["outs"] = provider.update("", state["outs"], news).outs
    seen = Path(deployments["green"]["bundle"]) / "app" / "models" / "seen"
    assert _versions(state["outs"]["scoring_uri"], 500) == {1: 500}  # every answer is blue's
    deadline = time.monotonic() + 10
    while (seen.stat().st_size if seen.exists() else 0) < 100 and time.monotonic() < deadline:
        time.sleep(0.05)
    print(f"\n500 requests, mirror 20%: green saw {seen.stat().st_size}")
    assert seen.stat().st_size == 100


def test_a_shift_under_load_drops_no_request(router, tmp_path, deployments):
    provider, state = router
    with load(state["outs"]["scoring_uri"], KEY, {}, clients=4) as results:
        for shares in ({"blue": 0, "green": 100}, {"blue": 50, "green": 50}, {"blue": 100, "green": 0}):
            time.sleep(0.3)
            state["outs"] = provider.update("", state["outs"], _router_props(tmp_path, deployments, shares)).outs
        time.sleep(0.3)
    print(f"\nthree shifts under load: {dict(results)}")
    assert set(results) == {200} and results[200] > 100


# ---- ./ml-deploy traffic ------------------------------------------------------------------------------

STACK_FILE = """\
# the team's stack
config:
  azure-native:location: westeurope   # keep
  ml-deploy:services:
    - name: other
      image: diabetes
      target: aci
    - name: churn
      target: online_endpoint
      # blue is what runs today
      deployments:
        - {name: blue, image: diabetes, instance_type: Standard_DS3_v2, traffic: 100}
        - {name: green, image: diabetes-v2, instance_type: Standard_DS3_v2}
        - name: grey
          image: diabetes-v2
          traffic: 0   # canary
        - name: white
          image: diabetes-v2
"""


def test_traffic_edits_only_the_shares_and_keeps_every_other_byte():
    from cli import traffic

    new = traffic.edit(STACK_FILE, "churn", {"blue": 90, "green": 5, "grey": 5, "white": 0}, None)
    changed_lines = [(a, b) for a, b in zip(STACK_FILE.splitlines(), new.splitlines()) if a != b]
    assert changed_lines[:2] == [
        ("        - {name: blue, image: diabetes, instance_type: Standard_DS3_v2, traffic: 100}",
         "        - {name: blue, image: diabetes, instance_type: Standard_DS3_v2, traffic: 90}"),
        ("        - {name: green, image: diabetes-v2, instance_type: Standard_DS3_v2}",
         "        - {name: green, image: diabetes-v2, instance_type: Standard_DS3_v2, traffic: 5}"),
    ]
    assert "          traffic: 5   # canary\n" in new and "        - name: white\n          traffic: 0\n" in new
    assert new.startswith("# the team's stack\n") and "westeurope   # keep" in new
    import yaml
    assert yaml.safe_load(new) == traffic.expected(yaml.safe_load(STACK_FILE), "churn",
                                                   {"blue": 90, "green": 5, "grey": 5, "white": 0}, None)


def test_traffic_sets_and_clears_the_mirror():
    import yaml

    from cli import traffic

    mirrored = traffic.edit(STACK_FILE, "churn", {}, {"green": 10})
    assert "      mirror_traffic: {green: 10}\n      deployments:\n" in mirrored
    assert yaml.safe_load(mirrored)["config"]["ml-deploy:services"][1]["mirror_traffic"] == {"green": 10}
    cleared = traffic.edit(mirrored, "churn", {}, {})
    assert yaml.safe_load(cleared)["config"]["ml-deploy:services"][1]["mirror_traffic"] == {}
    # Written as a block mapping by hand, and in a file with Windows line ends.
    block = STACK_FILE.replace("      deployments:\n", "      mirror_traffic:\n        green: 5\n      deployments:\n")
    for text in (block, block.replace("\n", "\r\n")):
        changed_block = traffic.edit(text, "churn", {}, {"green": 20})
        assert yaml.safe_load(changed_block)["config"]["ml-deploy:services"][1]["mirror_traffic"] == {"green": 20}
        assert yaml.safe_load(changed_block)["config"]["ml-deploy:services"][1]["deployments"][0]["name"] == "blue"
        if "\r\n" in text:  # every line end stays CRLF
            assert "\n" not in changed_block.replace("\r\n", "")
        else:
            assert "\r" not in changed_block
        none = traffic.edit(text, "churn", {}, {})
        assert yaml.safe_load(none)["config"]["ml-deploy:services"][1]["mirror_traffic"] == {}
    assert "\n" not in traffic.edit(block.replace("\n", "\r\n"), "churn", {"grey": 1}, None).replace("\r\n", "")


@pytest.mark.parametrize("service, shares, words", [
    ("nope", {"blue": 1}, "no service 'nope'"),
    ("other", {"blue": 1}, "has no deployments"),
    ("churn", {"red": 1}, "no deployment 'red'"),
])
def test_traffic_names_what_it_cannot_find(service, shares, words):
    from cli import traffic

    with pytest.raises(traffic.TrafficError, match=words):
        traffic.edit(STACK_FILE, service, shares, None)


def test_a_shift_shows_as_the_split_alone_in_the_plan_diff(config):
    from cli import traffic

    old = split_config(config)
    new = _shifted(__import__("copy").deepcopy(old), (0, 100))
    report = traffic.plan_diff("dev", old, new)
    lines = [line for line in report.splitlines() if line.startswith("  ~") or line.startswith("  +")
             or line.startswith("  -") or line.startswith("  +-")]
    assert len(lines) == 1 and "churn-traffic" in lines[0], report
    assert "traffic" in report and "100" in report


# ---- through the real engine: a local stack with a split -----------------------------------------

LOCAL_SPLIT = """\
config:
  ml-deploy:workspace:
    name: local
    kind: local
    path: .ml-deploy/local
    protect: false
  ml-deploy:models:
    - name: diabetes-ridge
      path: models/diabetes-ridge.pkl
  ml-deploy:images:
    - name: diabetes
      models: [diabetes-ridge]
      execution_script: scoring_templates/sklearn/score.py
      conda_file: scoring_templates/sklearn/env.yml
    - name: diabetes-green
      models: [diabetes-ridge]
      execution_script: scoring_templates/sklearn/score_green.py
      conda_file: scoring_templates/sklearn/env.yml
  ml-deploy:services:
    - name: churn
      target: local
      auth_enabled: true
      deployments:
        - {name: blue, image: diabetes, traffic: 90}
        - {name: green, image: diabetes-green, traffic: 10}
"""


@pytest.fixture(scope="module")
def split_stack(tmp_path_factory: pytest.TempPathFactory, model_files):
    from tests.helpers import copy_project, local_engine_stack

    project = copy_project(tmp_path_factory.mktemp("project"), model_files[0])
    sklearn = project / "scoring_templates" / "sklearn"
    # green answers {"green": <blue's answer>}: which deployment answered shows in the body.
    (sklearn / "score_green.py").write_text((sklearn / "score.py").read_text() + textwrap.dedent("""

        _blue_run = run


        def run(data):
            return {"green": _blue_run(data)}
    """))
    (project / "Pulumi.local.yaml").write_text(LOCAL_SPLIT)
    with local_engine_stack(project, tmp_path_factory.mktemp("state")) as stack:
        yield stack


def _answers(uri: str, key: str, n: int) -> collections.Counter:
    from tests.helpers import SEED

    with httpx.Client(headers={"authorization": f"Bearer {key}"}, timeout=30) as client:
        return collections.Counter("green" if isinstance(client.post(uri, json=SEED).json(), dict) else "blue"
                                   for _ in range(n))


def _updated(stack, on_output=None) -> list[str]:
    """The resources a preview would change (op -> name), read from the engine's events."""
    ops: list[str] = []

    def seen(event) -> None:
        pre = event.resource_pre_event
        # Providers are the engine's, not the program's: a default provider's no-diff "update" is not a change.
        if pre is not None and pre.metadata.op.value not in ("same", "read") \
                and not pre.metadata.type.startswith("pulumi:providers:"):
            ops.append(f"{pre.metadata.op.value} {pre.metadata.urn.rsplit('::', 1)[1]}")

    stack.preview(on_event=seen, on_output=on_output or (lambda _: None))
    return ops


def test_a_split_through_the_engine_and_a_shift_under_load(split_stack):
    from cli import traffic as traffic_cli

    stack = split_stack
    assert stack.up(on_output=lambda _: None).summary.result == "succeeded"
    service = stack.outputs()["services"].value["churn"]
    uri, key = service["scoring_uri"], service["primary_key"]
    counts = _answers(uri, key, 2000)
    print(f"\nlocal stack, 2,000 requests at 90/10: blue {counts['blue']}, green {counts['green']}")
    assert abs(counts["blue"] / 2000 - 0.90) <= 0.03, counts

    # The shift as a user makes it: `ml-deploy traffic` rewrites the stack file; the preview shows one update.
    stack_file = Path(stack.workspace.work_dir) / "Pulumi.local.yaml"
    stack_file.write_text(traffic_cli.edit(stack_file.read_text(), "churn", {"blue": 0, "green": 100}, None))
    assert _updated(stack) == ["update churn-traffic"]

    from tests.helpers import SEED

    with load(uri, {"authorization": f"Bearer {key}"}, SEED, clients=3) as results:
        assert stack.up(on_output=lambda _: None).summary.result == "succeeded"
    print(f"`pulumi up` 90/10 -> 0/100 under load: {dict(results)}")
    assert set(results) == {200} and results[200] > 50
    assert _answers(uri, key, 100) == {"green": 100}
    stack.preview(expect_no_changes=True, on_output=lambda _: None)


def test_the_router_speaks_http_as_clients_do(router):
    """Pipelined requests, a chunked body after `Expect: 100-continue`, HEAD, HTTP/1.0 and a
    malformed request, on raw sockets."""
    import socket
    from urllib.parse import urlparse

    _, state = router
    port = urlparse(state["outs"]["scoring_uri"]).port

    def exchange(payload: bytes, until: bytes, count: int = 1) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(payload)
            got = b""
            while got.count(until) < count:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got

    pipelined = exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 2, b"HTTP/1.1 200", 2)
    assert pipelined.count(b"HTTP/1.1 200") == 2
    chunked = exchange(b"POST /score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\nContent-Type: application/json\r\n"
                       b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n4\r\n{\"a\"\r\n4\r\n: 1}\r\n0\r\n\r\n",
                       b"version")
    assert chunked.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200") and b'"version"' in chunked
    head = exchange(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200", 2)
    assert head.count(b"HTTP/1.1 200") == 2  # the HEAD's answer has no body, and the next one follows
    old = exchange(b"GET / HTTP/1.0\r\n\r\n", b"\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200")
    bad = exchange(b"NOT HTTP\r\n\r\n", b"}")
    assert bad.startswith(b"HTTP/1.1 400") and b'"error"' in bad
    assert httpx.get(state["outs"]["scoring_uri"].rsplit("/", 1)[0] + "/").status_code == 200  # still up


BIG = 64 * 1_048_576


class _FakeDeployment:
    """A deployment stand-in on 127.0.0.1: 204 for POST /nothing, a slow 200 for POST /slow, 200 otherwise."""

    def __enter__(self) -> int:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path == "/slow":
                    time.sleep(1.0)
                if self.path == "/nothing":
                    self.send_response(204)
                    self.end_headers()
                    return
                if self.path == "/big":
                    self.send_response(200)
                    self.send_header("content-length", str(BIG))
                    self.end_headers()
                    chunk = b"x" * 1_048_576
                    for _ in range(BIG // len(chunk)):
                        self.wfile.write(chunk)
                    return
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        from http.server import ThreadingHTTPServer as Server
        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.server.server_address[1]

    def __exit__(self, *_exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()



@contextmanager
def _router_process(tmp_path: Path, routes: list[dict[str, Any]], *args: str) -> Iterator[tuple[Any, int, int]]:
    """serving.router as its image starts it, over `routes`, ready on its health port: (the process,
    its scoring port, its health port). Stopped when the block ends."""
    import json
    import subprocess

    from tests.helpers import free_port, stop_process

    config = tmp_path / "router.json"
    config.write_text(json.dumps({"routes": routes}))
    serving, health = free_port(), free_port()
    router = subprocess.Popen([sys.executable, "-m", "serving.router", "--config", str(config),
                               "--status", str(tmp_path / "status.json"), "--port", str(serving),
                               "--health-port", str(health), *args], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{health}/ready")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and router.poll() is None, "the router did not start"
                time.sleep(0.1)
        yield router, serving, health
    finally:
        stop_process(router)

def test_the_router_survives_answers_without_bodies_and_clients_that_leave(tmp_path):
    import socket

    provider = RouterProvider()
    with _FakeDeployment() as port:
        outs = provider.create({"service": "fake", "port": 0, "log_dir": str(tmp_path / "logs"), "python": sys.executable,
                                "runtime_root": str(ROOT), "runtime_digest": "t", "timeout_ms": 60000,
                                "routes": [{"name": "only", "port": port, "traffic": 100}], "mirror": {}})
        try:
            router_port = outs.outs["bound_port"]
            with socket.create_connection(("127.0.0.1", router_port), timeout=10) as s:
                # A 204 and a pipelined request behind it, on one connection: both answered, in order.
                s.sendall(b"POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                          b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
                got = b""
                while b'{"ok": true}' not in got:
                    chunk = s.recv(65536)
                    assert chunk, got
                    got += chunk
                assert got.startswith(b"HTTP/1.0 204") or got.startswith(b"HTTP/1.1 204"), got
            # A client that leaves while its slow request is out, then requests that reuse the connection.
            with socket.create_connection(("127.0.0.1", router_port), timeout=10) as s:
                s.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            time.sleep(1.5)
            uri = f"http://127.0.0.1:{router_port}/score"
            assert [httpx.post(uri, content=b"{}").status_code for _ in range(5)] == [200] * 5
            log = (tmp_path / "logs" / "fake.log").read_text()
            assert "Traceback" not in log and "Exception" not in log, log
        finally:
            provider.delete("", outs.outs)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_slow_client_slows_the_answer_instead_of_filling_the_routers_memory(tmp_path):
    import socket

    provider = RouterProvider()
    with _FakeDeployment() as port:
        outs = provider.create({"service": "fake", "port": 0, "log_dir": str(tmp_path / "logs"), "python": sys.executable,
                                "runtime_root": str(ROOT), "runtime_digest": "t", "timeout_ms": 60000,
                                "routes": [{"name": "only", "port": port, "traffic": 100}], "mirror": {}}).outs
        try:
            before = _rss_mb(outs["pid"])
            with socket.create_connection(("127.0.0.1", outs["bound_port"]), timeout=30) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                got = len(s.recv(65536))
                time.sleep(2)  # a client that stops reading while 64 MB are on their way
                during = _rss_mb(outs["pid"])
                while got < BIG:
                    chunk = s.recv(1 << 20)
                    assert chunk
                    got += len(chunk)
            print(f"\nrouter RSS {before:.0f} MB before, {during:.0f} MB with 64 MB held up by a slow client")
            assert during - before < 32, (before, during)
            assert got >= BIG  # the whole answer arrived (headers included)
        finally:
            provider.delete("", outs)


def test_the_router_serves_https_with_the_services_certificate(tmp_path, deployments):
    from serving.tls import write_self_signed

    cert, key = write_self_signed(tmp_path / "pem")
    provider = RouterProvider()
    props = {**_router_props(tmp_path, deployments, {"blue": 100, "green": 0}),
             "tls_cert_pem": cert.read_text(), "tls_key_pem": key.read_text()}
    outs = provider.create(props).outs
    try:
        assert outs["scoring_uri"].startswith("https://127.0.0.1:")
        import ssl

        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), headers=KEY) as client:
            answers = [client.post(outs["scoring_uri"], json={}).json()["version"] for _ in range(10)]
        assert answers == [1] * 10
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the service's port
            httpx.post(outs["scoring_uri"].replace("https://", "http://"), json={}, headers=KEY, timeout=5)
    finally:
        provider.delete("", outs)


def test_the_router_as_a_pod_runs_it_routes_by_host_and_answers_its_own_readiness(tmp_path):
    """As components/kubernetes_split.py starts it: on every address, to deployments named by host
    and port (cluster IPs there), with its readiness on a port of its own: 200 while it serves, 503
    from SIGTERM while it drains a request in flight (so the orchestrator stops sending it more)."""
    import signal

    with _FakeDeployment() as port, _router_process(
            tmp_path, [{"name": "only", "host": "127.0.0.1", "port": port, "traffic": 100}], "--host", "0.0.0.0") as (
            router, serving, health):
        assert httpx.get(f"http://127.0.0.1:{health}/ready").text == "ready"
        assert httpx.post(f"http://127.0.0.1:{serving}/score", content=b"{}").json() == {"ok": True}
        slow = threading.Thread(target=httpx.post, args=(f"http://127.0.0.1:{serving}/slow",), kwargs={"content": b""})
        slow.start()
        time.sleep(0.3)
        router.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        draining = httpx.get(f"http://127.0.0.1:{health}/ready")
        assert (draining.status_code, draining.text) == (503, "stopping")
        slow.join(timeout=10)
        assert router.wait(timeout=15) == 0


def test_a_deployment_that_cannot_be_reached_hands_its_requests_to_another(tmp_path):
    """A request the split sends to a deployment nobody listens for (one being removed while an old
    router drains, one that is down) goes to another deployment; one that names the missing
    deployment gets the router's 502, and the health port answers a request sent in pieces."""
    import socket

    from tests.helpers import free_port

    routes = [{"name": "gone", "port": free_port(), "traffic": 50}]
    with _FakeDeployment() as port, _router_process(tmp_path, routes + [{"name": "up", "port": port, "traffic": 50}]) as (
            _, serving, health):
        uri = f"http://127.0.0.1:{serving}/score"
        assert [httpx.post(uri, content=b"{}").status_code for _ in range(10)] == [200] * 10
        named = httpx.post(uri, content=b"{}", headers={"azureml-model-deployment": "gone"})
        assert named.status_code == 502 and "cannot be reached" in named.json()["message"]
        with socket.create_connection(("127.0.0.1", health), timeout=10) as s:
            s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\n")
            time.sleep(0.2)
            s.sendall(b"\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
