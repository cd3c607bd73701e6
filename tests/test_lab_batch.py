"""A batch job on the lab's cluster, for real, through the engine: `pulumi up` declares the job's
volume, `batch run` stages a 10,000-row CSV on it, runs the indexed Job with 2 pods, and assembles
the output here: every row once, traceable to its line, with the numbers the same script gives on
this machine.

Needs `bash scripts/lab up` (skipped otherwise, saying so). Its own stack (`lab-batch`), namespace and
volume (a hostPath PersistentVolume in the lab's folder, as a cluster's storage admin would provide
one; the lab has no provisioner), all removed at the end.
"""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from pulumi import automation as auto

from cli import batch_kubernetes
from tests.helpers import ROOT, copy_project
from tests.test_batch import rows_csv
from tests.test_lab_stack import lab, lab_stack, outputs  # noqa: F401 - `lab` is a fixture

pytestmark = pytest.mark.lab  # scripts/test runs these beside the others

STACK = "lab-batch"
JOB = "nightly"
STORAGE_CLASS = "ml-deploy-lab"
ROWS = 10_000


@pytest.fixture(scope="module")
def namespace() -> str:
    return f"lab-batch-{secrets.token_hex(3)}"


@pytest.fixture(scope="module")
def volume(lab: dict[str, str], namespace: str) -> Iterator[str]:
    """A PersistentVolume for the job's claim (bound to it by claimRef), on a folder of the lab."""
    from kubernetes import client
    from kubernetes import config as kube_config

    folder = Path(lab["ML_DEPLOY_LAB"]) / "volumes" / namespace
    folder.mkdir(parents=True)
    folder.chmod(0o777)  # the pods run as uid 10001; a hostPath volume takes no fsGroup
    api = client.CoreV1Api(kube_config.new_client_from_config(config_file=lab["KUBECONFIG"]))
    api.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": namespace},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"], "storageClassName": STORAGE_CLASS,
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(folder), "type": "Directory"},
                 "claimRef": {"namespace": namespace, "name": f"{JOB}-batch"}}})
    try:
        yield namespace
    finally:
        api.delete_persistent_volume(namespace)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model_files, namespace: str) -> Path:
    project = copy_project(tmp_path_factory.mktemp("lab-batch-project"), model_files[0])
    stack_file = yaml.safe_load((project / "Pulumi.lab.yaml").read_text())
    config = stack_file["config"]
    config["ml-deploy:services"] = []
    config["ml-deploy:batch"] = [{
        "name": JOB, "image": "diabetes", "target": "kubernetes", "cluster": "lab", "namespace": namespace,
        "max_concurrency": 2, "mini_batch_size": 500, "input_format": "json_rows", "error_threshold": 0,
        "storage_class": STORAGE_CLASS, "storage_size": "1Gi", "cpu_cores": 0.25, "memory_gb": 0.5,
    }]
    (project / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump(stack_file, sort_keys=False))
    return project


@pytest.fixture(scope="module")
def stack(lab, volume, project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[auto.Stack]:
    from kubernetes import client
    from kubernetes import config as kube_config

    stack = lab_stack(lab, project, tmp_path_factory.mktemp("lab-batch-state"), STACK)
    try:
        stack.up(on_output=lambda _: None)
        yield stack
    finally:
        # A run that failed keeps its Job for a resume, and the claim stays in use while its pods do:
        # remove them first, or destroy waits out its timeout on the claim (pvc-protection).
        api = kube_config.new_client_from_config(config_file=lab["KUBECONFIG"])
        if client.CoreV1Api(api).list_namespace(field_selector=f"metadata.name={volume}").items:
            client.BatchV1Api(api).delete_collection_namespaced_job(volume, propagation_policy="Background")
            client.CoreV1Api(api).delete_collection_namespaced_pod(volume, grace_period_seconds=0)
        stack.destroy(on_output=lambda _: None)


def _table(path: Path) -> list[list[str]]:
    with path.open(newline="") as f:
        return list(csv.reader(f))


def test_a_csv_scored_by_an_indexed_job_of_two_pods_equals_the_local_run(stack, lab, project, tmp_path, capsys):
    rows_csv(tmp_path / "rows.csv", ROWS)
    job: dict[str, Any] = outputs(stack)["batch"][JOB]
    lines: list[str] = []
    summary = batch_kubernetes.run(job, JOB, tmp_path / "rows.csv", tmp_path / "cluster", lab["KUBECONFIG"], None,
                                   say=lines.append)
    print("\n" + "\n".join(lines))
    assert summary["scored"] == ROWS and summary["failed"] == 0
    # The same script on this machine, with the project's environment.
    local = subprocess.run([sys.executable, "-m", "serving.batch", "--script", str(project / "scoring_templates" / "sklearn" / "score.py"),
                            "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "local"),
                            "--input-format", "json_rows", "--mini-batch-size", "500"],
                           env={**os.environ, "PYTHONPATH": str(ROOT), "AZUREML_MODEL_DIR": str(project / "models")},
                           cwd=project, capture_output=True, text=True)
    assert local.returncode == 0, local.stderr
    cluster, here = _table(tmp_path / "cluster" / "predictions.csv"), _table(tmp_path / "local" / "predictions.csv")
    assert cluster[0] == ["source", "result"] and len(cluster) == ROWS + 1
    assert [r[0] for r in cluster[1:]] == [f"rows.csv:{line}" for line in range(2, ROWS + 2)]
    assert all(abs(float(a[1]) - float(b[1])) < 1e-9 for a, b in zip(cluster[1:], here[1:]))
    # Nothing of the run stays on the cluster: its Job, its stager pod, its files on the volume.
    from kubernetes import client
    from kubernetes import config as kube_config

    api_client = kube_config.new_client_from_config(config_file=lab["KUBECONFIG"])
    namespace = job["namespace"]
    assert [j.metadata.name for j in client.BatchV1Api(api_client).list_namespaced_job(namespace).items
            if j.metadata.deletion_timestamp is None] == []
    folder = Path(lab["ML_DEPLOY_LAB"]) / "volumes" / namespace / JOB
    assert not folder.exists() or list(folder.iterdir()) == []
