"""Every scoring pod template of every committed stack meets the Pod Security Standards'
"restricted" profile (kubernetes.io/docs/concepts/security/pod-security-standards/, the Baseline
and Restricted tables), checked field by field from its offline plan."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from tests.kube_manifests import STACKS, scoring_workloads, stack_objects

# Restricted, "Volume Types": only these volume sources.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
# Restricted, "Capabilities": every container drops ALL and may add back NET_BIND_SERVICE only.
ADDABLE_CAPABILITIES = {"NET_BIND_SERVICE"}
# Baseline, "Seccomp" / Restricted, "Seccomp (v1.19+)": the profile must be one of these.
SECCOMP_TYPES = {"RuntimeDefault", "Localhost"}


def _containers(pod: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod.get(key) or []


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What in a pod spec breaks the "restricted" profile, one line per control."""
    found: list[str] = []
    pod_ctx = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"Host Namespaces: {key}")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds - RESTRICTED_VOLUMES:
            found.append(f"Volume Types: {volume['name']} is {sorted(kinds)}")
    if pod_ctx.get("runAsUser") == 0:
        found.append("Running as Non-root user: spec.securityContext.runAsUser is 0")
    if (pod_ctx.get("seccompProfile") or {}).get("type") == "Unconfined":
        found.append("Seccomp: pod profile Unconfined")
    for c in _containers(pod):
        ctx = c.get("securityContext") or {}
        name = c.get("name")
        if ctx.get("privileged"):
            found.append(f"Privileged Containers: {name}")
        if any(p.get("hostPort") for p in c.get("ports") or []):
            found.append(f"HostPorts: {name}")
        if ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"Privilege Escalation: {name} does not set allowPrivilegeEscalation: false")
        if not (ctx.get("runAsNonRoot") is True or (pod_ctx.get("runAsNonRoot") is True and ctx.get("runAsNonRoot") is not False)):
            found.append(f"Running as Non-root: {name} does not set runAsNonRoot: true (nor its pod)")
        if ctx.get("runAsUser") == 0:
            found.append(f"Running as Non-root user: {name} runAsUser is 0")
        seccomp = (ctx.get("seccompProfile") or pod_ctx.get("seccompProfile") or {}).get("type")
        if seccomp not in SECCOMP_TYPES:
            found.append(f"Seccomp: {name} has profile {seccomp!r}, not RuntimeDefault or Localhost")
        caps = ctx.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f"Capabilities: {name} does not drop ALL")
        if set(caps.get("add") or []) - ADDABLE_CAPABILITIES:
            found.append(f"Capabilities: {name} adds {sorted(set(caps['add']) - ADDABLE_CAPABILITIES)}")
        if (ctx.get("seLinuxOptions") or {}).get("type") not in (None, "", "container_t", "container_init_t",
                                                                   "container_kvm_t", "container_engine_t"):
            found.append(f"SELinux: {name}")
        if ctx.get("procMount") not in (None, "Default"):
            found.append(f"/proc Mount Type: {name}")
    return found


def test_a_pod_as_kubernetes_defaults_it_breaks_the_profile():
    """The check itself: a bare pod (root allowed, no seccomp, capabilities kept) is refused."""
    found = restricted_violations({"containers": [{"name": "scoring", "image": "x"}],
                                   "volumes": [{"name": "h", "hostPath": {"path": "/"}}]})
    assert {line.split(":")[0] for line in found} == {
        "Volume Types", "Privilege Escalation", "Running as Non-root", "Seccomp", "Capabilities"}


@pytest.mark.parametrize("stack", STACKS)
def test_every_scoring_pod_meets_the_restricted_profile(stack):
    for workload in scoring_workloads(stack_objects(stack)):
        pod = workload["spec"]["template"]["spec"]
        assert restricted_violations(pod) == [], workload["metadata"]["name"]


def test_the_committed_stacks_have_scoring_pods_to_check():
    assert {w["metadata"]["name"] for s in STACKS for w in scoring_workloads(stack_objects(s))} >= {
        "diabetes-aks", "diabetes-shared", "diabetes-gpu", "diabetes-k8s"}


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
