"""A scoring image as a module on IoT Edge devices: a pull-only registry token for its repository,
the deployment manifest, and the devices (or the hub deployment) that run it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional

import pulumi
from pulumi_azure_native import containerregistry

from components import TOKEN_PREFIX
from components.service import ScoringService
from components.runtime import ServiceRuntime
from content import edge_manifest
from content.bundle import SERVING_PORT
from providers.iot_hub import DeviceContent, EdgeDevice, HubConfiguration
from providers.registry_token import ARM_ENDPOINT, TokenPassword
from serving import settings as runtime

PASSWORD_NAME = "password1"
CONFIGURATION_DIGEST_LEN = 12


def pull_action(repository: str) -> str:
    """The one scope-map action a device needs: read (pull) the image repository's content
    (learn.microsoft.com/azure/container-registry/container-registry-repository-scoped-permissions)."""
    return f"repositories/{repository}/content/read"


REDACTED = "[secret]"
"""What stands for a secret value in a deployment manifest's review copy."""


def configuration_id(module_name: str, content: str) -> str:
    """A hub deployment's id: the module name and a digest of the manifest, so that a new manifest
    is a new deployment (IoT Hub cannot change a deployment's content)."""
    return f"{module_name}-{hashlib.sha256(content.encode()).hexdigest()[:CONFIGURATION_DIGEST_LEN]}"


@dataclass(frozen=True)
class IotEdgeServiceArgs:
    """Inputs of an IotEdgeService."""

    module_name: str
    """The module's name in the manifest (the service name)."""
    hub_host_name: pulumi.Input[str]
    hub_connection_string: pulumi.Input[str]
    """The hub policy's connection string (secret) the dynamic resources sign with."""
    image_ref: pulumi.Input[str]
    """`<registry>/<repository>:<tag>`."""
    repository: str
    """The image's repository in the workspace registry: the only one the token may pull."""
    registry_id: pulumi.Input[str]
    registry_name: pulumi.Input[str]
    registry_login_server: pulumi.Input[str]
    resource_group_name: pulumi.Input[str]
    token_name: str
    """Physical name of the scope map and the token (5-50 letters, digits, `-`, `_`)."""
    runtime: ServiceRuntime
    """The service's runtime (workers, timeout, keys, App Insights); images listen on SERVING_PORT."""
    host_port: int
    """The device port bound to the module."""
    env: dict[str, str] = field(default_factory=dict)
    routes: dict[str, str] = field(default_factory=dict)
    restart_policy: str = "always"
    store_and_forward_ttl_secs: int = edge_manifest.STORE_AND_FORWARD_TTL_SECS
    devices: list[str] = field(default_factory=list)
    """Device identities created for this service, each given the manifest directly."""
    target_condition: Optional[str] = None
    """Or: a hub deployment for every device this condition matches."""
    priority: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    """Labels of the hub deployment."""
    registry_password_days: Optional[int] = None
    """Lifetime of the token's password; replaced on an `up` within 30 days of its expiry."""
    arm_endpoint: str = ARM_ENDPOINT
    config_path: str = ""
    """Where the service is in the stack config (`services[2]`), for errors."""


def scoring_module(
    name: str,
    service_runtime: ServiceRuntime,
    host_port: int,
    env: dict[str, str],
    restart_policy: str = "always",
    where: str = "",
    image: str = "",
    secret_env: Optional[dict[str, str]] = None,
) -> edge_manifest.Module:
    """A service's scoring module as the manifest builder takes it: the runtime's settings (on the
    image's port) and the user's env in the create options, secrets in the module's env."""
    settings = service_runtime.container_settings(SERVING_PORT)
    return edge_manifest.Module(
        name=name,
        image=image,
        container_port=SERVING_PORT,
        host_port=host_port,
        env={**settings.environ(), **env},
        secret_env=secret_env or {},
        restart_policy=restart_policy,
        where=where or name,
    )


class IotEdgeService(ScoringService):
    """A scoring module deployed to IoT Edge devices through an IoT hub.

    The device pulls the image with a registry token that can read that one repository and nothing
    else (never the registry's admin user, never a push right). A new image changes only the
    deployment: device identities, their keys and the token stay.
    """

    manifest: pulumi.Output[str]
    """The deployment manifest as JSON (secret: it holds the token's password)."""
    device_connection_strings: dict[str, pulumi.Output[str]]
    """Each created device's connection string (secret), for `iotedge config mp`."""

    def __init__(self, name: str, args: IotEdgeServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:IotEdgeService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        scope_map = containerregistry.ScopeMap(
            f"{name}-pull",
            scope_map_name=args.token_name,
            registry_name=args.registry_name,
            resource_group_name=args.resource_group_name,
            actions=[pull_action(args.repository)],
            description=f"Pull {args.repository} onto the IoT Edge devices of {args.module_name}",
            opts=child,
        )
        token = containerregistry.Token(
            f"{name}-token",
            token_name=args.token_name,
            registry_name=args.registry_name,
            resource_group_name=args.resource_group_name,
            scope_map_id=scope_map.id,
            status=containerregistry.TokenStatus.ENABLED,
            opts=child,
        )
        password = TokenPassword(
            f"{name}-token-password",
            {
                "registry_id": args.registry_id,
                "token_id": token.id,
                # A re-created token has lost its passwords: a new creation date makes a new one.
                "token_created": token.creation_date,
                "password_name": PASSWORD_NAME,
                "expiry_days": args.registry_password_days,
                "arm_endpoint": args.arm_endpoint,
            },
            opts=child,
        )

        self.primary_key, self.secondary_key = args.runtime.keys(name, self)

        def build(values: list[Any], redact: bool = False) -> str:
            image, server, registry, username, secret, primary, secondary, insights = values
            if redact:
                secret, primary, secondary, insights = (REDACTED if v else v for v in (secret, primary, secondary, insights))
            secret_env: dict[str, str] = {}
            if args.runtime.auth_enabled:
                secret_env[runtime.AUTH_KEYS] = f"{primary},{secondary}"
            if insights:
                secret_env[runtime.APP_INSIGHTS] = insights
            manifest = edge_manifest.deployment(
                [scoring_module(args.module_name, args.runtime, args.host_port, args.env, args.restart_policy,
                                args.config_path, image, secret_env)],
                {registry: edge_manifest.RegistryCredential(server, username, secret)},
                args.routes,
                args.store_and_forward_ttl_secs,
            )
            # The review copy is indented so that a plan diff shows the lines that change.
            return json.dumps(manifest, sort_keys=True, indent=1 if redact else None)

        values = pulumi.Output.all(
            args.image_ref, args.registry_login_server, args.registry_name, password.username, password.password,
            self.primary_key, self.secondary_key, args.runtime.app_insights,
        )
        self.manifest = pulumi.Output.secret(values.apply(build))
        # The same manifest with every secret value replaced (the token's password, the keys, the App
        # Insights connection string): not secret, so a reviewer sees what a deployment changes. The
        # providers ignore it (their diff reads `content`).
        review = pulumi.Output.unsecret(values.apply(lambda v: build(v, redact=True)))
        hub = {"hub": args.hub_host_name, "connection": pulumi.Output.secret(args.hub_connection_string)}

        self.device_connection_strings = {}
        if args.target_condition is None:
            removal = json.dumps(edge_manifest.runtime_only(args.store_and_forward_ttl_secs), sort_keys=True)
            for device_id in args.devices:
                device = EdgeDevice(f"{name}-{device_id}", {**hub, "device_id": device_id}, opts=child)
                DeviceContent(
                    f"{name}-{device_id}-deployment",
                    {**hub, "device_id": device.device_id, "content": self.manifest, "content_review": review,
                     "removal_content": removal},
                    opts=child,
                )
                self.device_connection_strings[device_id] = pulumi.Output.secret(device.connection_string)
        else:
            HubConfiguration(
                f"{name}-deployment",
                {
                    **hub,
                    # A digest of the manifest, not the manifest: nothing secret to keep.
                    "configuration_id": pulumi.Output.unsecret(
                        self.manifest.apply(lambda c: configuration_id(args.module_name, c))),
                    "content": self.manifest,
                    "content_review": review,
                    "target_condition": args.target_condition,
                    "priority": args.priority,
                    "labels": args.labels,
                },
                opts=child,
            )

        base = f"http://localhost:{args.host_port}"
        self.scoring_uri = pulumi.Output.from_input(base + runtime.SCORE_PATH)
        self.swagger_uri = pulumi.Output.from_input(base + runtime.SWAGGER_PATH)
        self.register_service_outputs(devices=self.device_connection_strings)
