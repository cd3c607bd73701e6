"""`target: container`: the pushed scoring image as a container on this machine, run by the
workspace's Docker engine with host networking on its own port of 127.0.0.1.

Runs on a workspace of kind `local` with `workspace.registry` set (where the image is pushed), as
Azure ML's local web service runs the image on the developer's Docker.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

from pydantic import Field

from components.container import ContainerService, ContainerServiceArgs
from infra.deploy import DeployContext, Deployed, LogOptions, LogsUnavailable
from infra.schema import ServiceBase, StackConfig, TlsSettings
from infra.targets import Target, pushed_image_problem, register


class ContainerServiceConfig(ServiceBase, TlsSettings):
    """A service as a container on this machine (`target: container`)."""

    target: Literal["container"]
    port: int = Field(default=0, ge=0, le=65535)
    """Port on 127.0.0.1 (the container shares the host's network); 0 picks a free one when the
    service is created and keeps it."""
    workers: int = Field(default=1, ge=1, le=64)


def check(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    for i, svc in cfg.services_of(ContainerServiceConfig):
        problem = pushed_image_problem(cfg, i, "container")
        if problem:
            problems.append(problem)
        if svc.enable_app_insights:
            problems.append(f"services[{i}].enable_app_insights: needs an Azure workspace (its Application Insights)")
    ports: dict[int, int] = {}
    for i, svc in cfg.services_of(ContainerServiceConfig):
        if svc.port and svc.port in ports:
            problems.append(f"services[{i}].port: {svc.port} is already used by services[{ports[svc.port]}] "
                            f"(containers share the host's network)")
        ports.setdefault(svc.port, i)
    return problems


def deploy(ctx: DeployContext, svc: ContainerServiceConfig) -> Deployed:
    docker_host = ctx.cfg.workspace.docker_host or ""
    service = ContainerService(
        svc.name,
        ContainerServiceArgs(
            image_ref=ctx.container_images[svc.image_name].image_ref,
            docker_host=docker_host,
            port=svc.port,
            runtime=ctx.runtime(svc, svc.workers),
        ),
    )
    return Deployed(service, {"kind": "docker", "docker_host": docker_host, "container": service.container})


def read_logs(source: Mapping[str, Any], options: LogOptions) -> str:
    """The container's log from the engine that runs it (`docker logs`: stdout and stderr)."""
    import subprocess

    host = ["-H", source["docker_host"]] if source.get("docker_host") else []
    result = subprocess.run(["docker", *host, "logs", "--tail", str(options.tail), source["container"]],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise LogsUnavailable(f"no log for container {source['container']}: {result.stderr.strip()}")
    return result.stdout + result.stderr


# No public endpoints: each container listens on 127.0.0.1 with the host's network (providers/container.py).
TARGET = register(Target(
    name="container",
    config=ContainerServiceConfig,
    deploy=deploy,
    workspace_kinds=("local",),
    check=check,
    logs={"docker": read_logs},
))
