"""`target: local`: the scoring runtime as a process on 127.0.0.1, over the image's bundle.

Runs on a workspace of kind `local` (a folder), through the real Pulumi engine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from components.local import LocalImage, LocalService, LocalServiceArgs
from infra.config import ServiceBase
from infra.targets import DeployContext, Deployed, Target, register


class LocalServiceConfig(ServiceBase):
    """A service on this machine (`target: local`): the scoring runtime as a process on 127.0.0.1."""

    target: Literal["local"]
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port when the service is created and keeps it."""
    workers: int = Field(default=1, ge=1, le=64)


def deploy(ctx: DeployContext, svc: LocalServiceConfig) -> Deployed:
    image = ctx.images[svc.image]
    assert isinstance(image, LocalImage), "a local workspace builds local images"
    service = LocalService(
        svc.name,
        LocalServiceArgs(
            bundle_path=image.path,
            model_dir=image.model_dir,
            log_dir=str(ctx.local() / "logs"),
            port=svc.port,
            workers=svc.workers,
            auth_enabled=svc.auth_enabled,
            scoring_timeout_ms=svc.scoring_timeout_ms,
        ),
    )
    return Deployed(service, {"kind": "file", "path": service.log_path})


TARGET = register(Target(
    name="local",
    config=LocalServiceConfig,
    deploy=deploy,
    workspace_kinds=("local",),
))
