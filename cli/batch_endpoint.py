"""`ml-deploy batch run` for a job on an Azure ML batch endpoint (`target: batch_endpoint`): upload the
input to the job's container in the workspace storage, start a job through the endpoint's invoke API
with the stack's deployment, follow it until it ends, and download its output here.

With your Azure credentials (DefaultAzureCredential: `az login`, a managed identity, environment
variables): the upload needs a data role on the workspace storage (Storage Blob Data Contributor), and
the job reads its input with your identity, as batch endpoints do by default.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path
from typing import Any, Callable

import requests

from cli.batch_kubernetes import run_name
from cli.errors import CliError
from providers import arm as azure_arm
from providers.arm import ARM_ENDPOINT, Arm, ArmError
from providers.endpoint_traffic import API_VERSION
from serving import batch as driver

# Invoking a batch endpoint takes a token for Azure ML's data plane, not Resource Manager's
# (Azure/azureml-examples cli/batch-score-rest.sh: `az account get-access-token --resource https://ml.azure.com`).
ML_SCOPE = "https://ml.azure.com/.default"
# Which deployment runs the job: "Add the header azureml-model-deployment to your request"
# (learn.microsoft.com/azure/machine-learning/how-to-access-data-batch-endpoints-jobs).
DEPLOYMENT_HEADER = "azureml-model-deployment"
# Every workspace's default blob datastore (learn.microsoft.com/azure/machine-learning/concept-data:
# "workspaceblobstore"); the job's output goes there and is read back from its container.
DATASTORE = "workspaceblobstore"
# Azure ML's job statuses that end a job (the Jobs REST API's JobStatus).
FINAL = ("Completed", "Failed", "Canceled", "NotResponding")
POLL_S = 10.0
TIMEOUT_S = 60


class EndpointBatchError(CliError):
    """The job could not run on its batch endpoint; the message says why."""


BlobServiceFactory = Callable[[str], Any]
"""Account URL -> an azure.storage.blob BlobServiceClient."""


def default_blob_service(account_url: str) -> Any:
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(account_url, credential=DefaultAzureCredential())


_blob_service: BlobServiceFactory = default_blob_service


def use_blob_service(factory: BlobServiceFactory) -> BlobServiceFactory:
    """Replace how this process reaches blob storage (tests use Azure's emulator); returns the old one."""
    global _blob_service
    previous, _blob_service = _blob_service, factory
    return previous


def _upload(job: dict[str, Any], source: Path, prefix: str, say: Callable[[str], None]) -> str:
    """The input under `prefix` in the job's container (files already there at their size are kept): its URI."""
    container = _blob_service(job["blob_endpoint"]).get_container_client(job["container"])
    there = {b.name: b.size for b in container.list_blobs(name_starts_with=prefix + "/")}
    files = driver.files_under(source) if source.is_dir() else [source]
    sent = 0
    for path in files:
        name = f"{prefix}/{path.relative_to(source).as_posix() if source.is_dir() else path.name}"
        if there.get(name) == path.stat().st_size:
            continue
        with path.open("rb") as data:
            container.upload_blob(name, data, overwrite=True)
        sent += 1
    say(f"batch {job['name']}: input in {job['container']}/{prefix}: {sent} of {len(files)} files uploaded")
    base = f"{job['blob_endpoint']}{job['container']}/{prefix}"
    return base if source.is_dir() else f"{base}/{source.name}"


def _invoke(job: dict[str, Any], input_uri: str, folder: bool, output_path: str) -> str:
    """Start a job of the stack's deployment: its name."""
    body = {"properties": {
        "InputData": {"input": {"JobInputType": "UriFolder" if folder else "UriFile", "Uri": input_uri}},
        "OutputData": {"output": {"JobOutputType": "UriFolder",
                                  "Uri": f"azureml://datastores/{DATASTORE}/paths/{output_path}/"}},
    }}
    headers = {"Authorization": f"Bearer {azure_arm.token(ML_SCOPE)}", DEPLOYMENT_HEADER: job["deployment"]}
    response = requests.post(job["scoring_uri"], json=body, headers=headers, timeout=TIMEOUT_S)
    if response.status_code >= 300:
        raise EndpointBatchError(f"the endpoint refused the job: {response.status_code} {response.text[:300]}")
    answer = response.json()
    name = answer.get("name") or str(answer.get("id") or "").rsplit("/", 1)[-1]
    if not name:
        raise EndpointBatchError(f"the endpoint answered without a job name: {response.text[:300]}")
    return str(name)


def _follow(arm: Arm, job: dict[str, Any], azure_job: str, say: Callable[[str], None]) -> dict[str, Any]:
    """The job's resource once it has ended, its status changes said on the way."""
    last = ""
    while True:
        response = arm.call("GET", f"{job['workspace_id']}/jobs/{azure_job}")
        if response.status_code != 200:
            raise ArmError(response)
        body = response.json()
        status = str((body.get("properties") or {}).get("status") or "Unknown")
        if status != last:
            say(f"batch {job['name']}: Azure ML job {azure_job}: {status}")
            last = status
        if status in FINAL:
            return body
        time.sleep(POLL_S)


def _download(arm: Arm, job: dict[str, Any], output_path: str, output: Path) -> list[str]:
    """The job's output files from the workspace's default datastore into `output`."""
    response = arm.call("GET", f"{job['workspace_id']}/datastores/{DATASTORE}")
    if response.status_code != 200:
        raise ArmError(response)
    store = response.json().get("properties") or {}
    protocol, suffix = store.get("protocol") or "https", store.get("endpoint") or "core.windows.net"
    service = _blob_service(f"{protocol}://{store['accountName']}.blob.{suffix}/")
    container = service.get_container_client(store["containerName"])
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for blob in container.list_blobs(name_starts_with=output_path + "/"):
        target = output / blob.name[len(output_path) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        with partial.open("wb") as f:
            container.download_blob(blob.name).readinto(f)
        partial.replace(target)  # never half-written
        written.append(str(target))
    return written


def run(job: dict[str, Any], name: str, source: Path, output: Path,
        say: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict[str, Any]:
    """Run the job over `source` on its batch endpoint and download its output into `output`: the summary."""
    job = {**job, "name": name}
    run_id = run_name(job, source)
    input_uri = _upload(job, source, f"inputs/{run_id}", say)
    # Each invocation its own output folder: a datastore path is never overwritten.
    output_path = f"ml-deploy/{name}/{run_id}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    azure_job = _invoke(job, input_uri, source.is_dir(), output_path)
    say(f"batch {name}: Azure ML job {azure_job} started on deployment {job['deployment']}")
    arm = Arm(job.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
    try:
        ended = _follow(arm, job, azure_job, say)
    except KeyboardInterrupt:
        say(f"batch {name}: stopped following; Azure ML job {azure_job} keeps running "
            f"(`az ml job cancel --name {azure_job}` stops it)")
        raise
    status = ended["properties"]["status"]
    if status != "Completed":
        error = ((ended["properties"].get("error") or {}).get("message")
                 or "see the job's logs in Azure ML studio")
        raise EndpointBatchError(f"Azure ML job {azure_job} ended {status}: {error}")
    files = _download(arm, job, output_path, output)
    return {"job": name, "azure_job": azure_job, "status": status, "deployment": job["deployment"],
            "input": input_uri, "output": f"azureml://datastores/{DATASTORE}/paths/{output_path}/", "files": files}
