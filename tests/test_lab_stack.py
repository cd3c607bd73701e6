"""The lab stack through the real Pulumi engine (Automation API) against the lab's real endpoints:
the image built by the docker-build provider (BuildKit) and pushed to the lab's registry, the
Kubernetes objects sent by the Kubernetes provider to the lab's one-node cluster, whose pods run that
image by digest and answer through the Service, and the image run as a container; then a no-op
preview, a new score.py rolled out under load without a failed request, a crash in run(), the HPA
scaling up and down, a broken update, and destroy.

Needs `bash scripts/lab up` (skipped otherwise, saying so). The project is copied to a temporary
folder so that changing its script never touches the repository; the service's namespace is new for
each run, so runs never meet each other's objects on the API server.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
from pulumi import automation as auto

from cli import logs
from cli.call import call
from tests.helpers import ROOT, SEED, copy_project, engine_dir, engine_environ, lab_environ

pytestmark = pytest.mark.lab  # scripts/test runs these beside the others

CACHE = Path(os.environ.get("ML_DEPLOY_CACHE", Path.home() / ".cache" / "ml-deploy")) / "lab"
STACK = "lab"
# scripts/pulumi-env's default passphrase, which Pulumi.lab.yaml's secrets are encrypted for.
PASSPHRASE = "local-stack-passphrase"
K8S_SERVICE, CONTAINER_SERVICE = "diabetes-k8s", "diabetes-container"
CRASH_ROW = [999.0] + [0.0] * 9


def _pin(name: str) -> str:
    found = re.search(rf"^{re.escape(name)}==([0-9.]+)$", (ROOT / "infra" / "requirements.txt").read_text(), re.M)
    assert found, f"no {name}==X pin in infra/requirements.txt"
    return found.group(1)


@pytest.fixture(scope="module")
def lab() -> dict[str, str]:
    return lab_environ()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model_files) -> Path:
    return copy_project(tmp_path_factory.mktemp("lab-project"), model_files[0])


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lab-state")


def _pulumi_home(engine: str, home: Path, env: dict[str, str]) -> None:
    """The provider plugins scripts/lab built, installed with the engine's own installer (as
    scripts/lab does), at the versions the SDK pins ask for."""
    for name, sdk in (("docker-build", "pulumi-docker-build"), ("kubernetes", "pulumi-kubernetes")):
        version = _pin(sdk)
        binary = CACHE / "plugins" / f"{name}-v{version}" / f"pulumi-resource-{name}"
        assert binary.exists(), f"no {binary}: run `bash scripts/lab up`"
        subprocess.run([f"{engine}/pulumi", "plugin", "install", "resource", name, version, "--file", str(binary)],
                       check=True, capture_output=True, env={**env, "PULUMI_HOME": str(home)})


@pytest.fixture(scope="module")
def namespace() -> str:
    return f"lab-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def kube(lab: dict[str, str]) -> Any:
    from kubernetes import config as kube_config

    return kube_config.new_client_from_config(config_file=lab["KUBECONFIG"])


def lab_stack(lab: dict[str, str], project: Path, state: Path, name: str = STACK) -> auto.Stack:
    """The project's stack `name` on the lab, through the engine scripts/pulumi-engine built, its state
    under `state`."""
    env = {**lab, **engine_environ(project, state, PASSPHRASE)}
    home = Path(env["PULUMI_HOME"])
    _pulumi_home(engine_dir(), home, env)
    os.environ.update(env)  # the Automation API runs `pulumi` with this process's environment
    ws = auto.LocalWorkspace(work_dir=str(project), pulumi_home=str(home), env_vars=env,
                             pulumi_command=auto.PulumiCommand())
    return auto.Stack.create_or_select(name, ws)


@pytest.fixture(scope="module")
def stack(lab, project: Path, state: Path, namespace: str, kube) -> Iterator[auto.Stack]:
    stack = lab_stack(lab, project, state)
    stack.set_config("ml-deploy:services[0].namespace", auto.ConfigValue(namespace), path=True)
    try:
        yield stack
    finally:
        stack.destroy(on_output=lambda _: None)


# ---- reading the lab back --------------------------------------------------------------------------

def outputs(stack: auto.Stack) -> dict[str, Any]:
    return {k: v.value for k, v in stack.outputs().items()}


def registry_manifest(lab: dict[str, str], repository: str, reference: str) -> tuple[int, str]:
    """(status, Docker-Content-Digest) of a manifest in the lab's registry (distribution API v2)."""
    request = urllib.request.Request(
        f"http://{lab['ML_DEPLOY_LAB_REGISTRY']}/v2/{repository}/manifests/{reference}", method="HEAD",
        headers={"Accept": ", ".join([
            "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json"])})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers.get("Docker-Content-Digest", "")
    except urllib.error.HTTPError as err:
        return err.code, ""


def score(uri: str, key: str) -> list[float]:
    status, body = call(uri, json.dumps(SEED).encode(), key)
    assert status == 200, body
    return json.loads(body)


def docker(lab: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "-H", lab["DOCKER_HOST"], *args], capture_output=True, text=True, check=check)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def container_of(stack: auto.Stack) -> tuple[str, int]:
    resource = next(r for r in stack.export_stack().deployment["resources"]
                    if r["urn"].endswith(f"{CONTAINER_SERVICE}-container"))
    return resource["outputs"]["container"], int(resource["outputs"]["bound_port"])


def changes(stack: auto.Stack) -> dict[str, str]:
    """What a preview would do, by resource name (every step that is not `same`)."""
    events: list[auto.EngineEvent] = []
    stack.preview(on_event=events.append, on_output=lambda _: None)
    ops: dict[str, set[str]] = {}
    for event in events:
        step = event.resource_pre_event.metadata if event.resource_pre_event else None
        # Python dynamic providers receive the whole stack config (pulumi/pulumi#17229), so any config
        # edit updates their default provider: a step that changes no resource, which the preview's
        # diff does not show either.
        if step is not None and step.op != auto.OpType.SAME and "::pulumi:providers:pulumi-python::" not in step.urn:
            ops.setdefault(step.urn.rsplit("::", 1)[1], set()).add(step.op.value)
    # A replacement is several steps (create-replacement, replace, delete-replaced): one change.
    return {name: "replace" if "replace" in found else found.pop() for name, found in ops.items()}


# ---- the tests, in order -----------------------------------------------------------------------------

def test_up_builds_the_image_and_pushes_it_to_the_registry(stack, lab):
    result = stack.up(on_output=lambda _: None)
    assert result.summary.result == "succeeded"
    ref = outputs(stack)["images"]["diabetes"]
    repository, digest = ref.split("/", 1)[1].split("@")
    assert ref.startswith(f"{lab['ML_DEPLOY_LAB_REGISTRY']}/diabetes@sha256:")
    assert registry_manifest(lab, repository, digest) == (200, digest)


def test_every_kubernetes_object_is_on_the_api_server(stack, kube, namespace):
    from kubernetes import client

    ref = outputs(stack)["images"]["diabetes"]
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    assert core.read_namespace(namespace).status.phase == "Active"
    deployment = apps.read_namespaced_deployment(K8S_SERVICE, namespace)
    pod = deployment.spec.template.spec
    assert pod.containers[0].image == ref
    pull = core.read_namespaced_secret(pod.image_pull_secrets[0].name, namespace)
    assert pull.type == "kubernetes.io/dockerconfigjson"
    keys = core.read_namespaced_secret(f"{K8S_SERVICE}-keys", namespace)
    assert set(keys.data) == {"auth-keys"}
    service = core.read_namespaced_service(K8S_SERVICE, namespace)
    assert service.spec.type == "ClusterIP" and service.spec.ports[0].target_port == 5001
    hpa = client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler(K8S_SERVICE, namespace)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (1, 2)
    pdb = client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget(K8S_SERVICE, namespace)
    assert pdb.spec.max_unavailable == 1


def test_the_deployment_is_available_and_its_pods_run_the_pushed_image_by_digest(stack, kube, namespace):
    """`pulumi up` awaited the rollout, as on AKS: it returned with every replica ready."""
    from kubernetes import client

    ref = outputs(stack)["images"]["diabetes"]
    deployment = client.AppsV1Api(kube).read_namespaced_deployment(K8S_SERVICE, namespace)
    available = {c.type: c.status for c in deployment.status.conditions or []}
    assert available.get("Available") == "True"
    assert deployment.status.ready_replicas == deployment.spec.replicas >= 1
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"app.kubernetes.io/name={K8S_SERVICE}").items
    assert pods and all(p.status.phase == "Running" for p in pods)
    for pod in pods:
        status = pod.status.container_statuses[0]
        assert status.ready and status.image_id.endswith(ref.split("@")[1])
        # The startup probe lets a pod serve once init() is done, not after initial_delay_seconds.
        waited = ready_after_start(pod)
        print(f"\npod {pod.metadata.name}: ready {waited:.1f}s after its container started "
              f"(initial_delay_seconds: 5 here, Azure ML's default 310)")
        assert waited < 30


def ready_after_start(pod: Any) -> float:
    """Seconds from the pod's container starting to the pod turning Ready."""
    started = pod.status.container_statuses[0].state.running.started_at
    ready = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
    return (ready - started).total_seconds()


def cluster_uri(kube: Any, namespace: str, path: str = "/score") -> str:
    """The Service's address on this machine: its cluster IP, which the lab's kube-proxy routes."""
    from kubernetes import client

    service = client.CoreV1Api(kube).read_namespaced_service(K8S_SERVICE, namespace)
    return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}{path}"


def test_the_service_answers_the_seed_example_through_the_cluster(stack, kube, namespace, capsys):
    service = outputs(stack)["services"][K8S_SERVICE]
    assert service["scoring_uri"] == f"http://{K8S_SERVICE}.{namespace}.svc.cluster.local/score"
    assert len(score(cluster_uri(kube, namespace), service["primary_key"])) == 2
    status, _ = call(cluster_uri(kube, namespace), json.dumps(SEED).encode(), "wrong-key")
    assert status == 401
    # `ml-deploy call` opens a port-forward to a ready pod itself: the scoring URI resolves only in the cluster.
    from cli import call as call_command

    capsys.readouterr()
    assert call_command.main(["--stack", STACK, "--service", K8S_SERVICE, "--kubeconfig", os.environ["KUBECONFIG"],
                              str(ROOT / "scoring_templates" / "sample-request.json")]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    # `ml-deploy logs` reads the pods' logs through the API server and the kubelet.
    assert "init() of /var/azureml-app/score.py finished" in logs.read(service["logs"], tail=50,
                                                                           kubeconfig=os.environ["KUBECONFIG"])


def test_the_container_answers_the_seed_example(stack):
    service = outputs(stack)["services"][CONTAINER_SERVICE]
    assert len(score(service["scoring_uri"], service["primary_key"])) == 2
    status, _ = call(service["scoring_uri"], json.dumps(SEED).encode(), "wrong-key")
    assert status == 401
    # Titled by the service's name (SERVICE_NAME), as Azure ML's deployments are.
    with urllib.request.urlopen(service["swagger_uri"], timeout=10) as r:
        assert json.loads(r.read())["info"]["title"] == CONTAINER_SERVICE
    # `ml-deploy logs` reads the container's log from the engine that runs it.
    assert "init() of /var/azureml-app/score.py finished" in logs.read(service["logs"], tail=50)


def test_preview_right_after_up_changes_nothing(stack):
    assert changes(stack) == {}


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_the_image_starts_the_way_aci_runs_it(stack, lab):
    """Port 80 as the image's non-root user, with host networking: the host's unprivileged-port
    floor applies, so only the capability on the environment's python lets the runtime bind it."""
    floor = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    assert floor > 80, f"this host lets anyone bind port 80 (ip_unprivileged_port_start={floor}): not the strict case"
    assert not port_open(80), "port 80 is taken on this machine"
    ref = outputs(stack)["images"]["diabetes"]
    # The same user and network without the capability (the base image's own python) are refused.
    plain = docker(lab, "run", "--rm", "--network", "host", "--entrypoint", "/usr/bin/python3", ref,
                   "-c", "import socket; socket.socket().bind(('127.0.0.1', 80))", check=False)
    assert plain.returncode != 0 and "PermissionError" in plain.stderr, plain.stderr
    name = f"ml-deploy-aci-{secrets.token_hex(3)}"
    docker(lab, "run", "--detach", "--name", name, "--network", "host", "--env", "PORT=80", ref)
    try:
        deadline = time.monotonic() + 120
        while not ready(80):
            state = docker(lab, "inspect", "-f", "{{.State.Running}}", name).stdout.strip()
            assert state == "true", docker(lab, "logs", name, check=False).stderr
            assert time.monotonic() < deadline, "not ready on port 80 within 120s"
            time.sleep(0.2)
        assert docker(lab, "exec", name, "id", "-u").stdout.strip() == "10001"
        assert len(score("http://127.0.0.1:80/score", "")) == 2
    finally:
        docker(lab, "rm", "--force", name, check=False)


def test_refresh_notices_a_dead_container_and_up_starts_another(stack, lab):
    container, port = container_of(stack)
    docker(lab, "stop", container)
    stack.refresh(on_output=lambda _: None)
    assert changes(stack) == {f"{CONTAINER_SERVICE}-container": "create"}
    stack.up(on_output=lambda _: None)
    service = outputs(stack)["services"][CONTAINER_SERVICE]
    assert len(score(service["scoring_uri"], service["primary_key"])) == 2
    # The dead one is kept for its log (`docker logs`), not reused.
    assert container_of(stack)[0] != container
    docker(lab, "rm", container)


class Load:
    """Requests sent one after another to a URI for as long as it runs: each answer's body, and every
    failure (an error status, a reset, a refused or timed-out connection). One client by default: a
    replica takes one request at a time (replica_max_concurrent_requests, Azure ML's default 1) and
    answers 503 past it, by design."""

    def __init__(self, uri: str, key: str, clients: int = 1):
        import threading

        self.uri, self.key = uri, key
        self.answers: list[str] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        body = json.dumps(SEED).encode()
        while not self._stop.is_set():
            try:
                status, raw = call(self.uri, body, self.key, timeout_s=10)
                text = raw.decode(errors="replace")
            except Exception as err:  # every kind of failure counts
                self.failures.append(f"{type(err).__name__}: {err}")
                continue
            (self.answers if status == 200 else self.failures).append(text if status == 200 else f"{status} {text}")

    def __enter__(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def test_a_changed_score_py_rolls_out_under_load_without_a_failed_request(stack, project, lab, kube, namespace):
    """The zero-downtime rollout, measured: a client calls the Service for the whole `pulumi up` of a
    new score.py (a new image digest) whose init() takes 20 s; none fails (readiness keeps requests
    off the new pod until init() is done, and the old one serves meanwhile), the answers switch to
    the new script, and the old ReplicaSet ends at 0 replicas. The container is restarted on the new
    image (same port)."""
    from kubernetes import client

    service = outputs(stack)["services"][CONTAINER_SERVICE]
    key = outputs(stack)["services"][K8S_SERVICE]["primary_key"]
    before_ref, before = outputs(stack)["images"]["diabetes"], score(service["scoring_uri"], service["primary_key"])
    old_container, port = container_of(stack)
    script = project / "scoring_templates" / "sklearn" / "score.py"
    # The new script also dies on a row starting 999 (test_a_crash_in_run_...).
    script.write_text(script.read_text().replace(
        "return model.predict(data).tolist()",
        f"if data[0][0] == {CRASH_ROW[0]}:\n        os._exit(70)\n"
        "    return [round(p, 1) for p in model.predict(data).tolist()]").replace(
        "    model = joblib.load(_model_file())", "    import time\n    time.sleep(20)\n    model = joblib.load(_model_file())"))
    # The local bundle is the same image's content (replaced, content-addressed); on the cluster
    # only the Deployment changes, and the container is restarted on the new image.
    assert changes(stack) == {"diabetes-image": "update", "diabetes-bundle": "replace",
                              f"{K8S_SERVICE}-deployment": "update", f"{CONTAINER_SERVICE}-container": "update"}
    apps = client.AppsV1Api(kube)
    started = time.monotonic()
    with Load(cluster_uri(kube, namespace), key) as load:
        stack.up(on_output=lambda _: None)
        took = time.monotonic() - started
        time.sleep(2)  # answers from the new pods only, for a moment
    after_ref = outputs(stack)["images"]["diabetes"]
    print(f"\nrollout under load: {len(load.answers) + len(load.failures)} requests, {len(load.failures)} failed; "
          f"`pulumi up` to the last new replica serving: {took:.1f}s")
    assert load.failures == [], load.failures[:5]
    assert json.loads(load.answers[0]) == before
    assert json.loads(load.answers[-1]) == [round(p, 1) for p in before]
    deployment = apps.read_namespaced_deployment(K8S_SERVICE, namespace)
    assert deployment.spec.template.spec.containers[0].image == after_ref != before_ref
    new_pods = [p for p in client.CoreV1Api(kube).list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/name={K8S_SERVICE}").items
        if p.spec.containers[0].image == after_ref]
    assert new_pods and all(ready_after_start(p) >= 20 for p in new_pods)  # held back by its init()
    assert took >= 20
    sets = apps.list_namespaced_replica_set(namespace, label_selector=f"app.kubernetes.io/name={K8S_SERVICE}").items
    old = [r for r in sets if r.spec.template.spec.containers[0].image == before_ref]
    assert old and all((r.status.replicas or 0) == 0 for r in old)
    assert registry_manifest(lab, "diabetes", after_ref.split("@")[1])[0] == 200
    new_container, new_port = container_of(stack)
    assert new_port == port and new_container != old_container
    assert docker(lab, "inspect", old_container, check=False).returncode != 0
    after = score(service["scoring_uri"], service["primary_key"])
    assert after == [round(p, 1) for p in before] and after != before


def test_a_crash_in_run_is_survived_by_the_pod_and_shows_in_its_log(stack, lab, kube, namespace):
    """run() that kills its process (os._exit) kills one worker, not the container: the request it
    was answering fails, the runtime's master starts another worker, the pod keeps serving without
    a container restart, and `ml-deploy logs` shows the crash."""
    from kubernetes import client

    service = outputs(stack)["services"][K8S_SERVICE]
    key = service["primary_key"]
    try:
        status, _ = call(cluster_uri(kube, namespace), json.dumps({"data": [CRASH_ROW]}).encode(), key, timeout_s=10)
    except Exception:  # noqa: BLE001 - the connection dies with the worker
        status = 0
    assert status != 200
    # The replacement worker runs this script's init(), which takes 20 s (the rollout test's script);
    # then readiness has to pass again. 30 s was once too short on a loaded CI machine.
    deadline = time.monotonic() + 90
    while True:
        try:
            if len(score(cluster_uri(kube, namespace), key)) == 2:
                break
        except Exception:  # noqa: BLE001 - until the next worker is ready
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    pods = client.CoreV1Api(kube).list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/name={K8S_SERVICE}").items
    assert pods and all(p.status.container_statuses[0].restart_count == 0 for p in pods if p.status.container_statuses)
    text = logs.read(service["logs"], tail=100, kubeconfig=lab["KUBECONFIG"])
    assert "exited with code 70" in text, text


def _wait(what: str, check: Any, timeout_s: float) -> float:
    """Poll `check` every second until it is true: the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s:.0f}s"
        time.sleep(1)
    return time.monotonic() - started


def test_the_hpa_scales_the_service_up_under_load_and_back_down(stack, kube, namespace):
    """metrics-server's CPU metrics drive the service's HorizontalPodAutoscaler (2 replicas at most in
    Pulumi.lab.yaml, 70% of the CPU request): under load it scales to 2, both pods serve, and once
    the load stops it scales back to 1 (the lab's controller waits 20 s before scaling down)."""
    from kubernetes import client

    key = outputs(stack)["services"][K8S_SERVICE]["primary_key"]
    apps, hpas = client.AppsV1Api(kube), client.AutoscalingV2Api(kube)

    def ready_replicas() -> int:
        return apps.read_namespaced_deployment(K8S_SERVICE, namespace).status.ready_replicas or 0

    def utilization() -> Optional[int]:
        metrics = hpas.read_namespaced_horizontal_pod_autoscaler(K8S_SERVICE, namespace).status.current_metrics or []
        return next((m.resource.current.average_utilization for m in metrics if m.resource), None)

    def replicas() -> int:
        return apps.read_namespaced_deployment(K8S_SERVICE, namespace).spec.replicas

    _wait("the HPA reads the pods' CPU", lambda: utilization() is not None, 60)
    _wait("1 replica before the load (the rollout's load may have scaled it up)", lambda: replicas() == 1, 120)
    with Load(cluster_uri(kube, namespace), key, clients=3) as load:
        up = _wait("2 ready replicas under load", lambda: ready_replicas() == 2, 180)
        busy = utilization()
    down = _wait("back to 1 replica", lambda: replicas() == 1, 180)
    print(f"\nHPA: {busy}% of the CPU request under load ({len(load.answers)} answered); 2 replicas ready "
          f"{up:.0f}s after the load began; back to 1 {down:.0f}s after it stopped")
    assert len(score(cluster_uri(kube, namespace), key)) == 2


def test_a_broken_update_fails_in_bounded_time_and_the_old_version_keeps_answering(stack, project, lab, kube, namespace):
    """An init() that raises: `pulumi up` fails once a healthy rollout would have finished
    (components/aks_service.py: rollout_bounds), naming the Deployment and showing the script's
    error (the container's termination message), while the previous version answers every request
    during and after; `ml-deploy logs` shows the crashed container's log; fixing the script and
    running `up` again recovers."""
    from kubernetes import client

    key = outputs(stack)["services"][K8S_SERVICE]["primary_key"]
    script = project / "scoring_templates" / "sklearn" / "score.py"
    good = script.read_text()
    script.write_text(good.replace("    model = joblib.load(_model_file())",
                                   "    raise RuntimeError('the model file is corrupt')"))
    apps = client.AppsV1Api(kube)
    deadline = apps.read_namespaced_deployment(K8S_SERVICE, namespace).spec.progress_deadline_seconds
    started = time.monotonic()
    with Load(cluster_uri(kube, namespace), key) as load:
        with pytest.raises(auto.CommandError) as failed:
            stack.up(on_output=lambda _: None)
        took = time.monotonic() - started
        time.sleep(2)
    print(f"\nbroken update: `pulumi up` failed after {took:.0f}s (progress deadline {deadline}s); "
          f"{len(load.answers) + len(load.failures)} requests meanwhile, {len(load.failures)} failed")
    assert f"{K8S_SERVICE}-deployment" in str(failed.value)
    assert "RuntimeError: the model file is corrupt" in str(failed.value), str(failed.value)[-3000:]
    # rollout_bounds: the deadline, a second wave of the startup budget (2 replicas at most), a minute.
    assert took < deadline + (deadline - 60) + 60 + 90
    assert load.failures == [] and load.answers
    # The new pod's container has restarted (init() raised): its previous container's log is shown.
    text = logs.read(outputs(stack)["services"][K8S_SERVICE]["logs"], tail=100, kubeconfig=lab["KUBECONFIG"])
    assert "(previous container, restarted" in text and "the model file is corrupt" in text, text
    script.write_text(good)
    stack.up(on_output=lambda _: None)
    assert len(score(cluster_uri(kube, namespace), key)) == 2


def test_destroy_removes_the_objects_the_container_and_its_port(stack, lab, kube, namespace):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    container, port = container_of(stack)
    stack.destroy(on_output=lambda _: None)
    core, apps = client.CoreV1Api(kube), client.AppsV1Api(kube)
    for read in (lambda: apps.read_namespaced_deployment(K8S_SERVICE, namespace),
                 lambda: core.read_namespaced_service(K8S_SERVICE, namespace),
                 lambda: core.read_namespaced_secret(f"{K8S_SERVICE}-keys", namespace),
                 lambda: client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler(K8S_SERVICE, namespace),
                 lambda: client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget(K8S_SERVICE, namespace)):
        with pytest.raises(ApiException) as gone:
            read()
        assert gone.value.status == 404
    assert core.list_namespaced_secret(namespace).items == []
    assert core.list_namespaced_pod(namespace).items == []
    # The provider awaited the namespace's deletion, which the namespace controller finished.
    with pytest.raises(ApiException):
        core.read_namespace(namespace)
    assert docker(lab, "inspect", container, check=False).returncode != 0
    assert not port_open(port)
