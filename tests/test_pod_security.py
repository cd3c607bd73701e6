"""Every pod template of every committed stack passes the Pod Security Standards' "restricted" level,
as the kube-apiserver's PodSecurity admission judges it: tools/psa-check runs the admission's own
checks (k8s.io/pod-security-admission, pinned to the lab's Kubernetes; built by scripts/psa-check) on
the objects of each stack's offline plan. The library replaces a hand-written copy of the controls,
which had already fallen behind it (no AppArmor, sysctls, probe and lifecycle hosts, Windows
HostProcess checks)."""

from __future__ import annotations

import copy
import subprocess
from typing import Any, Callable

import pytest
import yaml

from cli import offline
from tests.kube_manifests import STACKS, built_tool, scoring_workloads, stack_objects

# Node agents the cluster runs in kube-system, which PodSecurity leaves unlabelled (privileged): the
# NVIDIA device plugin needs a hostPath to the kubelet's device-plugin socket, which no level but
# privileged admits.
NODE_AGENT_NAMESPACE = "kube-system"


def psa_check() -> str:
    """The pinned binary's path (tests/kube_manifests.py built_tool)."""
    return built_tool("psa-check")


def refusals(objects: list[dict[str, Any]]) -> list[str]:
    """The restricted checks that refuse the objects' pods, `Kind/name: checkID: reason (detail)`."""
    result = subprocess.run([psa_check()], input=yaml.safe_dump_all(objects, sort_keys=False),
                            capture_output=True, text=True)
    # Exit status 1 means a pod is refused, and the lines say by what; 2 is input it could not read.
    assert result.returncode in (0, 1), result.stderr
    assert (result.returncode == 1) == bool(result.stdout), result.stdout
    return result.stdout.splitlines()


def refused_by(objects: list[dict[str, Any]]) -> set[str]:
    return {line.split(": ")[1] for line in refusals(objects)}


@pytest.mark.parametrize("stack", [s for s in STACKS if stack_objects(s)])
def test_every_pod_the_stack_runs_outside_kube_system_passes_restricted(stack):
    objects = [o for o in stack_objects(stack) if o["metadata"].get("namespace") != NODE_AGENT_NAMESPACE]
    assert refusals(objects) == []


def test_the_committed_stacks_have_scoring_pods_to_check():
    assert {w["metadata"]["name"] for s in STACKS for w in scoring_workloads(stack_objects(s))} >= {
        "diabetes-aks", "diabetes-shared", "diabetes-gpu", "diabetes-k8s"}


def _scoring_deployment() -> dict[str, Any]:
    return copy.deepcopy(next(w for w in scoring_workloads(stack_objects("lab")) if w["kind"] == "Deployment"))


def _scoring_container(d: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "scoring")


def _privileged(d: dict[str, Any]) -> None:
    _scoring_container(d)["securityContext"]["privileged"] = True


def _root_allowed(d: dict[str, Any]) -> None:
    del d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]


def _root_user(d: dict[str, Any]) -> None:
    _scoring_container(d)["securityContext"]["runAsUser"] = 0


def _escalation(d: dict[str, Any]) -> None:
    del _scoring_container(d)["securityContext"]["allowPrivilegeEscalation"]


def _added_capability(d: dict[str, Any]) -> None:
    _scoring_container(d)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")


def _unconfined(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["securityContext"]["seccompProfile"] = {"type": "Unconfined"}


def _host_path(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})


def _host_network(d: dict[str, Any]) -> None:
    d["spec"]["template"]["spec"]["hostNetwork"] = True


@pytest.mark.parametrize("break_it, check", [
    (_privileged, "privileged"),
    (_root_allowed, "runAsNonRoot"),
    (_root_user, "runAsUser"),
    (_escalation, "allowPrivilegeEscalation"),
    (_added_capability, "capabilities_restricted"),
    (_unconfined, "seccompProfile_restricted"),
    (_host_path, "restrictedVolumes"),
    (_host_network, "hostNamespaces"),
], ids=lambda v: v if isinstance(v, str) else v.__name__.strip("_"))
def test_a_scoring_pod_with_one_control_broken_is_refused_by_that_check(break_it: Callable[[dict], None], check):
    """The check itself, on the real pod: one change, one refusal, named."""
    deployment = _scoring_deployment()
    assert refusals([deployment]) == []
    break_it(deployment)
    assert refused_by([deployment]) == {check}
    assert refusals([deployment])[0].startswith(f"Deployment/{deployment['metadata']['name']}: {check}: ")


def test_a_pod_as_kubernetes_defaults_it_is_refused():
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
            "spec": {"containers": [{"name": "scoring", "image": "x"}]}}
    assert refused_by([bare]) == {"allowPrivilegeEscalation", "capabilities_restricted", "runAsNonRoot",
                                  "seccompProfile_restricted"}


def test_the_device_plugin_is_refused_and_runs_only_in_kube_system():
    """Why the exemption above is needed and stays narrow: the one pod refused is a node agent."""
    objects = stack_objects("prod")
    refused = {line.split(":")[0] for line in refusals(objects)}
    assert refused == {"DaemonSet/nvidia-device-plugin"}
    assert {o["metadata"]["namespace"] for o in objects if o["kind"] == "DaemonSet"} == {NODE_AGENT_NAMESPACE}


def test_a_misspelt_field_is_an_error_not_a_pass():
    """Read strictly, as the API server's strict field validation does: a typo must not hide a pod."""
    deployment = _scoring_deployment()
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    result = subprocess.run([psa_check()], input=yaml.safe_dump(deployment), capture_output=True, text=True)
    assert result.returncode == 2 and "runAsNonroot" in result.stderr


@pytest.mark.parametrize("stack", STACKS)
def test_scoring_pods_have_a_read_only_root_a_writable_tmp_and_no_api_token(stack):
    for workload in scoring_workloads(stack_objects(stack)):
        pod = workload["spec"]["template"]["spec"]
        container = next(c for c in pod["containers"] if c["name"] == "scoring")
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsUser"] > 10000 and pod["securityContext"]["runAsGroup"] > 10000
        for kind in ("requests", "limits"):
            assert "ephemeral-storage" in container["resources"][kind]
        spread = {(c["topologyKey"], c["whenUnsatisfiable"]) for c in pod["topologySpreadConstraints"]}
        assert spread == {("kubernetes.io/hostname", "ScheduleAnyway"), ("topology.kubernetes.io/zone", "ScheduleAnyway")}


def test_scoring_namespaces_enforce_the_restricted_level(monkeypatch):
    """What the tests check, the cluster enforces: each namespace ml-deploy creates for scoring pods."""
    monkeypatch.setenv("ML_DEPLOY_OFFLINE_PLAN", "1")
    found = 0
    for stack in ("prod", "lab"):
        rec = offline.run(offline.stack_config(stack), stack=stack)
        for ns in rec.of_type("kubernetes:core/v1:Namespace"):
            labels = ns.inputs["metadata"]["labels"]
            assert labels["pod-security.kubernetes.io/enforce"] == "restricted", ns.name
            assert labels["pod-security.kubernetes.io/warn"] == "restricted", ns.name
            found += 1
    assert found >= 2
