"""Wires the components in the order of the Azure ML workflow and exports what users need:
workspace -> models -> images -> each target's shared resources -> services on their targets."""

from __future__ import annotations

from typing import Any, Mapping

import pulumi

from components.image import ScoringImage, ScoringImageArgs
from components.local import (
    IMAGE_STORE,
    PROMOTED_STORE,
    LocalImage,
    LocalImageArgs,
    LocalModel,
    LocalModelArgs,
    PromotedBundle,
)
from components.model import RegisteredModel, RegisteredModelArgs
from components.workspace import Workspace, WorkspaceArgs
from content.model import BundledModel
from infra import config, promotion, targets
from infra.config import ConfigError
from infra.deploy import DeployContext, PromotedImage
from infra.promotion import Source
from infra.schema import PROJECT_ROOT, ImageConfig, SplitService, StackConfig

BUILD_ROOT = PROJECT_ROOT / ".ml-deploy" / "build"
"""Generated image build contexts. Absolute: provider plugins resolve relative paths against
their own working directory (`infra/`, the program's folder), not the project root."""
RUNTIME_ROOT = PROJECT_ROOT / "serving"


def main() -> None:
    """Read the stack config and register the whole graph."""
    cfg = config.load()
    stack = pulumi.get_stack()
    contents = {m.name: BundledModel.from_path(m.name, m.path) for m in cfg.models}
    problems = promotion.model_problems(cfg, contents, stack)
    if problems:
        raise ConfigError(problems)
    source = Source(cfg, stack) if cfg.promote_from is not None else None
    if cfg.workspace.kind == "local":
        ctx, workspace_out, models_out = _local_workspace(cfg, stack, contents, source)
    else:
        ctx, workspace_out, models_out = _azure_workspace(cfg, stack, contents, source)
    services = deploy_services(ctx)
    # A pushed image is the one a user pulls; a local workspace without a registry has only bundles.
    images = {name: im.image_ref for name, im in ctx.images.items()}
    images.update({name: im.image_ref for name, im in ctx.container_images.items()})
    export(workspace_out, models_out, images, services, {name: _digest_ref(im) for name, im in ctx.images.items()})
    if cfg.batch:
        pulumi.export("batch", deploy_batch(ctx))


def _digest_ref(image: ScoringImage | LocalImage | PromotedImage | PromotedBundle) -> pulumi.Input[str]:
    """The image pinned by digest: what a stack promoted from this one runs."""
    return image.repo_digest if isinstance(image, ScoringImage) else image.digest_ref


def _scoring_image(
    cfg: StackConfig, im: ImageConfig, contents: Mapping[str, BundledModel], registry: pulumi.Input[str]
) -> ScoringImage:
    """An image built from its generated context and pushed to `registry`."""
    return ScoringImage(
        im.name,
        ScoringImageArgs(
            execution_script=im.execution_script,
            environment=im.environment,
            models=[contents[name] for name in im.models],
            registry_login_server=registry,
            runtime_root=RUNTIME_ROOT,
            build_root=BUILD_ROOT,
            base_image=im.base_image,
            network=cfg.workspace.build_network,
            docker_host=cfg.workspace.docker_host,
            builder=cfg.workspace.builder,
        ),
    )


def _local_workspace(
    cfg: StackConfig, stack: str, contents: Mapping[str, BundledModel], source: Source | None
) -> tuple[DeployContext, dict[str, Any], dict[str, Any]]:
    """The workflow on this machine: a folder workspace, its model registry and image bundles,
    built here or on a promoted stack copied from the source stack's store."""
    root = (PROJECT_ROOT / cfg.workspace.path).resolve()
    models = {
        name: LocalModel(name, LocalModelArgs(registry=str(root / "models"), model=b, protect=cfg.workspace.protect))
        for name, b in contents.items()
    }
    if source is not None:
        store = root / PROMOTED_STORE
        promoted = promotion.local_images(cfg, source, store, contents, models)
        ctx = DeployContext(cfg=cfg, stack=stack, images=promoted, local_root=root)
        return (ctx, {"name": cfg.workspace.name, "path": str(root), "image_store": str(store)},
                {name: {"version": m.version, "uri": m.path} for name, m in models.items()})
    store = root / IMAGE_STORE
    images: dict[str, LocalImage] = {}
    for im in cfg.built_images():
        images[im.name] = LocalImage(
            im.name,
            LocalImageArgs(
                store=str(store),
                execution_script=im.execution_script,
                environment=im.environment,
                models=[contents[name] for name in im.models],
                runtime_root=RUNTIME_ROOT,
                base_image=im.base_image,
                depends_on=[models[name] for name in im.models],
            ),
        )
    # With a registry, every image is also built and pushed, for services that run containers.
    registry = cfg.workspace.registry
    pushed = {im.name: _scoring_image(cfg, im, contents, registry) for im in cfg.built_images()} if registry else {}
    ctx = DeployContext(cfg=cfg, stack=stack, images=images, local_root=root, container_images=pushed)
    return (ctx, {"name": cfg.workspace.name, "path": str(root), "image_store": str(store)},
            {name: {"version": m.version, "uri": m.path} for name, m in models.items()})


def _azure_workspace(
    cfg: StackConfig, stack: str, contents: Mapping[str, BundledModel], source: Source | None
) -> tuple[DeployContext, dict[str, Any], dict[str, Any]]:
    """The Azure ML workflow: workspace, registered models, images built into the workspace
    registry, or on a promoted stack the source stack's images, pulled from its registry."""
    ws_cfg = cfg.workspace
    workspace = Workspace(
        ws_cfg.name, WorkspaceArgs(base_name=ws_cfg.name, stack=stack, protect=ws_cfg.protect, sku=ws_cfg.sku)
    )
    models: dict[str, RegisteredModel] = {}
    for m in cfg.models:
        models[m.name] = RegisteredModel(
            m.name,
            RegisteredModelArgs(
                content=contents[m.name],
                resource_group_name=workspace.resource_group_name,
                workspace_name=workspace.workspace_name,
                storage_account_name=workspace.storage_account_name,
                models_container_name=workspace.models_container_name,
                blob_endpoint=workspace.blob_endpoint,
                description=m.description,
                tags=m.tags,
                protect=ws_cfg.protect,
            ),
        )
    images: dict[str, ScoringImage | PromotedImage] = {}
    pull_registry = None
    if source is not None:
        pull_registry = source.registry()
        images.update(promotion.azure_images(cfg, source, pull_registry))
    for im in cfg.built_images():
        images[im.name] = _scoring_image(cfg, im, contents, workspace.registry_login_server)
    ctx = DeployContext(cfg=cfg, stack=stack, images=images, workspace=workspace, pull_registry=pull_registry,
                        container_images=images)
    workspace_out = {
        "name": workspace.workspace_name,
        "resource_group": workspace.resource_group_name,
        "registry": workspace.registry_login_server,
        "registry_id": workspace.registry_id,
        # Where this stack's images are: its own registry, or on a promoted stack the source's.
        "image_registry": ctx.registry().login_server,
        "image_registry_id": ctx.registry().id,
    }
    return ctx, workspace_out, {name: {"version": m.version, "uri": m.model_uri} for name, m in models.items()}


def deploy_services(ctx: DeployContext) -> dict[str, dict[str, Any]]:
    """Each target's shared resources, then every service through its target, in config order;
    returns each service's outputs, one shape for every target."""
    kind = ctx.cfg.workspace.kind
    registered = targets.registry()
    for target in registered.values():
        if target.setup is not None and kind in target.workspace_kinds:
            ctx.shared[target.name] = target.setup(ctx)
    services: dict[str, dict[str, Any]] = {}
    for svc in ctx.cfg.services:
        deployed = registered[svc.target].deploy(ctx, svc)
        services[svc.name] = {
            "target": svc.target,
            "image": svc.image,
            "scoring_uri": deployed.service.scoring_uri,
            "swagger_uri": deployed.service.swagger_uri,
            "primary_key": pulumi.Output.secret(deployed.service.primary_key),
            "secondary_key": pulumi.Output.secret(deployed.service.secondary_key),
            "logs": dict(deployed.logs),
        }
        if isinstance(svc, SplitService) and svc.deployments:
            # What runs behind the service, as configured: the split a preview of a shift changes.
            services[svc.name]["deployments"] = {d.name: {"image": d.image, "traffic": d.traffic}
                                                 for d in svc.deployments}
            if svc.mirror_traffic:
                services[svc.name]["mirror_traffic"] = dict(svc.mirror_traffic)
        clash = set(deployed.outputs) & set(services[svc.name])
        if clash:
            raise RuntimeError(f"target {svc.target!r} outputs {sorted(clash)}, which the service contract owns")
        services[svc.name].update(deployed.outputs)
    return services


def deploy_batch(ctx: DeployContext) -> dict[str, dict[str, Any]]:
    """Each batch job through its target: what `ml-deploy batch run` needs to run it, by job name."""
    runners = targets.batch_runners()
    jobs: dict[str, dict[str, Any]] = {}
    for job in ctx.cfg.batch:
        run = runners[job.target].batch
        assert run is not None, "config validation admits only targets that run batch jobs"
        jobs[job.name] = {"target": job.target, "image": job.image, **run(ctx, job),
                          "settings": job.model_dump(exclude={"name", "image", "target"})}
    return jobs


def export(
    workspace: dict[str, Any],
    models: dict[str, dict[str, Any]],
    images: dict[str, pulumi.Output[str]],
    services: dict[str, dict[str, Any]],
    image_digests: Mapping[str, pulumi.Input[str]],
) -> None:
    """Stack outputs, the same shape on every target: where the workspace is, what was registered
    and built, and how to call each service. A plain dict per service, not one Output, keeps
    secrecy on the keys alone. `image_digests` pins each image by digest: what `ml-deploy promote`
    copies into the stacks promoted from this one."""
    pulumi.export("workspace", workspace)
    pulumi.export("models", models)
    pulumi.export("images", images)
    pulumi.export("image_digests", dict(image_digests))
    pulumi.export("services", services)
