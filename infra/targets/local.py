"""`target: local`: the scoring runtime as a process on 127.0.0.1, over the image's bundle.

Runs on a workspace of kind `local` (a folder), through the real Pulumi engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from components.local import LocalImage, LocalService, LocalServiceArgs, PromotedBundle
from infra.config import ServiceBase, TlsSettings
from infra.targets import DeployContext, Deployed, MockResource, Target, register


class LocalServiceConfig(ServiceBase, TlsSettings):
    """A service on this machine (`target: local`): the scoring runtime as a process on 127.0.0.1."""

    target: Literal["local"]
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port when the service is created and keeps it."""
    workers: int = Field(default=1, ge=1, le=64)


def deploy(ctx: DeployContext, svc: LocalServiceConfig) -> Deployed:
    image = ctx.images[svc.image]
    assert isinstance(image, (LocalImage, PromotedBundle)), "a local workspace runs local bundles"
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
            tls_cert_file=str(svc.ssl_cert_pem_file) if svc.ssl_enabled and svc.ssl_cert_pem_file else None,
            tls_key_file=str(svc.ssl_key_pem_file) if svc.ssl_enabled and svc.ssl_key_pem_file else None,
        ),
    )
    return Deployed(service, {"kind": "file", "path": service.log_path})


def _folder(r: MockResource) -> None:
    # The content-addressed folders of providers/local.py: the path follows from the address, as the
    # providers compute it, so a new tag or version shows as a new path for what runs from it.
    state = r.state
    if {"registry", "model", "version"} <= set(state):
        state["path"] = str(Path(state["registry"]) / state["model"] / state["version"])
    elif {"store", "image", "tag"} <= set(state):
        state["path"] = str(Path(state["store"]) / state["image"] / state["tag"])


TARGET = register(Target(
    name="local",
    config=LocalServiceConfig,
    deploy=deploy,
    workspace_kinds=("local",),
    mock_resources={"pulumi-python:dynamic:Resource": _folder},
))
