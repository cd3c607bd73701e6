"""A scoring image: the bundle of script, environment, models and runtime, built with BuildKit
(pulumi-docker-build) and pushed to the workspace registry, referenced by its pushed digest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pulumi
import pulumi_docker_build as docker_build

from components import TOKEN_PREFIX
from content.bundle import DOCKERFILE, EnvironmentFile, content_tag, scoring_bundle, write_bundle
from content.model import BundledModel


@dataclass(frozen=True)
class ScoringImageArgs:
    """Inputs of a ScoringImage."""

    execution_script: Path
    """The `score.py` with `init()` and `run()`."""
    environment: EnvironmentFile
    """The conda file or pip requirements the script needs."""
    models: list[BundledModel]
    """The registered models copied into the image, in Azure ML's folder layout."""
    registry_login_server: pulumi.Input[str]
    """The registry the image is pushed to (`<name>.azurecr.io`, `127.0.0.1:5000`)."""
    runtime_root: Path
    """The scoring runtime package (`serving/`) copied into the image."""
    build_root: Path
    """Folder for generated build contexts (absolute: the provider resolves paths on its own)."""
    base_image: str
    """The image the environment is built on: it must provide conda (conda file) or python3 with venv (pip)."""
    network: str = "default"
    """The network of the build's `RUN` steps: `default`, or `host` for an engine without a bridge."""
    docker_host: Optional[str] = None
    """The Docker engine that builds and pushes (`unix:///...`); None: `$DOCKER_HOST` or the default socket."""
    builder: Optional[str] = None
    """A buildx builder by name (a BuildKit daemon: docker-container, kubernetes or remote driver);
    None: the provider finds one or starts a docker-container builder."""


class ScoringImage(pulumi.ComponentResource):
    """A scoring image tagged by its content: unchanged inputs keep the tag (and the image), any
    changed byte gives a new tag, a new digest, and so a new image for every service using it."""

    tag: str
    """The content tag (first 16 hex digits of the bundle's SHA-256)."""
    context_dir: Path
    """The generated build context."""
    tagged_ref: pulumi.Output[str]
    """`<registry>/<image>:<tag>`, the tag pushed."""
    repo_digest: pulumi.Output[str]
    """`<registry>/<image>@sha256:...`: the pushed image by its digest."""
    image_ref: pulumi.Output[str]
    """What services run: the digest reference (`repo_digest`), so a pull can never get other bytes."""

    def __init__(self, name: str, args: ScoringImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:ScoringImage", name, None, opts)
        sources = scoring_bundle(
            args.execution_script, args.environment, args.models, args.runtime_root, args.base_image
        )
        self.tag = content_tag(sources)
        self.context_dir = write_bundle(args.build_root / name / self.tag, sources)
        repository = pulumi.Output.concat(args.registry_login_server, "/", name)
        self.tagged_ref = pulumi.Output.concat(repository, ":", self.tag)

        provider = None
        if args.docker_host is not None:
            provider = docker_build.Provider(
                f"{name}-docker", host=args.docker_host, opts=pulumi.ResourceOptions(parent=self)
            )
        image = docker_build.Image(
            f"{name}-image",
            tags=[self.tagged_ref],
            context=docker_build.BuildContextArgs(location=str(self.context_dir)),
            dockerfile=docker_build.DockerfileArgs(location=str(self.context_dir / DOCKERFILE)),
            platforms=[docker_build.Platform.LINUX_AMD64],
            network=docker_build.NetworkMode(args.network),
            builder=docker_build.BuilderConfigArgs(name=args.builder) if args.builder else None,
            # No credentials here: the push uses the Docker credentials of whoever runs `pulumi up`
            # (`az acr login`), since the workspace registry's admin user is disabled.
            push=True,
            opts=pulumi.ResourceOptions(parent=self, provider=provider),
        )
        self.repo_digest = pulumi.Output.concat(repository, "@", image.digest)
        self.image_ref = self.repo_digest
        self.register_outputs({"image_ref": self.image_ref, "tag": self.tag})
