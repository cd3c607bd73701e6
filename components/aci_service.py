"""A model web service on Azure Container Instances: quick dev/test deployments."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional

import pulumi
from pulumi_azure_native import authorization, containerinstance, managedidentity

from components import TOKEN_PREFIX
from components.roles import ACR_PULL, role_definition_id
from components.runtime import ServiceRuntime
from components.service import TLS_CERT_NAME, TLS_DIR, TLS_KEY_NAME, ProbeTimings, ScoringService, azure_tags
from serving import settings as runtime

ACI_PORT = 80
"""ACI cannot map ports, so the runtime listens on 80: the port Azure ML's ACI services use."""
ACI_TLS_PORT = 443
"""With TLS the runtime listens on 443, where Azure ML's TLS-enabled services answer
(learn.microsoft.com/azure/machine-learning/v1/how-to-secure-web-service)."""
# ACI services have no probe settings in Azure ML's SDK: a container is live once the process
# answers (after a short grace for start-up) and ready once init() has finished.
LIVENESS = ProbeTimings(initial_delay_seconds=30)
ACI_REPLACE_ON_CHANGES = ["osType", "restartPolicy", "containers[*].resources", "location"]
"""The container group inputs Azure cannot update in place (see the group's options). `location`:
ARM keeps a tracked resource's region for life (RPC-Put-V1-14), though the container group's REST
spec leaves it updatable, so azure-native would plan an update that Azure refuses."""
READINESS = ProbeTimings(initial_delay_seconds=5)


@dataclass(frozen=True)
class AciServiceArgs:
    """Inputs of an AciService."""

    container_group_name: str
    dns_name_label: str
    image_ref: pulumi.Input[str]
    """The scoring image to run."""
    resource_group_name: pulumi.Input[str]
    registry_login_server: pulumi.Input[str]
    registry_id: pulumi.Input[str]
    """The registry the identity gets AcrPull on."""
    subscription_id: pulumi.Input[str]
    runtime: ServiceRuntime
    """The service's runtime: workers, limits, keys, App Insights; with TLS it serves HTTPS on 443
    (the certificate in a secret volume) instead of HTTP on 80."""
    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    location: pulumi.Input[str] | None = None
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    """Azure tags on the container group and its identity."""


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class AciService(ScoringService):
    """A container group running a scoring image, pulled with a managed identity that holds AcrPull."""


    def __init__(self, name: str, args: AciServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:AciService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = azure_tags(args.description, args.tags)

        identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=f"{args.container_group_name}-pull",
            resource_group_name=args.resource_group_name,
            location=args.location,
            tags=tags or None,
            # A new location replaces the identity (location is create-only) under the same name in
            # the same resource group, which Azure refuses while the old one exists: delete first.
            # Only the group uses it, and the group is itself deleted first on a move.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),
        )
        pull = authorization.RoleAssignment(
            f"{name}-acrpull",
            principal_id=identity.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=role_definition_id(args.subscription_id, ACR_PULL),
            scope=args.registry_id,
            opts=child,
        )

        tls = args.runtime.tls
        port = ACI_TLS_PORT if tls else ACI_PORT
        env = [containerinstance.EnvironmentVariableArgs(name=k, value=v)
               for k, v in args.runtime.container_settings(port).environ().items()]
        self.primary_key, self.secondary_key = args.runtime.keys(name, self)
        env += [containerinstance.EnvironmentVariableArgs(name=k, secure_value=v)
                for k, v in args.runtime.secret_environ(self.primary_key, self.secondary_key).items()]

        def probe(path: str, timings: ProbeTimings) -> containerinstance.ContainerProbeArgs:
            return containerinstance.ContainerProbeArgs(
                http_get=containerinstance.ContainerHttpGetArgs(
                    path=path, port=port, scheme="https" if tls else "http"),
                initial_delay_seconds=timings.initial_delay_seconds,
                period_seconds=timings.period_seconds,
                timeout_seconds=timings.timeout_seconds,
                success_threshold=timings.success_threshold,
                failure_threshold=timings.failure_threshold,
            )

        group = containerinstance.ContainerGroup(
            f"{name}-group",
            container_group_name=args.container_group_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            os_type=containerinstance.OperatingSystemTypes.LINUX,
            tags=tags or None,
            restart_policy=containerinstance.ContainerGroupRestartPolicy.ALWAYS,
            identity=containerinstance.ContainerGroupIdentityArgs(
                type=containerinstance.ResourceIdentityType.USER_ASSIGNED,
                user_assigned_identities=[identity.id],
            ),
            image_registry_credentials=[
                containerinstance.ImageRegistryCredentialArgs(
                    server=args.registry_login_server, identity=identity.id
                )
            ],
            containers=[
                containerinstance.ContainerArgs(
                    name="scoring",
                    image=args.image_ref,
                    resources=containerinstance.ResourceRequirementsArgs(
                        requests=containerinstance.ResourceRequestsArgs(
                            cpu=args.cpu_cores, memory_in_gb=args.memory_gb
                        )
                    ),
                    ports=[containerinstance.ContainerPortArgs(port=port, protocol="TCP")],
                    environment_variables=env,
                    volume_mounts=[containerinstance.VolumeMountArgs(
                        name="tls", mount_path=TLS_DIR, read_only=True)] if tls else None,
                    # Liveness: the process answers. Readiness: init() has finished.
                    liveness_probe=probe(runtime.LIVENESS_PATH, LIVENESS),
                    readiness_probe=probe(runtime.READINESS_PATH, READINESS),
                )
            ],
            ip_address=containerinstance.IpAddressArgs(
                type=containerinstance.ContainerGroupIpAddressType.PUBLIC,
                dns_name_label=args.dns_name_label,
                ports=[containerinstance.PortArgs(port=port, protocol="TCP")],
            ),
            # ACI's secret volumes take base64 file contents and keep them out of the group's view.
            volumes=[containerinstance.VolumeArgs(name="tls", secret={
                TLS_CERT_NAME: tls.cert_pem.apply(_base64), TLS_KEY_NAME: tls.key_pem.apply(_base64),
            })] if tls else None,
            # The pull identity must hold AcrPull before the first pull, or the create fails.
            # Azure refuses to update a group's OS type, CPU/memory/GPU resources or restart policy in
            # place: the group must be deleted first (MicrosoftDocs/azure-docs container-instances/
            # container-instances-update.md). azure-native plans those as in-place updates (no
            # force-new on them), so they are replaced here, deleting first since the name is fixed.
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[pull],
                replace_on_changes=ACI_REPLACE_ON_CHANGES, delete_before_replace=True,
            ),
        )
        if tls and tls.cname:
            base: pulumi.Output[str] = pulumi.Output.from_input(f"https://{tls.cname}")
        else:
            scheme = "https" if tls else "http"
            base = group.ip_address.apply(lambda ip: f"{scheme}://{ip.fqdn if ip and ip.fqdn else ''}:{port}")
        self.scoring_uri = pulumi.Output.concat(base, runtime.SCORE_PATH)
        self.swagger_uri = pulumi.Output.concat(base, runtime.SWAGGER_PATH)
        self.register_service_outputs()
