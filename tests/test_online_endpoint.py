"""`target: online_endpoint` under Pulumi's mocks: the endpoint, its deployments and their split reach
Azure as Azure ML expects them, and a change touches only what it changes."""

from __future__ import annotations

from typing import Any

import pytest

from providers.endpoint_traffic import EndpointTrafficProvider
from tests.helpers import TEMPLATES, assert_rejected, changed, run_config

ENDPOINT = "azure-native:machinelearningservices:OnlineEndpoint"
DEPLOYMENT = "azure-native:machinelearningservices:OnlineDeployment"
ENVIRONMENT = "azure-native:machinelearningservices:EnvironmentVersion"
TRAFFIC = "pulumi-python:dynamic/machinelearningservices:EndpointTraffic"


def endpoint_config(config: dict[str, Any], traffic: tuple[int, int] = (90, 10), **service: Any) -> dict[str, Any]:
    second = dict(config["ml-deploy:images"][0], name="diabetes-v2")
    config["ml-deploy:images"].append(second)
    config["ml-deploy:services"] = [{
        "name": "churn", "target": "online_endpoint", "auth_mode": "key", "description": "churn scoring",
        "tags": {"team": "ml"},
        "deployments": [
            {"name": "blue", "image": "diabetes", "instance_type": "Standard_DS3_v2", "instance_count": 2,
             "traffic": traffic[0]},
            {"name": "green", "image": "diabetes-v2", "instance_type": "Standard_DS3_v2", "instance_count": 1,
             "traffic": traffic[1]},
        ],
        **service,
    }]
    return config


def _one(rec, type_: str, suffix: str):
    return next(r for r in rec.of_type(type_) if r.urn.endswith(f"::{suffix}"))


def test_the_endpoint_its_deployments_and_the_split_reach_azure(config):
    rec = run_config(endpoint_config(config))
    endpoint = _one(rec, ENDPOINT, "churn").inputs
    assert endpoint["identity"] == {"type": "SystemAssigned"}
    assert endpoint["properties"]["authMode"] == "Key" and "traffic" not in endpoint["properties"]
    assert endpoint["endpointName"].startswith("churn-") and len(endpoint["endpointName"]) <= 32
    blue = _one(rec, DEPLOYMENT, "churn-blue").inputs
    assert blue["deploymentName"] == "blue" and blue["sku"] == {"name": "Default", "capacity": 2}
    props = blue["properties"]
    assert props["endpointComputeType"] == "Managed" and props["instanceType"] == "Standard_DS3_v2"
    settings = props["requestSettings"]
    assert settings["requestTimeout"] == "PT60S" and settings["maxConcurrentRequestsPerInstance"] == 1
    assert props["livenessProbe"]["initialDelay"] == "PT10S" and props["readinessProbe"]["failureThreshold"] == 30
    assert props["environmentVariables"]["WORKER_COUNT"] == "4"  # one per core of a DS3_v2
    environments = {r.inputs["name"]: r.inputs for r in rec.of_type(ENVIRONMENT)}
    assert set(environments) == {"diabetes", "diabetes-v2"}
    env = environments["diabetes"]["properties"]
    assert "@sha256:" in env["image"]  # the pushed image, by digest
    assert env["inferenceConfig"] == {"livenessRoute": {"path": "/", "port": 5001},
                                      "readinessRoute": {"path": "/ready", "port": 5001},
                                      "scoringRoute": {"path": "/score", "port": 5001}}
    traffic = rec.of_type(TRAFFIC)[0].inputs
    assert traffic["traffic"] == {"blue": 90, "green": 10} and traffic["mirror"] == {}
    outputs = rec.outputs["services"]["churn"]
    assert outputs["scoring_uri"].endswith(".inference.ml.azure.com/score")
    assert outputs["primary_key"].startswith("mock-primary-") and "services.churn.primary_key" in rec.output_secret_paths


def test_the_split_is_set_after_every_deployment(config):
    rec = run_config(endpoint_config(config))
    traffic = rec.of_type(TRAFFIC)[0]
    deployments = {r.urn for r in rec.of_type(DEPLOYMENT)}
    assert deployments <= set(traffic.dependencies)


def test_a_traffic_shift_changes_the_split_resource_alone(config):
    before = run_config(endpoint_config(config))
    for deployment, share in zip(config["ml-deploy:services"][0]["deployments"], (0, 100)):
        deployment["traffic"] = share
    assert changed(before, run_config(config)) == {"churn-traffic"}


def test_a_new_image_for_green_changes_green_and_its_environment(config, tmp_path):
    before = run_config(endpoint_config(config))
    script = tmp_path / "score.py"
    script.write_text((TEMPLATES / "sklearn" / "score.py").read_text() + "\n# v2\n")
    config["ml-deploy:images"][1]["execution_script"] = str(script)
    after = run_config(config)
    names = changed_or_new(before, after)
    assert "churn-green" in names and "churn-blue" not in names and "churn-traffic" not in names
    assert any(n.startswith("diabetes-v2-") for n in names)  # its new environment version
    assert not any(n.startswith("diabetes-") and "v2" not in n for n in names)


def test_endpoints_that_run_one_image_share_its_environment(config):
    endpoint_config(config)
    second = dict(config["ml-deploy:services"][0], name="churn-eu", tags={"team": "eu"})
    second["deployments"] = [dict(d) for d in second["deployments"]]
    config["ml-deploy:services"].append(second)
    rec = run_config(config)
    # Azure names an environment version by image and tag: two resources would be one Azure object,
    # and deleting either endpoint would delete what the other one runs.
    environments = rec.of_type(ENVIRONMENT)
    assert sorted(e.inputs["name"] for e in environments) == ["diabetes", "diabetes-v2"]
    ids = {e.inputs["name"]: e.id for e in environments}
    for endpoint in ("churn", "churn-eu"):
        assert _one(rec, DEPLOYMENT, f"{endpoint}-blue").inputs["properties"]["environmentId"] == ids["diabetes"]
        assert _one(rec, DEPLOYMENT, f"{endpoint}-green").inputs["properties"]["environmentId"] == ids["diabetes-v2"]


def test_an_environment_keeps_the_resource_its_first_endpoint_registered(config):
    # Until environments were the stack's, each endpoint registered its own as a child named
    # <endpoint>-<image>-<tag>: the alias makes the state under that URN this resource (no replace).
    rec = run_config(endpoint_config(config))
    # A sibling from then, still the endpoint component's child: its URN has the prefix the old one had.
    under_endpoint = _one(rec, DEPLOYMENT, "churn-blue").urn.rsplit("$", 1)[0]
    environments = rec.of_type(ENVIRONMENT)
    assert len(environments) == 2
    for env in environments:
        image, tag = env.inputs["name"], env.inputs["version"]
        assert env.parent is not None and "::pulumi:pulumi:Stack::" in env.parent  # the stack's own now
        assert f"{under_endpoint}${ENVIRONMENT}::churn-{image}-{tag}" in env.aliases


def changed_or_new(before, after) -> set[str]:
    a = {r.urn: r.inputs for r in before.resources}
    return {r.urn.rsplit("::", 1)[1] for r in after.resources if a.get(r.urn) != r.inputs}


def test_mirror_traffic_reaches_the_split(config):
    rec = run_config(endpoint_config(config, (100, 0), mirror_traffic={"green": 10}))
    assert rec.of_type(TRAFFIC)[0].inputs["mirror"] == {"green": 10}


def test_an_instance_type_managed_endpoints_do_not_take(config):
    endpoint_config(config)
    config["ml-deploy:services"][0]["deployments"][0]["instance_type"] = "Standard_B2s"
    assert_rejected(config, "services[0].deployments[0].instance_type", "not a VM size managed online endpoints accept")


def test_an_online_endpoint_needs_deployments(config):
    config["ml-deploy:services"][0] = {"name": "churn", "target": "online_endpoint", "image": "diabetes"}
    assert_rejected(config, "services[0].image", "an online endpoint runs deployments")


def test_auth_is_chosen_by_auth_mode(config):
    assert_rejected(endpoint_config(config, auth_enabled=False), "services[0].auth_enabled", "auth_mode")


def test_a_request_timeout_over_azures_limit(config):
    assert_rejected(endpoint_config(config, scoring_timeout_ms=200_000), "services[0].scoring_timeout_ms", "180000")


# ---- the split and the logs against a fake Azure Resource Manager on 127.0.0.1 ----------------------

ENDPOINT_ID = ("/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
               "onlineEndpoints/churn")
BEARER = "test-arm-token"


class FakeEndpoint:
    """One endpoint as Azure ML keeps it: a PUT replaces it (after one 202 poll), a GET reads it."""

    def __init__(self) -> None:
        self.body: dict[str, Any] = {
            "location": "westeurope", "tags": {"team": "ml"}, "identity": {"type": "SystemAssigned"},
            "properties": {"authMode": "Key", "description": "churn", "traffic": {"blue": 100},
                           "provisioningState": "Succeeded", "scoringUri": "https://churn/score"},
        }
        self.puts: list[dict[str, Any]] = []
        self.logs_asked: list[dict[str, Any]] = []


def _fake_arm(endpoint: FakeEndpoint, base: list[str]):
    import json

    from tests.helpers import JsonHandler

    class Handler(JsonHandler):

        def _route(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {BEARER}":
                return self._send(401, {"error": {"code": "AuthenticationFailed"}})
            path, _, query = self.path.partition("?")
            if path == "/operations/put" and self.command == "GET":
                return self._send(200, None)
            if "api-version=2025-12-01" not in query:
                return self._send(400, {"error": {"code": "UnsupportedApiVersion", "query": query}})
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if path == ENDPOINT_ID and self.command == "GET":
                return self._send(200, endpoint.body)
            if path == ENDPOINT_ID and self.command == "PUT":
                endpoint.puts.append(body)
                read_only = {"provisioningState", "scoringUri"}
                kept = {k: v for k, v in endpoint.body["properties"].items() if k in read_only}
                endpoint.body = {**body, "properties": {**body["properties"], **kept}}
                endpoint.body["properties"]["traffic"] = {k: v for k, v in body["properties"]["traffic"].items() if v}
                return self._send(202, None, {"Location": base[0] + "/operations/put", "Retry-After": "0"})
            if path.endswith("/getLogs") and self.command == "POST":
                endpoint.logs_asked.append({"path": path, **body})
                return self._send(200, {"content": f"log of {path.split('/')[-2]}, last {body['tail']} lines\n"})
            return self._send(404, {"error": {"code": "NotFound"}})

        do_GET = do_PUT = do_POST = _route

    return Handler


@pytest.fixture
def fake_arm(tmp_path, monkeypatch):
    from tests.helpers import fake_arm as arm_server

    endpoint = FakeEndpoint()
    with arm_server(lambda base: _fake_arm(endpoint, base), tmp_path, monkeypatch, BEARER) as base:
        yield endpoint, base


def _split(base: str, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> dict[str, Any]:
    return {"endpoint_id": ENDPOINT_ID, "traffic": traffic, "mirror": mirror or {}, "endpoint_revision": "r1",
            "arm_endpoint": base}


def test_a_split_is_written_onto_the_endpoint_keeping_the_rest(fake_arm):
    endpoint, base = fake_arm
    outs = EndpointTrafficProvider().create(_split(base, {"blue": 90, "green": 10}, {"grey": 5})).outs
    put = endpoint.puts[-1]
    assert put["properties"]["traffic"] == {"blue": 90, "green": 10} and put["properties"]["mirrorTraffic"] == {"grey": 5}
    assert put["tags"] == {"team": "ml"} and put["identity"] == {"type": "SystemAssigned"}
    assert put["properties"]["authMode"] == "Key" and "scoringUri" not in put["properties"]  # read-only left out
    assert outs["applied_traffic"] == {"blue": 90, "green": 10}


def test_a_shift_is_an_update_and_a_change_outside_shows_on_refresh(fake_arm):
    endpoint, base = fake_arm
    provider = EndpointTrafficProvider()
    olds = provider.create(_split(base, {"blue": 90, "green": 10})).outs
    news = _split(base, {"blue": 0, "green": 100})
    assert provider.diff("", olds, news).changes and not provider.diff("", olds, news).replaces
    olds = provider.update("", olds, news).outs
    assert endpoint.body["properties"]["traffic"] == {"green": 100}
    endpoint.body["properties"]["traffic"] = {"blue": 100}  # someone ran `az ml online-endpoint update`
    read = provider.read("", olds).outs
    assert read["traffic"] == {"blue": 100, "green": 0}
    assert provider.diff("", read, news).changes


def test_deleting_the_split_stops_routing_before_the_deployments_go(fake_arm):
    endpoint, base = fake_arm
    provider = EndpointTrafficProvider()
    outs = provider.create(_split(base, {"blue": 100})).outs
    provider.delete("", outs)
    assert endpoint.body["properties"]["traffic"] == {} and endpoint.body["properties"]["mirrorTraffic"] == {}


def test_logs_are_read_with_the_get_logs_action(fake_arm):
    from infra.deploy import LogOptions
    from infra.targets.online_endpoint import read_logs

    endpoint, base = fake_arm
    source = {"kind": "online_endpoint", "arm_endpoint": base,
              "deployments": {"blue": ENDPOINT_ID + "/deployments/blue", "green": ENDPOINT_ID + "/deployments/green"}}
    both = read_logs(source, LogOptions(tail=50))
    assert "==> blue <==\nlog of blue, last 50 lines" in both and "==> green <==" in both
    assert endpoint.logs_asked[0]["containerType"] == "InferenceServer"
    assert read_logs(source, LogOptions(tail=5, deployment="green")) == "log of green, last 5 lines\n"
