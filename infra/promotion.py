"""Promotion: a stack that runs the images and model versions another stack built, pinned by digest.

With `ml-deploy:promote_from: staging` a stack builds nothing. `ml-deploy promote` pins what
staging runs into `ml-deploy:promoted` (reviewed in git); the program runs exactly those pins and
reads staging's outputs through a StackReference only for where they live (the registry the
digests are in, the image store the bundles are in), so a new `up` in staging never moves this
stack: only promoting it again does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import pulumi

from components.local import PromotedBundle, PromotedBundleArgs
from content.model import BundledModel
from infra.deploy import PromotedImage, PullRegistry
from infra.schema import DIGEST_REF, PROJECT, PROMOTE_COMMAND, StackConfig

# Self-managed (DIY) backends accept fully qualified stack names only with the organization
# `organization` (pulumi.com/docs/reference/pkg/nodejs/pulumi/pulumi/functions/automation.fullyQualifiedStackName.html).
ORGANIZATION = "organization"
_SUBSCRIPTION = re.compile(r"^/subscriptions/([^/]+)/", re.IGNORECASE)


def reference_name(stack: str) -> str:
    """The fully qualified name a StackReference to `stack` of this project uses."""
    return f"{ORGANIZATION}/{PROJECT}/{stack}"


def command(source: str, stack: str) -> str:
    """The command that pins what `source` runs into `stack`'s config."""
    return PROMOTE_COMMAND.format(source=source, stack=stack)


def model_problems(cfg: StackConfig, contents: Mapping[str, BundledModel], stack: str) -> list[str]:
    """Each model whose files here give another version than the one pinned from the source stack.

    Versions are content digests: the promoted stack registers the very bytes the source stack
    registered, or it would serve a model nobody tested.
    """
    if cfg.promoted is None or cfg.promote_from is None:
        return []
    problems: list[str] = []
    for i, model in enumerate(cfg.models):
        pinned = cfg.promoted.models.get(model.name)
        version = contents[model.name].version
        if pinned is not None and version != pinned:
            problems.append(
                f"models[{i}].path: model {model.name!r} at {model.path} is version {version}, but stack "
                f"{cfg.promote_from!r} runs version {pinned} (promoted.models.{model.name}): a promoted stack "
                f"registers the same bytes; point path at the file {cfg.promote_from!r} registered, or pin "
                f"what it runs now with `{command(cfg.promote_from, stack)}`"
            )
    return problems


class Source:
    """The stack this one promotes from, read through a StackReference."""

    def __init__(self, cfg: StackConfig, stack: str):
        if cfg.promote_from is None or cfg.promoted is None:
            raise ValueError("not a promoted stack (config validation should have said so)")
        self.stack = cfg.promote_from
        self.pins = cfg.promoted
        self.command = command(self.stack, stack)
        self.reference = pulumi.StackReference("promote-from", stack_name=reference_name(self.stack))
        self.workspace: pulumi.Output[Any] = self.reference.require_output("workspace")
        # Only a notice: that the source has moved on is the normal state between promotions.
        pulumi.Output.all(self.reference.get_output("image_digests"), self.reference.get_output("models")).apply(
            self._notice
        )

    def _notice(self, current: list[Any]) -> None:
        digests, models = current[0] or {}, current[1] or {}
        moved = [f"image {name}" for name, ref in self.pins.images.items() if digests.get(name) != ref]
        moved += [f"model {name}" for name, version in self.pins.models.items()
                  if (models.get(name) or {}).get("version") != version]
        if moved:
            pulumi.log.info(f"stack {self.stack!r} now runs another {', '.join(moved)} than this stack pins; "
                            f"this stack keeps its pins until `{self.command}`")

    def _workspace_field(self, key: str, kind: str) -> pulumi.Output[str]:
        def pick(workspace: Any) -> str:
            value = (workspace or {}).get(key) if isinstance(workspace, dict) else None
            if not value:
                raise RuntimeError(
                    f"stack {self.stack!r} has no workspace.{key} output: promotion needs a {kind} stack deployed "
                    f"by a version of ml-deploy that exports it (run `pulumi up --stack {self.stack}` once)"
                )
            return str(value)

        return self.workspace.apply(pick)

    def registry(self) -> PullRegistry:
        """The registry the source stack's images are in (its own, or the one it promoted from)."""
        registry_id = self._workspace_field("image_registry_id", "an Azure")
        return PullRegistry(
            id=registry_id,
            login_server=self._workspace_field("image_registry", "an Azure"),
            subscription_id=registry_id.apply(_subscription_of),
        )

    def image_store(self) -> pulumi.Output[str]:
        """The folder the source stack keeps its bundles in."""
        return self._workspace_field("image_store", "a local")


def _subscription_of(resource_id: str) -> str:
    match = _SUBSCRIPTION.match(resource_id)
    if match is None:
        raise RuntimeError(f"{resource_id!r} is not an Azure resource id")
    return match.group(1)


def _in_registry(ref: str, login_server: str, image: str, source: Source) -> str:
    if not ref.startswith(login_server.lower() + "/"):
        raise RuntimeError(
            f"promoted.images.{image}: {ref} is not in {login_server}, the registry stack {source.stack!r} "
            f"runs its images from: pin its images again with `{source.command}`"
        )
    return ref


def azure_images(cfg: StackConfig, source: Source, registry: PullRegistry) -> dict[str, PromotedImage]:
    """The pinned images, each checked to be in the source's registry; nothing is built or pushed."""
    images: dict[str, PromotedImage] = {}
    for image in cfg.images:
        ref = source.pins.images[image.name]
        checked = pulumi.Output.from_input(registry.login_server).apply(
            lambda server, ref=ref, name=image.name: _in_registry(ref, server, name, source)
        )
        images[image.name] = PromotedImage(image_ref=checked, digest_ref=ref)
    return images


def local_images(
    cfg: StackConfig,
    source: Source,
    store: Path,
    contents: Mapping[str, BundledModel],
    models: Mapping[str, pulumi.Resource],
) -> dict[str, PromotedBundle]:
    """The pinned bundles, copied from the source stack's image store into `store` and verified."""
    source_store = source.image_store()
    bundles: dict[str, PromotedBundle] = {}
    for image in cfg.images:
        match = DIGEST_REF.match(source.pins.images[image.name])
        if match is None:
            raise ValueError(f"promoted.images.{image.name} is not pinned by digest (config validation should have said so)")
        bundles[image.name] = PromotedBundle(
            image.name,
            PromotedBundleArgs(
                store=str(store),
                source_stack=source.stack,
                source_store=source_store,
                digest=match.group("digest"),
                models=[contents[name] for name in image.models],
                depends_on=[models[name] for name in image.models],
            ),
        )
    return bundles
