"""Wires the components in the order of the Azure ML workflow and exports what users need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi

from components.aci_service import AciService, AciServiceArgs
from components.aks_cluster import AksCluster, AksClusterArgs
from components.aks_service import AksService, AksServiceArgs, ModelDataCollection
from components.image import ScoringImage, ScoringImageArgs
from components.local import LocalImage, LocalImageArgs, LocalModel, LocalModelArgs, LocalService, LocalServiceArgs
from components.model import BundledModel, RegisteredModel, RegisteredModelArgs
from components.naming import Kind, azure_name
from components.workspace import Workspace, WorkspaceArgs
from infra import config
from infra.config import AciServiceConfig, AksServiceConfig, LocalServiceConfig, ServiceConfig, StackConfig

BUILD_ROOT = Path(".ml-deploy") / "build"
"""Generated image build contexts, relative to the project root."""
RUNTIME_ROOT = config.PROJECT_ROOT / "serving"


def main() -> None:
    """Read the stack config and register the whole graph."""
    cfg = config.load()
    if cfg.workspace.kind == "local":
        main_local(cfg)
    else:
        main_azure(cfg)


def main_local(cfg: StackConfig) -> None:
    """The same workflow on this machine: a folder workspace, local bundles, processes on 127.0.0.1."""
    root = (config.PROJECT_ROOT / cfg.workspace.path).resolve()
    bundled = {m.name: BundledModel.from_path(m.name, m.path) for m in cfg.models}
    models = {
        name: LocalModel(name, LocalModelArgs(registry=str(root / "models"), model=b)) for name, b in bundled.items()
    }
    images: dict[str, LocalImage] = {}
    for im in cfg.images:
        images[im.name] = LocalImage(
            im.name,
            LocalImageArgs(
                store=str(root / "images"),
                execution_script=im.execution_script,
                conda_file=im.conda_file,
                models=[bundled[name] for name in im.models],
                runtime_root=RUNTIME_ROOT,
                base_image=im.base_image,
                depends_on=[models[name] for name in im.models],
            ),
        )
    services: dict[str, dict[str, Any]] = {}
    for svc in cfg.services:
        if not isinstance(svc, LocalServiceConfig):
            continue  # config validation allows only local targets on a local workspace
        image = images[svc.image]
        local = LocalService(
            svc.name,
            LocalServiceArgs(
                bundle_path=image.path,
                model_dir=image.model_dir,
                log_dir=str(root / "logs"),
                port=svc.port,
                workers=svc.workers,
                auth_enabled=svc.auth_enabled,
                scoring_timeout_ms=svc.scoring_timeout_ms,
            ),
        )
        services[svc.name] = _service_outputs(svc, local)
    export(
        {"name": cfg.workspace.name, "path": str(root)},
        {name: {"version": m.version, "uri": m.path} for name, m in models.items()},
        {name: im.image_ref for name, im in images.items()},
        services,
    )


def main_azure(cfg: StackConfig) -> None:
    """The Azure ML workflow: workspace, registered models, images in the registry, web services."""
    stack = pulumi.get_stack()
    ws_cfg = cfg.workspace

    workspace = Workspace(
        ws_cfg.name, WorkspaceArgs(base_name=ws_cfg.name, stack=stack, protect=ws_cfg.protect, sku=ws_cfg.sku)
    )

    contents = {m.name: BundledModel.from_path(m.name, m.path) for m in cfg.models}
    models: dict[str, RegisteredModel] = {}
    for m in cfg.models:
        models[m.name] = RegisteredModel(
            m.name,
            RegisteredModelArgs(
                content=contents[m.name],
                resource_group_name=workspace.resource_group_name,
                workspace_name=workspace.workspace_name,
                storage_account_name=workspace.storage_account_name,
                models_container_name=workspace.models_container_name,
                blob_endpoint=workspace.blob_endpoint,
                description=m.description,
                tags=m.tags,
                protect=ws_cfg.protect,
            ),
        )

    images: dict[str, ScoringImage] = {}
    for im in cfg.images:
        images[im.name] = ScoringImage(
            im.name,
            ScoringImageArgs(
                execution_script=im.execution_script,
                conda_file=im.conda_file,
                models=[contents[name] for name in im.models],
                registry_login_server=workspace.registry_login_server,
                runtime_root=RUNTIME_ROOT,
                build_root=BUILD_ROOT,
                base_image=im.base_image,
            ),
        )

    clusters: dict[str, AksCluster] = {}
    for c in cfg.aks_clusters:
        clusters[c.name] = AksCluster(
            c.name,
            AksClusterArgs(
                cluster_name=c.attach.cluster_name if c.attach else azure_name(Kind.AKS_CLUSTER, ws_cfg.name, stack, c.name),
                resource_group_name=workspace.resource_group_name,
                registry_id=workspace.registry_id,
                subscription_id=workspace.subscription_id,
                log_analytics_workspace_id=workspace.log_analytics_workspace_id,
                agent_count=c.agent_count,
                vm_size=c.vm_size,
                cluster_purpose=c.cluster_purpose,
                protect=ws_cfg.protect,
                attach_resource_group=c.attach.resource_group if c.attach else None,
            ),
        )

    services: dict[str, dict[str, Any]] = {}
    for svc in cfg.services:
        image = images[svc.image]
        if isinstance(svc, AksServiceConfig):
            cluster = clusters[svc.cluster]
            namespace = cluster.namespace(svc.namespace)
            aks = AksService(
                svc.name,
                AksServiceArgs(
                    namespace=namespace.metadata.name,
                    image_ref=image.image_ref,
                    provider=cluster.provider,
                    cpu_cores=svc.cpu_cores,
                    memory_gb=svc.memory_gb,
                    gpu_cores=svc.gpu_cores,
                    autoscale=svc.autoscale,
                    autoscale_min_replicas=svc.autoscale_min_replicas,
                    autoscale_max_replicas=svc.autoscale_max_replicas,
                    autoscale_target_utilization=svc.autoscale_target_utilization,
                    num_replicas=svc.num_replicas,
                    auth_enabled=svc.auth_enabled,
                    primary_key=pulumi.Output.secret(svc.primary_key) if svc.primary_key else None,
                    secondary_key=pulumi.Output.secret(svc.secondary_key) if svc.secondary_key else None,
                    app_insights_connection_string=(
                        workspace.app_insights_connection_string if svc.enable_app_insights else None
                    ),
                    scoring_timeout_ms=svc.scoring_timeout_ms,
                    replica_max_concurrent_requests=svc.replica_max_concurrent_requests,
                    period_seconds=svc.period_seconds,
                    initial_delay_seconds=svc.initial_delay_seconds,
                    timeout_seconds=svc.timeout_seconds,
                    success_threshold=svc.success_threshold,
                    failure_threshold=svc.failure_threshold,
                    collection=ModelDataCollection(
                        resource_group_name=workspace.resource_group_name,
                        subscription_id=workspace.subscription_id,
                        storage_account_id=workspace.storage_account_id,
                        blob_endpoint=workspace.blob_endpoint,
                        container_name=workspace.model_data_container_name,
                        oidc_issuer_url=cluster.oidc_issuer_url,
                    ) if svc.collect_model_data else None,
                ),
            )
            services[svc.name] = _service_outputs(svc, aks)
        elif isinstance(svc, AciServiceConfig):
            aci = AciService(
                svc.name,
                AciServiceArgs(
                    container_group_name=azure_name(Kind.CONTAINER_GROUP, ws_cfg.name, stack, svc.name),
                    dns_name_label=svc.dns_name_label
                    or azure_name(Kind.DNS_LABEL, svc.name, ws_cfg.name, stack),
                    image_ref=image.image_ref,
                    resource_group_name=workspace.resource_group_name,
                    registry_login_server=workspace.registry_login_server,
                    registry_id=workspace.registry_id,
                    subscription_id=workspace.subscription_id,
                    cpu_cores=svc.cpu_cores,
                    memory_gb=svc.memory_gb,
                    auth_enabled=svc.auth_enabled,
                    app_insights_connection_string=(
                        workspace.app_insights_connection_string if svc.enable_app_insights else None
                    ),
                    scoring_timeout_ms=svc.scoring_timeout_ms,
                    location=svc.location,
                ),
            )
            services[svc.name] = _service_outputs(svc, aci)

    export(
        {
            "name": workspace.workspace_name,
            "resource_group": workspace.resource_group_name,
            "registry": workspace.registry_login_server,
        },
        {name: {"version": m.version, "uri": m.model_uri} for name, m in models.items()},
        {name: im.image_ref for name, im in images.items()},
        services,
    )


def _service_outputs(svc: ServiceConfig, deployed: AciService | AksService | LocalService) -> dict[str, Any]:
    """What a caller needs of a service: where it answers and its keys (secrets)."""
    outputs: dict[str, Any] = {
        "target": svc.target,
        "image": svc.image,
        "scoring_uri": deployed.scoring_uri,
        "swagger_uri": deployed.swagger_uri,
        "primary_key": deployed.primary_key,
    }
    if isinstance(deployed, (AciService, AksService)):
        outputs["secondary_key"] = deployed.secondary_key
    return outputs


def export(
    workspace: dict[str, Any],
    models: dict[str, dict[str, Any]],
    images: dict[str, pulumi.Output[str]],
    services: dict[str, dict[str, Any]],
) -> None:
    """Stack outputs, the same shape on every target: where the workspace is, what was registered
    and built, and how to call each service. A plain dict per service, not one Output, keeps
    secrecy on the keys alone."""
    pulumi.export("workspace", workspace)
    pulumi.export("models", models)
    pulumi.export("images", images)
    pulumi.export("services", services)
