"""`target: local`: the scoring runtime as a process on 127.0.0.1, over the image's bundle, with
the image's environment as a venv.

Runs on a workspace of kind `local` (a folder), through the real Pulumi engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections import deque
from typing import Any, Iterable, Literal, Mapping, Optional

from pydantic import Field

from components.local import (
    LocalDeploymentArgs,
    LocalEndpoint,
    LocalEndpointArgs,
    LocalEnvironment,
    LocalEnvironmentArgs,
    LocalImage,
    LocalService,
    LocalServiceArgs,
    PromotedBundle,
)
from content import environment
from content.environment import UnresolvableEnvironment
from infra.deploy import DeployContext, Deployed, LogOptions, LogsUnavailable, MockResource
from infra.schema import PROJECT_ROOT, BatchJobConfig, DeploymentBase, ImageConfig, SplitService, StackConfig, TlsSettings
from infra.targets import Target, register
from policy.endpoints import LOOPBACK, Exposure
from providers.local import ResolvedEnvironment, log_path, resolve_environment

RUNTIME_REQUIREMENTS = PROJECT_ROOT / "serving" / "requirements.txt"
DYNAMIC = "pulumi-python:dynamic:Resource"
"""The type of providers/local.py's resources (folders, venvs, service processes)."""
"""What the scoring runtime itself needs, installed into every environment (as in every image)."""


class LocalDeploymentConfig(DeploymentBase):
    """A deployment of a local service: the scoring runtime over its image, on a loopback port of its own."""

    workers: Optional[int] = Field(default=None, ge=1, le=64)
    """Its runtime's worker processes; unset: the service's `workers`."""


class LocalServiceConfig(SplitService[LocalDeploymentConfig], TlsSettings):
    """A service on this machine (`target: local`): the scoring runtime as a process on 127.0.0.1,
    or with `deployments`, one per deployment behind a router that splits the traffic."""

    target: Literal["local"]
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port when the service is created and keeps it."""
    workers: int = Field(default=1, ge=1, le=64)


def env_cache() -> Path:
    """Where environment venvs are cached: outside the work tree, shared by stacks and checkouts
    (`ML_DEPLOY_CACHE` moves it, as it moves the engine's)."""
    return Path(os.environ.get("ML_DEPLOY_CACHE", Path.home() / ".cache" / "ml-deploy")) / "envs"


def resolve(image: ImageConfig) -> ResolvedEnvironment:
    """The requirement lines (the image's, then the runtime's) and the Python of an image's venv.

    Raises UnresolvableEnvironment (a conda package without a PyPI name) or LookupError (no such Python).
    """
    return resolve_environment(environment.load(image.conda_file, image.pip_requirements), RUNTIME_REQUIREMENTS)


def _used_images(cfg: StackConfig) -> dict[str, int]:
    """The images local services run, with their index in `images`."""
    wanted = {name for _, svc in cfg.services_of(LocalServiceConfig) for name in svc.image_names()}
    wanted |= {job.image for job in cfg.batch if job.target == "local"}
    return {im.name: i for i, im in enumerate(cfg.images) if im.name in wanted}


def check(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    for i, svc in cfg.services_of(LocalServiceConfig):
        if svc.enable_app_insights:
            problems.append(f"services[{i}].enable_app_insights: needs an Azure workspace (its Application Insights)")
    for name, i in _used_images(cfg).items():
        image = cfg.images[i]
        if not isinstance(image, ImageConfig):
            continue  # promoted: its environment is the bundle's, checked when the bundle is copied
        key = "pip_requirements" if image.pip_requirements is not None else "conda_file"
        try:
            resolve(image)
        except (UnresolvableEnvironment, LookupError) as err:
            problems.append(f"images[{i}].{key}: {err} (image {name!r} runs on target local as a venv)")
    return problems


def setup(ctx: DeployContext) -> dict[str, LocalEnvironment]:
    """One venv per image that local services run."""
    envs: dict[str, LocalEnvironment] = {}
    for name, i in _used_images(ctx.cfg).items():
        image = ctx.cfg.images[i]
        bundle = ctx.images[name]
        if isinstance(image, ImageConfig):
            resolved = resolve(image)
            args = LocalEnvironmentArgs(cache=str(env_cache()), key=resolved.key, interpreter=resolved.interpreter,
                                        requirements=resolved.requirements, source=str(resolved.source))
        else:
            # A promoted bundle: its environment file exists once the bundle is copied, so the
            # provider reads it then; the pinned digest (which covers that file) names the venv.
            assert isinstance(bundle, PromotedBundle), "only promoted images have no build settings"
            args = LocalEnvironmentArgs(cache=str(env_cache()), key=f"bundle-{bundle.tag}", bundle=bundle.path)
        envs[name] = LocalEnvironment(name, args)
    return envs


def _bundle(ctx: DeployContext, image: str) -> "LocalImage | PromotedBundle":
    bundle = ctx.images[image]
    assert isinstance(bundle, (LocalImage, PromotedBundle)), "a local workspace runs local bundles"
    return bundle


def deploy(ctx: DeployContext, svc: LocalServiceConfig) -> Deployed:
    log_dir = str(ctx.local() / "logs")
    if svc.deployments:
        deployments = [
            LocalDeploymentArgs(name=d.name, bundle_path=_bundle(ctx, d.image).path,
                                python=ctx.shared["local"][d.image].python, model_dir=_bundle(ctx, d.image).model_dir,
                                workers=d.workers or svc.workers, traffic=d.traffic)
            for d in svc.deployments
        ]
        endpoint = LocalEndpoint(svc.name, LocalEndpointArgs(
            deployments=deployments, log_dir=log_dir, runtime=ctx.runtime(svc, svc.workers),
            mirror=dict(svc.mirror_traffic), port=svc.port,
        ))
        return Deployed(endpoint, {"kind": "files", "paths": endpoint.log_paths})
    image = _bundle(ctx, svc.image_name)
    service = LocalService(
        svc.name,
        LocalServiceArgs(
            bundle_path=image.path,
            python=ctx.shared["local"][svc.image_name].python,
            model_dir=image.model_dir,
            log_dir=log_dir,
            port=svc.port,
            runtime=ctx.runtime(svc, svc.workers),
        ),
    )
    return Deployed(service, {"kind": "file", "path": service.log_path})


def batch(ctx: DeployContext, job: BatchJobConfig) -> dict[str, Any]:
    """A local batch job runs the image's bundle with its environment's venv, as a local service does."""
    image = _bundle(ctx, job.image)
    return {"python": ctx.shared["local"][job.image].python, "bundle": image.path, "model_dir": image.model_dir}


def read_logs(source: Mapping[str, Any], options: LogOptions) -> str:
    """The last lines of the runtime's log file."""
    path = Path(source["path"])
    if not path.exists():
        raise LogsUnavailable(f"no log at {path}: the service has not started yet")
    with path.open(errors="replace") as f:
        return "".join(deque(f, maxlen=options.tail))


def read_log_files(source: Mapping[str, Any], options: LogOptions) -> str:
    """A service with deployments: the chosen deployment's log, or each one's under its name."""
    paths: Mapping[str, str] = source["paths"]
    if options.deployment is not None:
        if options.deployment not in paths:
            raise LogsUnavailable(f"no deployment {options.deployment!r}; the service has: "
                                  f"{', '.join(n for n in paths if n != 'router')} (and its router)")
        return read_logs({"path": paths[options.deployment]}, options)
    parts = []
    for name, path in paths.items():
        try:
            text = read_logs({"path": path}, options)
        except LogsUnavailable as err:
            text = f"{err}\n"
        parts.append(f"==> {name} <==\n{text}")
    return "\n".join(parts)


def logs_before_outputs(cfg: StackConfig, svc: LocalServiceConfig, root: Path) -> dict[str, Any]:
    """The log file a service writes is known from the config alone, so an `init()` that failed in
    `pulumi up` (no outputs yet) can still be read."""
    logs = str((root / cfg.workspace.path).resolve() / "logs")
    if svc.deployments:
        paths = {d.name: str(log_path(logs, f"{svc.name}-{d.name}")) for d in svc.deployments}
        return {"kind": "files", "paths": {**paths, "router": str(log_path(logs, svc.name))}}
    return {"kind": "file", "path": str(log_path(logs, svc.name))}


def public_endpoints(props: Mapping[str, Any]) -> Iterable[Exposure]:
    """A service process (a dynamic resource with `service` and `auth_enabled` inputs) always listens
    on 127.0.0.1 (providers/local.py); one whose `host` input says otherwise must check keys."""
    if "auth_enabled" not in props or "service" not in props:
        return []
    host = str(props.get("host") or "127.0.0.1")
    if host in LOOPBACK:
        return []
    return [Exposure(f"local service {props.get('service')} listens on {host} without auth"
                     if props.get("auth_enabled") is not True else None)]


# ---- what the offline plan's mocks answer --------------------------------------------------------

# The inputs that name each folder kind's path (providers/local.py), in path order.
_FOLDER_ADDRESSES = (("cache", "key"), ("store", "image", "tag"), ("registry", "model", "version"))


def _folder_path(r: MockResource) -> None:
    """A local folder's `path`, where its provider would write it."""
    if r.state.get("path") is not None:
        return
    for keys in _FOLDER_ADDRESSES:
        if all(isinstance(r.state.get(k), str) for k in keys):
            r.state["path"] = str(Path(*(r.state[k] for k in keys)))
            return


TARGET = register(Target(
    name="local",
    config=LocalServiceConfig,
    deploy=deploy,
    workspace_kinds=("local",),
    check=check,
    setup=setup,
    mock_resources={DYNAMIC: _folder_path},
    logs={"file": read_logs, "files": read_log_files},
    logs_before_outputs=logs_before_outputs,
    public_endpoints={DYNAMIC: public_endpoints},
    batch=batch,
))
