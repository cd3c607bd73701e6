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

from components.aks_service import AcceleratorRequest, AksService
from components.kubernetes_batch import batch_volume
from components.kubernetes_cluster import KubernetesCluster, KubernetesClusterArgs, RegistryCredentials
from infra.deploy import DeployContext, Deployed
from infra.schema import PROJECT_ROOT, BatchJobConfig, StackConfig, Strict, expand, offline
from infra.targets import Target, pushed_image_problem, register
from infra.vm_sizes import RESOURCES
from infra.workload import PUBLIC_ENDPOINTS, KubernetesWorkload, cluster_job_problems, name_clashes, read_logs, workload_args, workload_logs, workload_problems


class PullSecretConfig(Strict):
    """A registry login for the pods' image pulls (a `kubernetes.io/dockerconfigjson` Secret)."""

    server: str = Field(min_length=1)
    """The registry's address as image references name it."""
    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    """Set it as a secret: `pulumi config set --secret --path 'ml-deploy:kubernetes_clusters[0].image_pull_secret.password'`."""


_OFFLINE_KUBECONFIG = """# offline plan: no kubeconfig at {path}; a stand-in (nothing is contacted)
apiVersion: v1
kind: Config
clusters: []
contexts: []
"""


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
        if not path.is_file() and not offline():
            raise ValueError(f"no kubeconfig file at {path}")
        return str(path)

    def kubeconfig_text(self) -> str:
        """The kubeconfig's text, read from its file when it is a path. In an offline plan a missing
        file (the lab's, before `scripts/lab up`) is a stand-in naming it: nothing is contacted."""
        text = _kubeconfig_text(self.kubeconfig)
        if text is not None:
            return text
        path = Path(self.kubeconfig)
        if not path.is_file() and offline():
            return _OFFLINE_KUBECONFIG.format(path=path)
        return path.read_text()


class KubernetesServiceConfig(KubernetesWorkload):
    """A service on an attached Kubernetes cluster (`target: kubernetes`), with the settings and
    defaults of `target: aks`."""

    target: Literal["kubernetes"]
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    """How clients reach the service: the cluster's load balancer (its ingress is the scoring URI), a
    port on every node, or inside the cluster only (clusters without a load balancer; the scoring URI
    is then the Service's cluster DNS name, which `ml-deploy call` reaches through a port-forward)."""


def _context_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    for i, cluster in enumerate(cfg.section("kubernetes_clusters", KubernetesClusterConfig)):
        if cluster.context is None or (offline() and not Path(cluster.kubeconfig).is_file()):
            continue
        data: Any = yaml.safe_load(cluster.kubeconfig_text()) or {}
        contexts = [c.get("name") for c in data.get("contexts") or [] if isinstance(c, dict)]
        if cluster.context not in contexts:
            problems.append(f"kubernetes_clusters[{i}].context: no context {cluster.context!r} in the kubeconfig "
                            f"(it has: {', '.join(map(str, contexts)) or 'none'})")
    return problems


def check(cfg: StackConfig) -> list[str]:
    problems = _context_problems(cfg) + name_clashes(cfg.services_of(KubernetesServiceConfig))
    clusters = {c.name for c in cfg.section("kubernetes_clusters", KubernetesClusterConfig)}
    for i, svc in cfg.services_of(KubernetesServiceConfig):
        path = f"services[{i}]"
        problems += workload_problems(path, svc, cfg.workspace.protect)
        if svc.cluster not in clusters:
            problems.append(f"{path}.cluster: no cluster named {svc.cluster!r} in kubernetes_clusters")
        problem = pushed_image_problem(cfg, i, "kubernetes")
        if problem:
            problems.append(problem)
        if svc.service_type != "LoadBalancer":
            for key in ("internal_load_balancer", "load_balancer_source_ranges"):
                if getattr(svc, key):
                    problems.append(f"{path}.{key}: only with service_type: LoadBalancer (it is {svc.service_type})")
        if svc.enable_app_insights and cfg.workspace.kind != "azure":
            problems.append(f"{path}.enable_app_insights: needs an Azure workspace (its Application Insights)")
        ask = svc.accelerator_ask
        if ask is not None and ask[0] == "fpga":
            problems.append(f"{path}.accelerator: an attached cluster's FPGA resource name depends on its device "
                            f"plugin's configuration, which ml-deploy does not manage; use target: aks with an fpga "
                            f"pool in aks_clusters[].accelerator_pools")
    problems += cluster_job_problems(cfg, "kubernetes", "kubernetes_clusters", clusters)
    for i, job in enumerate(cfg.batch):
        if job.target != "kubernetes":
            continue
        if cfg.workspace.kind == "local" and (cfg.workspace.registry is None or cfg.promote_from is not None):
            problems.append(f"batch[{i}].target: 'kubernetes' runs the pushed image: a local workspace needs "
                            f"workspace.registry (and no promote_from)")
    return problems


def batch(ctx: DeployContext, job: BatchJobConfig) -> dict[str, Any]:
    """The job's volume on its cluster (its namespace, the registry login), and what `ml-deploy batch
    run` starts its pods with: the image by digest, the volume's claim, the pull secrets."""
    assert job.cluster is not None, "validated: a kubernetes job names its cluster"
    cluster: KubernetesCluster = ctx.shared["kubernetes"][job.cluster]
    namespace = cluster.namespace(job.namespace)
    claim = batch_volume(job.name, namespace.name, cluster.provider, job.storage_class, job.storage_size,
                         ctx.cfg.workspace.protect)
    return {"cluster": job.cluster, "namespace": job.namespace, "claim": claim.metadata.name,
            "image_ref": ctx.container_images[job.image].image_ref,
            "pull_secrets": list(namespace.image_pull_secrets)}


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
    ask = svc.accelerator_ask
    # As on an attached AKS cluster: the GPU limit alone places the pods on the nodes whose device
    # plugin advertises it; the cluster's taints and labels are its owner's.
    accelerator = AcceleratorRequest(kind=ask[0], resource=RESOURCES[ask[0]], count=ask[1], pinned=False) \
        if ask else None
    service = AksService(
        svc.name,
        workload_args(
            ctx, svc,
            namespace=namespace.name,
            images=ctx.container_images,
            provider=cluster.provider,
            accelerator=accelerator,
            production=ctx.cfg.workspace.protect,
            image_pull_secrets=list(namespace.image_pull_secrets),
            service_type=svc.service_type,
            annotations=cluster.annotations,
        ),
    )
    return Deployed(service, workload_logs(svc.cluster, svc))


TARGET = register(Target(
    name="kubernetes",
    config=KubernetesServiceConfig,
    deploy=deploy,
    workspace_kinds=("azure", "local"),
    sections={"kubernetes_clusters": KubernetesClusterConfig},
    check=check,
    setup=setup,
    logs={"kubernetes": read_logs},
    public_endpoints=PUBLIC_ENDPOINTS,
    batch=batch,
))
