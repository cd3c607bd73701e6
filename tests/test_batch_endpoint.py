"""Batch jobs on Azure ML batch endpoints (`target: batch_endpoint`): what reaches Azure under the
mocks, the config rules, the endpoint's default deployment against a fake Resource Manager, and the
deployment's scoring script (serving/aml_batch.py) running the seed's online score.py on Azure ML's
contract (a list of file paths per mini-batch)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TEMPLATES, assert_rejected, changed

ENDPOINT = "azure-native:machinelearningservices:BatchEndpoint"
DEPLOYMENT = "azure-native:machinelearningservices:BatchDeployment"
COMPUTE = "azure-native:machinelearningservices:Compute"
ENVIRONMENT = "azure-native:machinelearningservices:EnvironmentVersion"
CODE = "azure-native:machinelearningservices:CodeVersion"
DEFAULT = "pulumi-python:dynamic/machinelearningservices:BatchEndpointDefault"
BATCH_PACKAGES = ["azureml-core>=1.60,<2", "azureml-dataset-runtime[fuse]>=1.60,<2"]


def batch_env(folder: Path, extra: list[str]) -> Path:
    """The seed's conda file with `extra` pip lines."""
    import yaml

    data = yaml.safe_load((TEMPLATES / "sklearn" / "env.yml").read_text())
    pip = next(d for d in data["dependencies"] if isinstance(d, dict))
    pip["pip"] += extra
    path = folder / "batch-env.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def endpoint_job(config, tmp_path) -> dict[str, Any]:
    config["ml-deploy:images"][0]["conda_file"] = str(batch_env(tmp_path, BATCH_PACKAGES))
    config["ml-deploy:services"] = []
    config["ml-deploy:batch"] = [{"name": "nightly", "image": "diabetes", "target": "batch_endpoint",
                                  "mini_batch_size": 5, "max_concurrency": 2, "instance_count": 2,
                                  "error_threshold": 10, "retries": 1, "input_format": "json_rows"}]
    return config


def test_the_endpoint_its_deployment_and_cluster_reach_azure_as_azure_expects_them(endpoint_job, run):
    rec = run(endpoint_job)
    endpoint = rec.of_type(ENDPOINT)[0].inputs
    # Batch endpoints take Entra tokens only; the endpoint has its own identity.
    assert endpoint["properties"] == {"authMode": "AADToken"} and endpoint["identity"] == {"type": "SystemAssigned"}
    compute = rec.of_type(COMPUTE)[0].inputs
    assert compute["identity"] == {"type": "SystemAssigned"}
    cluster = compute["properties"]
    assert cluster["computeType"] == "AmlCompute" and cluster["disableLocalAuth"] is True
    assert cluster["properties"]["vmSize"] == "Standard_D4s_v5"
    assert cluster["properties"]["remoteLoginPortPublicAccess"] == "Disabled"
    assert cluster["properties"]["scaleSettings"] == {"minNodeCount": 0, "maxNodeCount": 2,
                                                      "nodeIdleTimeBeforeScaleDown": "PT120S"}
    environment = rec.of_type(ENVIRONMENT)[0].inputs
    assert environment["properties"]["image"] == rec.outputs["images"]["diabetes"] and "@sha256:" in environment["properties"]["image"]
    deployment = rec.of_type(DEPLOYMENT)[0]
    props = deployment.inputs["properties"]
    assert deployment.inputs["deploymentName"] == "diabetes"
    assert props["compute"] == rec.of_type(COMPUTE)[0].id and props["environmentId"] == rec.of_type(ENVIRONMENT)[0].id
    code = rec.of_type(CODE)[0]
    assert props["codeConfiguration"] == {"codeId": code.id, "scoringScript": "ml_deploy_batch.py"}
    assert code.inputs["properties"]["codeUri"].endswith("/batch-nightly/" + code.inputs["version"])
    assert (props["miniBatchSize"], props["maxConcurrencyPerInstance"], props["errorThreshold"]) == (5, 2, 10)
    assert props["retrySettings"] == {"maxRetries": 1, "timeout": "PT30S"}
    assert (props["outputAction"], props["outputFileName"], props["loggingLevel"]) == ("AppendRow", "predictions.csv", "Info")
    assert props["resources"] == {"instanceCount": 2}
    assert props["environmentVariables"] == {"ML_DEPLOY_INPUT_FORMAT": "json_rows", "ML_DEPLOY_ROWS_PER_CALL": "5"}
    # The default deployment is set after the deployment exists, by a resource of its own.
    default = rec.of_type(DEFAULT)[0]
    assert default.inputs["deployment"] == "diabetes" and deployment.urn in default.dependencies
    job = rec.outputs["batch"]["nightly"]
    assert job["target"] == "batch_endpoint" and job["scoring_uri"].endswith("inference.ml.azure.com/jobs")
    assert job["deployment"] == "diabetes" and job["container"] == "batch-nightly"


def test_the_entry_script_uploaded_is_the_one_that_runs_the_images_score_py(endpoint_job, run):
    from components.batch_endpoint import SCORING_SCRIPT_TEXT

    blob = next(r for r in run(endpoint_job).of_type("azure-native:storage:Blob") if r.name.startswith("nightly-code"))
    assert blob.inputs["blobName"].endswith("/ml_deploy_batch.py")
    assert blob.inputs["source"]["stringAsset"] == SCORING_SCRIPT_TEXT
    namespace: dict[str, Any] = {}
    exec(compile(SCORING_SCRIPT_TEXT, "ml_deploy_batch.py", "exec"), namespace)
    from serving import aml_batch

    assert namespace["init"] is aml_batch.init and namespace["run"] is aml_batch.run


def test_a_new_image_updates_only_the_deployment_and_its_environment(endpoint_job, run, tmp_path):
    before = run(endpoint_job)
    script = tmp_path / "score.py"
    script.write_text((TEMPLATES / "sklearn" / "score.py").read_text() + "\n# v2\n")
    endpoint_job["ml-deploy:images"][0]["execution_script"] = str(script)
    after = run(endpoint_job)
    # The environment is create-only: a new image is a new version (another resource), not an update.
    assert {r.name for r in after.of_type(ENVIRONMENT)} != {r.name for r in before.of_type(ENVIRONMENT)}
    kept = [r for r in after.resources if r.type != ENVIRONMENT]
    olds = {r.urn: r.inputs for r in before.resources if r.type != ENVIRONMENT}
    moved = {r.name for r in kept if r.urn in olds and olds[r.urn] != r.inputs}
    assert moved == {"diabetes-image", "nightly-diabetes"}, moved


def test_settings_change_only_the_deployment(endpoint_job, run):
    before = run(endpoint_job)
    endpoint_job["ml-deploy:batch"][0].update(mini_batch_size=50, logging_level="debug", timeout_seconds=90)
    assert changed(before, run(endpoint_job)) == {"nightly-diabetes"}


def test_an_existing_cluster_is_named_not_created(endpoint_job, run):
    endpoint_job["ml-deploy:batch"][0]["compute"] = {"name": "cpu-cluster"}
    rec = run(endpoint_job)
    assert rec.of_type(COMPUTE) == []
    assert rec.of_type(DEPLOYMENT)[0].inputs["properties"]["compute"].endswith("/computes/cpu-cluster")


def test_the_environment_must_carry_azure_mls_batch_packages(config):
    config["ml-deploy:batch"] = [{"name": "nightly", "image": "diabetes", "target": "batch_endpoint"}]
    assert_rejected(config, "batch[0].image", "images[0].conda_file lacks azureml-core, azureml-dataset-runtime")


@pytest.mark.parametrize("compute, path, words", [
    ({"vm_size": "Standard_DS3_v2"}, "batch[0].compute.vm_size", "capacity growth restrictions"),
    ({"vm_size": "Standard_Z9_v9"}, "batch[0].compute.vm_size", "unknown VM size"),
    ({"max_instances": 1}, "batch[0].compute.max_instances", "fewer than the job's instance_count (2)"),
    ({"min_instances": 3, "max_instances": 2}, "batch[0].compute.min_instances", "more than max_instances"),
    ({"name": "cpu-cluster", "vm_size": "Standard_D4s_v5"}, "batch[0].compute.vm_size", "existing one"),
    ({"name": "cpu-2"}, "batch[0].compute.name", "followed later by a letter"),
])
def test_compute_errors_name_their_path(endpoint_job, compute, path, words):
    endpoint_job["ml-deploy:batch"][0]["compute"] = compute
    assert_rejected(endpoint_job, path, words)


def test_endpoint_settings_belong_to_batch_endpoint_jobs(endpoint_job):
    endpoint_job["ml-deploy:batch"][0].update(target="aks", cluster="prod", instance_count=1, logging_level="debug")
    endpoint_job["ml-deploy:aks_clusters"] = [{"name": "prod", "agent_count": 3, "vm_size": "Standard_D4s_v5"}]
    assert_rejected(endpoint_job, "batch[0].logging_level", "only for target: batch_endpoint")


def test_a_batch_endpoint_needs_an_azure_workspace(endpoint_job):
    endpoint_job["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": ".ml-deploy/x", "protect": False}
    endpoint_job["ml-deploy:services"] = []
    assert_rejected(endpoint_job, "batch[0].target", "needs a workspace of kind azure")


# ---- the default deployment, against a fake Resource Manager --------------------------------------

ENDPOINT_ID = ("/subscriptions/0/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/"
               "batchEndpoints/nightly")
BEARER = "batch-token"


class FakeBatchEndpoint:
    def __init__(self) -> None:
        self.body: dict[str, Any] = {"location": "westeurope", "identity": {"type": "SystemAssigned"},
                                     "properties": {"authMode": "AADToken", "provisioningState": "Succeeded",
                                                    "scoringUri": "https://nightly.westeurope.inference.ml.azure.com/jobs"}}
        self.puts: list[dict[str, Any]] = []


def _handler(endpoint: FakeBatchEndpoint):
    from tests.helpers import JsonHandler

    class Handler(JsonHandler):
        def _route(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {BEARER}":
                return self._send(401, {"error": {"code": "AuthenticationFailed"}})
            path = self.path.partition("?")[0]
            if path != ENDPOINT_ID:
                return self._send(404, {"error": {"code": "NotFound"}})
            if self.command == "GET":
                return self._send(200, endpoint.body)
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            endpoint.puts.append(body)
            kept = {k: endpoint.body["properties"][k] for k in ("provisioningState", "scoringUri")}
            endpoint.body = {**body, "properties": {**body["properties"], **kept}}
            return self._send(200, endpoint.body)

        do_GET = do_PUT = _route

    return Handler


@pytest.fixture
def fake_arm(tmp_path, monkeypatch):
    from tests.helpers import fake_arm as arm_server

    endpoint = FakeBatchEndpoint()
    with arm_server(lambda _base: _handler(endpoint), tmp_path, monkeypatch, BEARER) as base:
        yield endpoint, base


def test_the_default_deployment_is_put_onto_the_endpoint_keeping_the_rest(fake_arm):
    from providers.batch_default import BatchDefaultProvider

    endpoint, base = fake_arm
    provider = BatchDefaultProvider()
    props = {"endpoint_id": ENDPOINT_ID, "deployment": "diabetes", "endpoint_revision": "r1", "arm_endpoint": base}
    outs = provider.create(props).outs
    put = endpoint.puts[-1]
    assert put["properties"]["defaults"] == {"deploymentName": "diabetes"} and put["properties"]["authMode"] == "AADToken"
    assert "scoringUri" not in put["properties"] and put["identity"] == {"type": "SystemAssigned"}
    # Someone points the endpoint elsewhere: refresh shows it, and the stack's default differs again.
    endpoint.body["properties"]["defaults"] = {"deploymentName": "other"}
    read = provider.read("", outs).outs
    assert read["deployment"] == "other" and provider.diff("", read, props).changes


# ---- the deployment's scoring script on Azure ML's contract ------------------------------------------

ENTRY = """
import json, sys
from serving import aml_batch
aml_batch.init()
print(aml_batch.run(json.loads(sys.argv[1])).to_json(orient="records"))
"""


@pytest.fixture
def entry(model_files, tmp_path):
    """serving/aml_batch.py in a process of its own, as Azure ML's driver runs it, with the seed's online
    score.py: its results for a mini-batch of files, and its stderr."""
    import subprocess
    import sys

    from tests.helpers import ROOT

    models = tmp_path / "models"
    models.mkdir()
    (models / "diabetes-ridge.pkl").write_bytes(model_files[0].read_bytes())

    def run(files: list[Path], **env: str) -> tuple[list[dict[str, Any]], str]:
        environ = {**os.environ, "PYTHONPATH": str(ROOT), "AZUREML_MODEL_DIR": str(models),
                   "AZUREML_ENTRY_SCRIPT": str(TEMPLATES / "sklearn" / "score.py"), **env}
        done = subprocess.run([sys.executable, "-c", ENTRY, json.dumps([str(f) for f in files])], env=environ,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr

    return run


def test_csv_files_score_in_row_chunks_with_the_online_answers(entry, tmp_path):
    import joblib

    from tests.test_batch import rows_csv

    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    rows = rows_csv(first, 20)
    rows_csv(second, 3)
    out, _ = entry([first, second], ML_DEPLOY_INPUT_FORMAT="json_rows", ML_DEPLOY_ROWS_PER_CALL="7")
    assert list(out[0])[0] == "source"
    assert [r["source"] for r in out] == [f"a.csv:{n}" for n in range(2, 22)] + [f"b.csv:{n}" for n in range(2, 5)]
    # What the seed's run() answers online: the model's predictions for the rows.
    want = joblib.load(tmp_path / "models" / "diabetes-ridge.pkl").predict(rows).tolist()
    assert [r["result"] for r in out[:20]] == pytest.approx(want, rel=1e-12)


def test_a_bad_row_is_left_out_and_logged_with_its_source(entry, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("age,sex,bmi,bp,s1,s2,s3,s4,s5,s6\n" + ",".join(["0.01"] * 10) + "\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("age,sex\nnot-a-number,x\n")
    out, err = entry([good, bad], ML_DEPLOY_INPUT_FORMAT="json_rows")
    assert [r["source"] for r in out] == ["good.csv:2"]
    assert "ml-deploy batch: bad.csv:2:" in err


# ---- `ml-deploy batch run`: upload, invoke, follow, download, against a fake Azure ML and Azurite ------

WORKSPACE_ID = "/subscriptions/0/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
ML_TOKEN = "ml-data-plane-token"
DATASTORE_CONTAINER = "azureml-blobstore-0000"


class FakeAzureMl:
    """A batch endpoint's invoke API and the Jobs and Datastores APIs of its workspace. A job "runs" by
    reading its input from the storage and writing predictions.csv (a line per input row, as
    append_row writes them: no header) where the invoke said its output goes."""

    def __init__(self, conn: str, ends: str = "Completed") -> None:
        self.conn, self.ends = conn, ends
        self.invoked: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.polls = 0

    def run_job(self, body: dict[str, Any]) -> None:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(self.conn)
        uri = body["properties"]["InputData"]["input"]["Uri"]
        container, _, name = uri.split("/devstoreaccount1/", 1)[1].partition("/")
        blobs = service.get_container_client(container)
        names = [name] if body["properties"]["InputData"]["input"]["JobInputType"] == "UriFile" else \
            [b.name for b in blobs.list_blobs(name_starts_with=name + "/")]
        lines = ""
        for blob in names:
            rows = blobs.download_blob(blob).readall().decode().splitlines()[1:]
            lines += "".join(f"{Path(blob).name}:{i + 2},{len(row)}\n" for i, row in enumerate(rows))
        out = body["properties"]["OutputData"]["output"]["Uri"].split("/paths/", 1)[1]
        service.get_container_client(DATASTORE_CONTAINER).upload_blob(f"{out}predictions.csv", lines.encode())


def _azure_ml(fake: FakeAzureMl):
    from tests.helpers import JsonHandler

    class Handler(JsonHandler):
        def _route(self) -> None:
            path = self.path.partition("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            if path == "/nightly/jobs" and self.command == "POST":
                if self.headers.get("Authorization") != f"Bearer {ML_TOKEN}":
                    return self._send(401, {"error": {"code": "InvalidToken"}})
                fake.invoked.append((dict(self.headers), body))
                fake.run_job(body)
                return self._send(200, {"id": f"{WORKSPACE_ID}/jobs/batchjob-1", "name": "batchjob-1"})
            if self.headers.get("Authorization") != f"Bearer {BEARER}":
                return self._send(401, {"error": {"code": "AuthenticationFailed"}})
            if path == f"{WORKSPACE_ID}/jobs/batchjob-1":
                fake.polls += 1
                status = "Running" if fake.polls < 3 else fake.ends
                error = {"message": "2 mini-batches failed: see logs/user/error"} if status == "Failed" else None
                return self._send(200, {"name": "batchjob-1", "properties": {"status": status, "error": error}})
            if path == f"{WORKSPACE_ID}/datastores/workspaceblobstore":
                return self._send(200, {"properties": {"accountName": "devstoreaccount1", "protocol": "https",
                                                       "containerName": DATASTORE_CONTAINER,
                                                       "endpoint": "core.windows.net"}})
            return self._send(404, {"error": {"code": "NotFound"}})

        do_GET = do_POST = _route

    return Handler


@pytest.fixture
def azure_ml(azurite, tmp_path, monkeypatch):
    """(run the CLI's job, the fake): a job output as `pulumi up` exports it, pointing at the fakes."""
    from azure.storage.blob import BlobServiceClient

    from cli import batch_endpoint as cli_batch
    from providers import arm as azure_arm
    from tests.helpers import https_server

    service = BlobServiceClient.from_connection_string(azurite)
    for container in ("batch-nightly", DATASTORE_CONTAINER):
        if not service.get_container_client(container).exists():
            service.create_container(container)
    fake = FakeAzureMl(azurite)
    accounts: list[str] = []
    with https_server(_azure_ml(fake), tmp_path) as (address, ca):
        base = f"https://{address}"
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
        monkeypatch.setattr(cli_batch, "POLL_S", 0.01)
        tokens = azure_arm.use_token_source(lambda scope: {cli_batch.ML_SCOPE: ML_TOKEN,
                                                           f"{base}/.default": BEARER}.get(scope, ""))
        blobs = cli_batch.use_blob_service(lambda url: (accounts.append(url), service)[1])
        job = {"target": "batch_endpoint", "image": "diabetes", "image_ref": "r.azurecr.io/diabetes@sha256:" + "a" * 64,
               "settings": {"mini_batch_size": 5}, "scoring_uri": f"{base}/nightly/jobs", "deployment": "diabetes",
               "workspace_id": WORKSPACE_ID, "blob_endpoint": "http://127.0.0.1:10000/devstoreaccount1/",
               "container": "batch-nightly", "arm_endpoint": base}
        said: list[str] = []
        try:
            yield (lambda source, out: cli_batch.run(job, "nightly", source, out, say=said.append)), fake, accounts, said
        finally:
            azure_arm.use_token_source(tokens)
            cli_batch.use_blob_service(blobs)


def test_batch_run_uploads_invokes_follows_and_downloads(azure_ml, tmp_path):
    from tests.test_batch import rows_csv

    run_job, fake, accounts, _said = azure_ml
    source = tmp_path / "rows.csv"
    rows_csv(source, 12)
    summary = run_job(source, tmp_path / "out")
    headers, body = fake.invoked[0]
    # The stack's deployment, named on the call; the input as the uploaded file; the output in the datastore.
    assert headers["azureml-model-deployment"] == "diabetes"
    assert body["properties"]["InputData"]["input"]["JobInputType"] == "UriFile"
    assert body["properties"]["InputData"]["input"]["Uri"].endswith("/batch-nightly/" + summary["input"].split("/batch-nightly/")[1])
    assert body["properties"]["OutputData"]["output"]["Uri"].startswith("azureml://datastores/workspaceblobstore/paths/ml-deploy/nightly/")
    assert summary["status"] == "Completed" and summary["azure_job"] == "batchjob-1" and fake.polls >= 3
    lines = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert len(lines) == 12 and lines[0].startswith("rows.csv:2,")
    # Uploads go to the workspace storage the stack exported; the output is read from the datastore's account.
    assert accounts == ["http://127.0.0.1:10000/devstoreaccount1/", "https://devstoreaccount1.blob.core.windows.net/"]


def test_a_folder_is_uploaded_once_and_a_failed_job_is_one_line(azure_ml, tmp_path):
    from cli import batch_endpoint as cli_batch

    run_job, fake, _, said = azure_ml
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"part{i}.csv").write_text("a,b\n1,2\n3,4\n")
    summary = run_job(folder, tmp_path / "first")
    assert fake.invoked[-1][1]["properties"]["InputData"]["input"]["JobInputType"] == "UriFolder"
    assert len((tmp_path / "first" / "predictions.csv").read_text().splitlines()) == 6
    assert any(": 3 of 3 files uploaded" in line for line in said)
    # The same input again: nothing to upload; this time the job fails, and says so in one line.
    fake.ends, fake.polls = "Failed", 0
    with pytest.raises(cli_batch.EndpointBatchError, match="batchjob-1 ended Failed: 2 mini-batches failed"):
        run_job(folder, tmp_path / "second")
    assert any(": 0 of 3 files uploaded" in line for line in said)
    assert not (tmp_path / "second" / "predictions.csv").exists() and summary["status"] == "Completed"
