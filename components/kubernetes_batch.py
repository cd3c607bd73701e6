"""A batch job on a Kubernetes cluster (`ml-deploy:batch` with `target: kubernetes`): the volume
`pulumi up` declares for it, and the pods `ml-deploy batch run` starts on it (cli/batch_kubernetes.py).

A run stages the input on the job's volume through a stager pod, starts an indexed Job of
`max_concurrency` pods (pod I of N scores the mini-batches whose index is I modulo N, with
`python -m serving.batch --shard I/N --parts-only`, into the run's parts folder on the volume), and
when every pod has finished, copies the parts back and assembles the output on the caller's machine.
Every pod is the job's scoring image by digest, under the Pod Security "restricted" settings the
scoring pods run with (components/aks_service.py).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s

from components.aks_service import SCORING_GID, TMP_DIR, TMP_SIZE_LIMIT
from content.bundle import APP_ROOT, SCORING_UID, SCRIPT_NAME

DATA_DIR = "/data"
"""Where the job's volume is mounted in its pods."""
JOB_LABEL = "ml-deploy/batch-job"
RUN_LABEL = "ml-deploy/batch-run"


def batch_volume(name: str, namespace: pulumi.Input[str], provider: k8s.Provider, storage_class: Optional[str],
                 size: str, protect: bool, parent: Optional[pulumi.Resource] = None) -> k8s.core.v1.PersistentVolumeClaim:
    """The job's volume: ReadWriteMany, so pods on several nodes mount it at once."""
    return k8s.core.v1.PersistentVolumeClaim(
        f"{name}-batch-data",
        metadata=k8s.meta.v1.ObjectMetaArgs(
            name=f"{name}-batch", namespace=namespace,
            labels={"app.kubernetes.io/managed-by": "ml-deploy", JOB_LABEL: name}),
        spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
            access_modes=["ReadWriteMany"],
            storage_class_name=storage_class,
            resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": size}),
        ),
        opts=pulumi.ResourceOptions(provider=provider, protect=protect, parent=parent),
    )


def _container(name: str, image: str, command: list[str], cpu_cores: float, memory_gb: float) -> dict[str, Any]:
    resources = {"cpu": f"{math.ceil(cpu_cores * 1000)}m", "memory": f"{math.ceil(memory_gb * 1024)}Mi"}
    return {
        "name": name, "image": image, "command": command,
        "resources": {"requests": resources, "limits": resources},
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": TMP_DIR}],
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
    }


def _pod_spec(claim: str, containers: list[dict[str, Any]], pull_secrets: list[str], restart: str) -> dict[str, Any]:
    return {
        "restartPolicy": restart,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": SCORING_UID, "runAsGroup": SCORING_GID,
                            "fsGroup": SCORING_GID, "seccompProfile": {"type": "RuntimeDefault"}},
        "imagePullSecrets": [{"name": s} for s in pull_secrets] or None,
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}],
        "containers": containers,
    }


def stager_pod(job: str, run: str, image: str, claim: str, pull_secrets: list[str]) -> dict[str, Any]:
    """A pod that only waits, mounting the volume: the run's input goes in and its parts come out
    through it (exec), as `kubectl cp` does."""
    idle = ["python", "-c", "import time\nwhile True: time.sleep(3600)"]
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{job}-stage-{run[:10]}", "labels": {JOB_LABEL: job, RUN_LABEL: run[:63]}},
        "spec": {**_pod_spec(claim, [_container("stage", image, idle, 0.1, 0.25)], pull_secrets, "Never"),
                 # Nothing to drain: stopped at once.
                 "terminationGracePeriodSeconds": 1},
    }


def scoring_job(job: str, run: str, image: str, claim: str, pull_secrets: list[str], settings: dict[str, Any],
                input_path: str, source_root: str) -> dict[str, Any]:
    """The indexed Job: `max_concurrency` pods, pod I scoring shard I of N into the run's parts."""
    pods = int(settings["max_concurrency"])
    run_dir = f"{DATA_DIR}/{job}/{run}"
    # $(JOB_COMPLETION_INDEX) is expanded by the kubelet from the env var an indexed Job sets in
    # each pod (kubernetes.io/docs/concepts/workloads/controllers/job/#completion-mode).
    command = ["python", "-m", "serving.batch", "--job", job, "--script", f"{APP_ROOT}/{SCRIPT_NAME}",
               "--input", input_path, "--output", f"{run_dir}/out", "--source-root", source_root,
               "--mini-batch-size", str(settings["mini_batch_size"]), "--workers", "1",
               "--error-threshold", str(settings["error_threshold"]), "--retries", str(settings["retries"]),
               "--output-action", settings["output_action"], "--output-file-name", settings["output_file_name"],
               "--shard", f"$(JOB_COMPLETION_INDEX)/{pods}", "--parts-only"]
    if settings.get("input_format"):
        command += ["--input-format", settings["input_format"]]
    labels = {JOB_LABEL: job, RUN_LABEL: run[:63]}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": f"{job}-{run[:10]}", "labels": labels},
        "spec": {
            "completionMode": "Indexed", "completions": pods, "parallelism": pods,
            # A pod that fails (killed, evicted, a node gone) is started again, resuming from the
            # parts already kept; the script's own failures are counted in the parts, not here.
            "backoffLimit": pods * 3,
            "template": {"metadata": {"labels": labels},
                         "spec": _pod_spec(claim, [_container("batch", image, command, settings["cpu_cores"],
                                                              settings["memory_gb"])], pull_secrets, "Never")},
        },
    }
