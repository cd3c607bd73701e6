"""A scoring image: the bundle of script, conda env, models and runtime, built and pushed to the workspace registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components import TOKEN_PREFIX
from content.bundle import DOCKERFILE, content_tag, scoring_bundle, write_bundle
from content.model import BundledModel


@dataclass(frozen=True)
class ScoringImageArgs:
    """Inputs of a ScoringImage."""

    execution_script: Path
    """The `score.py` with `init()` and `run()`."""
    conda_file: Path
    """The conda environment the script needs."""
    models: list[BundledModel]
    """The registered models copied into the image, in Azure ML's folder layout."""
    registry_login_server: pulumi.Input[str]
    """The workspace registry the image is pushed to."""
    runtime_root: Path
    """The scoring runtime package (`serving/`) copied into the image."""
    build_root: Path
    """Folder for generated build contexts, relative to the project root."""
    base_image: str
    """The image the scoring environment is built on; it must provide conda."""


class ScoringImage(pulumi.ComponentResource):
    """A scoring image tagged by its content: unchanged inputs keep the tag, any changed byte gives a new one."""

    tag: str
    """The content tag (first 16 hex digits of the bundle's SHA-256)."""
    context_dir: Path
    """The generated build context."""
    image_ref: pulumi.Output[str]
    """The full image reference, `<registry>/<image>:<tag>`."""
    repo_digest: pulumi.Output[str]
    """The pushed image's digest reference."""

    def __init__(self, name: str, args: ScoringImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:ScoringImage", name, None, opts)
        sources = scoring_bundle(
            args.execution_script, args.conda_file, args.models, args.runtime_root, args.base_image
        )
        self.tag = content_tag(sources)
        self.context_dir = write_bundle(args.build_root / name / self.tag, sources)

        image = docker.Image(
            f"{name}-image",
            image_name=pulumi.Output.concat(args.registry_login_server, "/", name, ":", self.tag),
            build=docker.DockerBuildArgs(
                context=str(self.context_dir),
                dockerfile=str(self.context_dir / DOCKERFILE),
                platform="linux/amd64",
            ),
            # No username or password: the push uses the registry credentials of whoever runs
            # `pulumi up` (`az acr login`), since the registry's admin user is disabled.
            registry=docker.RegistryArgs(server=args.registry_login_server),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_ref = image.image_name
        self.repo_digest = image.repo_digest
        self.register_outputs({"image_ref": self.image_ref, "tag": self.tag})
