"""The production rules: public endpoints over TLS (mandatory on production stacks, advisory on dev,
local and lab) and no single-replica production service without a stated reason."""

from __future__ import annotations

from typing import Any

import pytest

from components.aks_service import INTERNAL_LB_ANNOTATION
from policy import rules
from tests.test_policy import Args, violations

REASON = {rules.SINGLE_REPLICA_ANNOTATION: "batch scoring at night; an hour down is fine"}


def by_id(rule_id: str):
    return next(r for r in rules.rules() if r.id == rule_id)


def service(annotations: dict[str, str] | None = None, port: int = 80, stack: str = "prod") -> Args:
    meta: dict[str, Any] = {"name": "s", **({"annotations": annotations} if annotations is not None else {})}
    return Args(rules.K8S_SERVICE, {"metadata": meta, "spec": {"type": "LoadBalancer", "ports": [{"port": port}]}},
                stack=stack)


# ---- public-service-tls -------------------------------------------------------------------------------

def test_the_tls_rule_is_mandatory_and_its_dev_twin_advisory():
    assert by_id("public-service-tls").mandatory and not by_id("public-service-tls-dev").mandatory


def test_a_public_production_service_on_443_passes():
    assert violations(by_id("public-service-tls").validate, service(port=443)) == []


def test_a_public_production_service_on_plain_http_is_refused():
    assert "plain HTTP" in violations(by_id("public-service-tls").validate, service())[0]


def test_an_internal_load_balancer_is_not_public():
    internal = service({INTERNAL_LB_ANNOTATION: "true"})
    assert violations(by_id("public-service-tls").validate, internal) == []


def test_a_service_without_annotations_is_public():
    assert violations(by_id("public-service-tls").validate, service(annotations=None))


@pytest.mark.parametrize("stack", sorted(rules.UNPROTECTED_STACKS))
def test_dev_stacks_get_the_advisory_only(stack):
    assert violations(by_id("public-service-tls").validate, service(stack=stack)) == []
    assert violations(by_id("public-service-tls-dev").validate, service(stack=stack))
    assert violations(by_id("public-service-tls-dev").validate, service()) == []


# ---- production-replicas --------------------------------------------------------------------------------

def deployment(replicas: int | None, annotations: dict[str, str] | None = None, stack: str = "prod") -> Args:
    spec: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    return Args(rules.K8S_DEPLOYMENT, {"metadata": {"annotations": annotations or {}}, "spec": spec}, stack=stack)


def hpa(min_replicas: int | None, annotations: dict[str, str] | None = None) -> Args:
    spec: dict[str, Any] = {"maxReplicas": 10, **({"minReplicas": min_replicas} if min_replicas else {})}
    return Args(rules.K8S_HPA, {"metadata": {"annotations": annotations or {}}, "spec": spec})


def test_two_replicas_pass():
    assert violations(rules.production_replicas, deployment(2)) == []
    assert violations(rules.production_replicas, hpa(2)) == []


def test_one_replica_in_production_is_refused_and_names_the_config_field():
    found = violations(rules.production_replicas, deployment(1))
    assert len(found) == 1 and "single_replica_reason" in found[0] and "'prod'" in found[0]
    assert "scale down to 1" in violations(rules.production_replicas, hpa(1))[0]


def test_an_hpa_without_min_replicas_takes_kubernetes_default_of_one():
    assert violations(rules.production_replicas, hpa(None))


def test_a_deployment_without_replicas_is_left_to_its_autoscaler():
    assert violations(rules.production_replicas, deployment(None)) == []


def test_a_stated_reason_justifies_one_replica_and_an_empty_one_does_not():
    assert violations(rules.production_replicas, deployment(1, REASON)) == []
    assert violations(rules.production_replicas, hpa(1, REASON)) == []
    assert violations(rules.production_replicas, deployment(1, {rules.SINGLE_REPLICA_ANNOTATION: " "}))


@pytest.mark.parametrize("stack", sorted(rules.UNPROTECTED_STACKS))
def test_dev_stacks_may_run_one_replica(stack):
    assert violations(rules.production_replicas, deployment(1, stack=stack)) == []


# ---- online-deployment-instances ---------------------------------------------------------------------

def online_deployment(capacity: int | None, stack: str = "prod") -> Args:
    return Args(rules.ONLINE_DEPLOYMENT, {"deploymentName": "green", **({"sku": {"name": "Default", "capacity": capacity}}
                                                                         if capacity is not None else {})}, stack=stack)


def test_an_online_deployment_of_one_instance_in_production_gets_the_advice():
    rule = by_id("online-deployment-instances")
    assert not rule.mandatory
    found = violations(rule.validate, online_deployment(1))
    assert len(found) == 1 and "green" in found[0] and "instance_count" in found[0]
    assert violations(rule.validate, online_deployment(None))  # no sku: Azure's default, one instance
    assert violations(rule.validate, online_deployment(2)) == []
    assert violations(rule.validate, online_deployment(1, stack="dev")) == []


# ---- online endpoints: public-service-auth ----------------------------------------------------------

def online_endpoint(auth_mode: str, access: str = "Enabled") -> Args:
    return Args("azure-native:machinelearningservices:OnlineEndpoint",
                {"properties": {"authMode": auth_mode, "publicNetworkAccess": access}})


def test_an_online_endpoint_authenticates_with_one_of_azures_auth_modes():
    rule = by_id("public-service-auth")
    assert rule.mandatory
    for mode in ("Key", "AMLToken", "AADToken"):
        assert violations(rule.validate, online_endpoint(mode)) == []
    found = violations(rule.validate, online_endpoint("None"))
    assert len(found) == 1 and "auth mode 'None'" in found[0]
    assert violations(rule.validate, online_endpoint("None", access="Disabled")) == []  # private only
