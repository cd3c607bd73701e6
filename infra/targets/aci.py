"""`target: aci`: a service on Azure Container Instances, for quick dev/test deployments."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from components.aci_service import AciService, AciServiceArgs
from components.naming import Kind, azure_name
from infra.deploy import DeployContext, Deployed, MockResource
from infra.schema import ServiceBase, TlsSettings
from infra.targets import Target, register
from serving import settings as runtime


class AciServiceConfig(ServiceBase, TlsSettings):
    """A service on Azure Container Instances (`target: aci`), with the Azure ML SDK's defaults."""

    target: Literal["aci"]
    # Azure ML's AciWebservice.deploy_configuration defaults: 0.1 cores, 0.5 GB. One ACI container
    # gets at most 4 cores and 16 GB in most regions (learn.microsoft.com/azure/container-instances/container-instances-resource-and-quota-limits).
    cpu_cores: float = Field(default=0.1, gt=0, le=4)
    memory_gb: float = Field(default=0.5, gt=0, le=16)
    dns_name_label: Optional[str] = Field(default=None, pattern=r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
    location: Optional[str] = None
    """Region of the container group; the workspace's region when unset."""


def deploy(ctx: DeployContext, svc: AciServiceConfig) -> Deployed:
    workspace = ctx.azure()
    registry = ctx.registry()
    base = ctx.cfg.workspace.name
    group_name = azure_name(Kind.CONTAINER_GROUP, base, ctx.stack, svc.name)
    aci = AciService(
        svc.name,
        AciServiceArgs(
            container_group_name=group_name,
            dns_name_label=svc.dns_name_label or azure_name(Kind.DNS_LABEL, svc.name, base, ctx.stack),
            image_ref=ctx.images[svc.image].image_ref,
            resource_group_name=workspace.resource_group_name,
            registry_login_server=registry.login_server,
            registry_id=registry.id,
            subscription_id=registry.subscription_id,
            settings=runtime.Settings(
                workers=runtime.workers_for_cores(svc.cpu_cores), timeout_ms=svc.scoring_timeout_ms,
                service_name=svc.name,
            ),
            cpu_cores=svc.cpu_cores,
            memory_gb=svc.memory_gb,
            auth_enabled=svc.auth_enabled,
            app_insights_connection_string=(
                workspace.app_insights_connection_string if svc.enable_app_insights else None
            ),
            location=svc.location,
            description=svc.description,
            tags=svc.tags,
            tls=svc.tls_certificate(),
        ),
    )
    logs = {"kind": "aci", "subscription_id": workspace.subscription_id,
            "resource_group": workspace.resource_group_name, "container_group": group_name, "container": "scoring"}
    return Deployed(aci, logs)


def _container_group(r: MockResource) -> None:
    ip = dict(r.state.get("ipAddress") or {})
    location = r.state.get("location") or r.location
    ip["fqdn"] = f"{ip.get('dnsNameLabel', r.name)}.{location}.azurecontainer.io"
    ip["ip"] = "20.0.0.1"
    r.state["ipAddress"] = ip


TARGET = register(Target(
    name="aci",
    config=AciServiceConfig,
    deploy=deploy,
    mock_resources={"azure-native:containerinstance:ContainerGroup": _container_group},
))
