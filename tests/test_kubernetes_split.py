"""A traffic split on Kubernetes (`target: kubernetes` and `aks` with `deployments`), under the mocks:
one scoring Deployment per deployment behind a ClusterIP Service, the service's own Deployment and
Service a router configured by a ConfigMap; a shift changes that ConfigMap and rolls the router alone.
The same on the lab's cluster, for real: tests/test_lab_split.py."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest

from components.aks_service import CONFIG_HASH_ANNOTATION
from policy.rules import evaluate
from tests.helpers import ROOT, TEMPLATES, assert_rejected, changed, inputs_by_urn
from tests.test_aks import aks  # noqa: F401 - a fixture
from tests.test_kubernetes import K8S_VERSION, KUBECONFIG

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "kubernetes:core/v1:Service"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
SECRET = "kubernetes:core/v1:Secret"


@pytest.fixture
def split(config, tmp_path) -> dict[str, Any]:
    """A local workspace with a registry, a cluster by kubeconfig, two images and a service of two
    deployments at 90/10."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    config["ml-deploy:workspace"] = {"name": "lab", "kind": "local", "path": ".ml-deploy/test-lab",
                                     "protect": False, "registry": "registry.example.com"}
    config["ml-deploy:kubernetes_clusters"] = [{"name": "team", "kubeconfig": str(kubeconfig), "context": "team-prod"}]
    script = tmp_path / "score.py"
    script.write_text((TEMPLATES / "sklearn" / "score.py").read_text())
    config["ml-deploy:images"].append(dict(config["ml-deploy:images"][0], name="diabetes-v2", execution_script=str(script)))
    config["ml-deploy:services"] = [{
        "name": "churn", "target": "kubernetes", "cluster": "team", "cpu_cores": 0.5, "memory_gb": 1,
        "primary_key": "a" * 20, "secondary_key": "b" * 20,
        "deployments": [{"name": "blue", "image": "diabetes", "traffic": 90},
                        {"name": "green", "image": "diabetes-v2", "traffic": 10}],
    }]
    return config


def _container(rec, name: str) -> dict[str, Any]:
    return rec.by_name(DEPLOYMENT, f"{name}-deployment").inputs["spec"]["template"]["spec"]["containers"][0]


def _router_config(rec) -> dict[str, Any]:
    return json.loads(rec.by_name(CONFIG_MAP, "churn-config").inputs["data"]["router.json"])


def _shift(config: dict[str, Any], blue: int, green: int) -> dict[str, Any]:
    deployments = config["ml-deploy:services"][0]["deployments"]
    deployments[0]["traffic"], deployments[1]["traffic"] = blue, green
    return config


def test_each_deployment_runs_its_image_with_the_services_keys(split, run):
    rec = run(split)
    images = rec.outputs["images"]
    assert _container(rec, "churn-blue")["image"] == images["diabetes"]
    assert _container(rec, "churn-green")["image"] == images["diabetes-v2"]
    keys = {name: rec.by_name(SECRET, f"churn-{name}-secret").inputs["stringData"] for name in ("blue", "green")}
    assert keys["blue"] == keys["green"] == {"auth-keys": "a" * 20 + "," + "b" * 20}
    # Inside the cluster only, plain HTTP on port 80.
    for name in ("blue", "green"):
        spec = rec.by_name(SERVICE, f"churn-{name}-service").inputs["spec"]
        assert spec["type"] == "ClusterIP" and spec["ports"][0]["port"] == 80


def test_the_service_is_a_router_configured_with_the_deployments_addresses_and_shares(split, run):
    rec = run(split)
    router = _container(rec, "churn")
    assert router["command"][:3] == ["python", "-m", "serving.router"]
    assert router["image"] == rec.outputs["images"]["diabetes"]
    # The router holds no keys (the deployments check them); it answers readiness on a port of its
    # own (the serving port's paths are all forwarded) and is alive while it accepts.
    assert "SCORING_AUTH_KEYS" not in {e["name"] for e in router.get("env", [])}
    assert router["readinessProbe"]["httpGet"] == router["startupProbe"]["httpGet"] == {
        "path": "/ready", "port": 5002, "scheme": "HTTP"}
    assert router["livenessProbe"]["tcpSocket"] == {"port": 5001} and "httpGet" not in router["livenessProbe"]
    assert router["command"][router["command"].index("--health-port") + 1] == "5002"
    assert router["resources"]["requests"]["cpu"] == "250m"
    ips = {name: rec.by_name(SERVICE, f"churn-{name}-service").outputs["spec"]["clusterIP"] for name in ("blue", "green")}
    assert _router_config(rec)["routes"] == [
        {"name": "blue", "host": ips["blue"], "port": 80, "traffic": 90},
        {"name": "green", "host": ips["green"], "port": 80, "traffic": 10}]
    # The service's URI is the router's Service, as for a service without deployments.
    assert rec.by_name(SERVICE, "churn-service").inputs["spec"]["type"] == "LoadBalancer"
    assert rec.outputs["services"]["churn"]["scoring_uri"] == "http://20.0.0.2/score"
    template = rec.by_name(DEPLOYMENT, "churn-deployment").inputs["spec"]["template"]
    assert len(template["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]) == 64


def test_the_router_rolls_out_after_the_deployments(split, run):
    rec = run(split)
    router = rec.by_name(DEPLOYMENT, "churn-deployment")
    blue = rec.by_name(DEPLOYMENT, "churn-blue-deployment")
    assert blue.urn in router.dependencies


def test_a_shift_changes_the_routers_config_and_rolls_the_router_alone(split, run):
    before = run(split)
    after = run(_shift(split, 0, 100))
    assert changed(before, after) == {"churn-config", "churn-deployment"}
    assert [r["traffic"] for r in _router_config(after)["routes"]] == [0, 100]


def test_a_new_image_for_green_rolls_green_alone(split, run, tmp_path):
    before = run(split)
    script = tmp_path / "score.py"
    script.write_text(script.read_text() + "\n# v2\n")
    assert changed(before, run(split)) == {"diabetes-v2-image", "diabetes-v2-bundle", "churn-green-deployment"}


def test_a_service_that_gains_deployments_keeps_its_objects_and_keys(config, split, run):
    """The router is the service's own Deployment and Service (same resources, same Kubernetes names):
    adding deployments rolls its pods over to the router in place, and clients keep address and keys."""
    for key in ("primary_key", "secondary_key"):  # generated, kept in state
        del split["ml-deploy:services"][0][key]
    single = json.loads(json.dumps(split))
    service = single["ml-deploy:services"][0]
    del service["deployments"]
    service["image"] = "diabetes"
    before, after = inputs_by_urn(run(single)), inputs_by_urn(run(split))
    kept = [urn for urn in before if "churn" in urn]
    assert sum("RandomPassword::churn-" in urn for urn in kept) == 2
    # All but the keys' Secret, which moves to the deployments (the router holds no keys).
    assert [urn.rsplit("::", 1)[1] for urn in kept if urn not in after] == ["churn-secret"]


def test_every_object_is_schema_valid(split, run):
    split["ml-deploy:services"][0]["mirror_traffic"] = {}
    for r in run(split).resources:
        if not (r.type.startswith("kubernetes:") and r.custom) or r.type == "pulumi:providers:kubernetes":
            continue
        group_version, kind = r.type.split(":")[1].rsplit("/", 1)
        group, version = group_version.split("/") if "/" in group_version else ("", group_version)
        api_version = version if group in ("", "core") else f"{group}/{version}"
        manifest = {"apiVersion": api_version, "kind": kind, **r.inputs}
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_mirror_is_in_the_routers_config(split, run):
    _shift(split, 100, 0)["ml-deploy:services"][0]["mirror_traffic"] = {"green": 20}
    assert _router_config(run(split))["mirror"] == {"green": 20}


def test_on_aks_the_same_objects(aks, run):
    service = next(s for s in aks["ml-deploy:services"] if s["target"] == "aks")
    image = service.pop("image")
    service["deployments"] = [{"name": "blue", "image": image, "traffic": 100}]
    rec = run(aks)
    name = service["name"]
    assert _container(rec, name)["command"][:3] == ["python", "-m", "serving.router"]
    assert _container(rec, f"{name}-blue")["image"] == rec.outputs["images"][image]
    logs = rec.outputs["services"][name]["logs"]
    assert logs["deployments"] == {"blue": f"app.kubernetes.io/name={name}-blue"}


def test_a_deployments_service_name_must_fit_kubernetes(split):
    split["ml-deploy:services"][0]["name"] = "c" * 32
    split["ml-deploy:services"][0]["deployments"][0]["name"] = "b" * 31
    assert_rejected(split, "services[0].deployments[0].name", "over 63 characters")


def test_the_logs_output_names_each_deployments_pods(split, run):
    logs = run(split).outputs["services"]["churn"]["logs"]
    assert logs["selector"] == "app.kubernetes.io/name=churn"  # the router's pods, which `call` forwards to
    assert logs["deployments"] == {"blue": "app.kubernetes.io/name=churn-blue", "green": "app.kubernetes.io/name=churn-green"}


def test_the_policy_checks_the_deployments_keys_not_the_routers(split, run):
    rec = run(split)
    assert not [v for v in evaluate(rec.resources, "lab", ROOT) if "without auth" in v.message]
    split["ml-deploy:services"][0].update(auth_enabled=False)
    for key in ("primary_key", "secondary_key"):
        del split["ml-deploy:services"][0][key]
    flagged = [v for v in evaluate(run(split).resources, "lab", ROOT) if "without auth" in v.message]
    assert len(flagged) == 2  # blue and green, not the router


def test_a_deployment_may_not_take_another_services_names(split):
    split["ml-deploy:services"].append({"name": "churn-blue", "image": "diabetes", "target": "kubernetes",
                                        "cluster": "team", "primary_key": "a" * 20, "secondary_key": "b" * 20})
    assert_rejected(split, "services[0].deployments[0].name", "which services[1] already is")


def test_the_router_drains_for_as_long_as_a_request_may_take(split, run):
    split["ml-deploy:services"][0]["scoring_timeout_ms"] = 120_000
    spec = run(split).by_name(DEPLOYMENT, "churn-deployment").inputs["spec"]["template"]["spec"]
    # preStop sleep, then the scoring timeout plus the router's own margin, then 5 s.
    assert spec["terminationGracePeriodSeconds"] == 5 + 120 + 10 + 5
