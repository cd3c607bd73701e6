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
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from pydantic import BaseModel

from infra.deploy import DeployContext, Deployed, MockResource
from infra.schema import ServiceBase, StackConfig


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
