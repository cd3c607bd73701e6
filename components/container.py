"""A model web service as a container on this machine: the pushed scoring image run by a Docker
engine with host networking, on its own port of 127.0.0.1 (the `container` target).

The create/read/update/delete behind it lives in `providers/container.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi

from components import TOKEN_PREFIX
from components.service import ScoringService
from components.runtime import SECRET_OUTPUTS, ServiceRuntime
from providers.container import ScoringContainer


@dataclass(frozen=True)
class ContainerServiceArgs:
    """Inputs of a ContainerService."""

    image_ref: pulumi.Input[str]
    """The pushed image, by digest."""
    runtime: ServiceRuntime
    """The service's runtime: workers, timeout, auth, TLS (the PEMs copied into the container at
    TLS_DIR before it starts, readable by the image's user only, as ACI and Kubernetes mount them)."""
    docker_host: str = ""
    """The engine that runs it (`unix:///...`); empty: `$DOCKER_HOST` or Docker's default socket."""
    port: int = 0
    """0 picks a free port at create time and keeps it across updates."""


class ContainerService(ScoringService):
    """The scoring image as a container on 127.0.0.1, replaced by a new container (same port, same
    keys) when the image or its settings change."""

    container: pulumi.Output[str]
    """The running container's name."""

    def __init__(self, name: str, args: ContainerServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:ContainerService", name, None, opts)
        container = ScoringContainer(
            f"{name}-container",
            {"service": name, "image": args.image_ref, "docker_host": args.docker_host, "port": args.port,
             **args.runtime.process_inputs()},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=SECRET_OUTPUTS),
        )
        self.scoring_uri = container.scoring_uri
        self.swagger_uri = container.swagger_uri
        self.primary_key = pulumi.Output.secret(container.primary_key)
        self.secondary_key = pulumi.Output.secret(container.secondary_key)
        self.container = container.container
        self.register_service_outputs()
