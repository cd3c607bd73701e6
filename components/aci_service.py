"""A model web service on Azure Container Instances: quick dev/test deployments."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
from pulumi_azure_native import authorization, containerinstance, managedidentity

from components import TOKEN_PREFIX
from components.keys import service_keys
from components.roles import ACR_PULL, role_definition_id
from serving import settings as runtime

ACI_PORT = 80
"""ACI cannot map ports, so the runtime listens on 80: the port Azure ML's ACI services use."""


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
    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    auth_enabled: bool = False
    app_insights_connection_string: pulumi.Input[str] | None = None
    """Wires Application Insights when given (the config's `enable_app_insights`)."""
    scoring_timeout_ms: int = runtime.DEFAULT_TIMEOUT_MS
    location: pulumi.Input[str] | None = None


class AciService(pulumi.ComponentResource):
    """A container group running a scoring image, pulled with a managed identity that holds AcrPull."""

    scoring_uri: pulumi.Output[str]
    """`http://<fqdn>:80/score`."""
    swagger_uri: pulumi.Output[str]
    """`http://<fqdn>:80/swagger.json`."""
    primary_key: pulumi.Output[str]
    """The auth key (secret); empty when auth is off."""
    secondary_key: pulumi.Output[str]
    """The second accepted key, for rotation (secret); empty when auth is off."""

    def __init__(self, name: str, args: AciServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:AciService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        identity = managedidentity.UserAssignedIdentity(
            f"{name}-identity",
            resource_name_=f"{args.container_group_name}-pull",
            resource_group_name=args.resource_group_name,
            location=args.location,
            opts=child,
        )
        pull = authorization.RoleAssignment(
            f"{name}-acrpull",
            principal_id=identity.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=role_definition_id(args.subscription_id, ACR_PULL),
            scope=args.registry_id,
            opts=child,
        )

        env = [
            containerinstance.EnvironmentVariableArgs(name=runtime.PORT, value=str(ACI_PORT)),
            containerinstance.EnvironmentVariableArgs(
                name=runtime.WORKER_COUNT, value=str(max(1, math.floor(args.cpu_cores)))
            ),
            containerinstance.EnvironmentVariableArgs(
                name=runtime.SCORING_TIMEOUT_MS, value=str(args.scoring_timeout_ms)
            ),
        ]
        if args.auth_enabled:
            self.primary_key, self.secondary_key = service_keys(name, self)
            env.append(
                containerinstance.EnvironmentVariableArgs(
                    name=runtime.AUTH_KEYS,
                    secure_value=pulumi.Output.concat(self.primary_key, ",", self.secondary_key),
                )
            )
        else:
            self.primary_key = pulumi.Output.secret("")
            self.secondary_key = pulumi.Output.secret("")
        if args.app_insights_connection_string is not None:
            env.append(
                containerinstance.EnvironmentVariableArgs(
                    name=runtime.APP_INSIGHTS, secure_value=args.app_insights_connection_string
                )
            )

        def probe(path: str, initial_delay: int) -> containerinstance.ContainerProbeArgs:
            return containerinstance.ContainerProbeArgs(
                http_get=containerinstance.ContainerHttpGetArgs(path=path, port=ACI_PORT, scheme="http"),
                initial_delay_seconds=initial_delay,
                period_seconds=10,
                timeout_seconds=2,
                failure_threshold=3,
            )

        group = containerinstance.ContainerGroup(
            f"{name}-group",
            container_group_name=args.container_group_name,
            resource_group_name=args.resource_group_name,
            location=args.location,
            os_type=containerinstance.OperatingSystemTypes.LINUX,
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
                    ports=[containerinstance.ContainerPortArgs(port=ACI_PORT, protocol="TCP")],
                    environment_variables=env,
                    # Liveness: the process answers. Readiness: init() has finished.
                    liveness_probe=probe(runtime.LIVENESS_PATH, initial_delay=30),
                    readiness_probe=probe(runtime.READINESS_PATH, initial_delay=5),
                )
            ],
            ip_address=containerinstance.IpAddressArgs(
                type=containerinstance.ContainerGroupIpAddressType.PUBLIC,
                dns_name_label=args.dns_name_label,
                ports=[containerinstance.PortArgs(port=ACI_PORT, protocol="TCP")],
            ),
            # The pull identity must hold AcrPull before the first pull, or the create fails.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[pull]),
        )
        base = group.ip_address.apply(lambda ip: f"http://{ip.fqdn if ip and ip.fqdn else ''}:{ACI_PORT}")
        self.scoring_uri = pulumi.Output.concat(base, runtime.SCORE_PATH)
        self.swagger_uri = pulumi.Output.concat(base, runtime.SWAGGER_PATH)
        self.register_outputs(
            {"scoring_uri": self.scoring_uri, "swagger_uri": self.swagger_uri, "primary_key": self.primary_key}
        )
