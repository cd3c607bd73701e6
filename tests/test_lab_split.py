"""A traffic split on the lab's cluster, for real, through the engine: a service of two deployments
(two images, two score.py that answer differently) behind the router (components/kubernetes_split.py);
2,000 requests at 90/10 land within 3 points of it; the deployment header reaches one deployment;
`ml-deploy traffic`'s edit to 0/100 previews as the router's config and the router's rollout alone,
and `pulumi up` of it under load fails no request.

Needs `bash scripts/lab up` (skipped otherwise, saying so). Its own stack (`lab-split`) and namespace,
destroyed at the end.
"""

from __future__ import annotations

import collections
import json
import secrets
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pulumi import automation as auto

from cli import traffic
from cli.call import call
from tests.helpers import SEED, copy_project
from tests.test_lab_stack import Load, changes, lab, lab_stack, outputs  # noqa: F401 - `lab` is a fixture

pytestmark = pytest.mark.lab  # scripts/test runs these beside the others

STACK = "lab-split"
SERVICE = "churn"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model_files) -> Path:
    """The project with a `lab-split` stack: the lab stack's workspace, cluster and keys, a second
    image whose score.py rounds its answers, and one service of two deployments at 90/10."""
    project = copy_project(tmp_path_factory.mktemp("lab-split-project"), model_files[0])
    script = project / "scoring_templates" / "sklearn" / "score.py"
    green = project / "scoring_templates" / "sklearn" / "score_green.py"
    green.write_text(script.read_text().replace(
        "return model.predict(data).tolist()", "return [round(p, 1) for p in model.predict(data).tolist()]"))
    stack_file = yaml.safe_load((project / "Pulumi.lab.yaml").read_text())
    config = stack_file["config"]
    base = config["ml-deploy:images"][0]
    config["ml-deploy:images"].append(dict(base, name="diabetes-green",
                                           execution_script="scoring_templates/sklearn/score_green.py"))
    keys = next(s for s in config["ml-deploy:services"] if s["target"] == "kubernetes")
    config["ml-deploy:services"] = [{
        "name": SERVICE, "target": "kubernetes", "cluster": "lab", "service_type": "ClusterIP",
        "namespace": f"lab-split-{secrets.token_hex(3)}", "initial_delay_seconds": 5,
        "cpu_cores": 0.25, "memory_gb": 0.5, "num_replicas": 1, "auth_enabled": True,
        # Two clients below: a replica takes them both (Azure ML's default is one at a time).
        "replica_max_concurrent_requests": 4,
        "primary_key": keys["primary_key"], "secondary_key": keys["secondary_key"],
        "deployments": [{"name": "blue", "image": "diabetes", "traffic": 90},
                        {"name": "green", "image": "diabetes-green", "traffic": 10}],
    }]
    (project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack_file, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def stack(lab, project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[auto.Stack]:
    stack = lab_stack(lab, project, tmp_path_factory.mktemp("lab-split-state"), STACK)
    try:
        stack.up(on_output=lambda _: None)
        yield stack
    finally:
        stack.destroy(on_output=lambda _: None)


def _router_uri(stack: auto.Stack, lab: dict[str, str]) -> str:
    """The router's Service at its cluster IP, which the lab's kube-proxy routes on this machine."""
    from kubernetes import client
    from kubernetes import config as kube_config

    namespace = outputs(stack)["services"][SERVICE]["logs"]["namespace"]
    api = client.CoreV1Api(kube_config.new_client_from_config(config_file=lab["KUBECONFIG"]))
    service = api.read_namespaced_service(SERVICE, namespace)
    return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/score"


def _which(answer: list[float], blue: list[float]) -> str:
    return "blue" if answer == blue else "green" if answer == [round(p, 1) for p in blue] else f"other: {answer}"


def _blue(uri: str, key: str) -> list[float]:
    status, body = call(uri, json.dumps(SEED).encode(), key, deployment="blue")
    assert status == 200, body
    return json.loads(body)


def test_the_split_lands_within_3_points_of_90_10(stack, lab):
    uri, key = _router_uri(stack, lab), outputs(stack)["services"][SERVICE]["primary_key"]
    blue = _blue(uri, key)
    counts: collections.Counter[str] = collections.Counter()
    body = json.dumps(SEED).encode()
    for _ in range(2000):
        status, raw = call(uri, body, key)
        assert status == 200, raw
        counts[_which(json.loads(raw), blue)] += 1
    print(f"\nlab split at 90/10 over 2,000 requests: blue {counts['blue']}, green {counts['green']}")
    assert set(counts) == {"blue", "green"}
    assert abs(counts["green"] / 2000 * 100 - 10) <= 3


def test_the_deployment_header_reaches_one_deployment(stack, lab):
    uri, key = _router_uri(stack, lab), outputs(stack)["services"][SERVICE]["primary_key"]
    blue = _blue(uri, key)
    body = json.dumps(SEED).encode()
    answers = set()
    for _ in range(20):
        status, raw = call(uri, body, key, deployment="green")
        assert status == 200, raw
        answers.add(_which(json.loads(raw), blue))
    assert answers == {"green"}
    # The deployments check the service's keys behind the router.
    assert call(uri, body, "wrong-key")[0] == 401


def test_a_shift_to_0_100_previews_as_the_router_alone_and_drops_no_request_under_load(stack, project, lab):
    uri, key = _router_uri(stack, lab), outputs(stack)["services"][SERVICE]["primary_key"]
    blue = _blue(uri, key)
    path = project / f"Pulumi.{STACK}.yaml"
    path.write_text(traffic.edit(path.read_text(), SERVICE, {"blue": 0, "green": 100}, None))
    assert changes(stack) == {f"{SERVICE}-config": "replace", f"{SERVICE}-deployment": "update"}
    started = time.monotonic()
    with Load(uri, key, clients=2) as load:
        stack.up(on_output=lambda _: None)
        took = time.monotonic() - started
        time.sleep(2)
    whos = collections.Counter(_which(json.loads(a), blue) for a in load.answers)
    print(f"\nlab shift 90/10 -> 0/100 under load: {len(load.answers) + len(load.failures)} requests, "
          f"{len(load.failures)} failed, `pulumi up` {took:.1f}s; answered by {dict(whos)}")
    assert load.failures == [], load.failures[:5]
    after = collections.Counter(_which(json.loads(call(uri, json.dumps(SEED).encode(), key)[1]), blue)
                                for _ in range(100))
    assert after == {"green": 100}
    assert changes(stack) == {}
