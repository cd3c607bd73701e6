"""The IoT Edge target under Pulumi's mocks: the hub, the pull-only registry token, the device
identities and their deployment (or a hub deployment at scale), the manifests against the official
schemas, and config errors that name their path."""

from __future__ import annotations

import json
import shutil

import pytest

from cli import offline
from cli.logs import LogsError, read
from tests.helpers import TEMPLATES, assert_rejected, changed, edge_manifest_errors, has_resource

HUB = "azure-native:iothub:IotHubResource"
SCOPE_MAP = "azure-native:containerregistry:ScopeMap"
TOKEN = "azure-native:containerregistry:Token"
PASSWORD = "pulumi-python:dynamic/containerregistry:TokenPassword"
DEVICE = "pulumi-python:dynamic/iot_edge:EdgeDevice"
DEVICE_DEPLOYMENT = "pulumi-python:dynamic/iot_edge:DeviceDeployment"
HUB_DEPLOYMENT = "pulumi-python:dynamic/iot_edge:HubDeployment"


@pytest.fixture
def edge(config):
    """The dev stack's workspace, model and image, deployed to IoT Edge devices only."""
    config["ml-deploy:iot_hubs"] = [{"name": "factory", "sku": "S1", "capacity": 1}]
    config["ml-deploy:services"] = [
        {"name": "diabetes-edge", "image": "diabetes", "target": "iot_edge", "hub": "factory",
         "devices": ["line-1", "line-2"], "port": 5001, "env": {"MAX_CONCURRENT_REQUESTS": "4"}},
        {"name": "diabetes-fleet", "image": "diabetes", "target": "iot_edge", "hub": "factory",
         "target_condition": "tags.site='plant-7'", "priority": 10, "port": 5002, "auth_enabled": True,
         "tags": {"team": "ml"}, "routes": {"upstream": "FROM /messages/modules/diabetes-fleet/outputs/* INTO $upstream"}},
    ]
    return config


def content(resource) -> dict:
    return json.loads(resource.inputs["content"])


def test_the_hub_is_a_standard_hub_with_one_policy_and_local_auth_for_it(edge, run):
    hub = run(edge).of_type(HUB)
    assert len(hub) == 1
    inputs = hub[0].inputs
    assert inputs["sku"] == {"name": "S1", "capacity": 1}
    assert inputs["properties"]["authorizationPolicies"] == [
        {"keyName": "ml-deploy", "rights": "RegistryRead, RegistryWrite, ServiceConnect"}]
    assert inputs["properties"]["disableLocalAuth"] is False and inputs["properties"]["minTlsVersion"] == "1.2"
    assert inputs["resourceName"].startswith("mlws-dev-factory-")


def test_the_hub_is_protected_with_the_workspace(edge, run):
    assert run(edge).of_type(HUB)[0].protect is False
    edge["ml-deploy:workspace"]["protect"] = True
    assert run(edge).of_type(HUB)[0].protect is True


def test_the_hub_key_reaches_the_dynamic_resources_only_as_a_secret(edge, run):
    rec = run(edge)
    for resource in rec.of_type(DEVICE) + rec.of_type(DEVICE_DEPLOYMENT) + rec.of_type(HUB_DEPLOYMENT):
        assert "connection" in resource.secret_paths
        assert resource.inputs["connection"].startswith("HostName=mlws-dev-factory-")
        assert ";SharedAccessKeyName=ml-deploy;SharedAccessKey=" in resource.inputs["connection"]


def test_each_service_gets_a_token_that_can_only_pull_its_repository(edge, run):
    rec = run(edge)
    maps = rec.of_type(SCOPE_MAP)
    assert sorted(m.inputs["scopeMapName"] for m in maps) == ["mlws-dev-diabetes-edge", "mlws-dev-diabetes-fleet"]
    assert all(m.inputs["actions"] == ["repositories/diabetes/content/read"] for m in maps)
    for token in rec.of_type(TOKEN):
        scope_map = next(m for m in maps if m.inputs["scopeMapName"] == token.inputs["tokenName"])
        assert token.inputs["scopeMapId"] == scope_map.id and token.inputs["status"] == "enabled"
    assert has_resource(rec, "azure-native:containerregistry:Registry", {"adminUserEnabled": False})


def test_no_registry_admin_credential_is_asked_for_or_deployed(edge, monkeypatch):
    tokens: list[str] = []
    original = offline.AzureMocks.call

    def spy(self, args):
        tokens.append(args.token)
        return original(self, args)

    monkeypatch.setattr(offline.AzureMocks, "call", spy)
    rec = offline.run({k: v if isinstance(v, str) else json.dumps(v) for k, v in edge.items()})
    assert "azure-native:containerregistry:listRegistryCredentials" not in tokens
    assert "azure-native:iothub:listIotHubResourceKeysForKeyName" in tokens
    password = next(p for p in rec.of_type(PASSWORD) if p.name == "diabetes-edge-token-password")
    assert password.inputs["password_name"] == "password1" and password.inputs["expiry_days"] == 365
    assert password.inputs["token_id"] == rec.by_name(TOKEN, "diabetes-edge-token").id
    for deployment in rec.of_type(DEVICE_DEPLOYMENT):
        creds = content(deployment)["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]
        (credential,) = creds["registryCredentials"].values()
        assert credential["username"] == "mlws-dev-diabetes-edge"
        assert credential["password"] == password.outputs["password"]
        assert credential["address"].endswith(".azurecr.io")


def test_each_listed_device_is_an_edge_identity_with_its_own_deployment(edge, run):
    rec = run(edge)
    devices = rec.of_type(DEVICE)
    assert sorted(d.inputs["device_id"] for d in devices) == ["line-1", "line-2"]
    assert all(d.outputs["status"] == "enabled" and d.outputs["iot_edge"] is True for d in devices)
    deployments = rec.of_type(DEVICE_DEPLOYMENT)
    assert sorted(d.inputs["device_id"] for d in deployments) == ["line-1", "line-2"]
    for deployment in deployments:
        assert "content" in deployment.secret_paths
        device = next(d for d in devices if d.inputs["device_id"] == deployment.inputs["device_id"])
        assert device.urn in deployment.dependencies
        removal = json.loads(deployment.inputs["removal_content"])
        assert removal["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"] == {}


def test_every_manifest_is_valid_against_the_official_schemas(edge, run):
    rec = run(edge)
    manifests = [content(r) for r in rec.of_type(DEVICE_DEPLOYMENT) + rec.of_type(HUB_DEPLOYMENT)]
    manifests += [json.loads(r.inputs["removal_content"]) for r in rec.of_type(DEVICE_DEPLOYMENT)]
    assert len(manifests) == 5
    for manifest in manifests:
        assert edge_manifest_errors(manifest) == []


def test_the_scoring_module_runs_the_image_with_the_service_settings(edge, run):
    rec = run(edge)
    image = rec.outputs["images"]["diabetes"]
    deployment = next(d for d in rec.of_type(DEVICE_DEPLOYMENT) if d.inputs["device_id"] == "line-1")
    module = content(deployment)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]
    assert module["settings"]["image"] == image and module["restartPolicy"] == "always"
    options = json.loads(module["settings"]["createOptions"])
    assert options["HostConfig"]["PortBindings"] == {"5001/tcp": [{"HostPort": "5001"}]}
    assert {"PORT=5001", "WORKER_COUNT=1", "SCORING_TIMEOUT_MS=60000", "MAX_CONCURRENT_REQUESTS=4"} <= set(options["Env"])
    assert "env" not in module  # no auth, no App Insights: nothing secret in the module's env


def test_auth_keys_go_to_the_module_env_never_the_create_options(edge, run):
    rec = run(edge)
    fleet = rec.of_type(HUB_DEPLOYMENT)[0]
    module = content(fleet)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-fleet"]
    keys = rec.outputs["services"]["diabetes-fleet"]
    assert module["env"] == {"SCORING_AUTH_KEYS": {"value": f"{keys['primary_key']},{keys['secondary_key']}"}}
    assert keys["primary_key"] not in module["settings"]["createOptions"]
    assert "services.diabetes-fleet.primary_key" in rec.output_secret_paths


def test_app_insights_reaches_the_module_as_a_secret_env(edge, run):
    edge["ml-deploy:services"][0]["enable_app_insights"] = True
    rec = run(edge)
    deployment = rec.of_type(DEVICE_DEPLOYMENT)[0]
    module = content(deployment)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]
    insights = rec.of_type("azure-native:applicationinsights:Component")[0].outputs["connectionString"]
    assert module["env"] == {"APPLICATIONINSIGHTS_CONNECTION_STRING": {"value": insights}}
    assert "content" in deployment.secret_paths and insights not in module["settings"]["createOptions"]


def test_a_target_condition_is_one_hub_deployment_without_device_identities(edge, run):
    rec = run(edge)
    (fleet,) = rec.of_type(HUB_DEPLOYMENT)
    assert fleet.inputs["target_condition"] == "tags.site='plant-7'" and fleet.inputs["priority"] == 10
    assert fleet.inputs["labels"] == {"team": "ml"}
    assert fleet.inputs["configuration_id"].startswith("diabetes-fleet-") and "configuration_id" not in fleet.secret_paths
    routes = content(fleet)["modulesContent"]["$edgeHub"]["properties.desired"]["routes"]
    assert routes == {"upstream": "FROM /messages/modules/diabetes-fleet/outputs/* INTO $upstream"}
    assert not [d for d in rec.of_type(DEVICE) if d.name.startswith("diabetes-fleet")]


def test_device_connection_strings_are_secret_stack_outputs(edge, run):
    rec = run(edge)
    out = rec.outputs["services"]["diabetes-edge"]
    assert set(out["devices"]) == {"line-1", "line-2"} and out["hub"].startswith("mlws-dev-factory-")
    assert out["devices"]["line-1"].startswith(f"HostName={out['hub']}.azure-devices.net;DeviceId=line-1;SharedAccessKey=")
    assert {"services.diabetes-edge.devices.line-1", "services.diabetes-edge.devices.line-2"} <= rec.output_secret_paths
    assert out["scoring_uri"] == "http://localhost:5001/score" and rec.outputs["services"]["diabetes-fleet"]["devices"] == {}


def test_edge_services_honour_the_service_contract_and_add_their_devices(edge, run):
    contract = {"target", "image", "scoring_uri", "swagger_uri", "primary_key", "secondary_key", "logs"}
    rec = run(edge)
    for name, outputs in rec.outputs["services"].items():
        assert set(outputs) == contract | {"hub", "devices"}
        assert {f"services.{name}.primary_key", f"services.{name}.secondary_key"} <= rec.output_secret_paths


def test_a_new_image_changes_the_deployment_content_only(edge, run, tmp_path):
    before = run(edge)
    script = tmp_path / "score.py"
    shutil.copy(TEMPLATES / "sklearn" / "score.py", script)
    script.write_text(script.read_text() + "\n# a new line: a new image\n")
    edge["ml-deploy:images"][0]["execution_script"] = str(script)
    after = run(edge)
    assert before.outputs["images"] != after.outputs["images"]
    # The hub deployment's id follows its content, so it shows as changed too (a replacement).
    assert changed(before, after) == {"diabetes-image", "diabetes-edge-line-1-deployment",
                                      "diabetes-edge-line-2-deployment", "diabetes-fleet-deployment"}
    ids = [r.inputs["configuration_id"] for r in (before.of_type(HUB_DEPLOYMENT) + after.of_type(HUB_DEPLOYMENT))]
    assert ids[0] != ids[1]


def test_the_logs_command_says_where_an_edge_module_logs(edge, run):
    logs = run(edge).outputs["services"]["diabetes-edge"]["logs"]
    with pytest.raises(LogsError, match=r"sudo iotedge logs diabetes-edge --tail 50"):
        read(logs, 50)


# ---- config errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("sku,words", [("B1", "basic tier, which has no device twins"), ("S9", "use F1, S1, S2 or S3")])
def test_hub_skus_that_cannot_run_iot_edge_are_rejected(edge, sku, words):
    edge["ml-deploy:iot_hubs"][0]["sku"] = sku
    assert_rejected(edge, "iot_hubs[0].sku", words)


def test_hub_units_are_limited_by_tier(edge):
    edge["ml-deploy:iot_hubs"][0].update(sku="S3", capacity=11)
    assert_rejected(edge, "iot_hubs[0].capacity", "a S3 hub has at most 10 units")


def test_one_free_hub_per_subscription(edge):
    edge["ml-deploy:iot_hubs"] = [{"name": "a1", "sku": "F1"}, {"name": "b2", "sku": "F1"}]
    assert_rejected(edge, "iot_hubs[1].sku", "one free (F1) hub per subscription")


def test_a_service_names_a_missing_hub(edge):
    edge["ml-deploy:services"][1]["hub"] = "nope"
    assert_rejected(edge, "services[1].hub", "no IoT hub named 'nope'")


def test_devices_and_target_condition_exclude_each_other(edge):
    edge["ml-deploy:services"][1]["devices"] = ["line-9"]
    assert_rejected(edge, "services[1].target_condition", "not allowed with devices")


def test_a_service_needs_devices_or_a_target_condition(edge):
    edge["ml-deploy:services"][0]["devices"] = []
    assert_rejected(edge, "services[0].devices", "or a target_condition")


def test_priority_needs_a_target_condition(edge):
    edge["ml-deploy:services"][0]["priority"] = 5
    assert_rejected(edge, "services[0].priority", "only with target_condition")


def test_a_device_runs_one_deployment(edge):
    edge["ml-deploy:services"][1] = {"name": "other-edge", "image": "diabetes", "target": "iot_edge",
                                     "hub": "factory", "devices": ["line-2"], "port": 5003}
    assert_rejected(edge, "services[1].devices[0]", "'line-2' on hub 'factory' is already deployed by services[0]")


def test_device_ids_are_checked(edge):
    edge["ml-deploy:services"][0]["devices"] = ["line 1"]
    assert_rejected(edge, "services[0].devices[0]", "should match pattern")


def test_edge_hub_ports_are_taken(edge):
    edge["ml-deploy:services"][0]["port"] = 8883
    assert_rejected(edge, "services[0].port", "bound by edgeHub")


def test_env_cannot_override_the_service_settings(edge):
    edge["ml-deploy:services"][0]["env"] = {"PORT": "80"}
    assert_rejected(edge, "services[0].env.PORT", "set by ml-deploy")


def test_create_options_over_4_kb_are_rejected_before_anything_is_registered(edge):
    edge["ml-deploy:services"][0]["env"] = {f"SETTING_{i}": "x" * 100 for i in range(40)}
    assert_rejected(edge, "services[0].env", "IoT Edge takes at most 4096 (8 chunks of 512)")


def test_create_options_over_512_characters_deploy_in_chunks(edge, run):
    edge["ml-deploy:services"][0]["env"] = {f"SETTING_{i}": "x" * 100 for i in range(10)}
    deployment = run(edge).of_type(DEVICE_DEPLOYMENT)[0]
    settings = content(deployment)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]["diabetes-edge"]["settings"]
    assert {"createOptions01", "createOptions02"} <= set(settings)
    assert edge_manifest_errors(content(deployment)) == []


def test_route_names_follow_twin_key_rules(edge):
    edge["ml-deploy:services"][1]["routes"] = {"to.upstream": "FROM /* INTO $upstream"}
    assert_rejected(edge, "services[1].routes.to.upstream", "may not contain")


def test_iot_edge_needs_an_azure_workspace(edge):
    edge["ml-deploy:workspace"]["kind"] = "local"
    assert_rejected(edge, "services[0].target", "needs a workspace of kind azure")
