"""Batch jobs on Azure ML batch endpoints (`batch[i].target: batch_endpoint`), registered by the
`online_endpoint` target beside Azure ML's online endpoints (infra/targets/online_endpoint.py): the
config rules and what `pulumi up` registers for a job (components/batch_endpoint.py)."""

from __future__ import annotations

import re
from typing import Any

import pulumi

from components.batch_endpoint import BatchEndpoint, BatchEndpointArgs, ComputeCluster
from components.naming import Kind, azure_name
from content import environment
from infra.deploy import DeployContext, MockResource, environment_version
from infra.schema import BatchComputeConfig, BatchJobConfig, ImageConfig, StackConfig
from infra.vm_sizes import CLOCK, VM_VCPUS, general_lifecycle
from serving.aml_batch import INPUT_FORMAT_ENV, ROWS_PER_CALL_ENV

BATCH_ENDPOINT = "azure-native:machinelearningservices:BatchEndpoint"
NAME = "batch_endpoint"

# "The environment should include the packages azureml-core and azureml-dataset-runtime[fuse], which
# are required by batch endpoints" (learn.microsoft.com/azure/machine-learning/how-to-use-batch-model-deployments).
REQUIRED_PACKAGES = ("azureml-core", "azureml-dataset-runtime")
# Keys only a batch endpoint reads; elsewhere they would be ignored without a word.
ENDPOINT_KEYS = ("compute", "logging_level", "timeout_seconds")
COMPUTE_SHAPE = ("vm_size", "min_instances", "max_instances", "idle_seconds")


def _package(line: str) -> str:
    """A requirement line's package name, normalized as PyPI compares them (PEP 503)."""
    name = re.split(r"[\s\[<>=!~;@]", line.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _environment_problem(path: str, image: ImageConfig, index: int) -> list[str]:
    try:
        lines = environment.load(image.conda_file, image.pip_requirements).requirements
    except environment.UnresolvableEnvironment:
        return []  # the image's own check names that
    missing = [p for p in REQUIRED_PACKAGES if p not in {_package(line) for line in lines}]
    if not missing:
        return []
    key = "pip_requirements" if image.pip_requirements is not None else "conda_file"
    return [f"{path}.image: Azure ML batch deployments run with azureml-core and azureml-dataset-runtime[fuse] "
            f"in the environment; images[{index}].{key} lacks {', '.join(missing)}"]


def _compute_problems(path: str, job: BatchJobConfig) -> list[str]:
    compute = job.compute
    if compute is None:
        return []
    problems: list[str] = []
    if compute.name is not None:
        for key in COMPUTE_SHAPE:
            if key in compute.model_fields_set:
                problems.append(f"{path}.compute.{key}: with compute.name the cluster is an existing one; its "
                                f"{key} is its own")
        return problems
    if compute.vm_size not in VM_VCPUS:
        problems.append(f"{path}.compute.vm_size: unknown VM size {compute.vm_size!r}; add it to infra/vm_sizes.py "
                        "with its vCPU count")
    else:
        error, _warning = general_lifecycle(compute.vm_size, CLOCK.today(), new=True)
        if error:
            problems.append(f"{path}.compute.vm_size: {error}")
    most = compute.max_instances if compute.max_instances is not None else job.instance_count
    if most < job.instance_count:
        problems.append(f"{path}.compute.max_instances: {most} is fewer than the job's instance_count "
                        f"({job.instance_count})")
    if compute.min_instances > most:
        problems.append(f"{path}.compute.min_instances: {compute.min_instances} is more than max_instances ({most})")
    return problems


def check(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    images = {im.name: (j, im) for j, im in enumerate(cfg.images)}
    for i, job in enumerate(cfg.batch):
        path = f"batch[{i}]"
        if job.target != NAME:
            for key in ENDPOINT_KEYS:
                if key in job.model_fields_set:
                    problems.append(f"{path}.{key}: only for target: batch_endpoint (this job's is {job.target!r})")
            continue
        problems += _compute_problems(path, job)
        found = images.get(job.image)
        # A promoted stack's images were built elsewhere: their environments are the source's to check.
        if found is not None and isinstance(found[1], ImageConfig):
            problems += _environment_problem(path, found[1], found[0])
    return problems


def batch(ctx: DeployContext, job: BatchJobConfig) -> dict[str, Any]:
    """The job's endpoint, deployment and compute; what `ml-deploy batch run` invokes and where it
    puts the input (the job's blob container in the workspace storage)."""
    workspace = ctx.azure()
    registry = ctx.registry()
    image = ctx.container_images[job.image]
    stack, ws = ctx.stack, ctx.cfg.workspace.name
    given = job.compute or BatchComputeConfig()
    compute_name = given.name or azure_name(Kind.ML_COMPUTE, job.name, ws, stack)
    compute = None if given.name else ComputeCluster(
        name=compute_name, vm_size=given.vm_size, min_nodes=given.min_instances,
        max_nodes=given.max_instances or job.instance_count, idle_seconds=given.idle_seconds,
    )
    if compute is not None:
        # On every preview and update: a created cluster's size whose series retires later (config
        # validation has refused one already retired or restricted).
        _error, warning = general_lifecycle(compute.vm_size, CLOCK.today(), new=True)
        if warning:
            pulumi.log.warn(f"batch[{ctx.cfg.batch.index(job)}].compute.vm_size: {warning}")
    deployment = azure_name(Kind.ML_DEPLOYMENT, job.image)
    container = azure_name(Kind.BLOB_CONTAINER, "batch", job.name)
    environment_variables = {ROWS_PER_CALL_ENV: str(job.mini_batch_size)}
    if job.input_format:
        environment_variables[INPUT_FORMAT_ENV] = job.input_format
    own_registry = ctx.pull_registry is None
    endpoint = BatchEndpoint(job.name, BatchEndpointArgs(
        endpoint_name=azure_name(Kind.BATCH_ENDPOINT, job.name, ws, stack),
        deployment_name=deployment,
        resource_group_name=workspace.resource_group_name,
        workspace_name=workspace.workspace_name,
        workspace_id=workspace.workspace_id,
        storage_account_name=workspace.storage_account_name,
        blob_endpoint=workspace.blob_endpoint,
        code_container_name=container,
        image=job.image,
        image_ref=image.image_ref,
        image_tag=environment_version(image),
        compute=compute,
        compute_name=compute_name,
        instance_count=job.instance_count,
        mini_batch_size=job.mini_batch_size,
        max_concurrency_per_instance=job.max_concurrency,
        error_threshold=job.error_threshold,
        max_retries=job.retries,
        timeout_seconds=job.timeout_seconds,
        output_action=job.output_action,
        output_file_name=job.output_file_name,
        logging_level=job.logging_level,
        environment_variables=environment_variables,
        registry_id=None if own_registry else registry.id,
        subscription_id=None if own_registry else registry.subscription_id,
        protect=ctx.cfg.workspace.protect,
    ))
    return {"endpoint_id": endpoint.endpoint_id, "scoring_uri": endpoint.scoring_uri,
            "deployment": deployment, "workspace_id": workspace.workspace_id,
            "blob_endpoint": workspace.blob_endpoint, "container": container, "compute": compute_name,
            "image_ref": image.image_ref}


def mock_endpoint(r: MockResource) -> None:
    """What Azure adds to a batch endpoint: its scoring URI (the invoke address)."""
    name = r.state.get("endpointName") or r.name
    location = r.state.get("location") or r.location
    props = dict(r.state.get("properties") or {})
    props["scoringUri"] = f"https://{name}.{location}.inference.ml.azure.com/jobs"
    r.state["properties"] = props
