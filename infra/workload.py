"""The Kubernetes workload a scoring service is on any cluster: its config (the Azure ML SDK's AKS deploy
settings), the checks that hold on every cluster, the AksService inputs it becomes, how its pods' logs
are read and which of its objects are public endpoints. Shared by `target: aks` and `target: kubernetes`
(infra/targets/), which create the same objects."""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Iterable, Literal, Mapping, Optional

import pulumi
from pydantic import Field

from components.aks_service import COMPONENT_LABEL, INTERNAL_LB_ANNOTATION, AcceleratorRequest, AksServiceArgs
from components.kubernetes_split import ROUTER_COMPONENT, SplitDeployment, TrafficSplit
from components.service import ProbeTimings
from components.runtime import ServiceRuntime
from infra.deploy import DeployContext, LogOptions, LogsUnavailable
from infra.schema import DeploymentBase, SplitService, StackConfig, TlsSettings
from policy.endpoints import HTTPS_PORT, EndpointReader, Exposure, env_names
from serving import settings as runtime

# Kubernetes label syntax (kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set).
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$")
LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


KUBE_SERVICE_NAME_MAX = 63
"""A Service's name is a DNS-1035 label: at most 63 characters (kubernetes.io/docs/concepts/overview/
working-with-objects/names/#rfc-1035-label-names)."""


class KubernetesDeploymentConfig(DeploymentBase):
    """A deployment of a service on Kubernetes: its own scoring Deployment `<service>-<name>` with the
    service's settings (resources, autoscaling, probes, keys), reached through the service's router."""


class KubernetesWorkload(SplitService[KubernetesDeploymentConfig], TlsSettings):
    """The deploy settings of a scoring service on Kubernetes, with the Azure ML SDK's defaults
    (`AksWebservice.deploy_configuration`, learn.microsoft.com/python/api/azureml-core/azureml.core.webservice.akswebservice):
    shared by `target: aks` and `target: kubernetes`, which create the same objects. Not a target
    itself: its `target` is left open for them to narrow. With `deployments`, each deployment runs
    with these settings behind a router that splits the traffic (components/kubernetes_split.py)."""

    cluster: str
    """A cluster name from the target's cluster list."""
    auth_enabled: bool = True
    cpu_cores: float = Field(default=0.1, gt=0)
    memory_gb: float = Field(default=0.5, gt=0)
    gpu_cores: int = Field(default=0, ge=0)
    """The Azure ML SDK's name for `accelerator: gpu` with `accelerator_count: gpu_cores`."""
    accelerator: Optional[Literal["gpu", "fpga"]] = None
    """Run on the cluster's accelerator pools of this kind."""
    accelerator_count: Optional[int] = Field(default=None, ge=1)
    """Accelerators per replica (default 1)."""
    autoscale_enabled: Optional[bool] = None
    """Default: on unless `num_replicas` is set."""
    autoscale_min_replicas: Optional[int] = Field(default=None, ge=1)
    """Default 2 on a protected (production) stack, so a node drain never takes the service down; else 1."""
    autoscale_max_replicas: int = Field(default=10, ge=1)
    autoscale_target_utilization: int = Field(default=70, ge=1, le=100)
    num_replicas: Optional[int] = Field(default=None, ge=1)
    single_replica_reason: Optional[str] = Field(default=None, min_length=1, max_length=250)
    """Why a production service may run (or scale down to) one replica; the policy pack refuses one without it."""
    internal_load_balancer: bool = False
    """A private IP in the cluster's VNet instead of a public one (Azure's cloud provider: AKS)."""
    load_balancer_source_ranges: list[str] = Field(default_factory=list)
    """CIDRs allowed through the load balancer (`spec.loadBalancerSourceRanges`); empty: any address."""
    replica_max_concurrent_requests: int = Field(default=1, ge=1)
    period_seconds: int = Field(default=ProbeTimings.period_seconds, ge=1)
    initial_delay_seconds: int = Field(default=ProbeTimings.initial_delay_seconds, ge=0)
    timeout_seconds: int = Field(default=ProbeTimings.timeout_seconds, ge=1)
    success_threshold: int = Field(default=ProbeTimings.success_threshold, ge=1)
    failure_threshold: int = Field(default=ProbeTimings.failure_threshold, ge=1)
    namespace: str = Field(default="ml-deploy", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    primary_key: Optional[str] = Field(default=None, min_length=16)
    """Secret; generated when absent. Set it with `pulumi config set --secret` in a real stack."""
    secondary_key: Optional[str] = Field(default=None, min_length=16)

    @property
    def autoscale(self) -> bool:
        return self.autoscale_enabled if self.autoscale_enabled is not None else self.num_replicas is None

    def min_replicas(self, production: bool) -> int:
        """The fewest replicas the service runs: fixed, or the autoscaler's minimum (defaulted)."""
        if not self.autoscale:
            return self.num_replicas or 1
        return self.autoscale_min_replicas or (2 if production else 1)

    @property
    def accelerator_ask(self) -> Optional[tuple[str, int, str]]:
        """(kind, count, the key the user set) of what this service asks for, the alias resolved."""
        if self.accelerator is not None:
            return self.accelerator, self.accelerator_count or 1, "accelerator"
        if self.gpu_cores:
            return "gpu", self.gpu_cores, "gpu_cores"
        return None

    @property
    def probes(self) -> ProbeTimings:
        return ProbeTimings(self.initial_delay_seconds, self.period_seconds, self.timeout_seconds,
                            self.success_threshold, self.failure_threshold)


def workload_problems(path: str, svc: KubernetesWorkload, production: bool = False) -> list[str]:
    """What is wrong with a workload's settings on any cluster: conflicting keys, label syntax."""
    problems: list[str] = []
    for j, cidr in enumerate(svc.load_balancer_source_ranges):
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            problems.append(f"{path}.load_balancer_source_ranges[{j}]: {cidr!r} is not a CIDR (e.g. 203.0.113.0/24)")
    if svc.single_replica_reason and svc.min_replicas(production) > 1:
        problems.append(f"{path}.single_replica_reason: only for a service that runs one replica "
                        f"(it runs at least {svc.min_replicas(production)})")
    if svc.gpu_cores and svc.accelerator is not None:
        problems.append(f"{path}.gpu_cores: the Azure ML SDK's name for accelerator: gpu + accelerator_count; "
                        f"not allowed with accelerator (set one or the other)")
    if svc.accelerator_count is not None and svc.accelerator is None:
        problems.append(f"{path}.accelerator_count: needs accelerator (gpu or fpga)")
    if svc.autoscale_enabled and svc.num_replicas is not None:
        problems.append(f"{path}.num_replicas: not allowed with autoscale_enabled: true (set one or the other)")
    if svc.autoscale and svc.min_replicas(production) > svc.autoscale_max_replicas:
        default = "" if svc.autoscale_min_replicas else " (its default on a protected stack)"
        problems.append(f"{path}.autoscale_min_replicas: must not exceed autoscale_max_replicas "
                        f"({svc.min_replicas(production)}{default} > {svc.autoscale_max_replicas})")
    for j, d in enumerate(svc.deployments or []):
        # Each deployment's Service is `<service>-<deployment>`.
        if len(f"{svc.name}-{d.name}") > KUBE_SERVICE_NAME_MAX:
            problems.append(f"{path}.deployments[{j}].name: {svc.name}-{d.name} (the deployment's Kubernetes Service) "
                            f"is over {KUBE_SERVICE_NAME_MAX} characters; shorten the deployment or service name")
    if svc.primary_key is not None and svc.primary_key == svc.secondary_key:
        problems.append(f"{path}.secondary_key: must differ from primary_key")
    for key, value in svc.tags.items():
        # Tags become Kubernetes labels, whose syntax is stricter than Azure's tags.
        if not LABEL_KEY.match(key) or key.startswith(("kubernetes.io/", "k8s.io/")):
            problems.append(f"{path}.tags.{key}: not a valid Kubernetes label name")
        elif not LABEL_VALUE.match(value):
            problems.append(f"{path}.tags.{key}: value {value!r} is not a valid Kubernetes label value "
                            f"(up to 63 letters, digits, '-', '_', '.')")
    return problems


def name_clashes(services: list[tuple[int, KubernetesWorkload]]) -> list[str]:
    """Deployments whose objects (`<service>-<deployment>`) would take another service's names on the
    same cluster and namespace: the API server would refuse them only halfway through `up`."""
    owners: dict[tuple[str, str, str], str] = {}
    for i, svc in services:
        owners[(svc.cluster, svc.namespace, svc.name)] = f"services[{i}]"
    problems = []
    for i, svc in services:
        for j, d in enumerate(svc.deployments or []):
            name = f"{svc.name}-{d.name}"
            other = owners.get((svc.cluster, svc.namespace, name))
            if other is not None:
                problems.append(f"services[{i}].deployments[{j}].name: its objects would be named {name}, "
                                f"which {other} already is on cluster {svc.cluster}, namespace {svc.namespace}")
            owners[(svc.cluster, svc.namespace, name)] = f"services[{i}].deployments[{j}]"
    return problems


def workload_runtime(ctx: DeployContext, svc: KubernetesWorkload) -> ServiceRuntime:
    """A workload's runtime: a worker per whole core, the SDK's per-replica concurrency, the config's keys."""
    return ctx.runtime(
        svc, runtime.workers_for_cores(svc.cpu_cores), max_concurrent_requests=svc.replica_max_concurrent_requests,
        primary_key=pulumi.Output.secret(svc.primary_key) if svc.primary_key else None,
        secondary_key=pulumi.Output.secret(svc.secondary_key) if svc.secondary_key else None,
    )


def workload_args(
    ctx: DeployContext, svc: KubernetesWorkload, *, namespace: pulumi.Input[str], images: Mapping[str, Any],
    provider: Any, accelerator: Optional[AcceleratorRequest], production: bool, **extra: Any,
) -> AksServiceArgs:
    """The AksService inputs of a workload (`images`: the stack's built images by name, each with an
    `image_ref`); `extra` holds what only one target sets."""
    split = None
    if svc.deployments:
        split = TrafficSplit([SplitDeployment(d.name, images[d.image].image_ref, d.traffic) for d in svc.deployments],
                             dict(svc.mirror_traffic))
    return AksServiceArgs(
        namespace=namespace,
        image_ref=images[svc.deployments[0].image if svc.deployments else svc.image_name].image_ref,
        split=split,
        provider=provider,
        runtime=workload_runtime(ctx, svc),
        cpu_cores=svc.cpu_cores,
        memory_gb=svc.memory_gb,
        accelerator=accelerator,
        autoscale=svc.autoscale,
        autoscale_min_replicas=svc.min_replicas(production),
        autoscale_max_replicas=svc.autoscale_max_replicas,
        autoscale_target_utilization=svc.autoscale_target_utilization,
        num_replicas=svc.num_replicas,
        probes=svc.probes,
        description=svc.description,
        tags=svc.tags,
        single_replica_reason=svc.single_replica_reason,
        internal_load_balancer=svc.internal_load_balancer,
        load_balancer_source_ranges=list(svc.load_balancer_source_ranges),
        **extra,
    )


def cluster_job_problems(cfg: StackConfig, target: str, section: str, clusters: set[str]) -> list[str]:
    """Each batch job of `target` names a cluster of the stack's `section` (an indexed Job runs there)."""
    problems: list[str] = []
    for i, job in enumerate(cfg.batch):
        if job.target != target:
            continue
        if job.cluster is None:
            problems.append(f"batch[{i}].cluster: a {target} job names its cluster (one of {section})")
        elif job.cluster not in clusters:
            problems.append(f"batch[{i}].cluster: no cluster named {job.cluster!r} in {section}")
    return problems


def workload_logs(cluster: pulumi.Input[str], svc: KubernetesWorkload) -> dict[str, Any]:
    """A workload's `logs` output: where its pods are (`selector`: the service's own, which
    `ml-deploy call` forwards to); with deployments, each one's pods by name too (the service's own
    pods are then its router's)."""
    source: dict[str, Any] = {"kind": "kubernetes", "cluster": cluster, "namespace": svc.namespace,
                              "selector": f"app.kubernetes.io/name={svc.name}", "container": "scoring"}
    if svc.deployments:
        source["deployments"] = {d.name: f"app.kubernetes.io/name={svc.name}-{d.name}" for d in svc.deployments}
    return source


def read_logs(source: Mapping[str, Any], options: LogOptions) -> str:
    """Each pod's log (and the previous container's, after a restart: a crash-looping `init()`); of
    one deployment's pods when the caller names one."""
    from kubernetes import client as k8s
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException

    tail = options.tail
    deployments: Mapping[str, str] = source.get("deployments") or {}
    selectors = [source["selector"], *deployments.values()]
    if options.deployment is not None:
        if options.deployment not in deployments:
            raise LogsUnavailable(f"no deployment {options.deployment!r}; the service has: "
                                  f"{', '.join(deployments) or 'none (it has no deployments)'}")
        selectors = [deployments[options.deployment]]
    api_client = kube_config.new_client_from_config(config_file=options.kubeconfig, context=options.context)
    core = k8s.CoreV1Api(api_client)
    pods = [pod for selector in selectors
            for pod in core.list_namespaced_pod(source["namespace"], label_selector=selector).items]
    if not pods:
        raise LogsUnavailable(f"no pods match {' or '.join(selectors)} in namespace {source['namespace']}")
    out: list[str] = []
    for pod in pods:
        name = str(pod.metadata.name if pod.metadata else "")
        statuses = {s.name: s for s in ((pod.status.container_statuses if pod.status else None) or [])}
        status = statuses.get(source["container"])
        if status is not None and status.restart_count:
            try:
                previous = core.read_namespaced_pod_log(name, source["namespace"], container=source["container"],
                                                        tail_lines=tail, previous=True)
                out.append(f"== {name} (previous container, restarted {status.restart_count}x)\n{previous}")
            except ApiException:
                pass
        try:
            current = core.read_namespaced_pod_log(name, source["namespace"], container=source["container"],
                                                   tail_lines=tail)
        except ApiException as err:
            current = f"(no log: {err.reason})\n"
        out.append(f"== {name}\n{current}")
    return "\n".join(out)


K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
K8S_SERVICE = "kubernetes:core/v1:Service"


def deployment_endpoints(props: Mapping[str, Any]) -> Iterable[Exposure]:
    """A scoring Deployment is fronted by a LoadBalancer (a public IP on AKS unless internal), so its
    containers must read `SCORING_AUTH_KEYS`."""
    pod = ((props.get("spec") or {}).get("template") or {}).get("spec") or {}
    if runtime.AUTH_KEYS in env_names(pod.get("containers") or [], "env"):
        return []
    if ((props.get("metadata") or {}).get("labels") or {}).get(COMPONENT_LABEL) == ROUTER_COMPONENT:
        # A split service's router holds no keys: it forwards to its deployments, each a scoring
        # Deployment of its own that this rule checks.
        return []
    return [Exposure(unauthenticated=(
        f"scoring Deployment without auth: no {runtime.AUTH_KEYS} in its containers, and AKS "
        "services are exposed through a LoadBalancer (set auth_enabled: true)"))]


def service_endpoints(props: Mapping[str, Any]) -> Iterable[Exposure]:
    """A LoadBalancer Service that is not internal (Azure's cloud provider gives one with
    INTERNAL_LB_ANNOTATION a private IP only) is public: its ports must include 443."""
    spec = props.get("spec") or {}
    annotations = (props.get("metadata") or {}).get("annotations") or {}
    if spec.get("type") != "LoadBalancer" or str(annotations.get(INTERNAL_LB_ANNOTATION, "")).lower() == "true":
        return []
    ports = {p.get("port") for p in spec.get("ports") or []}
    if HTTPS_PORT in ports:
        return []
    return [Exposure(plaintext=f"LoadBalancer Service serves plain HTTP on port(s) {sorted(ports)}; no TLS on {HTTPS_PORT}")]


PUBLIC_ENDPOINTS: Mapping[str, EndpointReader] = {K8S_DEPLOYMENT: deployment_endpoints, K8S_SERVICE: service_endpoints}
"""What `target: aks` and `target: kubernetes` declare to the policy pack."""
