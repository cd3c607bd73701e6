"""The kubernetes target: any cluster attached by kubeconfig, on an Azure or a local workspace, with an
image pull secret for a registry that needs a login, and the AKS target's objects, schema-valid."""

from __future__ import annotations

import base64
import json

import kubernetes_validate
import pytest

from tests.helpers import assert_rejected, changed

K8S_VERSION = kubernetes_validate.latest_version()
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SECRET = "kubernetes:core/v1:Secret"
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: team
  cluster: {server: 'https://k8s.example.invalid:6443'}
users:
- name: deployer
  user: {token: not-a-real-token}
contexts:
- name: team-prod
  context: {cluster: team, user: deployer}
- name: team-dev
  context: {cluster: team, user: deployer, namespace: dev}
current-context: team-dev
"""


@pytest.fixture
def kubeconfig(tmp_path):
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    return path


@pytest.fixture
def k8s(config, kubeconfig):
    """The lab's shape: a local workspace pushing to a registry, and a cluster attached by kubeconfig."""
    config["ml-deploy:workspace"] = {"name": "lab", "kind": "local", "path": ".ml-deploy/test-lab",
                                     "protect": False, "registry": "registry.example.com"}
    config["ml-deploy:kubernetes_clusters"] = [{
        "name": "team", "kubeconfig": str(kubeconfig), "context": "team-prod",
        "image_pull_secret": {"server": "registry.example.com", "username": "puller", "password": "p" * 20},
    }]
    config["ml-deploy:services"] = [{"name": "diabetes-k8s", "image": "diabetes", "target": "kubernetes",
                                     "cluster": "team", "cpu_cores": 0.5, "memory_gb": 1,
                                     "primary_key": "a" * 20, "secondary_key": "b" * 20}]
    return config


def kube_objects(rec):
    return [r for r in rec.resources if r.type.startswith("kubernetes:") and r.custom]


def test_the_provider_gets_the_kubeconfig_as_a_secret_and_the_context(k8s, run):
    provider = run(k8s).by_name("pulumi:providers:kubernetes", "team-k8s")
    assert provider.inputs["kubeconfig"] == KUBECONFIG and "kubeconfig" in provider.secret_paths
    assert provider.inputs["context"] == "team-prod"


def test_the_kubeconfig_may_be_given_as_its_text(k8s, run):
    k8s["ml-deploy:kubernetes_clusters"][0]["kubeconfig"] = KUBECONFIG
    # Config strings are stripped of surrounding whitespace; the YAML is the same.
    assert run(k8s).by_name("pulumi:providers:kubernetes", "team-k8s").inputs["kubeconfig"] == KUBECONFIG.strip()


def test_a_kubeconfig_path_takes_environment_variables(k8s, run, kubeconfig, monkeypatch):
    monkeypatch.setenv("ML_DEPLOY_TEST_KUBE", str(kubeconfig.parent))
    k8s["ml-deploy:kubernetes_clusters"][0]["kubeconfig"] = "${ML_DEPLOY_TEST_KUBE}/kubeconfig"
    assert run(k8s).by_name("pulumi:providers:kubernetes", "team-k8s").inputs["kubeconfig"] == KUBECONFIG


def test_a_missing_kubeconfig_is_a_config_error(k8s, tmp_path):
    k8s["ml-deploy:kubernetes_clusters"][0]["kubeconfig"] = str(tmp_path / "nope")
    assert_rejected(k8s, "kubernetes_clusters[0].kubeconfig", "no kubeconfig file at")


def test_an_unknown_context_lists_the_kubeconfigs_contexts(k8s):
    k8s["ml-deploy:kubernetes_clusters"][0]["context"] = "team-staging"
    assert_rejected(k8s, "kubernetes_clusters[0].context", "no context 'team-staging' in the kubeconfig (it has: team-prod, team-dev)")


def test_a_service_names_a_missing_cluster(k8s):
    k8s["ml-deploy:services"][0]["cluster"] = "nope"
    assert_rejected(k8s, "services[0].cluster", "no cluster named 'nope' in kubernetes_clusters")


def test_a_local_workspace_needs_a_registry_for_it(k8s):
    del k8s["ml-deploy:workspace"]["registry"]
    assert_rejected(k8s, "services[0].target", "needs workspace.registry")


def test_pods_pull_with_the_registry_login_in_a_dockerconfigjson_secret(k8s, run):
    rec = run(k8s)
    pull = rec.by_name(SECRET, "team-pull-ml-deploy")
    assert pull.inputs["type"] == "kubernetes.io/dockerconfigjson"
    assert "stringData" in pull.secret_paths
    auths = json.loads(pull.inputs["stringData"][".dockerconfigjson"])["auths"]
    assert base64.b64decode(auths["registry.example.com"]["auth"]).decode() == "puller:" + "p" * 20
    pod = rec.by_name(DEPLOYMENT, "diabetes-k8s-deployment").inputs["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": pull.inputs["metadata"]["name"]}]


def test_no_pull_secret_without_a_login(k8s, run):
    del k8s["ml-deploy:kubernetes_clusters"][0]["image_pull_secret"]
    rec = run(k8s)
    assert [s.name for s in rec.of_type(SECRET)] == ["diabetes-k8s-secret"]
    assert "imagePullSecrets" not in rec.by_name(DEPLOYMENT, "diabetes-k8s-deployment").inputs["spec"]["template"]["spec"]


def test_the_deployment_runs_the_pushed_image_by_digest(k8s, run):
    rec = run(k8s)
    container = rec.by_name(DEPLOYMENT, "diabetes-k8s-deployment").inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == rec.outputs["images"]["diabetes"]
    assert container["image"].startswith("registry.example.com/diabetes@sha256:")


def test_an_api_only_cluster_skips_awaits_and_deletes_in_the_background(k8s, run):
    k8s["ml-deploy:kubernetes_clusters"][0]["api_only"] = True
    for obj in kube_objects(run(k8s)):
        if obj.type.startswith("pulumi:providers"):
            continue
        annotations = obj.inputs["metadata"]["annotations"]
        assert annotations["pulumi.com/skipAwait"] == "true", obj.name
        assert annotations["pulumi.com/deletionPropagationPolicy"] == "background", obj.name


def test_a_real_cluster_is_awaited(k8s, run):
    for obj in kube_objects(run(k8s)):
        if not obj.type.startswith("pulumi:providers"):
            assert "pulumi.com/skipAwait" not in (obj.inputs["metadata"].get("annotations") or {}), obj.name


def test_every_kubernetes_object_is_schema_valid(k8s, run):
    k8s["ml-deploy:kubernetes_clusters"][0]["api_only"] = True
    objects = [o for o in kube_objects(run(k8s)) if not o.type.startswith("pulumi:providers")]
    assert {o.type.split(":")[-1] for o in objects} == {
        "Namespace", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget",
        "NetworkPolicy"}
    for obj in objects:
        manifest = {k: v for k, v in obj.inputs.items() if not k.startswith("__")}
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_app_insights_needs_an_azure_workspace(k8s):
    k8s["ml-deploy:services"][0]["enable_app_insights"] = True
    assert_rejected(k8s, "services[0].enable_app_insights", "needs an Azure workspace")


def test_on_an_azure_workspace_it_runs_the_workspace_registrys_image(config, run, kubeconfig):
    config["ml-deploy:kubernetes_clusters"] = [{"name": "team", "kubeconfig": str(kubeconfig)}]
    config["ml-deploy:services"].append({"name": "diabetes-k8s", "image": "diabetes", "target": "kubernetes",
                                         "cluster": "team", "enable_app_insights": True,
                                         "primary_key": "a" * 20, "secondary_key": "b" * 20})
    rec = run(config)
    container = rec.by_name(DEPLOYMENT, "diabetes-k8s-deployment").inputs["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == rec.outputs["images"]["diabetes"]
    assert container["image"].split("/")[0] == rec.outputs["workspace"]["registry"]
    assert "APPLICATIONINSIGHTS_CONNECTION_STRING" in {e["name"] for e in container["env"]}


def test_a_new_image_rolls_only_the_deployment(k8s, run, tmp_path):
    script = tmp_path / "score.py"
    script.write_text(open(k8s["ml-deploy:images"][0]["execution_script"]).read())
    k8s["ml-deploy:images"][0]["execution_script"] = str(script)
    before = run(k8s)
    script.write_text(script.read_text() + "\n# new behaviour\n")
    # The image and the local bundle of the same content; on the cluster, only the Deployment.
    assert changed(before, run(k8s)) == {"diabetes-image", "diabetes-bundle", "diabetes-k8s-deployment"}


def test_logs_are_read_from_the_clusters_pods(k8s, run):
    logs = run(k8s).outputs["services"]["diabetes-k8s"]["logs"]
    assert logs == {"kind": "kubernetes", "cluster": "team", "namespace": "ml-deploy",
                    "selector": "app.kubernetes.io/name=diabetes-k8s", "container": "scoring"}


def test_a_cluster_ip_service_is_scored_at_its_cluster_dns_name(k8s, run):
    """A cluster without a load balancer (the lab, most on-premises clusters): the Service gets a
    cluster IP, not a LoadBalancer that would never get an address, and the scoring URI is its DNS name."""
    k8s["ml-deploy:services"][0]["service_type"] = "ClusterIP"
    rec = run(k8s)
    service = rec.of_type("kubernetes:core/v1:Service")[0].inputs
    assert service["spec"]["type"] == "ClusterIP" and "loadBalancerSourceRanges" not in service["spec"]
    name = k8s["ml-deploy:services"][0]["name"]
    namespace = service["metadata"]["namespace"]
    assert rec.outputs["services"][name]["scoring_uri"] == f"http://{name}.{namespace}.svc.cluster.local/score"


def test_load_balancer_settings_need_a_load_balancer(k8s):
    k8s["ml-deploy:services"][0].update(service_type="NodePort", internal_load_balancer=True)
    assert_rejected(k8s, "services[0].internal_load_balancer", "only with service_type: LoadBalancer")
