"""The target registry: every place a service can run, each one module in this folder.

A target module declares everything that varies by target and passes it to `register()`: its
service config (a `ServiceBase` subclass with `target: Literal[...]`), its checks, the function that
deploys one service, what the offline plan's mocks answer for the resources it registers, how its
services' logs are read (`ml-deploy logs`), which of its resources are public endpoints (the policy
pack's public-service rules) and what its resource types' providers replace rather than update (the
plan diff). The config's service union, the target names in errors, the program's dispatch, the log
readers, the endpoint readers and the replace rules all come from here, so a target that is not
registered cannot be configured and one that is cannot be skipped. Every module in this folder is
imported by `registry()` and must register exactly one target.
"""

from __future__ import annotations

import importlib
import pkgutil
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, Optional, TypeVar

from pathlib import Path

from pydantic import BaseModel

from infra.deploy import DeployContext, Deployed, LogReader, MockResource
from infra.schema import BatchJobConfig, ServiceBase, StackConfig
from policy.endpoints import EndpointReader


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


@dataclass(frozen=True)
class SpecRead:
    """What was read in a type's REST spec (Azure/azure-rest-api-specs) at one API version."""

    api_version: str
    """The version read; a test fails when the SDK moves to another one, so it is read again."""
    create_only: tuple[str, ...]
    """Top-level inputs (SDK names) that what was read marks `x-ms-mutability` create without update."""
    source: str
    """Where, in the spec."""


@dataclass(frozen=True)
class ReplaceRules:
    """The hand-kept replace facts of the resource types a target registers (cli/replacements.py
    derives the rest from the installed SDKs and applies them all): each with its source."""

    force_new: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """By type: property paths whose change makes the provider replace the resource (for azure-native,
    the provider's forceNewMap entries)."""
    spec_read: Mapping[str, SpecRead] = field(default_factory=dict)
    """By azure-native type: what its REST spec says is create-only, at the API version the SDK uses."""
    refused_in_place: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """By type, by property path: why Azure refuses a change the provider plans as an update."""


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
    logs: Mapping[str, LogReader] = field(default_factory=dict)
    """By the `kind` of a service's `logs` output: reads its recent log. Two targets may share a
    kind only with the same reader (aks and kubernetes both read pods)."""
    logs_before_outputs: Optional[Callable[[StackConfig, C, Path], dict[str, Any]]] = None
    """Where a service's log is before it has outputs (a local `init()` that failed in `pulumi up`),
    from the config alone: the `logs` output it would have had."""
    public_endpoints: Mapping[str, EndpointReader] = field(default_factory=dict)
    """By resource type: the endpoints a resource opens beyond its host (policy/endpoints.py). A
    target whose services are reachable from elsewhere must declare the resources that make them so:
    the policy pack's tests fail for a public service no reader sees."""
    replace_rules: ReplaceRules = field(default_factory=ReplaceRules)
    """The hand-kept replace facts of the types this target registers, for the plan diff."""
    batch: Optional[Callable[[DeployContext, BatchJobConfig], dict[str, Any]]] = None
    """Registers what a batch job on this target needs (if anything) and returns what `ml-deploy
    batch run` reads to run it (the job's `batch.<name>` stack output)."""
    batch_name: Optional[str] = None
    """The value of `batch[i].target` for this target's jobs, where it is not the target's own name
    (Azure ML's batch endpoints are `batch_endpoint`, beside its online endpoints)."""

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


def _merged(what: str, pick: Callable[[Target[Any]], Mapping[str, Any]]) -> dict[str, Any]:
    """`pick(target)` of every target in one map; a key two targets declare differently is an error."""
    merged: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for target in registry().values():
        for key, value in pick(target).items():
            if key in merged and merged[key] != value:
                raise ValueError(f"targets {owner[key]!r} and {target.name!r} declare different {what} for {key!r}")
            merged[key], owner[key] = value, target.name
    return merged


def batch_runners(targets: Optional[Mapping[str, Target[Any]]] = None) -> dict[str, Target[Any]]:
    """The targets that run batch jobs, by the name a job's `target` gives them."""
    return {t.batch_name or t.name: t for t in (targets if targets is not None else registry()).values()
            if t.batch is not None}


def log_readers() -> dict[str, LogReader]:
    """Every target's log readers, by the `kind` of the `logs` output they read."""
    return _merged("log readers", lambda t: t.logs)


def endpoint_readers() -> dict[str, list[EndpointReader]]:
    """Every target's public-endpoint readers, by resource type (several targets may read one type,
    e.g. dynamic resources, each its own shape)."""
    found: dict[str, list[EndpointReader]] = {}
    for target in registry().values():
        for type_, reader in target.public_endpoints.items():
            if reader not in found.setdefault(type_, []):
                found[type_].append(reader)
    return found


def replace_rules() -> ReplaceRules:
    """Every target's hand-kept replace facts in one table."""
    return ReplaceRules(
        force_new=_merged("force-new rules", lambda t: t.replace_rules.force_new),
        spec_read=_merged("REST spec readings", lambda t: t.replace_rules.spec_read),
        refused_in_place=_merged("in-place refusals", lambda t: t.replace_rules.refused_in_place),
    )


def registry() -> dict[str, Target[Any]]:
    """Every registered target by name, after importing every module in this folder."""
    global _LOADED
    if not _LOADED:
        _LOADED = True
        for module in pkgutil.iter_modules(__path__):
            # Imported here or before (a test may import a target module first): either way it has
            # registered the target of its own name.
            importlib.import_module(f"{__name__}.{module.name}")
            if module.name not in _REGISTRY:
                raise ImportError(f"infra/targets/{module.name}.py registers no target named {module.name!r}: "
                                  f"call register(Target(name={module.name!r}, ...))")
    return dict(_REGISTRY)


def get(name: str) -> Target[Any]:
    """The registered target `name` (config validation guarantees it exists)."""
    return registry()[name]
