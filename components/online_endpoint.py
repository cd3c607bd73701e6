"""An Azure ML managed online endpoint: the endpoint, one managed deployment per entry (the image we
built, by digest, as an environment version that routes Azure ML's probes and scoring calls to the
scoring runtime), and the traffic split applied after them (providers/endpoint_traffic.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional

import pulumi
import pulumi_azure_native as azure_native
from pulumi_azure_native import machinelearningservices as ml

from components import TOKEN_PREFIX
from components.roles import ACR_PULL, role_definition_id
from components.service import ScoringService, azure_tags
from providers.endpoint_traffic import EndpointTraffic
from serving import settings as runtime


ENDPOINT_TYPE = f"{TOKEN_PREFIX}:OnlineEndpoint"


def iso_seconds(seconds: float) -> str:
    """A duration as ISO 8601 (`PT10S`), as the deployment API takes probe and request timings."""
    millis = round(seconds * 1000)
    return f"PT{millis // 1000}S" if millis % 1000 == 0 else f"PT{millis / 1000:g}S"


@dataclass(frozen=True)
class ProbeSettings:
    """A managed deployment's probe. Defaults are Azure ML's (learn.microsoft.com/azure/machine-learning/
    reference-yaml-deployment-managed-online#probesettings: initial_delay 10, period 10, timeout 2,
    success_threshold 1, failure_threshold 30)."""

    initial_delay_s: int = 10
    period_s: int = 10
    timeout_s: int = 2
    failure_threshold: int = 30

    def args(self) -> ml.ProbeSettingsArgs:
        return ml.ProbeSettingsArgs(initial_delay=iso_seconds(self.initial_delay_s), period=iso_seconds(self.period_s),
                                    timeout=iso_seconds(self.timeout_s), success_threshold=1,
                                    failure_threshold=self.failure_threshold)


@dataclass(frozen=True)
class OnlineDeploymentArgs:
    """One deployment of an endpoint."""

    name: str
    environment_id: pulumi.Input[str]
    """The image's environment version (`scoring_environment`), shared by every deployment of it."""
    instance_type: str
    instance_count: int
    workers: int
    """Runtime workers per instance (one per core of `instance_type`)."""
    timeout_ms: int
    max_concurrent_requests_per_instance: int
    liveness: ProbeSettings
    readiness: ProbeSettings
    app_insights: bool = False


@dataclass(frozen=True)
class EnvironmentArgs:
    """An image as an Azure ML environment version, for the managed deployments that run it."""

    image: str
    """The image's name in `images`: the environment's name."""
    image_ref: pulumi.Input[str]
    """The pushed image by digest (`<registry>/<image>@sha256:...`)."""
    image_tag: str
    """The image's content tag: the environment's version, so a new image is a new version."""
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    tags: dict[str, str] = field(default_factory=dict)
    first_endpoint: Optional[str] = None
    """The first online endpoint (in config order) that deploys the image: until environments were
    the stack's, each endpoint registered its own, as a child named `<endpoint>-<image>-<tag>`. The
    alias keeps that resource (and the Azure object both named) instead of replacing it."""


def scoring_environment(args: EnvironmentArgs) -> ml.EnvironmentVersion:
    """The image's environment version: one per image and content tag in a stack, whatever number of
    endpoints and deployments run it (its Azure name is the image's, so two would be one object)."""
    aliases = []
    if args.first_endpoint is not None:
        endpoint_urn = pulumi.create_urn(args.first_endpoint, ENDPOINT_TYPE)
        aliases.append(pulumi.Alias(name=f"{args.first_endpoint}-{args.image}-{args.image_tag}", parent=endpoint_urn))
    return ml.EnvironmentVersion(
        f"{args.image}-{args.image_tag}",
        name=args.image,
        version=args.image_tag,
        resource_group_name=args.resource_group_name,
        workspace_name=args.workspace_name,
        properties=ml.EnvironmentVersionPropertiesArgs(
            image=args.image_ref,
            os_type="Linux",
            # Azure ML's probes and scoring calls go to the scoring runtime's own routes.
            inference_config=ml.InferenceContainerPropertiesArgs(
                liveness_route=ml.RouteArgs(path=runtime.LIVENESS_PATH, port=runtime.DEFAULT_PORT),
                readiness_route=ml.RouteArgs(path=runtime.READINESS_PATH, port=runtime.DEFAULT_PORT),
                scoring_route=ml.RouteArgs(path=runtime.SCORE_PATH, port=runtime.DEFAULT_PORT),
            ),
            tags=args.tags,
        ),
        opts=pulumi.ResourceOptions(aliases=aliases),
    )


@dataclass(frozen=True)
class OnlineEndpointArgs:
    """Inputs of an OnlineEndpoint."""

    endpoint_name: str
    resource_group_name: pulumi.Input[str]
    workspace_name: pulumi.Input[str]
    auth_mode: str
    """`Key`, `AMLToken` or `AADToken` (azure-native's EndpointAuthMode)."""
    deployments: list[OnlineDeploymentArgs]
    traffic: dict[str, int]
    mirror: dict[str, int] = field(default_factory=dict)
    registry_id: Optional[pulumi.Input[str]] = None
    """A registry other than the workspace's to pull from (a promoted stack's source): the endpoint's
    identity gets AcrPull on it. The workspace's own registry needs no grant (Azure ML grants it)."""
    subscription_id: Optional[pulumi.Input[str]] = None
    public_network_access: str = "Enabled"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    protect: bool = False


class OnlineEndpoint(ScoringService):
    """A managed online endpoint with its deployments and their split."""

    endpoint_id: pulumi.Output[str]
    deployment_ids: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: OnlineEndpointArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(ENDPOINT_TYPE, name, None, opts)
        tags = azure_tags(args.description, args.tags)
        child = pulumi.ResourceOptions(parent=self)
        properties = ml.OnlineEndpointPropertiesArgs(
            auth_mode=args.auth_mode, description=args.description or None,
            public_network_access=args.public_network_access,
        )
        endpoint = ml.OnlineEndpoint(
            name,
            endpoint_name=args.endpoint_name,
            resource_group_name=args.resource_group_name,
            workspace_name=args.workspace_name,
            # The endpoint's own identity pulls images and reads models: no keys or passwords.
            identity=ml.ManagedServiceIdentityArgs(type="SystemAssigned"),
            properties=properties,
            tags=tags,
            # The split is EndpointTraffic's (below), set after the deployments exist.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect,
                                        ignore_changes=["properties.traffic", "properties.mirrorTraffic"]),
        )
        self.endpoint_id = endpoint.id
        grants: list[pulumi.Resource] = []
        if args.registry_id is not None and args.subscription_id is not None:
            principal = endpoint.identity.apply(lambda i: i.principal_id if i else "")
            grants.append(azure_native.authorization.RoleAssignment(
                f"{name}-acr-pull",
                principal_id=principal,
                principal_type="ServicePrincipal",
                role_definition_id=role_definition_id(args.subscription_id, ACR_PULL),
                scope=args.registry_id,
                opts=child,
            ))
        deployments: list[ml.OnlineDeployment] = []
        self.deployment_ids = {}
        for d in args.deployments:
            settings = runtime.Settings(port=runtime.DEFAULT_PORT, workers=d.workers, timeout_ms=d.timeout_ms,
                                        max_concurrent_requests=d.max_concurrent_requests_per_instance,
                                        service_name=name)
            deployment = ml.OnlineDeployment(
                f"{name}-{d.name}",
                deployment_name=d.name,
                endpoint_name=endpoint.name,
                resource_group_name=args.resource_group_name,
                workspace_name=args.workspace_name,
                properties=ml.ManagedOnlineDeploymentArgs(
                    endpoint_compute_type="Managed",
                    environment_id=d.environment_id,
                    instance_type=d.instance_type,
                    # Auth is the endpoint's (auth_mode); the container answers what reaches it.
                    environment_variables=settings.environ(),
                    liveness_probe=d.liveness.args(),
                    readiness_probe=d.readiness.args(),
                    request_settings=ml.OnlineRequestSettingsArgs(
                        request_timeout=iso_seconds(d.timeout_ms / 1000),
                        max_concurrent_requests_per_instance=d.max_concurrent_requests_per_instance,
                    ),
                    app_insights_enabled=d.app_insights,
                    egress_public_network_access="Enabled",
                ),
                # The instance count is the deployment's scale, as azure-ai-ml writes it: `RestSku(name="Default",
                # capacity=self.instance_count)` (Azure/azure-sdk-for-python, sdk/ml/azure-ai-ml, OnlineDeployment).
                sku=ml.SkuArgs(name="Default", capacity=d.instance_count),
                tags=tags,
                opts=pulumi.ResourceOptions(parent=self, depends_on=grants),
            )
            deployments.append(deployment)
            self.deployment_ids[d.name] = deployment.id
        # Re-applied after any change to the endpoint itself: a PUT of the endpoint may carry no split.
        revision = hashlib.sha256(json.dumps(
            [args.auth_mode, args.public_network_access, args.description, tags], sort_keys=True).encode()).hexdigest()[:16]
        self.traffic = EndpointTraffic(
            f"{name}-traffic",
            {"endpoint_id": endpoint.id, "traffic": dict(args.traffic), "mirror": dict(args.mirror),
             "endpoint_revision": revision},
            opts=pulumi.ResourceOptions(parent=self, depends_on=deployments),
        )
        if args.auth_mode == "Key":
            # The endpoint's keys from its list-keys action; token auth has none (clients get tokens).
            keys = ml.list_online_endpoint_keys_output(endpoint_name=endpoint.name,
                                                       resource_group_name=args.resource_group_name,
                                                       workspace_name=args.workspace_name)
            self.primary_key = pulumi.Output.secret(keys.primary_key.apply(lambda k: k or ""))
            self.secondary_key = pulumi.Output.secret(keys.secondary_key.apply(lambda k: k or ""))
        else:
            self.primary_key = self.secondary_key = pulumi.Output.secret("")
        endpoint_props = endpoint.properties
        self.scoring_uri = endpoint_props.apply(lambda p: p.scoring_uri or "")
        self.swagger_uri = endpoint_props.apply(lambda p: p.swagger_uri or "")
        self.register_service_outputs()

