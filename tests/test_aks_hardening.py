"""Production defaults on `target: aks` and `kubernetes`: a user pool for the scoring pods, a
network-policy engine and a NetworkPolicy per service, two replicas on protected stacks, internal
load balancers and source ranges."""

from __future__ import annotations

import pytest

from tests.helpers import assert_rejected

CLUSTER = "azure-native:containerservice:ManagedCluster"
POOL = "azure-native:containerservice:AgentPool"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
NETPOL = "kubernetes:networking.k8s.io/v1:NetworkPolicy"


@pytest.fixture
def aks(config):
    config["ml-deploy:aks_clusters"] = [{"name": "prod", "agent_count": 3, "vm_size": "Standard_D4s_v5"}]
    config["ml-deploy:services"] = [
        {"name": "fixed", "image": "diabetes", "target": "aks", "cluster": "prod", "num_replicas": 2},
        {"name": "scaled", "image": "diabetes", "target": "aks", "cluster": "prod"},
    ]
    return config


def test_scoring_pods_get_a_user_pool_and_the_system_pool_is_tainted_for_add_ons(aks, run):
    rec = run(aks)
    system = rec.of_type(CLUSTER)[0].inputs["agentPoolProfiles"][0]
    assert system["nodeTaints"] == ["CriticalAddonsOnly=true:NoSchedule"]
    pool = rec.by_name(POOL, "prod-pool-scoring").inputs
    assert (pool["mode"], pool["vmSize"], pool["count"]) == ("User", "Standard_D4s_v5", 3)
    assert "nodeTaints" not in pool


def test_user_pool_null_keeps_the_pods_on_an_untainted_system_pool(aks, run):
    aks["ml-deploy:aks_clusters"][0]["user_pool"] = None
    rec = run(aks)
    assert "nodeTaints" not in rec.of_type(CLUSTER)[0].inputs["agentPoolProfiles"][0]
    assert rec.of_type(POOL) == []


def test_the_user_pool_may_autoscale_on_its_own_size(aks, run):
    aks["ml-deploy:aks_clusters"][0]["user_pool"] = {"vm_size": "Standard_D8s_v5", "min_count": 2, "max_count": 6}
    pool = run(aks).by_name(POOL, "prod-pool-scoring")
    assert (pool.inputs["vmSize"], pool.inputs["enableAutoScaling"], pool.inputs["minCount"]) == ("Standard_D8s_v5", True, 2)
    assert pool.ignore_changes == ["count"]


def test_a_user_pool_named_like_the_system_pool_is_refused(aks):
    aks["ml-deploy:aks_clusters"][0]["user_pool"] = {"name": "system"}
    assert_rejected(aks, "aks_clusters[0].user_pool.name", "already a pool")


def test_the_cluster_enforces_network_policies_with_cilium(aks, run):
    profile = run(aks).of_type(CLUSTER)[0].inputs["networkProfile"]
    assert (profile["networkPolicy"], profile["networkDataplane"], profile["networkPlugin"]) == ("cilium", "cilium", "azure")


def test_each_service_admits_only_its_scoring_port(aks, run):
    rec = run(aks)
    spec = rec.by_name(NETPOL, "fixed-netpol").inputs["spec"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "fixed"
    assert spec["policyTypes"] == ["Ingress"] and spec["ingress"] == [{"ports": [{"port": 5001, "protocol": "TCP"}]}]


def test_unprotected_stacks_keep_one_replica_by_default(aks, run):
    assert run(aks).by_name(HPA, "scaled-hpa").inputs["spec"]["minReplicas"] == 1


def test_protected_stacks_default_to_two_replicas_and_the_pdb_keeps_one_serving(aks, run):
    aks["ml-deploy:workspace"]["protect"] = True
    rec = run(aks, "prod")
    assert rec.by_name(HPA, "scaled-hpa").inputs["spec"]["minReplicas"] == 2
    for name in ("fixed", "scaled"):
        pdb = rec.by_name(PDB, f"{name}-pdb").inputs["spec"]
        assert 2 - pdb["maxUnavailable"] >= 1


def test_a_single_replica_reason_is_annotated_for_the_policy_pack(aks, run):
    aks["ml-deploy:services"][0].update(num_replicas=1, single_replica_reason="a nightly batch")
    meta = run(aks).by_name(DEPLOYMENT, "fixed-deployment").inputs["metadata"]
    assert meta["annotations"]["ml-deploy/single-replica-reason"] == "a nightly batch"


def test_a_single_replica_reason_on_two_replicas_is_refused(aks):
    aks["ml-deploy:services"][0]["single_replica_reason"] = "why"
    assert_rejected(aks, "services[0].single_replica_reason", "only for a service that runs one replica")


def test_a_protected_stacks_default_minimum_must_fit_the_maximum(aks):
    aks["ml-deploy:workspace"]["protect"] = True
    aks["ml-deploy:services"][1]["autoscale_max_replicas"] = 1
    assert_rejected(aks, "services[1].autoscale_min_replicas", "its default on a protected stack")


def test_internal_load_balancer_and_source_ranges(aks, run):
    aks["ml-deploy:services"][0].update(internal_load_balancer=True, load_balancer_source_ranges=["10.1.0.0/16"])
    rec = run(aks)
    svc = rec.by_name(SERVICE, "fixed-service").inputs
    assert svc["metadata"]["annotations"]["service.beta.kubernetes.io/azure-load-balancer-internal"] == "true"
    assert svc["spec"]["loadBalancerSourceRanges"] == ["10.1.0.0/16"]
    other = rec.by_name(SERVICE, "scaled-service").inputs
    assert "loadBalancerSourceRanges" not in other["spec"] and not (other["metadata"].get("annotations") or {})


def test_a_source_range_must_be_a_cidr(aks):
    aks["ml-deploy:services"][0]["load_balancer_source_ranges"] = ["10.1.0.0/16", "office"]
    assert_rejected(aks, "services[0].load_balancer_source_ranges[1]", "not a CIDR")
