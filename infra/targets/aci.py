"""`target: aci`: a service on Azure Container Instances, for quick dev/test deployments."""

from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping, Optional

from pydantic import Field

from components.aci_service import AciService, AciServiceArgs
from components.naming import Kind, azure_name
from infra.deploy import DeployContext, Deployed, LogOptions, MockResource
from infra.schema import ServiceBase, TlsSettings
from infra.targets import ReplaceRules, SpecRead, Target, register
from policy.endpoints import HTTPS_PORT, Exposure, env_names
from serving import settings as runtime

CONTAINER_GROUP = "azure-native:containerinstance:ContainerGroup"


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
            image_ref=ctx.images[svc.image_name].image_ref,
            resource_group_name=workspace.resource_group_name,
            registry_login_server=registry.login_server,
            registry_id=registry.id,
            subscription_id=registry.subscription_id,
            runtime=ctx.runtime(svc, runtime.workers_for_cores(svc.cpu_cores)),
            cpu_cores=svc.cpu_cores,
            memory_gb=svc.memory_gb,
            location=svc.location,
            description=svc.description,
            tags=svc.tags,
        ),
    )
    logs = {"kind": "aci", "subscription_id": workspace.subscription_id,
            "resource_group": workspace.resource_group_name, "container_group": group_name, "container": "scoring"}
    return Deployed(aci, logs)


def read_logs(source: Mapping[str, Any], options: LogOptions, credential: Any = None, **client_options: Any) -> str:
    """The container's log from Azure's container-logs API (`Containers - List Logs`), with the
    caller's Azure credentials (`az login`, a managed identity, environment variables)."""
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client = ContainerInstanceManagementClient(credential, source["subscription_id"], **client_options)
    logs = client.containers.list_logs(
        source["resource_group"], source["container_group"], source["container"], tail=options.tail
    )
    return logs.content or ""


def public_endpoints(props: Mapping[str, Any]) -> Iterable[Exposure]:
    """A container group with a public IP: its containers must be given `SCORING_AUTH_KEYS`, and its
    ports must include 443 (the runtime's TLS)."""
    ip = props.get("ipAddress") or {}
    if str(ip.get("type", "")).lower() != "public":
        return []
    unauthenticated = None
    if runtime.AUTH_KEYS not in env_names(props.get("containers") or [], "environmentVariables"):
        unauthenticated = (f"public container group without auth: no {runtime.AUTH_KEYS} in its containers "
                           "(set auth_enabled: true on the service)")
    ports = {p.get("port") for p in ip.get("ports") or []}
    plaintext = None
    if HTTPS_PORT not in ports:
        plaintext = f"public container group serves plain HTTP on port(s) {sorted(ports)}; no TLS on {HTTPS_PORT}"
    return [Exposure(unauthenticated, plaintext)]


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
    mock_resources={CONTAINER_GROUP: _container_group},
    logs={"aci": read_logs},
    public_endpoints={CONTAINER_GROUP: public_endpoints},
    replace_rules=ReplaceRules(spec_read={
        CONTAINER_GROUP: SpecRead(
            "2024-05-01-preview", (),
            # specification/containerinstance/.../preview/2024-05-01-preview/containerInstance.json.
            "ContainerGroup is allOf the file's own Resource, whose location has no x-ms-mutability "
            "(only location was read)"),
    }),
))
