"""Deploy-time types: what the program hands each target (`DeployContext`), what a target hands back
(`Deployed`), the images and registry services run from, what the offline plan's mocks see, and how
a target's log reader is called."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol

import pulumi

from infra.schema import StackConfig

if typing.TYPE_CHECKING:
    from components.image import ScoringImage
    from components.local import LocalImage, PromotedBundle
    from components.workspace import Workspace


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
    """`{"kind": ..., ...}`, a kind one of the targets' log readers reads (`Target.logs`): plain values
    or Outputs, never secrets."""
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


@dataclass(frozen=True)
class PromotedImage:
    """A container image another stack built and pushed, run here by its pinned digest."""

    image_ref: pulumi.Output[str]
    """The pinned reference, once checked to be in the registry the source stack's images are in."""
    digest_ref: str
    """The pinned reference, as configured."""


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


@dataclass(frozen=True)
class MockResource:
    """A resource as the offline plan's mocks see it: its type, physical name and inputs so far."""

    type: str
    name: str
    location: str
    state: dict[str, Any]


@dataclass(frozen=True)
class LogOptions:
    """What the caller of `ml-deploy logs` chose, for the readers that use it."""

    tail: int
    """Lines to return, at most (per container where there are several)."""
    kubeconfig: Optional[str] = None
    """Kubernetes: the kubeconfig (default: $KUBECONFIG or ~/.kube/config)."""
    context: Optional[str] = None
    """Kubernetes: the kubeconfig context."""


LogReader = Callable[[Mapping[str, Any], LogOptions], str]
"""A service's `logs` output and the caller's options -> its recent log."""


class LogsUnavailable(Exception):
    """A log cannot be read; the message says why and what to do instead."""
