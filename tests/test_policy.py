"""The policy pack: each rule's validator called directly (compliant, non-compliant, missing
property), the inputs the program really registers checked against the pack, and the pack run by
the real engine, where a mandatory violation stops `pulumi preview`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli import offline
from content import edge_manifest
from infra import vm_sizes
from policy import rules
from tests.helpers import ROOT, engine_environ, run_config, unseen_public_services

AUTH_ENV = {"name": "SCORING_AUTH_KEYS", "secureValue": "k1,k2"}


@dataclass
class Opts:
    protect: bool = False


@dataclass
class Args:
    """The fields of pulumi_policy.ResourceValidationArgs the validators read."""

    resource_type: str
    props: dict[str, Any]
    stack: str = "prod"
    name: str = "r"
    opts: Opts = field(default_factory=Opts)

    @property
    def urn(self) -> str:
        return f"urn:pulumi:{self.stack}::ml-deploy::{self.resource_type}::{self.name}"


def violations(validate, args: Args) -> list[str]:
    found: list[str] = []
    validate(args, lambda message, urn=None: found.append(message))
    return found


def test_stack_is_read_from_the_urn():
    assert rules.stack_of("urn:pulumi:staging::ml-deploy::a$b:c:D::n") == "staging"


# ---- registry-admin-user-off --------------------------------------------------------------------

def test_registry_with_admin_user_off_passes():
    assert violations(rules.registry_admin_user_off, Args(rules.REGISTRY, {"adminUserEnabled": False})) == []


def test_registry_with_admin_user_on_is_refused():
    assert "admin user is enabled" in violations(rules.registry_admin_user_off, Args(rules.REGISTRY, {"adminUserEnabled": True}))[0]


def test_registry_without_the_property_takes_azures_default_off():
    assert violations(rules.registry_admin_user_off, Args(rules.REGISTRY, {"sku": {"name": "Basic"}})) == []


# ---- public-service-auth ----------------------------------------------------------------------------

def group(env: list[dict], ip_type: str | None = "Public", ports=(80,)) -> Args:
    props: dict[str, Any] = {"containers": [{"name": "scoring", "image": "r/i:t", "environmentVariables": env}]}
    if ip_type:
        props["ipAddress"] = {"type": ip_type, "ports": [{"port": p, "protocol": "TCP"} for p in ports]}
    return Args(rules.CONTAINER_GROUP, props)


def deployment(env: list[dict], image: str = "r/i:t") -> Args:
    return Args(rules.K8S_DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [
        {"name": "scoring", "image": image, "env": env}]}}}})


def test_public_group_with_keys_passes():
    assert violations(rules.public_service_auth, group([AUTH_ENV])) == []


def test_public_group_without_keys_is_refused():
    assert "without auth" in violations(rules.public_service_auth, group([{"name": "PORT", "value": "80"}]))[0]


def test_group_without_an_ip_address_is_not_public():
    assert violations(rules.public_service_auth, group([], ip_type=None)) == []


def test_aks_deployment_with_keys_from_its_secret_passes():
    env = [{"name": "SCORING_AUTH_KEYS", "valueFrom": {"secretKeyRef": {"name": "s-keys", "key": "auth-keys"}}}]
    assert violations(rules.public_service_auth, deployment(env)) == []


def test_aks_deployment_without_keys_is_refused():
    assert "LoadBalancer" in violations(rules.public_service_auth, deployment([]))[0]


def test_aks_deployment_without_env_is_refused():
    args = Args(rules.K8S_DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [{"name": "scoring"}]}}}})
    assert violations(rules.public_service_auth, args)


def test_local_service_without_auth_on_loopback_passes_and_elsewhere_is_refused():
    process = {"service": "s", "auth_enabled": False, "bundle": "/b"}
    assert violations(rules.public_service_auth, Args(rules.DYNAMIC, process)) == []
    assert violations(rules.public_service_auth, Args(rules.DYNAMIC, {**process, "host": "0.0.0.0"}))


# ---- public-service-tls (mandatory on production stacks, advisory elsewhere: tests/test_policy_production.py) -------------------------------------------------------------------

def test_public_group_on_443_passes():
    assert violations(rules.public_service_tls, group([AUTH_ENV], ports=(443,))) == []


def test_public_group_on_plain_http_is_flagged():
    assert "plain HTTP" in violations(rules.public_service_tls, group([AUTH_ENV], ports=(80,)))[0]


def test_load_balancer_without_ports_is_flagged_and_cluster_ip_is_not():
    lb = Args(rules.K8S_SERVICE, {"spec": {"type": "LoadBalancer"}})
    assert violations(rules.public_service_tls, lb)
    assert violations(rules.public_service_tls, Args(rules.K8S_SERVICE, {"spec": {"ports": [{"port": 80}]}})) == []


# ---- stateful-resources-protected ----------------------------------------------------------------------

STORAGE = "azure-native:storage:StorageAccount"


def test_protected_storage_in_prod_passes():
    assert violations(rules.stateful_resources_protected, Args(STORAGE, {}, opts=Opts(protect=True))) == []


def test_unprotected_storage_in_prod_is_refused():
    assert "not protected on stack 'prod'" in violations(rules.stateful_resources_protected, Args(STORAGE, {}))[0]


@pytest.mark.parametrize("stack", ["dev", "local", "lab"])
def test_unprotected_storage_in_dev_local_and_lab_passes(stack):
    assert violations(rules.stateful_resources_protected, Args(STORAGE, {}, stack=stack)) == []


def test_local_model_registry_is_stateful_and_a_bundle_is_not():
    version = {"registry": "/r", "model": "m", "version": "v", "files": []}
    assert violations(rules.stateful_resources_protected, Args(rules.DYNAMIC, version, stack="ci"))
    bundle = {"store": "/s", "image": "i", "tag": "t", "sources": []}
    assert violations(rules.stateful_resources_protected, Args(rules.DYNAMIC, bundle, stack="ci")) == []


def test_an_iot_hub_is_stateful_outside_dev():
    hub = Args(rules.IOT_HUB, {"properties": {"minTlsVersion": "1.2"}}, stack="edge")
    assert "not protected on stack 'edge'" in violations(rules.stateful_resources_protected, hub)[0]
    hub.opts = Opts(protect=True)
    assert violations(rules.stateful_resources_protected, hub) == []


def test_application_insights_is_not_stateful():
    assert violations(rules.stateful_resources_protected, Args("azure-native:applicationinsights:Component", {})) == []


# ---- promoted-images-by-digest ---------------------------------------------------------------------------

DIGEST = "sha256:" + "a" * 64


def promoted_rule(*stacks: str):
    return rules.promoted_images_by_digest(lambda stack: stack in stacks)


def test_promoted_stack_with_digests_passes():
    args = deployment([AUTH_ENV], image=f"acr.azurecr.io/diabetes@{DIGEST}")
    assert violations(promoted_rule("prod"), args) == []


def test_promoted_stack_with_a_tag_is_refused():
    args = group([AUTH_ENV])
    args.props["containers"][0]["image"] = "acr.azurecr.io/diabetes:c6a633b570cc7016"
    assert "not pinned by digest" in violations(promoted_rule("prod"), args)[0]


def test_a_stack_that_builds_its_own_images_may_use_tags():
    assert violations(promoted_rule("staging"), deployment([AUTH_ENV])) == []


def test_a_container_without_an_image_is_not_checked():
    args = Args(rules.K8S_DEPLOYMENT, {"spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}})
    assert violations(promoted_rule("prod"), args) == []


def test_promotion_is_read_from_the_committed_stack_file(tmp_path: Path):
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": {"ml-deploy:promote_from": "staging"}}))
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump({"config": {"ml-deploy:workspace": {"name": "w"}}}))
    promoted = rules.promoted_stacks_from_files(tmp_path)
    assert promoted("prod") and not promoted("staging") and not promoted("nowhere")


# ---- no-retired-vm-sizes ------------------------------------------------------------------------------

def cluster(*pools: dict, purpose: str | None = "FastProd") -> Args:
    props: dict[str, Any] = {"agentPoolProfiles": list(pools)}
    if purpose:
        props["tags"] = {rules.CLUSTER_PURPOSE_TAG: purpose}
    return Args(rules.MANAGED_CLUSTER, props)


def test_current_size_passes():
    assert violations(rules.no_retired_vm_sizes, cluster({"name": "system", "vmSize": "Standard_D4s_v5", "count": 3})) == []


@pytest.fixture
def today(monkeypatch):
    """Pin the retirement rules' clock (infra/vm_sizes.py CLOCK); returns a setter."""
    def set_today(day: date) -> None:
        monkeypatch.setattr(vm_sizes.CLOCK, "today", lambda: day)
    set_today(date(2026, 11, 25))
    return set_today


@pytest.mark.parametrize("size, why", [("Standard_PB6s", "FPGA service"), ("Standard_NC6", "retired on 2023-09-06"),
                                       ("Standard_NC6s_v3", "retired on 2025-09-30")])
def test_retired_sizes_are_refused(today, size, why):
    assert why in violations(rules.no_retired_vm_sizes, cluster({"name": "gpu", "vmSize": size, "count": 1}))[0]


def test_a_size_is_refused_only_after_its_retirement_day(today):
    ncv3 = cluster({"name": "gpu", "vmSize": "Standard_NC6s_v3", "count": 1})
    today(date(2025, 9, 30))
    assert violations(rules.no_retired_vm_sizes, ncv3) == []
    assert "retires on 2025-09-30" in violations(rules.vm_sizes_retiring, ncv3)[0]
    today(date(2025, 10, 1))
    assert violations(rules.no_retired_vm_sizes, ncv3) and violations(rules.vm_sizes_retiring, ncv3) == []


def test_a_size_with_an_announced_retirement_is_advised_against(today):
    np_pool = cluster({"name": "fpga", "vmSize": "Standard_NP10s", "count": 1})
    assert violations(rules.no_retired_vm_sizes, np_pool) == []
    assert "retires on 2027-05-31" in violations(rules.vm_sizes_retiring, np_pool)[0]
    assert violations(rules.vm_sizes_retiring, cluster({"vmSize": "Standard_NC4as_T4_v3", "count": 1})) == []


def test_a_standalone_agent_pool_is_checked_too(today):
    assert violations(rules.no_retired_vm_sizes, Args(rules.AGENT_POOL, {"vmSize": "Standard_NC24"}))


def test_a_pool_without_a_size_is_not_refused():
    assert violations(rules.no_retired_vm_sizes, cluster({"name": "system", "count": 3})) == []


# ---- aks-fastprod-capacity ------------------------------------------------------------------------------

def test_three_d3_v2_nodes_make_a_fastprod_cluster():
    assert violations(rules.aks_fastprod_capacity, cluster({"vmSize": "Standard_D4s_v5", "count": 3})) == []


def test_two_large_nodes_are_too_few_for_fastprod():
    found = violations(rules.aks_fastprod_capacity, cluster({"vmSize": "Standard_D16s_v5", "count": 2}))
    assert "2 node(s) and 32 vCPUs" in found[0]


def test_three_two_vcpu_nodes_are_too_small_for_fastprod_but_fine_for_devtest():
    small = {"vmSize": "Standard_D2s_v3", "count": 3}
    assert "6 vCPUs" in violations(rules.aks_fastprod_capacity, cluster(small))[0]
    assert violations(rules.aks_fastprod_capacity, cluster(small, purpose="DevTest")) == []


def test_a_cluster_without_the_purpose_tag_counts_as_fastprod_and_an_unknown_size_is_named():
    assert violations(rules.aks_fastprod_capacity, cluster({"vmSize": "Standard_D2s_v3", "count": 1}, purpose=None))
    assert "Standard_X9" in violations(rules.aks_fastprod_capacity, cluster({"vmSize": "Standard_X9", "count": 5}))[0]


# ---- IoT Edge deployments: public-service-auth and promoted-images-by-digest ------------------------------

EDGE_IMAGE_TAG = "mlws.azurecr.io/diabetes:7ce75842e8a96a9d"
EDGE_CREDENTIALS = {"mlws": edge_manifest.RegistryCredential("mlws.azurecr.io", "token", "password")}


def edge_module(image: str = EDGE_IMAGE_TAG, keys: str | None = "k1,k2") -> edge_manifest.Module:
    return edge_manifest.Module(name="diabetes-edge", image=image, container_port=5001, host_port=5001,
                                env={"WORKER_COUNT": "1"}, secret_env={"SCORING_AUTH_KEYS": keys} if keys else {})


def edge_deployment(*modules: edge_manifest.Module, kind: str = rules.EDGE_DEVICE_DEPLOYMENT,
                    stack: str = "edge", options: dict[str, Any] | None = None) -> Args:
    """A deployment resource as providers/iot_hub.py registers it, its manifest built by content/edge_manifest.py;
    `options` replaces the first module's create options."""
    manifest = edge_manifest.deployment(list(modules), EDGE_CREDENTIALS, {})
    if options is not None:
        settings = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"][modules[0].name]["settings"]
        for key in [k for k in settings if k.startswith(edge_manifest.CREATE_OPTIONS)]:
            del settings[key]
        settings.update(edge_manifest.chunked(options, "test") if options else {})
    return Args(kind, {"hub": "h.azure-devices.net", "device_id": "line-1", "content": json.dumps(manifest)}, stack=stack)


@pytest.mark.parametrize("kind", sorted(rules.EDGE_DEPLOYMENTS))
def test_edge_module_publishing_its_port_with_keys_passes(kind):
    assert violations(rules.public_service_auth, edge_deployment(edge_module(), kind=kind)) == []


@pytest.mark.parametrize("kind", sorted(rules.EDGE_DEPLOYMENTS))
def test_edge_module_publishing_its_port_without_keys_is_refused(kind):
    found = violations(rules.public_service_auth, edge_deployment(edge_module(keys=None), kind=kind))
    assert "module diabetes-edge publishes 5001->5001/tcp on the device without auth" in found[0]


def test_edge_module_bound_to_loopback_only_may_skip_auth():
    options = {"HostConfig": {"PortBindings": {"5001/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5001"}]}}}
    assert violations(rules.public_service_auth, edge_deployment(edge_module(keys=None), options=options)) == []


@pytest.mark.parametrize("host_config", [{"NetworkMode": "host"}, {"PublishAllPorts": True},
                                         {"PortBindings": {"5001/tcp": []}}])
def test_edge_module_exposed_other_ways_without_keys_is_refused(host_config):
    found = violations(rules.public_service_auth, edge_deployment(edge_module(keys=None), options={"HostConfig": host_config}))
    assert "without auth" in found[0]


def test_edge_module_without_create_options_publishes_nothing():
    assert violations(rules.public_service_auth, edge_deployment(edge_module(keys=None), options={})) == []


def test_edge_keys_in_the_create_options_env_count_too():
    options = {"Env": ["SCORING_AUTH_KEYS=k1,k2"], "HostConfig": {"PortBindings": {"5001/tcp": [{"HostPort": "5001"}]}}}
    assert violations(rules.public_service_auth, edge_deployment(edge_module(keys=None), options=options)) == []


def test_edge_deployment_without_content_is_not_checked_and_unreadable_content_is_refused():
    assert violations(rules.public_service_auth, Args(rules.EDGE_HUB_DEPLOYMENT, {"hub": "h"})) == []
    assert "not an IoT Edge manifest" in violations(
        rules.public_service_auth, Args(rules.EDGE_HUB_DEPLOYMENT, {"content": "{not json"}))[0]


def test_promoted_stack_with_an_edge_module_by_digest_passes():
    pinned = edge_deployment(edge_module(image=f"mlws.azurecr.io/diabetes@{DIGEST}"), stack="prod")
    assert violations(promoted_rule("prod"), pinned) == []


@pytest.mark.parametrize("kind", sorted(rules.EDGE_DEPLOYMENTS))
def test_promoted_stack_with_an_edge_module_by_tag_is_refused(kind):
    found = violations(promoted_rule("prod"), edge_deployment(edge_module(), kind=kind, stack="prod"))
    assert f"image '{EDGE_IMAGE_TAG}' is not pinned by digest" in found[0]


def test_the_edge_runtime_modules_tags_are_not_checked():
    # A device's removal content: edgeAgent and edgeHub on Microsoft's minor-version tags, no module.
    removal = Args(rules.EDGE_DEVICE_DEPLOYMENT, {"content": json.dumps(edge_manifest.runtime_only())}, stack="prod")
    assert violations(promoted_rule("prod"), removal) == []


# ---- iot-hub-min-tls, iot-hub-local-auth-scoped, iot-hub-network-restricted --------------------------------

PROGRAM_POLICY = {"keyName": "ml-deploy", "rights": "RegistryRead, RegistryWrite, ServiceConnect"}


def hub(**properties: Any) -> Args:
    return Args(rules.IOT_HUB, {"sku": {"name": "S1", "capacity": 1}, "properties": properties}, stack="edge")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_hub_refusing_old_tls_passes(version):
    assert violations(rules.iot_hub_min_tls, hub(minTlsVersion=version)) == []


def test_hub_taking_tls_1_0_is_refused():
    assert "minTlsVersion '1.0'" in violations(rules.iot_hub_min_tls, hub(minTlsVersion="1.0"))[0]


def test_hub_without_a_minimum_tls_version_is_refused():
    assert "no minTlsVersion" in violations(rules.iot_hub_min_tls, hub())[0]
    assert violations(rules.iot_hub_min_tls, Args(rules.IOT_HUB, {"sku": {"name": "S1"}}))


def test_hub_with_the_programs_policy_passes_and_without_local_auth_needs_none():
    assert violations(rules.iot_hub_local_auth_scoped, hub(authorizationPolicies=[PROGRAM_POLICY])) == []
    assert violations(rules.iot_hub_local_auth_scoped, hub(disableLocalAuth=True)) == []


def test_hub_policy_with_device_connect_is_refused():
    owner = {"keyName": "iothubowner", "rights": "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect"}
    found = violations(rules.iot_hub_local_auth_scoped, hub(authorizationPolicies=[PROGRAM_POLICY, owner]))
    assert len(found) == 1 and "'iothubowner' grants DeviceConnect" in found[0]


def test_hub_without_declared_policies_gets_azures_defaults_and_is_refused():
    assert "iothubowner with every right" in violations(rules.iot_hub_local_auth_scoped, hub(disableLocalAuth=False))[0]
    assert violations(rules.iot_hub_local_auth_scoped, Args(rules.IOT_HUB, {}))


@pytest.mark.parametrize("properties", [
    {"publicNetworkAccess": "Disabled"},
    {"ipFilterRules": [{"filterName": "plant-7", "action": "Accept", "ipMask": "203.0.113.0/24"}]},
    {"networkRuleSets": {"defaultAction": "Deny", "applyToBuiltInEventHubEndpoint": True, "ipRules": []}},
])
def test_hub_closed_to_other_networks_passes(properties):
    assert violations(rules.iot_hub_network_restricted, hub(**properties)) == []


@pytest.mark.parametrize("properties", [
    {"publicNetworkAccess": "Enabled"},
    {"ipFilterRules": [{"filterName": "all", "action": "Accept", "ipMask": "0.0.0.0/0"}]},
])
def test_hub_open_to_every_network_is_flagged(properties):
    assert "reachable from every network" in violations(rules.iot_hub_network_restricted, hub(**properties))[0]


def test_hub_without_network_settings_is_open_and_flagged():
    assert violations(rules.iot_hub_network_restricted, hub())
    assert violations(rules.iot_hub_network_restricted, Args(rules.IOT_HUB, {}))


# ---- registry-tokens-pull-only --------------------------------------------------------------------------

def test_pull_only_scope_map_and_token_pass():
    assert violations(rules.registry_tokens_pull_only, Args(rules.SCOPE_MAP, {"actions": [
        "repositories/diabetes/content/read", "repositories/diabetes/metadata/read"]})) == []
    token = Args(rules.REGISTRY_TOKEN, {"scopeMapId": "/subscriptions/s/resourceGroups/g/providers/"
                                        "Microsoft.ContainerRegistry/registries/r/scopeMaps/mlws-edge-diabetes-edge"})
    assert violations(rules.registry_tokens_pull_only, token) == []


@pytest.mark.parametrize("action", ["content/write", "content/delete", "metadata/write"])
def test_scope_map_with_a_write_action_is_refused(action):
    scope_map = Args(rules.SCOPE_MAP, {"actions": ["repositories/diabetes/content/read", f"repositories/diabetes/{action}"]})
    assert f"grants repositories/diabetes/{action}" in violations(rules.registry_tokens_pull_only, scope_map)[0]


@pytest.mark.parametrize("scope_map", sorted(rules.WRITING_SYSTEM_SCOPE_MAPS))
def test_token_with_a_writing_system_scope_map_is_refused(scope_map):
    token = Args(rules.REGISTRY_TOKEN, {"scopeMapId": f"/subscriptions/s/resourceGroups/g/providers/"
                                        f"Microsoft.ContainerRegistry/registries/r/scopeMaps/{scope_map}"})
    assert f"system scope map {scope_map}" in violations(rules.registry_tokens_pull_only, token)[0]


def test_scope_map_without_actions_and_token_without_scope_map_grant_nothing():
    assert violations(rules.registry_tokens_pull_only, Args(rules.SCOPE_MAP, {"description": "d"})) == []
    assert violations(rules.registry_tokens_pull_only, Args(rules.REGISTRY_TOKEN, {"status": "enabled"})) == []


# ---- the program's own stacks against the pack ----------------------------------------------------------

def check_recording(recording, stack: str) -> dict[str, list[str]]:
    """Every rule over every resource the program registers, as the analyzer would run them."""
    found: dict[str, list[str]] = {}
    for r in recording.resources:
        args = Args(r.type, r.inputs, stack=stack, name=r.name, opts=Opts(protect=r.protect))
        for rule in rules.rules():
            for message in violations(rule.validate, args):
                found.setdefault(rule.id, []).append(f"{r.name}: {message}")
    return found


def test_the_dev_stack_breaks_only_the_advisory_tls_rule(config, today):
    found = check_recording(run_config(config), "dev")
    assert set(found) == {"public-service-tls-dev"}, found


def test_dev_config_with_auth_off_breaks_the_auth_rule(config):
    config["ml-deploy:services"][0]["auth_enabled"] = False
    assert "public-service-auth" in check_recording(run_config(config), "dev")


def test_a_protected_stack_passes_the_protection_rule_and_an_unprotected_one_does_not(config):
    unprotected = check_recording(run_config(config, "staging"), "staging")
    assert len(unprotected["stateful-resources-protected"]) == 9
    config["ml-deploy:workspace"]["protect"] = True
    assert "stateful-resources-protected" not in check_recording(run_config(config, "staging"), "staging")


# ---- evaluate: the rules over an offline plan (what `./ml-deploy plan` and `diff` show) ---------------------

COMMITTED_STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


@pytest.fixture
def committed_stack_inputs(model_files, monkeypatch, tmp_path):
    """What the committed stack files need to run under the mocks (as in tests/test_stacks.py): the
    template models in models/, and a stand-in lab folder with a kubeconfig for Pulumi.lab.yaml."""
    (ROOT / "models").mkdir(exist_ok=True)
    for f in model_files:
        if not (ROOT / "models" / f.name).exists():
            shutil.copy(f, ROOT / "models" / f.name)
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: lab, cluster: {server: 'https://127.0.0.1:6443'}}]\n")
    monkeypatch.setenv("ML_DEPLOY_LAB", str(tmp_path))


def test_evaluate_finds_a_dev_service_with_auth_off(config):
    config["ml-deploy:services"][0]["auth_enabled"] = False
    found = [v for v in rules.evaluate(run_config(config).resources, "dev", ROOT) if v.mandatory]
    assert [(v.rule, v.type, v.name) for v in found] == [
        ("public-service-auth", rules.CONTAINER_GROUP, "diabetes-aci-group")]
    assert found[0].urn.startswith("urn:pulumi:dev::ml-deploy::") and "without auth" in found[0].message


def test_evaluate_passes_the_dev_config_with_auth_on_and_keeps_advisories(config):
    found = rules.evaluate(run_config(config).resources, "dev", ROOT)
    assert found and not [v for v in found if v.mandatory]
    assert {v.rule for v in found} == {"public-service-tls-dev"}


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_committed_stack_passes_every_mandatory_rule(stack, committed_stack_inputs):
    rec = offline.run(offline.stack_config(stack), stack=stack)
    mandatory = [f"{v.rule}: {v.type} {v.name}: {v.message}" for v in rules.evaluate(rec.resources, stack, ROOT)
                 if v.mandatory]
    assert mandatory == []


@pytest.mark.parametrize("stack", COMMITTED_STACKS)
def test_every_public_service_of_every_committed_stack_is_seen_by_the_public_service_rules(stack, committed_stack_inputs):
    """Each target declares which of its resources are public endpoints (`Target.public_endpoints`):
    with auth off, every service that answers beyond its host is flagged, so a target whose public
    resource type no reader covers fails here."""
    values = offline.stack_config(stack)
    services = json.loads(values["ml-deploy:services"])
    # An online endpoint has no auth off (every auth_mode authenticates): nothing to flag there.
    always_authenticated = {s["name"] for s in services if s["target"] == "online_endpoint"}
    for svc in services:
        if svc["name"] not in always_authenticated:
            svc["auth_enabled"] = False
    values["ml-deploy:services"] = json.dumps(services)
    rec = offline.run(values, stack=stack)
    assert set(unseen_public_services(rec, stack)) <= always_authenticated


def test_the_committed_edge_stack_is_covered_by_the_iot_rules(committed_stack_inputs):
    rec = offline.run(offline.stack_config("edge"), stack="edge")
    hub = rec.of_type(rules.IOT_HUB)[0]
    assert hub.protect and hub.inputs["properties"]["minTlsVersion"] == "1.2"
    advisories = {(v.rule, v.name) for v in rules.evaluate(rec.resources, "edge", ROOT)}
    assert advisories == {("iot-hub-network-restricted", "factory-hub")}
    deployments = [r for r in rec.resources if r.type in rules.EDGE_DEPLOYMENTS]
    assert len(deployments) == 3 and all(edge_manifest.custom_modules(r.inputs) for r in deployments)


@dataclass
class Planned:
    """A resource of an offline plan, as evaluate reads it."""

    type: str
    name: str
    inputs: dict[str, Any]
    protect: bool = False
    urn: str = ""


def test_evaluate_reads_promotion_from_the_stack_files_in_the_root_it_is_given(tmp_path: Path):
    group_args = group([AUTH_ENV], ports=(443,))  # served over TLS, as production needs
    planned = [Planned(rules.CONTAINER_GROUP, "g", group_args.props, urn=group_args.urn)]
    assert [v.rule for v in rules.evaluate(planned, "prod", tmp_path) if v.mandatory] == []
    (tmp_path / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": {"ml-deploy:promote_from": "staging"}}))
    found = [v for v in rules.evaluate(planned, "prod", tmp_path) if v.mandatory]
    assert [(v.rule, v.urn) for v in found] == [("promoted-images-by-digest", group_args.urn)]


def test_evaluate_judges_the_stack_it_is_given_whatever_the_urn_says():
    storage = Planned(STORAGE, "s", {}, urn="urn:pulumi:dev::ml-deploy::azure-native:storage:StorageAccount::s")
    assert [v.rule for v in rules.evaluate([storage], "prod", ROOT)] == ["stateful-resources-protected"]
    assert rules.evaluate([Planned(STORAGE, "s", {})], "dev", ROOT) == []


# ---- where the pack reads the stack files -------------------------------------------------------------

def test_the_stack_files_are_in_the_project_folder_above_the_programs():
    # The CLI starts the pack in the program's folder (Pulumi.yaml main: infra/).
    assert rules.stack_root({rules.PLUGIN_PWD_ENV: str(ROOT / "infra")}, Path("/")) == ROOT
    assert rules.stack_root({}, ROOT / "infra" / "targets") == ROOT


def test_an_explicit_stack_root_wins_and_a_folder_outside_any_project_is_its_own(tmp_path: Path):
    assert rules.stack_root({rules.STACK_ROOT_ENV: str(tmp_path), rules.PLUGIN_PWD_ENV: str(ROOT)}, ROOT) == tmp_path
    assert rules.project_root(tmp_path) == tmp_path.resolve()


# ---- through the real engine ---------------------------------------------------------------------------

COPIED = ("Pulumi.yaml", "Pulumi.local.yaml", "infra", "components", "content", "providers", "serving",
          "scoring_templates", "policy")
PACK = ROOT / "policy" / "run"


@pytest.fixture(scope="module")
def engine_project(tmp_path_factory: pytest.TempPathFactory, model_files) -> tuple[Path, dict[str, str]]:
    work = tmp_path_factory.mktemp("policy-project")
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", ".venv"))
        else:
            shutil.copy(src, work / name)
    local = yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text())
    (work / "Pulumi.local.yaml").write_text(yaml.safe_dump({"config": local["config"]}))
    # A shared stack on the same target ("ci"): not dev or local, so its model registry must be protected.
    (work / "Pulumi.ci.yaml").write_text(yaml.safe_dump({"config": local["config"]}))
    (work / "models").mkdir()
    shutil.copy(model_files[0], work / "models" / model_files[0].name)
    state = tmp_path_factory.mktemp("policy-state")
    env = {**os.environ, **engine_environ(work, state)}
    for stack in ("local", "ci"):
        subprocess.run(["pulumi", "stack", "init", stack, "--non-interactive"], cwd=work, env=env,
                       check=True, capture_output=True)
    return work, env


def preview(project: tuple[Path, dict[str, str]], stack: str) -> subprocess.CompletedProcess:
    work, env = project
    return subprocess.run(["pulumi", "preview", "--stack", stack, "--non-interactive", "--policy-pack", str(PACK)],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_engine_runs_the_pack_and_the_local_stack_passes(engine_project):
    done = preview(engine_project, "local")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ml-deploy@v" in done.stdout and "✅" in done.stdout


def test_engine_stops_a_shared_stack_with_an_unprotected_model_registry(engine_project):
    done = preview(engine_project, "ci")
    assert done.returncode != 0
    assert "[mandatory]  stateful-resources-protected" in done.stdout
    assert "diabetes-ridge-version" in done.stdout and "not protected on stack 'ci'" in done.stdout


def test_engine_lets_the_shared_stack_through_once_it_protects_its_workspace(engine_project):
    work, _ = engine_project
    stack_file = work / "Pulumi.ci.yaml"
    config = yaml.safe_load(stack_file.read_text())
    config["config"]["ml-deploy:workspace"]["protect"] = True
    stack_file.write_text(yaml.safe_dump(config))
    done = preview(engine_project, "ci")
    assert done.returncode == 0, done.stdout + done.stderr
