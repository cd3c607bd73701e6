"""Deploy-time types: what the program hands each target (`DeployContext`), what a target hands back
(`Deployed`), the images and registry services run from, what the offline plan's mocks see, and how
a target's log reader is called."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pulumi

from components.runtime import ServiceRuntime
from components.service import ScoringService
from infra.schema import ServiceBase, StackConfig, TlsSettings

if typing.TYPE_CHECKING:
    from components.image import ScoringImage
    from components.local import LocalImage, PromotedBundle
    from components.workspace import Workspace


@dataclass(frozen=True)
class Deployed:
    """One deployed service: the component, and where `ml-deploy logs` reads its log."""

    service: ScoringService
    """Its component, whose outputs are the service contract (components/service.py)."""
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


def environment_version(image: "ScoringImage | PromotedImage") -> str:
    """An Azure ML environment version for a pushed image: its content tag, or a promoted image's
    digest cut to the tag's length, so a new image is a new version."""
    from components.image import ScoringImage
    from content.bundle import TAG_LEN

    return image.tag if isinstance(image, ScoringImage) else image.digest_ref.rsplit(":", 1)[-1][:TAG_LEN]


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

    def runtime(self, svc: ServiceBase, workers: int, **given: Any) -> ServiceRuntime:
        """The service's runtime (`service_runtime`), with the workspace's Application Insights when
        the service asks for it (config validation refuses that without an Azure workspace)."""
        insights = self.azure().app_insights_connection_string if svc.enable_app_insights else None
        return service_runtime(svc, workers, app_insights=insights, **given)

    def local(self) -> Path:
        if self.local_root is None:
            raise RuntimeError("this target needs a local workspace (config validation should have said so)")
        return self.local_root


def service_runtime(svc: ServiceBase, workers: int, *, max_concurrent_requests: int = 0,
                    primary_key: Optional[pulumi.Input[str]] = None, secondary_key: Optional[pulumi.Input[str]] = None,
                    app_insights: Optional[pulumi.Input[str]] = None) -> ServiceRuntime:
    """A service's runtime, built once from its config: what every target hands its component.
    `workers` is the target's to decide (cores on a container, a setting of a local process)."""
    return ServiceRuntime(
        service_name=svc.name, workers=workers, timeout_ms=svc.scoring_timeout_ms,
        max_concurrent_requests=max_concurrent_requests, auth_enabled=svc.auth_enabled,
        primary_key=primary_key, secondary_key=secondary_key,
        tls=svc.tls_certificate() if isinstance(svc, TlsSettings) else None, app_insights=app_insights,
    )


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
    deployment: Optional[str] = None
    """A service with deployments: the one to read (default: each)."""


LogReader = Callable[[Mapping[str, Any], LogOptions], str]
"""A service's `logs` output and the caller's options -> its recent log."""


class LogsUnavailable(Exception):
    """A log cannot be read; the message says why and what to do instead."""
