"""`target: aks`: a service on Azure Kubernetes Service (production), on a cluster from `aks_clusters`."""

from __future__ import annotations

import base64
from datetime import date
from typing import Any, Literal, Optional

import pulumi
from pydantic import Field

from components.aks_cluster import AcceleratorPool, AksCluster, AksClusterArgs, UserPool
from components.aks_service import AcceleratorRequest, AksService, ModelDataCollection
from components.kubernetes_batch import batch_volume
from components.naming import Kind, azure_name
from infra.deploy import DeployContext, Deployed, MockResource
from infra.schema import BatchJobConfig, StackConfig, Strict
from infra.targets import ReplaceRules, Target, register
from infra.vm_sizes import (ACCELERATOR_SIZES, CLOCK, RESOURCES, SYSTEM_POOL_DEFAULT, VM_VCPUS, general_lifecycle,
                             lifecycle, system_pool_problem)
from infra.workload import PUBLIC_ENDPOINTS, KubernetesWorkload, cluster_job_problems, name_clashes, read_logs, workload_args, workload_logs, workload_problems

# Azure ML refuses a FastProd (production) cluster with fewer than 12 vCPUs in all or fewer than
# 3 nodes (MicrosoftDocs/azure-docs articles/machine-learning/v1/how-to-create-attach-kubernetes.md).
FASTPROD_MIN_VCPUS = 12
FASTPROD_MIN_NODES = 3


class AttachConfig(Strict):
    """An existing AKS cluster to deploy to instead of creating one."""

    resource_group: str = Field(min_length=1, max_length=90)
    cluster_name: str = Field(min_length=1, max_length=63)


SYSTEM_POOL = "system"
"""The created cluster's own pool (components/aks_cluster.py); no accelerator pool may take its name."""
MANAGED_CLUSTER = "azure-native:containerservice:ManagedCluster"
MANAGED_CLUSTER_POOL = "azure-native:containerservice:AgentPool"


class AcceleratorPoolConfig(Strict):
    """One entry of `aks_clusters[i].accelerator_pools`: a user pool of GPU or FPGA nodes."""

    # AKS Linux node pool names: lowercase letters and digits, starting with a letter, at most 12
    # characters (learn.microsoft.com/azure/aks/create-node-pools).
    name: str = Field(pattern=r"^[a-z][a-z0-9]{0,11}$")
    vm_size: str
    """A size from ACCELERATOR_SIZES in infra/vm_sizes.py; its kind (gpu, fpga) comes from there."""
    # 0-1000 nodes in a user pool (the AgentPool API's `count`).
    count: Optional[int] = Field(default=None, ge=0, le=1000)
    """Fixed node count; default 1 unless min_count/max_count are set."""
    min_count: Optional[int] = Field(default=None, ge=0, le=1000)
    max_count: Optional[int] = Field(default=None, ge=1, le=1000)
    """With min_count: the cluster autoscaler sizes the pool between the two."""

    @property
    def autoscale(self) -> bool:
        return self.min_count is not None and self.max_count is not None


class UserPoolConfig(Strict):
    """`aks_clusters[i].user_pool`: the pool the scoring pods run on, so the system pool keeps AKS's
    own pods (tainted CriticalAddonsOnly, as AKS recommends: MicrosoftDocs/azure-aks-docs
    articles/aks/use-system-pools.md). `user_pool: null` runs them on the system pool, untainted."""

    name: str = Field(default="scoring", pattern=r"^[a-z][a-z0-9]{0,11}$")
    vm_size: Optional[str] = None
    """Default: the cluster's `vm_size`."""
    count: Optional[int] = Field(default=None, ge=1, le=1000)
    """Fixed node count; default the cluster's `agent_count` unless min_count/max_count are set."""
    min_count: Optional[int] = Field(default=None, ge=1, le=1000)
    max_count: Optional[int] = Field(default=None, ge=1, le=1000)


class AksClusterConfig(Strict):
    """One entry of `ml-deploy:aks_clusters`: a cluster created for the stack, or an attached one."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
    agent_count: int = Field(default=3, ge=1, le=100)
    vm_size: str = SYSTEM_POOL_DEFAULT
    """The system pool's size (infra/vm_sizes.py SYSTEM_POOL_DEFAULT, Standard_D4s_v5, unless set)."""
    cluster_purpose: Literal["FastProd", "DevTest"] = "FastProd"
    attach: Optional[AttachConfig] = None
    accelerator_pools: list[AcceleratorPoolConfig] = Field(default_factory=list)
    """GPU and FPGA pools added to a created cluster, each tainted `sku=<kind>:NoSchedule`."""
    user_pool: Optional[UserPoolConfig] = Field(default_factory=UserPoolConfig)
    """Where the scoring pods run on a created cluster; null: on the system pool."""


class AksServiceConfig(KubernetesWorkload):
    """A service on Azure Kubernetes Service (`target: aks`)."""

    target: Literal["aks"]
    collect_model_data: bool = False
    max_request_wait_time: int = Field(default=500, ge=0)
    """Milliseconds a request may wait in the queue (an Azure ML router setting; kept for parity)."""


def _pool_problems(path: str, pools: list[AcceleratorPoolConfig], today: date) -> list[str]:
    problems: list[str] = []
    seen: dict[str, int] = {}
    for j, pool in enumerate(pools):
        at = f"{path}.accelerator_pools[{j}]"
        if pool.name == SYSTEM_POOL:
            problems.append(f"{at}.name: {SYSTEM_POOL!r} is the cluster's own pool; choose another name")
        elif pool.name in seen:
            problems.append(f"{at}.name: {pool.name!r} is already used by {path}.accelerator_pools[{seen[pool.name]}]")
        seen.setdefault(pool.name, j)
        if pool.vm_size not in ACCELERATOR_SIZES:
            problems.append(f"{at}.vm_size: unknown accelerator size {pool.vm_size!r}; use one of the sizes in "
                            f"ACCELERATOR_SIZES in infra/vm_sizes.py (e.g. Standard_NC4as_T4_v3), or add it there "
                            f"with its vCPUs, accelerators and the resource its device plugin advertises")
        else:
            error, _warning = lifecycle(pool.vm_size, today)
            if error:
                problems.append(f"{at}.vm_size: {error}")
        if pool.count is not None and (pool.min_count is not None or pool.max_count is not None):
            problems.append(f"{at}.count: not allowed with min_count/max_count (a fixed size, or the autoscaler's range)")
        elif (pool.min_count is None) != (pool.max_count is None):
            given, missing = ("min_count", "max_count") if pool.max_count is None else ("max_count", "min_count")
            problems.append(f"{at}.{missing}: required with {given} (the cluster autoscaler needs both)")
        elif pool.min_count is not None and pool.max_count is not None and pool.min_count > pool.max_count:
            problems.append(f"{at}.min_count: must not exceed max_count ({pool.min_count} > {pool.max_count})")
    return problems


def _user_pool_problems(path: str, cluster: AksClusterConfig) -> list[str]:
    pool = cluster.user_pool
    if pool is None:
        return []
    at = f"{path}.user_pool"
    problems: list[str] = []
    if pool.name == SYSTEM_POOL or pool.name in {p.name for p in cluster.accelerator_pools}:
        problems.append(f"{at}.name: {pool.name!r} is already a pool of the cluster; choose another name")
    if pool.vm_size is not None and (pool.vm_size in ACCELERATOR_SIZES or pool.vm_size not in VM_VCPUS):
        problems.append(f"{at}.vm_size: {pool.vm_size!r} is not a general size in infra/vm_sizes.py "
                        f"(accelerators go under accelerator_pools)")
    if pool.count is not None and (pool.min_count is not None or pool.max_count is not None):
        problems.append(f"{at}.count: not allowed with min_count/max_count (a fixed size, or the autoscaler's range)")
    elif (pool.min_count is None) != (pool.max_count is None):
        problems.append(f"{at}.{'max_count' if pool.max_count is None else 'min_count'}: required with the other "
                        f"(the cluster autoscaler needs both)")
    elif pool.min_count is not None and pool.max_count is not None and pool.min_count > pool.max_count:
        problems.append(f"{at}.min_count: must not exceed max_count ({pool.min_count} > {pool.max_count})")
    return problems


def _cluster_problems(cfg: StackConfig, today: date) -> list[str]:
    problems: list[str] = []
    for i, cluster in enumerate(cfg.section("aks_clusters", AksClusterConfig)):
        path = f"aks_clusters[{i}]"
        if cluster.attach is not None:
            given = cluster.model_fields_set & {"agent_count", "vm_size", "cluster_purpose"}
            for key in sorted(given):
                problems.append(f"{path}.{key}: not allowed with attach (the attached cluster keeps its own)")
            if "user_pool" in cluster.model_fields_set:
                problems.append(f"{path}.user_pool: not allowed with attach (the attached cluster keeps its own pools)")
            if cluster.accelerator_pools:
                problems.append(f"{path}.accelerator_pools: not allowed with attach (ml-deploy adds node pools only "
                                f"to clusters it creates; a service may still ask an attached cluster for a GPU)")
            continue
        problems += _pool_problems(path, cluster.accelerator_pools, today) + _user_pool_problems(path, cluster)
        vcpus = VM_VCPUS.get(cluster.vm_size)
        if cluster.vm_size in ACCELERATOR_SIZES:
            error, _warning = lifecycle(cluster.vm_size, today)
            problems.append(f"{path}.vm_size: {error}" if error and ACCELERATOR_SIZES[cluster.vm_size].brainwave_only
                            else f"{path}.vm_size: {cluster.vm_size} is an accelerator size: declare it under "
                                 f"accelerator_pools; the system pool runs the cluster's own pods on a general size "
                                 f"(e.g. {SYSTEM_POOL_DEFAULT})")
        elif vcpus is None:
            problems.append(f"{path}.vm_size: unknown VM size {cluster.vm_size!r}; use one of the sizes in "
                            f"infra/vm_sizes.py (e.g. {SYSTEM_POOL_DEFAULT}), or add it there with its vCPU count")
        else:
            # The cluster is created by this stack: a size new subscriptions can't deploy is an error.
            error, _warning = general_lifecycle(cluster.vm_size, today, new=True)
            unfit = system_pool_problem(cluster.vm_size)
            problems += [f"{path}.vm_size: {why}" for why in (unfit, error) if why]
        if vcpus is None:
            continue
        if cluster.cluster_purpose == "FastProd" and (
            vcpus * cluster.agent_count < FASTPROD_MIN_VCPUS or cluster.agent_count < FASTPROD_MIN_NODES
        ):
            need = max(FASTPROD_MIN_NODES, -(-FASTPROD_MIN_VCPUS // vcpus))
            problems.append(
                f"{path}.agent_count: a FastProd cluster needs at least {FASTPROD_MIN_NODES} nodes and "
                f"{FASTPROD_MIN_VCPUS} vCPUs; {cluster.agent_count} x {cluster.vm_size} ({vcpus} vCPUs) has "
                f"{vcpus * cluster.agent_count}: use agent_count >= {need} or cluster_purpose: DevTest"
            )
    return problems


def _accelerator_problems(path: str, svc: AksServiceConfig, cfg: StackConfig) -> list[str]:
    """Whether the service's cluster can give it what it asks: the alias used consistently, a pool
    of the kind on a created cluster, nodes with enough accelerators for one replica."""
    if (svc.gpu_cores and svc.accelerator is not None) or (svc.accelerator_count is not None and svc.accelerator is None):
        return []  # workload_problems says which key is wrong
    ask = svc.accelerator_ask
    clusters = [(j, c) for j, c in enumerate(cfg.section("aks_clusters", AksClusterConfig)) if c.name == svc.cluster]
    if ask is None or not clusters:
        return []
    kind, count, key = ask
    j, cluster = clusters[0]
    if cluster.attach is not None:
        if kind == "fpga":
            return [f"{path}.{key}: cluster {cluster.name!r} is attached: the name its FPGA device plugin advertises "
                    f"depends on that plugin's configuration, which ml-deploy does not manage; use a created cluster "
                    f"with an fpga pool in accelerator_pools"]
        return []  # the limit alone places it on the attached cluster's GPU nodes (README: accelerators)
    pools = [p for p in cluster.accelerator_pools
             if p.vm_size in ACCELERATOR_SIZES and ACCELERATOR_SIZES[p.vm_size].kind == kind]
    if not pools:
        example = "Standard_NC4as_T4_v3" if kind == "gpu" else "Standard_NP10s"
        return [f"{path}.{key}: cluster {cluster.name!r} has no {kind} pool; add one to "
                f"aks_clusters[{j}].accelerator_pools (e.g. vm_size: {example})"]
    most = max(pools, key=lambda p: ACCELERATOR_SIZES[p.vm_size].count)
    per_node = ACCELERATOR_SIZES[most.vm_size].count
    if count > per_node:
        at = "accelerator_count" if key == "accelerator" else key
        return [f"{path}.{at}: {count} per replica, but the largest {kind} node of cluster {cluster.name!r} "
                f"({most.vm_size}, pool {most.name!r}) has {per_node}; a replica runs on one node"]
    return []


def _service_problems(cfg: StackConfig) -> list[str]:
    clusters = {c.name for c in cfg.section("aks_clusters", AksClusterConfig)}
    problems: list[str] = []
    for i, svc in cfg.services_of(AksServiceConfig):
        path = f"services[{i}]"
        problems += workload_problems(path, svc, cfg.workspace.protect) + _accelerator_problems(path, svc, cfg)
        if svc.cluster not in clusters:
            problems.append(f"{path}.cluster: no cluster named {svc.cluster!r} in aks_clusters")
    return problems + name_clashes(cfg.services_of(AksServiceConfig))


def check(cfg: StackConfig) -> list[str]:
    clusters = {c.name for c in cfg.section("aks_clusters", AksClusterConfig)}
    return (_cluster_problems(cfg, CLOCK.today()) + _service_problems(cfg)
            + cluster_job_problems(cfg, "aks", "aks_clusters", clusters))


def accelerator_warnings(cfg: StackConfig, today: date) -> list[str]:
    """What still works but has a date: each accelerator pool whose size retires after `today`."""
    warnings: list[str] = []
    for i, cluster in enumerate(cfg.section("aks_clusters", AksClusterConfig)):
        for j, pool in enumerate(cluster.accelerator_pools):
            if pool.vm_size in ACCELERATOR_SIZES:
                _error, warning = lifecycle(pool.vm_size, today)
                if warning:
                    warnings.append(f"aks_clusters[{i}].accelerator_pools[{j}].vm_size: {warning}")
    return warnings


def _user_pool(cluster: AksClusterConfig) -> Optional[UserPool]:
    pool = cluster.user_pool
    if pool is None or cluster.attach is not None:
        return None
    autoscale = pool.min_count is not None and pool.max_count is not None
    return UserPool(name=pool.name, vm_size=pool.vm_size or cluster.vm_size,
                    count=None if autoscale else (pool.count or cluster.agent_count),
                    min_count=pool.min_count, max_count=pool.max_count)


def _pool(pool: AcceleratorPoolConfig) -> AcceleratorPool:
    return AcceleratorPool(
        name=pool.name, vm_size=pool.vm_size, kind=ACCELERATOR_SIZES[pool.vm_size].kind,
        count=None if pool.autoscale else (pool.count if pool.count is not None else 1),
        min_count=pool.min_count, max_count=pool.max_count,
    )


def setup(ctx: DeployContext) -> dict[str, AksCluster]:
    """Every cluster in `aks_clusters`, created or attached, whether or not a service uses it yet."""
    # On every preview and update, before anything is registered: retirement dates still ahead.
    for warning in accelerator_warnings(ctx.cfg, CLOCK.today()):
        pulumi.log.warn(warning)
    workspace = ctx.azure()
    registry = ctx.registry()
    clusters: dict[str, AksCluster] = {}
    for c in ctx.cfg.section("aks_clusters", AksClusterConfig):
        clusters[c.name] = AksCluster(
            c.name,
            AksClusterArgs(
                cluster_name=c.attach.cluster_name if c.attach
                else azure_name(Kind.AKS_CLUSTER, ctx.cfg.workspace.name, ctx.stack, c.name),
                resource_group_name=workspace.resource_group_name,
                registry_id=registry.id,
                subscription_id=registry.subscription_id,
                log_analytics_workspace_id=workspace.log_analytics_workspace_id,
                agent_count=c.agent_count,
                vm_size=c.vm_size,
                cluster_purpose=c.cluster_purpose,
                protect=ctx.cfg.workspace.protect,
                attach_resource_group=c.attach.resource_group if c.attach else None,
                accelerator_pools=tuple(_pool(p) for p in c.accelerator_pools),
                user_pool=_user_pool(c),
            ),
        )
    return clusters


def deploy(ctx: DeployContext, svc: AksServiceConfig) -> Deployed:
    workspace = ctx.azure()
    cluster: AksCluster = ctx.shared["aks"][svc.cluster]
    namespace = cluster.namespace(svc.namespace)
    attached = next(c for c in ctx.cfg.section("aks_clusters", AksClusterConfig) if c.name == svc.cluster).attach
    ask = svc.accelerator_ask
    accelerator = AcceleratorRequest(kind=ask[0], resource=RESOURCES[ask[0]], count=ask[1], pinned=attached is None) \
        if ask else None
    aks = AksService(
        svc.name,
        workload_args(
            ctx, svc,
            namespace=namespace.metadata.name,
            images=ctx.images,
            provider=cluster.provider,
            accelerator=accelerator,
            production=ctx.cfg.workspace.protect,
            collection=ModelDataCollection(
                resource_group_name=workspace.resource_group_name,
                subscription_id=workspace.subscription_id,
                storage_account_id=workspace.storage_account_id,
                blob_endpoint=workspace.blob_endpoint,
                container_name=workspace.model_data_container_name,
                oidc_issuer_url=cluster.oidc_issuer_url,
            ) if svc.collect_model_data else None,
        ),
    )
    return Deployed(aks, workload_logs(cluster.cluster_name, svc))


# AKS creates `azurefile-csi` with every cluster: an Azure Files share (HDD), ReadWriteMany, for pods on
# several nodes at once (learn.microsoft.com/azure/aks/create-volume-azure-files, "Use built-in storage
# classes": azurefile-csi, azurefile-csi-premium).
BATCH_STORAGE_CLASS = "azurefile-csi"


def batch(ctx: DeployContext, job: BatchJobConfig) -> dict[str, Any]:
    """The job's volume on its AKS cluster and what `ml-deploy batch run` starts its pods with: the
    workspace registry's image by digest (pulled with the kubelet identity's AcrPull, no secret)."""
    assert job.cluster is not None, "validated: an aks job names its cluster"
    cluster: AksCluster = ctx.shared["aks"][job.cluster]
    namespace = cluster.namespace(job.namespace)
    claim = batch_volume(job.name, namespace.metadata.name, cluster.provider, job.storage_class or BATCH_STORAGE_CLASS,
                         job.storage_size, ctx.cfg.workspace.protect)
    return {"cluster": cluster.cluster_name, "namespace": job.namespace, "claim": claim.metadata.name,
            "image_ref": ctx.images[job.image].image_ref, "pull_secrets": []}


# ---- what the offline plan's mocks answer --------------------------------------------------------

def _hash(*parts: str) -> str:
    import hashlib

    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:32]


def _managed_cluster(r: MockResource) -> None:
    r.state["identityProfile"] = {"kubeletidentity": {"objectId": _hash("kubelet", r.name), "clientId": _hash("kc", r.name)}}
    r.state["fqdn"] = f"{r.name}.hcp.{r.location}.azmk8s.io"
    r.state["oidcIssuerProfile"] = {"enabled": True, "issuerURL": f"https://{r.location}.oic.prod-aks.azure.com/{r.name}/"}


def _agent_pool(r: MockResource) -> None:
    # An agent pool's name is its own, not the cluster's `resourceName` the generic mock would pick.
    r.state["name"] = r.state.get("agentPoolName", r.name)


def _kube_service(r: MockResource) -> None:
    """What the API server and the cloud's load balancer add to a Service: a cluster IP from the
    service range, stable per name, and the load balancer's address."""
    digest = int(_hash("cluster-ip", r.name)[:4], 16)
    r.state["spec"] = {**(r.state.get("spec") or {}), "clusterIP": f"10.0.{digest >> 8}.{digest & 0xff or 1}"}
    r.state["status"] = {"loadBalancer": {"ingress": [{"ip": "20.0.0.2"}]}}


def _admin_credentials(args: dict[str, Any], _location: str) -> dict[str, Any]:
    name = args.get("resourceName", "cluster")
    kubeconfig = f"apiVersion: v1\nkind: Config\nclusters: [{{name: {name}, cluster: {{server: 'https://{name}.example.invalid'}}}}]\n"
    return {"kubeconfigs": [{"name": "clusterAdmin", "value": base64.b64encode(kubeconfig.encode()).decode()}]}


def _get_cluster(args: dict[str, Any], location: str) -> dict[str, Any]:
    name = args.get("resourceName", "cluster")
    return {"name": name, "location": location,
            "oidcIssuerProfile": {"enabled": True, "issuerURL": f"https://{location}.oic.prod-aks.azure.com/{name}/"},
            "identityProfile": {"kubeletidentity": {
                "objectId": _hash("kubelet", name), "clientId": _hash("kc", name),
                "resourceId": f"/subscriptions/00000000-0000-0000-0000-000000000000/kubelet/{name}"}}}


TARGET = register(Target(
    name="aks",
    config=AksServiceConfig,
    deploy=deploy,
    sections={"aks_clusters": AksClusterConfig},
    check=check,
    setup=setup,
    mock_resources={
        MANAGED_CLUSTER: _managed_cluster,
        MANAGED_CLUSTER_POOL: _agent_pool,
        "kubernetes:core/v1:Service": _kube_service,
    },
    logs={"kubernetes": read_logs},
    public_endpoints=PUBLIC_ENDPOINTS,
    batch=batch,
    replace_rules=ReplaceRules(
        # pulumi-azure-native provider/pkg/gen/replacement.go, forceNewMap: properties that replace the
        # resource whatever the spec says (nested ones are spelled with their parent, as the provider
        # matches them one level down).
        force_new={
            # forceNewMap's AgentPool entries: vmSize, gpuInstanceProfile, networkProfile.nodePublicIPTags.
            MANAGED_CLUSTER_POOL: ("vmSize", "gpuInstanceProfile", "networkProfile.nodePublicIPTags"),
            # forceNewMap's ManagedCluster entries (networkProfile's are one level down).
            MANAGED_CLUSTER: (
                "diskEncryptionSetID", "dnsPrefix", "fqdnSubdomain", "linuxProfile", "location", "nodeResourceGroup",
                "windowsProfile", *(f"networkProfile.{p}" for p in (
                    "serviceCidr", "serviceCidrs", "dnsServiceIP", "networkMode", "networkPlugin", "networkPluginMode",
                    "podCidr", "networkDataplane", "networkPolicy", "outboundType")),
            ),
        },
        # Sources: the property docs in the installed SDK (pulumi_azure_native 3.29.0).
        refused_in_place={MANAGED_CLUSTER: {
            # containerservice/managed_cluster.py: "The Azure API does not currently allow this property to be updated directly."
            "agentPoolProfiles": "Azure does not update a cluster's initial agent pool in place (azure-native docs)",
        }},
    ),
    mock_calls={
        "azure-native:containerservice:listManagedClusterAdminCredentials": _admin_credentials,
        "azure-native:containerservice:getManagedCluster": _get_cluster,
    },
))
