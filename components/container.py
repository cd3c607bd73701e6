"""A model web service as a container on this machine: the pushed scoring image run by a Docker
engine with host networking, on its own port of 127.0.0.1 (the `container` target).

The create/read/update/delete behind it lives in `providers/container.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components import TOKEN_PREFIX
from providers.container import ScoringContainer
from serving import settings as runtime


@dataclass(frozen=True)
class ContainerServiceArgs:
    """Inputs of a ContainerService."""

    image_ref: pulumi.Input[str]
    """The pushed image, by digest."""
    docker_host: str = ""
    """The engine that runs it (`unix:///...`); empty: `$DOCKER_HOST` or Docker's default socket."""
    port: int = 0
    """0 picks a free port at create time and keeps it across updates."""
    workers: int = 1
    auth_enabled: bool = False
    scoring_timeout_ms: int = runtime.DEFAULT_TIMEOUT_MS


class ContainerService(pulumi.ComponentResource):
    """The scoring image as a container on 127.0.0.1, replaced by a new container (same port, same
    keys) when the image or its settings change."""

    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    """The auth key (secret); empty when auth is off."""
    secondary_key: pulumi.Output[str]
    """The second accepted key, for rotation (secret); empty when auth is off."""
    container: pulumi.Output[str]
    """The running container's name."""

    def __init__(self, name: str, args: ContainerServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:ContainerService", name, None, opts)
        container = ScoringContainer(
            f"{name}-container",
            {"service": name, "image": args.image_ref, "docker_host": args.docker_host, "port": args.port,
             "workers": args.workers, "auth_enabled": args.auth_enabled, "timeout_ms": args.scoring_timeout_ms},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["primary_key", "secondary_key"]),
        )
        self.scoring_uri = container.scoring_uri
        self.swagger_uri = container.swagger_uri
        self.primary_key = pulumi.Output.secret(container.primary_key)
        self.secondary_key = pulumi.Output.secret(container.secondary_key)
        self.container = container.container
        self.register_outputs({
            "scoring_uri": self.scoring_uri, "swagger_uri": self.swagger_uri,
            "primary_key": self.primary_key, "secondary_key": self.secondary_key,
        })
