"""Adding a target is one module: a toy target declared here (its config, deploy, logs, public
endpoints and replace rules, and a component of its own) is configured, deployed, read, checked by the
policy pack and reviewed by the plan diff without an edit anywhere else."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Iterable, Literal, Mapping, Optional

import pulumi
import pytest
from pydantic import Field

import infra.targets as targets_pkg
from cli import diff, logs, replacements
from components.service import ScoringService
from infra.deploy import DeployContext, Deployed, LogOptions
from infra.schema import ServiceBase
from infra.targets import ReplaceRules, Target
from policy import rules
from policy.endpoints import Exposure
from tests.helpers import ROOT, run_config, unseen_public_services

# ---- the toy target's module: what a new target writes -------------------------------------------

ENDPOINT = "toy:index:Endpoint"


class ToyServiceConfig(ServiceBase):
    """A service on the toy cloud."""

    target: Literal["toy"]
    region: str = Field(default="north", min_length=1)


class ToyService(ScoringService):
    """The toy cloud's endpoint for one service: its component."""

    def __init__(self, name: str, svc: ToyServiceConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("ml-deploy:index:ToyService", name, None, opts)
        pulumi.CustomResource(ENDPOINT, f"{name}-endpoint", {"region": svc.region, "auth": svc.auth_enabled},
                              opts=pulumi.ResourceOptions(parent=self))
        self.scoring_uri = pulumi.Output.from_input(f"https://{svc.region}.toy.example/score")
        self.swagger_uri = pulumi.Output.from_input(f"https://{svc.region}.toy.example/swagger.json")
        key = "k" * 32 if svc.auth_enabled else ""
        self.primary_key = pulumi.Output.secret(key)
        self.secondary_key = pulumi.Output.secret(key)
        self.register_service_outputs()


def deploy(ctx: DeployContext, svc: ToyServiceConfig) -> Deployed:
    return Deployed(ToyService(svc.name, svc), {"kind": "toy", "service": svc.name})


def read_logs(source: Mapping[str, Any], options: LogOptions) -> str:
    return f"toy log of {source['service']}, last {options.tail} lines\n"


def endpoint_exposures(props: Mapping[str, Any]) -> Iterable[Exposure]:
    return [Exposure(None if props.get("auth") else "toy endpoint without auth")]


TOY = Target(
    name="toy",
    config=ToyServiceConfig,
    deploy=deploy,
    logs={"toy": read_logs},
    public_endpoints={ENDPOINT: endpoint_exposures},
    # The toy cloud cannot move an endpoint to another region: a new region is a new endpoint.
    replace_rules=ReplaceRules(force_new={ENDPOINT: ("region",)}),
)

# ---- its tests -------------------------------------------------------------------------------------


def _registered(monkeypatch: pytest.MonkeyPatch, target: Target[Any]) -> None:
    """`target` in the registry for one test, as its module's `register()` would put it there."""
    targets_pkg.registry()
    monkeypatch.setitem(targets_pkg._REGISTRY, target.name, target)
    # What read the registry once per process reads it again.
    monkeypatch.setattr(rules, "_READERS", None)
    replacements.hand_kept.cache_clear()


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    _registered(monkeypatch, TOY)
    yield TOY
    monkeypatch.undo()
    replacements.hand_kept.cache_clear()


@pytest.fixture
def toy_config(config: dict[str, Any]) -> dict[str, Any]:
    config["ml-deploy:services"].append({"name": "diabetes-toy", "image": "diabetes", "target": "toy"})
    return config


def test_a_toy_service_is_configured_and_deployed_with_the_service_contract(toy, toy_config):
    rec = run_config(toy_config)
    assert [r.inputs["region"] for r in rec.of_type(ENDPOINT)] == ["north"]
    outputs = rec.outputs["services"]["diabetes-toy"]
    assert outputs["scoring_uri"] == "https://north.toy.example/score"
    assert outputs["logs"] == {"kind": "toy", "service": "diabetes-toy"}
    assert "services.diabetes-toy.primary_key" in rec.output_secret_paths


def test_its_config_is_checked_like_any_other(toy, toy_config):
    from tests.helpers import assert_rejected

    toy_config["ml-deploy:services"][-1]["region"] = ""
    assert_rejected(toy_config, "services[1].region", "at least 1 character")


def test_ml_deploy_logs_reads_it_with_the_reader_it_declares(toy):
    assert logs.read({"kind": "toy", "service": "diabetes-toy"}, tail=7) == "toy log of diabetes-toy, last 7 lines\n"


def _auth_off(config: dict[str, Any]) -> dict[str, Any]:
    for svc in config["ml-deploy:services"]:
        svc["auth_enabled"] = False
    return config


def test_the_policy_pack_sees_its_public_endpoint(toy, toy_config):
    rec = run_config(_auth_off(toy_config))
    found = [(v.rule, v.name, v.message) for v in rules.evaluate(rec.resources, "dev", ROOT)
             if v.mandatory and v.name.startswith("diabetes-toy")]
    assert found == [("public-service-auth", "diabetes-toy-endpoint", "toy endpoint without auth")]
    assert unseen_public_services(rec, "dev") == []


def test_a_public_endpoint_no_reader_covers_fails_the_pack_tests(monkeypatch, toy_config):
    """The check tests/test_policy.py runs on every committed stack catches a target that forgets
    to declare its public resources."""
    _registered(monkeypatch, dataclasses.replace(TOY, public_endpoints={}))
    rec = run_config(_auth_off(toy_config))
    assert unseen_public_services(rec, "dev") == ["diabetes-toy"]
    replacements.hand_kept.cache_clear()


def test_the_plan_diff_replaces_it_by_its_own_rules(toy, toy_config):
    before = diff.as_records(run_config(toy_config))
    after_config = copy.deepcopy(toy_config)
    after_config["ml-deploy:services"][-1]["region"] = "south"
    after = diff.as_records(run_config(after_config))
    changed = {c.name: c for c in diff.compare_resources(before, after, "dev").changes}
    assert replacements.provider_rules(ENDPOINT) == ("region",)
    assert changed["diabetes-toy-endpoint"].op == "replace"
    assert changed["diabetes-toy-endpoint"].replaced_by == ["region (provider)"]
