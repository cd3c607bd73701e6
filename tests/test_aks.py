"""The AKS target: clusters created or attached, services with autoscaling, every manifest schema-valid."""

from __future__ import annotations

import shutil

import kubernetes_validate
import pytest

from tests.helpers import ACR_PULL, TEMPLATES, assert_rejected, changed

CLUSTER = "azure-native:containerservice:ManagedCluster"
ROLE = "azure-native:authorization:RoleAssignment"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
K8S_VERSION = kubernetes_validate.latest_version()


@pytest.fixture
def aks(config):
    config["ml-deploy:aks_clusters"] = [
        {"name": "prod", "agent_count": 3, "vm_size": "Standard_D4s_v5", "cluster_purpose": "FastProd"},
        {"name": "shared", "attach": {"resource_group": "platform-rg", "cluster_name": "platform-aks"}},
    ]
    config["ml-deploy:services"] += [
        {"name": "diabetes-aks", "image": "diabetes", "target": "aks", "cluster": "prod", "cpu_cores": 0.5,
         "memory_gb": 1, "autoscale_enabled": True, "autoscale_min_replicas": 1, "autoscale_max_replicas": 10,
         "autoscale_target_utilization": 70, "auth_enabled": True, "enable_app_insights": True,
         "collect_model_data": True},
        {"name": "diabetes-shared", "image": "diabetes", "target": "aks", "cluster": "shared", "num_replicas": 2,
         "gpu_cores": 1, "period_seconds": 5, "initial_delay_seconds": 20},
    ]
    return config


def kube_objects(rec):
    return [r for r in rec.resources if r.type.startswith("kubernetes:") and r.custom
            and not r.type.startswith("pulumi:providers")]


# ---- the cluster rule and other config errors ------------------------------------------------

def test_fastprod_needs_twelve_vcpus(aks):
    aks["ml-deploy:aks_clusters"][0]["agent_count"] = 2
    assert_rejected(aks, "aks_clusters[0].agent_count", "12 vCPUs; 2 x Standard_D4s_v5 (4 vCPUs) has 8")


def test_fastprod_needs_three_nodes_even_with_enough_vcpus(aks):
    aks["ml-deploy:aks_clusters"][0].update(agent_count=2, vm_size="Standard_D8s_v5")
    assert_rejected(aks, "aks_clusters[0].agent_count", "at least 3 nodes")


def test_a_size_that_does_not_exist_is_unknown(aks):
    aks["ml-deploy:aks_clusters"][0]["vm_size"] = "Standard_D4ds_v3"  # there is no Ddsv3 series
    assert_rejected(aks, "aks_clusters[0].vm_size", "unknown VM size")


def test_fastprod_with_three_d4s_v5_passes(aks, run):
    assert len(run(aks).of_type(CLUSTER)) == 1


def test_devtest_cluster_may_be_small(aks, run):
    aks["ml-deploy:aks_clusters"][0].update(agent_count=1, cluster_purpose="DevTest")
    assert run(aks).of_type(CLUSTER)[0].inputs["agentPoolProfiles"][0]["count"] == 1


def test_unknown_vm_size_says_how_to_proceed(aks):
    aks["ml-deploy:aks_clusters"][0]["vm_size"] = "Standard_Z9_v9"
    assert_rejected(aks, "aks_clusters[0].vm_size", "add it there with its vCPU count")


def test_attach_takes_no_pool_settings(aks):
    aks["ml-deploy:aks_clusters"][1]["agent_count"] = 3
    assert_rejected(aks, "aks_clusters[1].agent_count", "not allowed with attach")


def test_service_names_a_missing_cluster(aks):
    aks["ml-deploy:services"][1]["cluster"] = "nope"
    assert_rejected(aks, "services[1].cluster", "no cluster named 'nope'")


def test_autoscale_and_fixed_replicas_exclude_each_other(aks):
    aks["ml-deploy:services"][1]["num_replicas"] = 3
    assert_rejected(aks, "services[1].num_replicas", "not allowed with autoscale_enabled")


def test_min_replicas_above_max(aks):
    aks["ml-deploy:services"][1]["autoscale_min_replicas"] = 11
    assert_rejected(aks, "services[1].autoscale_min_replicas", "must not exceed")


def test_model_data_collection_uses_a_federated_identity_on_its_container(aks, run):
    rec = run(aks)
    identity = rec.by_name("azure-native:managedidentity:UserAssignedIdentity", "diabetes-aks-collector")
    federation = rec.by_name("azure-native:managedidentity:FederatedIdentityCredential", "diabetes-aks-federation")
    cluster = rec.of_type(CLUSTER)[0]
    assert federation.inputs["issuer"] == cluster.outputs["oidcIssuerProfile"]["issuerURL"]
    assert federation.inputs["subject"] == "system:serviceaccount:ml-deploy:diabetes-aks"
    assert federation.inputs["audiences"] == ["api://AzureADTokenExchange"]
    grant = rec.by_name(ROLE, "diabetes-aks-collector-blob")
    assert grant.inputs["principalId"] == identity.outputs["principalId"]
    assert grant.inputs["roleDefinitionId"].endswith("ba92f5b4-2d11-453d-a403-e96b0029c9fe")
    assert grant.inputs["scope"].endswith("/blobServices/default/containers/modeldata")
    account = rec.by_name("kubernetes:core/v1:ServiceAccount", "diabetes-aks-account")
    assert account.inputs["metadata"]["annotations"]["azure.workload.identity/client-id"] == identity.outputs["clientId"]
    pod = rec.by_name(DEPLOYMENT, "diabetes-aks-deployment").inputs["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert pod["spec"]["serviceAccountName"] == "diabetes-aks"
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["MODEL_DATA_COLLECTION_CONTAINER"] == "modeldata"
    assert env["SERVICE_NAME"] == "diabetes-aks"  # the swagger title, as Azure ML sets it
    assert env["MODEL_DATA_COLLECTION_ACCOUNT_URL"].endswith(".blob.core.windows.net/")


def test_created_clusters_enable_workload_identity(aks, run):
    cluster = run(aks).of_type(CLUSTER)[0].inputs
    assert cluster["oidcIssuerProfile"] == {"enabled": True}
    assert cluster["securityProfile"]["workloadIdentity"] == {"enabled": True}


def test_no_collection_no_identity(aks, run):
    rec = run(aks)
    assert not [r for r in rec.resources if r.name.startswith("diabetes-shared-collector")]
    pod = rec.by_name(DEPLOYMENT, "diabetes-shared-deployment").inputs["spec"]["template"]
    assert "azure.workload.identity/use" not in pod["metadata"]["labels"]


# ---- the cluster -------------------------------------------------------------------------------

def test_attach_mode_creates_no_cluster(aks, run):
    rec = run(aks)
    assert [c.name for c in rec.of_type(CLUSTER)] == ["prod-cluster"]
    assert {p.name for p in rec.of_type("pulumi:providers:kubernetes")} == {"prod-k8s", "shared-k8s"}


def test_cluster_has_managed_identity_logs_and_protect(aks, run):
    aks["ml-deploy:workspace"]["protect"] = True
    rec = run(aks)
    cluster = rec.of_type(CLUSTER)[0]
    assert cluster.inputs["identity"] == {"type": "SystemAssigned"}
    assert cluster.inputs["agentPoolProfiles"][0]["vmSize"] == "Standard_D4s_v5"
    logs = rec.of_type("azure-native:operationalinsights:Workspace")[0]
    assert cluster.inputs["addonProfiles"]["omsagent"]["config"]["logAnalyticsWorkspaceResourceID"] == logs.id
    assert cluster.protect


def test_kubelet_identities_get_acrpull_on_the_registry(aks, run):
    rec = run(aks)
    registry = rec.of_type("azure-native:containerregistry:Registry")[0]
    grants = {r.name: r for r in rec.of_type(ROLE) if r.inputs["roleDefinitionId"].endswith(ACR_PULL)}
    created = rec.of_type(CLUSTER)[0]
    assert grants["prod-acrpull"].inputs["principalId"] == created.outputs["identityProfile"]["kubeletidentity"]["objectId"]
    assert grants["shared-acrpull"].inputs["principalId"]  # from the attached cluster's lookup
    assert all(g.inputs["scope"] == registry.id for g in grants.values())


def test_kubeconfig_is_secret(aks, run):
    for provider in run(aks).of_type("pulumi:providers:kubernetes"):
        assert "kubeconfig" in provider.secret_paths


# ---- services ------------------------------------------------------------------------------------

def test_autoscaled_service_has_an_hpa_and_no_fixed_replicas(aks, run):
    rec = run(aks)
    hpa = rec.by_name(HPA, "diabetes-aks-hpa").inputs["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 10)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert hpa["scaleTargetRef"]["name"] == "diabetes-aks"
    assert "replicas" not in rec.by_name(DEPLOYMENT, "diabetes-aks-deployment").inputs["spec"]


def test_fixed_replicas_without_autoscale(aks, run):
    rec = run(aks)
    assert rec.by_name(DEPLOYMENT, "diabetes-shared-deployment").inputs["spec"]["replicas"] == 2
    assert [h.name for h in rec.of_type(HPA)] == ["diabetes-aks-hpa"]


def test_containers_have_requests_limits_probes_and_safe_rollouts(aks, run):
    rec = run(aks)
    spec = rec.by_name(DEPLOYMENT, "diabetes-shared-deployment").inputs["spec"]
    container = spec["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["livenessProbe"]["httpGet"]["path"] == "/"
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": "25%"}
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_up_waits_for_a_healthy_rollout_of_every_replica_and_no_longer():
    """The progress deadline is one pod's startup budget and a minute; `pulumi up` waits for every
    wave of new pods (25% surge: 1 wave per replica up to 4, never more than 4) within its budget."""
    from components.aks_service import rollout_bounds
    from components.service import ProbeTimings

    # Azure ML's defaults: 310 s + 10 s x 3 = 340 s of startup budget (170 polls of 2 s).
    azure = ProbeTimings()
    assert rollout_bounds(azure, 1) == (400, 460)
    assert rollout_bounds(azure, 3) == (400, 460 + 2 * 340)
    assert rollout_bounds(azure, 4) == rollout_bounds(azure, 10) == rollout_bounds(azure, 100) == (400, 460 + 3 * 340)


def test_initial_delay_is_how_long_init_may_take_not_how_long_a_ready_pod_waits(aks, run):
    """A startup probe polls readiness every 2 s for initial_delay_seconds plus the liveness
    failures (20 + 5 x 3 = 35 s: 18 polls), and holds liveness and readiness off until then: a pod
    ready in 5 s serves in about 5 s, and a slow init() is not restarted sooner than before."""
    rec = run(aks)
    container = rec.by_name(DEPLOYMENT, "diabetes-shared-deployment").inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["startupProbe"] == {"httpGet": {"path": "/ready", "port": 5001, "scheme": "HTTP"},
                                         "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 18}
    assert "initialDelaySeconds" not in container["readinessProbe"]
    assert "initialDelaySeconds" not in container["livenessProbe"]


def test_a_rollout_that_never_gets_ready_fails_after_the_startup_budget(aks, run):
    """progressDeadlineSeconds: the startup budget (18 polls of 2 s) plus a minute, after which the
    Deployment reports ProgressDeadlineExceeded (tests/test_lab_stack.py: `pulumi up` then fails)."""
    rec = run(aks)
    assert rec.by_name(DEPLOYMENT, "diabetes-shared-deployment").inputs["spec"]["progressDeadlineSeconds"] == 36 + 60


def test_a_terminating_pod_keeps_serving_until_its_endpoint_is_gone_then_drains(aks, run):
    """The standard graceful shutdown behind a Service: a preStop sleep while the endpoint is removed,
    then SIGTERM, on which the runtime drains (25 s), all within the termination grace period."""
    rec = run(aks)
    pod = rec.by_name(DEPLOYMENT, "diabetes-shared-deployment").inputs["spec"]["template"]["spec"]
    assert pod["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    assert pod["terminationGracePeriodSeconds"] == 5 + 25 + 5


def test_keys_live_in_a_secret_marked_secret(aks, run):
    rec = run(aks)
    secret = rec.by_name("kubernetes:core/v1:Secret", "diabetes-aks-secret")
    assert "stringData" in secret.secret_paths
    env = {e["name"]: e for e in rec.by_name(DEPLOYMENT, "diabetes-aks-deployment")
           .inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SCORING_AUTH_KEYS"]["valueFrom"]["secretKeyRef"]["key"] == "auth-keys"
    assert "valueFrom" in env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert "services.diabetes-aks.primary_key" in rec.output_secret_paths


def test_given_keys_are_used_instead_of_generated(aks, run):
    aks["ml-deploy:services"][2].update(primary_key="p" * 20, secondary_key="s" * 20)  # diabetes-shared
    rec = run(aks)
    assert rec.outputs["services"]["diabetes-shared"]["primary_key"] == "p" * 20
    assert not [r for r in rec.of_type("random:index/randomPassword:RandomPassword") if "shared" in r.name]


def test_shared_namespace_is_registered_once_per_cluster(aks, run):
    aks["ml-deploy:services"].append(dict(aks["ml-deploy:services"][1], name="diabetes-shared-2"))
    rec = run(aks)
    assert sorted(n.name for n in rec.of_type("kubernetes:core/v1:Namespace")) == ["prod-ns-ml-deploy", "shared-ns-ml-deploy"]


def test_every_kubernetes_object_is_schema_valid(aks, run):
    objects = kube_objects(run(aks))
    assert len(objects) >= 10
    for obj in objects:
        manifest = {k: v for k, v in obj.inputs.items() if not k.startswith("__")}
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_new_image_rolls_only_its_deployments(aks, run, tmp_path):
    aks["ml-deploy:images"].append(dict(aks["ml-deploy:images"][0], name="other"))
    aks["ml-deploy:services"][1]["image"] = "other"
    script = tmp_path / "score.py"
    shutil.copy(TEMPLATES / "sklearn" / "score.py", script)
    aks["ml-deploy:images"][1]["execution_script"] = str(script)
    before = run(aks)
    script.write_text(script.read_text() + "\n# new behaviour\n")
    assert changed(before, run(aks)) == {"other-image", "diabetes-aks-deployment"}
