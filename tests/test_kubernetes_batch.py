"""A batch job on a Kubernetes cluster (`ml-deploy:batch` with `target: kubernetes`): the config rules,
the volume `pulumi up` declares (under the mocks), the pods `batch run` starts (Pod Security
"restricted", the indexed Job's shards), and the driver's shards assembling exactly what one run
writes. On the lab's cluster, for real: tests/test_lab_batch.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.kubernetes_batch import scoring_job, stager_pod
from serving import batch as driver
from tests.helpers import assert_rejected
from tests.test_batch import drive, rows_csv
from tests.test_batch import app  # noqa: F401 - a fixture
from tests.test_aks import aks  # noqa: F401 - a fixture
from tests.test_kubernetes import k8s, kubeconfig  # noqa: F401 - fixtures
from tests.test_pod_security import refusals

PVC = "kubernetes:core/v1:PersistentVolumeClaim"
SETTINGS = {"mini_batch_size": 100, "max_concurrency": 2, "error_threshold": 5, "retries": 1,
            "output_action": "append_row", "output_file_name": "predictions.csv", "input_format": "json_rows",
            "cpu_cores": 0.5, "memory_gb": 1}


@pytest.fixture
def batch_job(k8s) -> dict[str, Any]:
    k8s["ml-deploy:batch"] = [{"name": "nightly", "image": "diabetes", "target": "kubernetes", "cluster": "team",
                               "max_concurrency": 2, "input_format": "json_rows", "storage_class": "azurefile-csi",
                               "storage_size": "5Gi"}]
    return k8s


def test_pulumi_up_declares_the_jobs_volume_and_exports_how_to_run_it(batch_job, run):
    rec = run(batch_job)
    claim = rec.by_name(PVC, "nightly-batch-data").inputs
    assert claim["metadata"]["name"] == "nightly-batch" and claim["metadata"]["namespace"] == "ml-deploy"
    assert claim["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "azurefile-csi",
                             "resources": {"requests": {"storage": "5Gi"}}}
    job = rec.outputs["batch"]["nightly"]
    assert job["target"] == "kubernetes" and job["claim"] == "nightly-batch" and job["namespace"] == "ml-deploy"
    assert job["image_ref"] == rec.outputs["images"]["diabetes"] and "@sha256:" in job["image_ref"]
    assert job["pull_secrets"] and job["settings"]["max_concurrency"] == 2


def test_a_kubernetes_job_names_a_cluster_of_the_stack(batch_job):
    del batch_job["ml-deploy:batch"][0]["cluster"]
    assert_rejected(batch_job, "batch[0].cluster", "names its cluster")
    batch_job["ml-deploy:batch"][0]["cluster"] = "elsewhere"
    assert_rejected(batch_job, "batch[0].cluster", "no cluster named 'elsewhere'")


def test_cluster_settings_belong_to_kubernetes_jobs(batch_job):
    batch_job["ml-deploy:batch"][0].update(target="local", cluster="team")
    assert_rejected(batch_job, "batch[0].cluster", "only for target: kubernetes or aks")


def test_a_kubernetes_job_scales_with_pods_not_instances(batch_job):
    batch_job["ml-deploy:batch"][0]["instance_count"] = 2
    assert_rejected(batch_job, "batch[0].instance_count", "max_concurrency")


@pytest.fixture
def aks_job(aks) -> dict[str, Any]:
    aks["ml-deploy:batch"] = [{"name": "nightly", "image": "diabetes", "target": "aks", "cluster": "prod",
                               "max_concurrency": 3, "storage_size": "20Gi"}]
    return aks


def test_an_aks_job_gets_an_azure_files_volume_and_the_registry_image(aks_job, run):
    rec = run(aks_job)
    claim = rec.by_name(PVC, "nightly-batch-data")
    assert claim.inputs["spec"] == {"accessModes": ["ReadWriteMany"], "storageClassName": "azurefile-csi",
                                    "resources": {"requests": {"storage": "20Gi"}}}
    # In the namespace the AKS cluster `prod` registers (shared with its services), not another cluster's.
    assert claim.inputs["metadata"]["namespace"] == "ml-deploy"
    assert rec.by_name("kubernetes:core/v1:Namespace", "prod-ns-ml-deploy")
    job = rec.outputs["batch"]["nightly"]
    assert job["target"] == "aks" and job["claim"] == "nightly-batch" and job["settings"]["max_concurrency"] == 3
    # The workspace registry's image by digest; the kubelet identity pulls it (AcrPull), so no secret.
    assert job["image_ref"] == rec.outputs["images"]["diabetes"] and "@sha256:" in job["image_ref"]
    assert job["pull_secrets"] == [] and job["cluster"]


def test_an_aks_job_keeps_the_storage_class_it_names(aks_job, run):
    aks_job["ml-deploy:batch"][0]["storage_class"] = "azurefile-csi-premium"
    claim = run(aks_job).by_name(PVC, "nightly-batch-data")
    assert claim.inputs["spec"]["storageClassName"] == "azurefile-csi-premium"


def test_an_aks_job_names_an_aks_cluster_of_the_stack(aks_job):
    del aks_job["ml-deploy:batch"][0]["cluster"]
    assert_rejected(aks_job, "batch[0].cluster", "names its cluster (one of aks_clusters)")
    aks_job["ml-deploy:batch"][0]["cluster"] = "team"
    assert_rejected(aks_job, "batch[0].cluster", "no cluster named 'team' in aks_clusters")
    aks_job["ml-deploy:batch"][0].update(cluster="prod", instance_count=2)
    assert_rejected(aks_job, "batch[0].instance_count", "max_concurrency")


def test_the_pods_pass_restricted_and_shard_by_completion_index():
    job = scoring_job("nightly", "0123456789abcdef", "registry.example.com/diabetes@sha256:" + "a" * 64, "nightly-batch",
                      ["ml-deploy-pull"], SETTINGS, "/data/nightly/0123456789abcdef/in/rows.csv",
                      "/data/nightly/0123456789abcdef/in")
    stage = stager_pod("nightly", "0123456789abcdef", "registry.example.com/diabetes@sha256:" + "a" * 64,
                       "nightly-batch", [])
    for manifest in (job, stage):
        manifest["metadata"]["namespace"] = "ml-deploy"
    assert refusals([json.loads(json.dumps({k: v for k, v in m.items()}, default=str)) for m in (job, stage)]) == []
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 2, 2)
    command = spec["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--shard") + 1] == "$(JOB_COMPLETION_INDEX)/2" and "--parts-only" in command
    assert command[command.index("--input-format") + 1] == "json_rows"


def test_shards_kept_side_by_side_assemble_what_one_run_writes(app, tmp_path):
    """Two `--shard I/2 --parts-only` runs over one parts folder (the Job's pods on its volume), then
    `assemble` (what `batch run` does once they are done): byte for byte the single run's output."""
    rows_csv(tmp_path / "rows.csv", 1_050)
    common = ["--input", str(tmp_path / "rows.csv"), "--input-format", "json_rows", "--mini-batch-size", "100"]
    single = drive(app, *common, "--output", str(tmp_path / "single"))
    assert single.returncode == 0, single.stderr
    for shard in ("0/2", "1/2"):
        done = drive(app, *common, "--output", str(tmp_path / "shared"), "--shard", shard, "--parts-only")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["batches"] == 11
    parts = tmp_path / "shared" / driver.PARTS
    assert sorted(driver.kept(parts)) == list(range(11))
    driver.assemble(parts, tmp_path / "shared", "predictions.csv", "append_row", int((parts / "batches").read_text()))
    assert (tmp_path / "shared" / "predictions.csv").read_bytes() == (tmp_path / "single" / "predictions.csv").read_bytes()


def test_a_shard_without_parts_only_is_refused(app, tmp_path):
    rows_csv(tmp_path / "rows.csv", 10)
    done = drive(app, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / "o"), "--shard", "0/2")
    assert done.returncode == 2 and "--parts-only" in done.stderr


def test_file_sources_are_written_relative_to_the_source_root(app, tmp_path):
    (app / "score.py").write_text("def init():\n    pass\n\ndef run(mini_batch):\n    return [len(open(p).read()) for p in mini_batch]\n")
    docs = tmp_path / "staged" / "in" / "docs"
    docs.mkdir(parents=True)
    for i in range(3):
        (docs / f"{i}.txt").write_text("x" * i)
    done = drive(app, "--input", str(docs), "--output", str(tmp_path / "out"), "--source-root", str(docs.parent))
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert lines == ["source,result", "docs/0.txt,0", "docs/1.txt,1", "docs/2.txt,2"]
