"""`target: kubernetes`: a service on any conformant Kubernetes cluster, attached by kubeconfig from
`kubernetes_clusters` (your own cluster, a platform team's, the lab's API server), with the same
objects as `target: aks`.

Runs on an Azure workspace (images from the workspace registry) and on a local one with
`workspace.registry` set (images pushed there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import pulumi
import yaml
from pydantic import Field, ValidationInfo, field_validator

from components.aks_service import AksService, AksServiceArgs
from components.kubernetes_cluster import KubernetesCluster, KubernetesClusterArgs, RegistryCredentials
from components.service import ProbeTimings
from infra.config import PROJECT_ROOT, ServiceBase, StackConfig, Strict, expand
from infra.targets import DeployContext, Deployed, Target, register
from infra.targets.aks import LABEL_KEY, LABEL_VALUE
from serving import settings as runtime


class PullSecretConfig(Strict):
    """A registry login for the pods' image pulls (a `kubernetes.io/dockerconfigjson` Secret)."""

    server: str = Field(min_length=1)
    """The registry's address as image references name it."""
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    """Set it as a secret: `pulumi config set --secret --path 'ml-deploy:kubernetes_clusters[0].image_pull_secret.password'`."""


def _kubeconfig_text(value: str) -> Optional[str]:
    """The value itself when it is a kubeconfig's text (a mapping with `clusters`), else None (a path)."""
    if "\n" not in value:
        return None
    try:
        data = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ValueError(f"kubeconfig text is not YAML: {err}") from None
    if not isinstance(data, dict) or "clusters" not in data:
        raise ValueError("kubeconfig text has no `clusters`")
    return value


class KubernetesClusterConfig(Strict):
    """One entry of `ml-deploy:kubernetes_clusters`: an existing cluster, reached by kubeconfig."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
    kubeconfig: str = Field(min_length=1)
    """A kubeconfig file (`~` and `$VARS` expanded), or the kubeconfig's text itself (set as a secret)."""
    context: Optional[str] = None
    """The context to use; the kubeconfig's current context when unset."""
    image_pull_secret: Optional[PullSecretConfig] = None
    api_only: bool = False
    """An API server without controllers or nodes (the lab): don't wait for rollouts or load
    balancers, and delete in the background."""

    @field_validator("kubeconfig")
    @classmethod
    def _kubeconfig(cls, value: str, info: ValidationInfo) -> str:
        if _kubeconfig_text(value) is not None:
            return value
        path = Path(expand(value))
        path = path if path.is_absolute() else (info.context or {}).get("root", PROJECT_ROOT) / path
        if not path.is_file():
            raise ValueError(f"no kubeconfig file at {path}")
        return str(path)

    def kubeconfig_text(self) -> str:
        """The kubeconfig's text, read from its file when it is a path."""
        return _kubeconfig_text(self.kubeconfig) or Path(self.kubeconfig).read_text()


class KubernetesServiceConfig(ServiceBase):
    """A service on an attached Kubernetes cluster (`target: kubernetes`), with the Azure ML SDK's
    AKS deploy settings and defaults (`AksWebservice.deploy_configuration`)."""

    target: Literal["kubernetes"]
    cluster: str
    """A cluster name from `kubernetes_clusters`."""
    auth_enabled: bool = True
    cpu_cores: float = Field(default=0.1, gt=0)
    memory_gb: float = Field(default=0.5, gt=0)
    gpu_cores: int = Field(default=0, ge=0)
    autoscale_enabled: Optional[bool] = None
    """Default: on unless `num_replicas` is set."""
    autoscale_min_replicas: int = Field(default=1, ge=1)
    autoscale_max_replicas: int = Field(default=10, ge=1)
    autoscale_target_utilization: int = Field(default=70, ge=1, le=100)
    num_replicas: Optional[int] = Field(default=None, ge=1)
    replica_max_concurrent_requests: int = Field(default=1, ge=1)
    period_seconds: int = Field(default=ProbeTimings.period_seconds, ge=1)
    initial_delay_seconds: int = Field(default=ProbeTimings.initial_delay_seconds, ge=0)
    timeout_seconds: int = Field(default=ProbeTimings.timeout_seconds, ge=1)
    success_threshold: int = Field(default=ProbeTimings.success_threshold, ge=1)
    failure_threshold: int = Field(default=ProbeTimings.failure_threshold, ge=1)
    namespace: str = Field(default="ml-deploy", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    primary_key: Optional[str] = Field(default=None, min_length=16)
    secondary_key: Optional[str] = Field(default=None, min_length=16)

    @property
    def autoscale(self) -> bool:
        return self.autoscale_enabled if self.autoscale_enabled is not None else self.num_replicas is None

    @property
    def probes(self) -> ProbeTimings:
        return ProbeTimings(self.initial_delay_seconds, self.period_seconds, self.timeout_seconds,
                            self.success_threshold, self.failure_threshold)


def _context_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    for i, cluster in enumerate(cfg.section("kubernetes_clusters", KubernetesClusterConfig)):
        if cluster.context is None:
            continue
        data: Any = yaml.safe_load(cluster.kubeconfig_text()) or {}
        contexts = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, dict)]
        if cluster.context not in contexts:
            problems.append(f"kubernetes_clusters[{i}].context: no context {cluster.context!r} in the kubeconfig "
                            f"(it has: {', '.join(map(str, contexts)) or 'none'})")
    return problems


def check(cfg: StackConfig) -> list[str]:
    problems = _context_problems(cfg)
    clusters = {c.name for c in cfg.section("kubernetes_clusters", KubernetesClusterConfig)}
    for i, svc in cfg.services_of(KubernetesServiceConfig):
        path = f"services[{i}]"
        if svc.cluster not in clusters:
            problems.append(f"{path}.cluster: no cluster named {svc.cluster!r} in kubernetes_clusters")
        if cfg.workspace.kind == "local" and cfg.workspace.registry is None:
            problems.append(f"{path}.target: 'kubernetes' on a local workspace needs workspace.registry "
                            f"(the registry its image is pushed to and pulled from)")
        if svc.enable_app_insights and cfg.workspace.kind != "azure":
            problems.append(f"{path}.enable_app_insights: needs an Azure workspace (its Application Insights)")
        if svc.autoscale_enabled and svc.num_replicas is not None:
            problems.append(f"{path}.num_replicas: not allowed with autoscale_enabled: true (set one or the other)")
        if svc.autoscale_min_replicas > svc.autoscale_max_replicas:
            problems.append(f"{path}.autoscale_min_replicas: must not exceed autoscale_max_replicas "
                            f"({svc.autoscale_min_replicas} > {svc.autoscale_max_replicas})")
        if svc.primary_key is not None and svc.primary_key == svc.secondary_key:
            problems.append(f"{path}.secondary_key: must differ from primary_key")
        for key, value in svc.tags.items():
            if not LABEL_KEY.match(key) or key.startswith(("kubernetes.io/", "k8s.io/")):
                problems.append(f"{path}.tags.{key}: not a valid Kubernetes label name")
            elif not LABEL_VALUE.match(value):
                problems.append(f"{path}.tags.{key}: value {value!r} is not a valid Kubernetes label value "
                                f"(up to 63 letters, digits, '-', '_', '.')")
    return problems


def setup(ctx: DeployContext) -> dict[str, KubernetesCluster]:
    """A provider for every cluster in `kubernetes_clusters`, whether or not a service uses it yet."""
    clusters: dict[str, KubernetesCluster] = {}
    for c in ctx.cfg.section("kubernetes_clusters", KubernetesClusterConfig):
        pull = c.image_pull_secret
        clusters[c.name] = KubernetesCluster(
            c.name,
            KubernetesClusterArgs(
                kubeconfig=pulumi.Output.secret(c.kubeconfig_text()),
                context=c.context,
                pull_secret=RegistryCredentials(pull.server, pull.username, pulumi.Output.secret(pull.password))
                if pull else None,
                api_only=c.api_only,
            ),
        )
    return clusters


def deploy(ctx: DeployContext, svc: KubernetesServiceConfig) -> Deployed:
    cluster: KubernetesCluster = ctx.shared["kubernetes"][svc.cluster]
    namespace = cluster.namespace(svc.namespace)
    workspace = ctx.workspace
    service = AksService(
        svc.name,
        AksServiceArgs(
            namespace=namespace.name,
            image_ref=ctx.container_images[svc.image].image_ref,
            provider=cluster.provider,
            settings=runtime.Settings(
                workers=runtime.workers_for_cores(svc.cpu_cores),
                timeout_ms=svc.scoring_timeout_ms,
                max_concurrent_requests=svc.replica_max_concurrent_requests,
            ),
            cpu_cores=svc.cpu_cores,
            memory_gb=svc.memory_gb,
            gpu_cores=svc.gpu_cores,
            autoscale=svc.autoscale,
            autoscale_min_replicas=svc.autoscale_min_replicas,
            autoscale_max_replicas=svc.autoscale_max_replicas,
            autoscale_target_utilization=svc.autoscale_target_utilization,
            num_replicas=svc.num_replicas,
            auth_enabled=svc.auth_enabled,
            primary_key=pulumi.Output.secret(svc.primary_key) if svc.primary_key else None,
            secondary_key=pulumi.Output.secret(svc.secondary_key) if svc.secondary_key else None,
            app_insights_connection_string=(
                workspace.app_insights_connection_string if svc.enable_app_insights and workspace else None
            ),
            probes=svc.probes,
            description=svc.description,
            tags=svc.tags,
            image_pull_secrets=list(namespace.image_pull_secrets),
            annotations=cluster.annotations,
        ),
    )
    logs = {"kind": "kubernetes", "cluster": svc.cluster, "namespace": svc.namespace,
            "selector": f"app.kubernetes.io/name={svc.name}", "container": "scoring"}
    return Deployed(service, logs)


TARGET = register(Target(
    name="kubernetes",
    config=KubernetesServiceConfig,
    deploy=deploy,
    workspace_kinds=("azure", "local"),
    sections={"kubernetes_clusters": KubernetesClusterConfig},
    check=check,
    setup=setup,
))
