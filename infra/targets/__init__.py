"""The target registry: every place a service can run, each one module in this folder.

A target module defines its service config (a `ServiceBase` subclass with `target: Literal[...]`),
its checks, the function that deploys one service, and what the offline plan's mocks answer for
the resources it registers, and passes them to `register()`. The config's service union, the
target names in errors and the program's dispatch all come from here, so a target that is not
registered cannot be configured and one that is cannot be skipped. Every module in this folder is
imported by `registry()` and must register exactly one target.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Mapping, Optional, Protocol, TypeVar

import pulumi
from pydantic import BaseModel

from infra.config import ServiceBase, StackConfig

if typing.TYPE_CHECKING:
    from components.image import ScoringImage
    from components.local import LocalImage, PromotedBundle
    from components.workspace import Workspace
    from infra.promotion import PromotedImage


class DeployedService(Protocol):
    """The service contract: what every deployed service exposes, whatever its target."""

    scoring_uri: pulumi.Output[str]
    swagger_uri: pulumi.Output[str]
    primary_key: pulumi.Output[str]
    """Secret; empty when auth is off."""
    secondary_key: pulumi.Output[str]
    """Secret; empty when auth is off."""


@dataclass(frozen=True)
class Deployed:
    """One deployed service: the component, and where `ml-deploy logs` reads its log."""

    service: DeployedService
    logs: Mapping[str, Any]
    """`{"kind": "file" | "aci" | "kubernetes" | "iot_edge", ...}`: plain values or Outputs, never secrets."""
    outputs: Mapping[str, Any] = field(default_factory=dict)
    """What this target adds to the service's stack outputs (`devices` on IoT Edge), next to the
    contract's; secrets as `Output.secret`."""


@dataclass(frozen=True)
class PullRegistry:
    """The container registry a stack's services pull their images from, and what an AcrPull grant on it needs."""

    id: pulumi.Input[str]
    """The registry's resource id: the scope of the grants."""
    login_server: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    """The registry's subscription, where the grants' role definition is referenced."""


@dataclass
class DeployContext:
    """What the program has registered before the services: the workspace, models and images."""

    cfg: StackConfig
    stack: str
    images: Mapping[str, "ScoringImage | LocalImage | PromotedImage | PromotedBundle"]
    """Built here, or on a promoted stack taken from the source stack."""
    workspace: Optional["Workspace"] = None
    """The Azure workspace (`workspace.kind: azure`)."""
    local_root: Optional[Path] = None
    """The workspace folder (`workspace.kind: local`)."""
    pull_registry: Optional[PullRegistry] = None
    """Where the images are, when not in the workspace's own registry (a promoted stack: the source's)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """What each target's `setup` registered for its services (clusters, hubs), by target name."""
    container_images: Mapping[str, "ScoringImage | PromotedImage"] = field(default_factory=dict)
    """Images built and pushed to a registry, for targets that run containers: every image on an
    Azure workspace; on a local workspace, every image when `workspace.registry` is set."""

    def azure(self) -> "Workspace":
        if self.workspace is None:
            raise RuntimeError("this target needs an Azure workspace (config validation should have said so)")
        return self.workspace

    def registry(self) -> PullRegistry:
        """The registry services pull from, which their identities get AcrPull on: the workspace's
        own, or on a promoted stack the source stack's (the pinned digests live there)."""
        if self.pull_registry is not None:
            return self.pull_registry
        workspace = self.azure()
        return PullRegistry(workspace.registry_id, workspace.registry_login_server, workspace.subscription_id)

    def local(self) -> Path:
        if self.local_root is None:
            raise RuntimeError("this target needs a local workspace (config validation should have said so)")
        return self.local_root


def pushed_image_problem(cfg: StackConfig, index: int, target: str) -> Optional[str]:
    """Why `services[index]` of a target that runs containers has no pushed image to run, if it has
    none: a local workspace pushes only with `workspace.registry`, and a promoted local stack copies
    bundles, not images."""
    if cfg.workspace.kind != "local":
        return None
    if cfg.promote_from is not None:
        return (f"services[{index}].target: {target!r} cannot run on a promoted local stack (promotion copies "
                f"the source's bundles, not pushed images); deploy it on the source stack or an Azure one")
    if cfg.workspace.registry is None:
        return (f"services[{index}].target: {target!r} on a local workspace needs workspace.registry "
                f"(the registry its image is pushed to and pulled from)")
    return None


@dataclass(frozen=True)
class MockResource:
    """A resource as the offline plan's mocks see it: its type, physical name and inputs so far."""

    type: str
    name: str
    location: str
    state: dict[str, Any]


C = TypeVar("C", bound=ServiceBase)


def _no_problems(_cfg: StackConfig) -> list[str]:
    return []


@dataclass(frozen=True)
class Target(Generic[C]):
    """One place a service can run."""

    name: str
    """The value of `services[i].target`."""
    config: type[C]
    """The service config; its `target` field is `Literal[name]`."""
    deploy: Callable[[DeployContext, C], Deployed]
    """Registers one service of this target; called once per service, in config order."""
    workspace_kinds: tuple[str, ...] = ("azure",)
    """The workspace kinds (`workspace.kind`) this target runs on."""
    sections: Mapping[str, type[BaseModel]] = field(default_factory=dict)
    """Top-level config lists this target owns (`aks_clusters`), validated entry by entry."""
    check: Callable[[StackConfig], list[str]] = _no_problems
    """Cross-reference checks; each problem names its config path."""
    setup: Optional[Callable[[DeployContext], Any]] = None
    """Registers what this target's services share (clusters) before any service; the result is
    `ctx.shared[name]`. Runs whenever the stack's workspace kind is one of `workspace_kinds`."""
    mock_resources: Mapping[str, Callable[[MockResource], None]] = field(default_factory=dict)
    """By resource type: fills in the outputs the cloud would compute (the offline plan's mocks)."""
    mock_calls: Mapping[str, Callable[[dict[str, Any], str], dict[str, Any]]] = field(default_factory=dict)
    """By invoke token: (args, location) -> result, for the offline plan's mocks."""

    def __post_init__(self) -> None:
        if not callable(self.deploy):
            raise TypeError(f"target {self.name!r} has no deploy function")
        if not (isinstance(self.config, type) and issubclass(self.config, ServiceBase)):
            raise TypeError(f"target {self.name!r}: config must be a ServiceBase subclass")
        hint = typing.get_type_hints(self.config).get("target")
        if typing.get_origin(hint) is not typing.Literal or typing.get_args(hint) != (self.name,):
            raise TypeError(f"target {self.name!r}: {self.config.__name__}.target must be Literal[{self.name!r}]")


_REGISTRY: dict[str, Target[Any]] = {}
_LOADED = False


def register(target: Target[Any]) -> Target[Any]:
    """Add a target; its name and config class must be new."""
    if target.name in _REGISTRY:
        raise ValueError(f"target {target.name!r} is registered twice")
    for other in _REGISTRY.values():
        if other.config is target.config:
            raise ValueError(f"targets {other.name!r} and {target.name!r} share the config class {target.config.__name__}")
        clash = set(other.sections) & set(target.sections)
        if clash:
            raise ValueError(f"targets {other.name!r} and {target.name!r} both own the section(s) {sorted(clash)}")
    _REGISTRY[target.name] = target
    return target


def registry() -> dict[str, Target[Any]]:
    """Every registered target by name, after importing every module in this folder."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in pkgutil.iter_modules(__path__):
            before = set(_REGISTRY)
            importlib.import_module(f"{__name__}.{module.name}")
            if set(_REGISTRY) == before:
                raise ImportError(f"infra/targets/{module.name}.py registers no target: call register(Target(...))")
    return dict(_REGISTRY)


def get(name: str) -> Target[Any]:
    """The registered target `name` (config validation guarantees it exists)."""
    return registry()[name]
