"""The target registry: every target is one registered module, none can be half-added or skipped,
and every service honours one contract (outputs, secrets, description and tags)."""

from __future__ import annotations

import pkgutil
from typing import Literal, get_origin

import pytest

import infra.targets as targets_pkg
from infra.deploy import Deployed
from infra.schema import ServiceBase
from infra.targets import Target, register, registry
from tests.helpers import assert_rejected, has_resource

CONTRACT = {"target", "image", "scoring_uri", "swagger_uri", "primary_key", "secondary_key", "logs"}


def test_every_module_in_the_targets_folder_registers_its_target():
    modules = {m.name for m in pkgutil.iter_modules(targets_pkg.__path__)}
    assert modules == set(registry()), "a module in infra/targets/ and its target's name must match"


def _all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    return found | {s for c in found for s in _all_subclasses(c)}


def test_every_service_config_class_belongs_to_a_registered_target():
    registry()  # imports every target module
    registered = {t.config for t in registry().values()}
    # Concrete configs only: a shared base (infra/workload.py's KubernetesWorkload) leaves `target` open.
    defined = {c for c in _all_subclasses(ServiceBase)
               if c.__module__.startswith("infra.targets") and get_origin(c.model_fields["target"].annotation) is Literal}
    assert defined <= registered, f"service configs without a target: {defined - registered}"


class _EdgeConfig(ServiceBase):
    target: Literal["edge"]


def test_a_target_without_a_deploy_function_fails_when_it_is_registered():
    with pytest.raises(TypeError, match="no deploy function"):
        Target(name="edge", config=_EdgeConfig, deploy=None)  # type: ignore[arg-type]


def test_a_target_whose_config_names_another_target_fails_when_it_is_registered():
    with pytest.raises(TypeError, match=r"_EdgeConfig.target must be Literal\['fpga'\]"):
        Target(name="fpga", config=_EdgeConfig, deploy=lambda ctx, svc: None)  # type: ignore[arg-type, return-value]


class _AciAgain(ServiceBase):
    target: Literal["aci"]


def test_a_target_name_cannot_be_registered_twice():
    registry()
    with pytest.raises(ValueError, match="registered twice"):
        register(Target(name="aci", config=_AciAgain, deploy=lambda ctx, svc: None))  # type: ignore[arg-type, return-value]


def test_a_service_of_an_unregistered_target_is_a_config_error(config):
    """A target deployed somewhere but never registered cannot be configured."""
    config["ml-deploy:services"][0]["target"] = "edge"
    assert_rejected(config, "services[0].target", "unknown target 'edge' (one of: aci, aks, container, iot_edge, kubernetes, local, online_endpoint)")


def test_a_registered_target_is_always_deployed(config, run, monkeypatch):
    """Dispatch comes from the registry: a new target's services reach its deploy function."""
    seen: list[str] = []

    def deploy(ctx, svc):
        seen.append(svc.name)
        return registry()["aci"].deploy(ctx, svc.model_copy(update={"target": "aci"}))

    class AciLikeConfig(registry()["aci"].config):  # type: ignore[misc, valid-type]
        target: Literal["edge"]  # type: ignore[assignment]

    monkeypatch.setitem(targets_pkg._REGISTRY, "edge", Target(name="edge", config=AciLikeConfig, deploy=deploy))
    config["ml-deploy:services"][0]["target"] = "edge"
    rec = run(config)
    assert seen == ["diabetes-aci"]
    assert set(rec.outputs["services"]["diabetes-aci"]) == CONTRACT


def test_every_target_exposes_the_same_service_outputs_with_secret_keys(config, run):
    rec = run(config)
    for name, outputs in rec.outputs["services"].items():
        assert set(outputs) == CONTRACT
        assert {f"services.{name}.primary_key", f"services.{name}.secondary_key"} <= rec.output_secret_paths


def test_a_target_may_add_outputs_but_not_replace_the_contract(config, run, monkeypatch):
    aci = registry()["aci"]

    def deploy(ctx, svc):
        deployed = aci.deploy(ctx, svc)
        return Deployed(deployed.service, deployed.logs, outputs={"scoring_uri": "http://elsewhere/score"})

    monkeypatch.setitem(targets_pkg._REGISTRY, "aci", Target(name="aci", config=aci.config, deploy=deploy))
    with pytest.raises(Exception, match=r"outputs \['scoring_uri'\], which the service contract owns"):
        run(config)


def test_deployed_is_the_shape_every_deploy_returns():
    for target in registry().values():
        assert target.deploy.__annotations__.get("return") in (Deployed, "Deployed"), target.name


def test_aci_service_takes_description_and_tags_as_azure_tags(config, run):
    config["ml-deploy:services"][0].update(description="Ridge regression", tags={"team": "ml", "cost-center": "42"})
    rec = run(config)
    tags = {"description": "Ridge regression", "team": "ml", "cost-center": "42"}
    assert has_resource(rec, "azure-native:containerinstance:ContainerGroup", {"tags": tags})
    assert has_resource(rec, "azure-native:managedidentity:UserAssignedIdentity", {"tags": tags})


def test_a_tag_name_azure_refuses_is_a_config_error(config):
    config["ml-deploy:services"][0]["tags"] = {"a/b": "x"}
    assert_rejected(config, "services[0].tags", "without any of")


def test_aci_runtime_settings_come_from_the_runtime_settings(config, run):
    config["ml-deploy:services"][0].update(cpu_cores=2.5, scoring_timeout_ms=1234)
    rec = run(config)
    group = rec.of_type("azure-native:containerinstance:ContainerGroup")[0]
    env = {e["name"]: e.get("value") for e in group.inputs["containers"][0]["environmentVariables"]}
    from serving import settings as runtime

    expected = runtime.Settings(port=80, workers=2, timeout_ms=1234).environ()
    assert {k: env[k] for k in expected} == expected
