"""A model web service on AKS: Deployment (on accelerator pools when it asks for GPUs or FPGAs),
Service, autoscaling or fixed replicas, keys as a Secret."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Mapping, Optional

import pulumi
import pulumi_kubernetes as k8s
from pulumi_azure_native import authorization, managedidentity

from components import TOKEN_PREFIX
from components.aks_cluster import ACCELERATOR_LABEL, accelerator_toleration
from content.bundle import SCORING_UID, SERVING_PORT
from components.roles import STORAGE_BLOB_DATA_CONTRIBUTOR, role_definition_id
from components.kubernetes_split import (
    DEPLOYMENT_PORT, ROUTER_COMPONENT, ROUTER_HEALTH_PORT, ROUTER_CONFIG, ROUTER_CPU_CORES, ROUTER_MEMORY_GB, TrafficSplit, router_command,
    router_config,
)
from components.runtime import ServiceRuntime
from components.service import TLS_CERT_NAME, TLS_DIR, TLS_KEY_NAME, ProbeTimings, ScoringService
from serving import settings as runtime

WORKLOAD_IDENTITY_AUDIENCE = "api://AzureADTokenExchange"
KEYS_SECRET_FIELD = "auth-keys"
DESCRIPTION_ANNOTATION = "ml-deploy/description"
INSIGHTS_SECRET_FIELD = "app-insights"
STARTUP_PERIOD_S = 2
"""How often a starting pod's readiness is polled (kubelet's probe worker: one request per period)."""
PRE_STOP_SLEEP_S = 5
"""How long a terminating pod keeps serving before SIGTERM, while its endpoint is removed from the
Services' EndpointSlices and from kube-proxy's or the load balancer's rules on every node."""
MAX_SURGE = "25%"
"""New pods a rollout may start above the replica count (Kubernetes' default, rounded up: 1 for up to
4 replicas; the API reference, kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/); with
maxUnavailable 0 the ready count never drops."""
MAX_ROLLOUT_WAVES = 4
"""With MAX_SURGE, the most waves of new pods a rollout of any replica count starts one after another."""
SECRET_FIELDS = {runtime.AUTH_KEYS: KEYS_SECRET_FIELD, runtime.APP_INSIGHTS: INSIGHTS_SECRET_FIELD}
"""The service Secret's field for each secret variable of the runtime (ServiceRuntime.secret_environ)."""
SCORING_GID = 10001
"""The pods' group: above 10000, clear of the host's groups (kube-score's container-security-context-user-group-id)."""
TMP_DIR = "/tmp"
"""The only path the runtime and scoring scripts write (tempfile's default); an emptyDir under a read-only root."""
TMP_SIZE_LIMIT = "1Gi"
# What the kubelet counts against a pod's ephemeral-storage: its emptyDirs on disk, its container logs
# and writable layer (kubernetes.io/docs/concepts/configuration/manage-resources-containers/#local-ephemeral-storage);
# the limit leaves room for the logs above a full /tmp.
EPHEMERAL_STORAGE_REQUEST = "1Gi"
EPHEMERAL_STORAGE_LIMIT = "2Gi"
# Kubernetes' well-known node labels (kubernetes.io/docs/reference/labels-annotations-taints/).
SPREAD_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
SINGLE_REPLICA_ANNOTATION = "ml-deploy/single-replica-reason"
"""Why a production service runs one replica (the config's `single_replica_reason`), for the policy pack."""
# Azure's cloud provider gives the Service a private IP in the cluster's VNet instead of a public one
# (MicrosoftDocs/azure-aks-docs articles/aks/internal-lb.md; kubernetes-sigs/cloud-provider-azure's annotations).
INTERNAL_LB_ANNOTATION = "service.beta.kubernetes.io/azure-load-balancer-internal"
COMPONENT_LABEL = "app.kubernetes.io/component"
"""Kubernetes' recommended label for an object's role (kubernetes.io/docs/concepts/overview/working-with-objects/
common-labels/): `router` on a split service's router, which holds no keys (its deployments do)."""
CONFIG_DIR = "/etc/ml-deploy"
"""Where a container's `config_files` are mounted (a ConfigMap volume)."""
CONFIG_HASH_ANNOTATION = "ml-deploy/config-sha256"
"""On the pod template: the mounted config's digest, so a changed config rolls the pods whatever the
ConfigMap's name (a mounted ConfigMap changes in running pods only after the kubelet's sync, and
nothing tells the process), and a plan shows that rollout even where the new name is not yet known."""


def _route(service: str, deployment: str, cluster_ip: str, traffic: int) -> dict[str, object]:
    """A router's route to a deployment's Service. The API server gives every ClusterIP Service its
    address; none (a Service without one) would route every request to nowhere, so it stops `up`."""
    if not cluster_ip and not pulumi.runtime.is_dry_run():
        raise ValueError(f"{service}-{deployment}: its Service has no cluster IP for the router to send requests to")
    return {"name": deployment, "host": cluster_ip, "port": DEPLOYMENT_PORT, "traffic": traffic}


def rollout_bounds(timings: ProbeTimings, replicas: int) -> tuple[int, int]:
    """(progressDeadlineSeconds, `pulumi up`'s wait in seconds) for a Deployment of up to `replicas`.

    The deadline is one new pod's startup budget (the startup probe's polls) and a minute more (an
    image pull, a pod to schedule): past it without progress the rollout is failed. The wait covers
    a healthy rollout: each wave of new pods (at most MAX_ROLLOUT_WAVES) within its budget, a minute
    of margin; pulumi-kubernetes does not stop at the deadline, so a broken update fails at the wait."""
    budget = STARTUP_PERIOD_S * timings.startup_failure_threshold(STARTUP_PERIOD_S)
    deadline = budget + 60
    return deadline, deadline + (min(replicas, MAX_ROLLOUT_WAVES) - 1) * budget + 60


@dataclass(frozen=True)
class ModelDataCollection:
    """Where a service's collected inputs and predictions go, and what its identity needs."""

    resource_group_name: pulumi.Input[str]
    subscription_id: pulumi.Input[str]
    storage_account_id: pulumi.Input[str]
    blob_endpoint: pulumi.Input[str]
    container_name: pulumi.Input[str]
    oidc_issuer_url: pulumi.Input[str]
    """The cluster's OIDC issuer, which the identity trusts for the service's Kubernetes account."""


# An image without NVIDIA's CUDA base sets no NVIDIA_DRIVER_CAPABILITIES. Unset has meant `utility,compute`
# since NVIDIA Container Toolkit 1.4.0 (NVIDIA/nvidia-container-toolkit CHANGELOG.md, v1.4.0, 2020-12-11: "Add
# 'compute' capability to list of defaults"), enough for CUDA; set anyway so the pod states what it needs
# (`compute` for CUDA, `utility` for nvidia-smi/NVML) whatever toolkit version or config the node runs.
NVIDIA_CAPABILITIES = {"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"}


@dataclass(frozen=True)
class AcceleratorRequest:
    """What a service asks of the cluster's accelerators."""

    kind: str
    """`gpu` or `fpga`: the pool taint it tolerates and the pool label it selects."""
    resource: str
    """The extended resource its device plugin advertises (`nvidia.com/gpu`, `amd.com/u250`)."""
    count: int = 1
    pinned: bool = True
    """Also select nodes labelled as pools of this kind (on clusters ml-deploy created). Off on an
    attached cluster, whose pools ml-deploy does not label: the resource limit alone places the pod."""


@dataclass(frozen=True)
class AksServiceArgs:
    """Inputs of an AksService."""

    namespace: pulumi.Input[str]
    image_ref: pulumi.Input[str]
    provider: k8s.Provider
    runtime: ServiceRuntime
    """The service's runtime: workers, timeout, concurrency, keys (given or generated), App Insights,
    and TLS (a `kubernetes.io/tls` Secret mounted into the pods; the Service then listens on 443)."""
    cpu_cores: float = 0.1
    memory_gb: float = 0.5
    accelerator: Optional[AcceleratorRequest] = None
    """GPUs or FPGAs per replica: a resource limit, the pools' toleration and node selector."""
    autoscale: bool = True
    autoscale_min_replicas: int = 1
    autoscale_max_replicas: int = 10
    autoscale_target_utilization: int = 70
    num_replicas: Optional[int] = None
    probes: ProbeTimings = ProbeTimings()
    description: str = ""
    """An annotation on every object of the service."""
    tags: dict[str, str] = field(default_factory=dict)
    """Labels on every object and pod of the service (not in selectors, which cannot change)."""
    collection: Optional[ModelDataCollection] = None
    """Model data collection (the config's `collect_model_data`)."""
    image_pull_secrets: list[pulumi.Input[str]] = field(default_factory=list)
    """Names of `kubernetes.io/dockerconfigjson` Secrets in the namespace, for a registry that needs a login."""
    annotations: dict[str, str] = field(default_factory=dict)
    """More annotations on every object (a cluster's await settings)."""
    single_replica_reason: Optional[str] = None
    """Why one replica is enough (annotated on the Deployment and autoscaler for the policy pack)."""
    service_type: str = "LoadBalancer"
    """The Service's type: `LoadBalancer` (scoring URI at its ingress), or `ClusterIP`/`NodePort`
    (scoring URI at the Service's cluster DNS name, for clients in the cluster)."""
    internal_load_balancer: bool = False
    """A private IP in the cluster's VNet instead of a public one (Azure's cloud provider)."""
    load_balancer_source_ranges: list[str] = field(default_factory=list)
    """CIDRs allowed to reach the load balancer; empty: any address."""
    command: Optional[list[str]] = None
    """The container's command instead of the image's (the scoring runtime): a split service's router."""
    config_files: Optional[Mapping[str, pulumi.Input[str]]] = None
    """File name -> text, mounted read-only under CONFIG_DIR from a ConfigMap; a change rolls the pods."""
    health_port: Optional[int] = None
    """A process that forwards the runtime's routes elsewhere (a router) and answers its own readiness
    on this port (plain HTTP, `/ready`): readiness and startup are probed there, liveness by
    connecting to the serving port."""
    component: Optional[str] = None
    """COMPONENT_LABEL's value on every object."""
    drain_s: Optional[int] = None
    """How long the process may take to finish its requests after SIGTERM; default: the runtime's
    shutdown grace."""
    split: Optional[TrafficSplit] = None
    """Deployments instead of `image_ref`: each an AksService of its own, and this one their router
    (components/kubernetes_split.py)."""


class AksService(ScoringService):
    """A scoring image as a Kubernetes Deployment behind a LoadBalancer Service.

    A new image only rolls the Deployment (never below the ready count); the Service, the
    autoscaler and the cluster stay as they are.
    """


    deployments: dict[str, "AksService"]
    """A split service's deployments, by name (empty otherwise)."""

    def __init__(self, name: str, args: AksServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:AksService", name, None, opts)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=args.provider)
        # The keys first: a split service's deployments take them, and they are the same resources
        # (same names, same parent) whether or not the service has deployments.
        self.primary_key, self.secondary_key = args.runtime.keys(name, self)
        self.deployments = {}
        if args.split is not None:
            args = self._router_args(name, args, args.split)
        # `selector` picks the pods; it is immutable on a Deployment, so user tags stay out of it.
        selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "ml-deploy"}
        labels = {**args.tags, **selector, **({COMPONENT_LABEL: args.component} if args.component else {})}
        annotations = {**args.annotations, **({DESCRIPTION_ANNOTATION: args.description} if args.description else {})} or None
        meta = k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels, annotations=annotations)
        # The Deployment and autoscaler carry the reason for a single replica, if any.
        scaled_meta = k8s.meta.v1.ObjectMetaArgs(
            name=name, namespace=args.namespace, labels=labels,
            annotations={**(annotations or {}), SINGLE_REPLICA_ANNOTATION: args.single_replica_reason}
            if args.single_replica_reason else annotations)
        service_annotations = {**(annotations or {}), INTERNAL_LB_ANNOTATION: "true"} \
            if args.internal_load_balancer else annotations
        tls = args.runtime.tls
        settings = args.runtime.container_settings(SERVING_PORT)
        # The root filesystem is read-only; /tmp is the one place the runtime (tempfile, a script's
        # scratch files) writes. multiprocessing's shared counters live in /dev/shm, the runtime's own tmpfs.
        volumes = [k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit=TMP_SIZE_LIMIT))]
        mounts = [k8s.core.v1.VolumeMountArgs(name="tmp", mount_path=TMP_DIR)]
        if tls is not None:
            tls_secret = k8s.core.v1.Secret(
                f"{name}-tls",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{name}-tls", namespace=args.namespace, labels=labels, annotations=annotations),
                type="kubernetes.io/tls",
                string_data=pulumi.Output.secret({"tls.crt": tls.cert_pem, "tls.key": tls.key_pem}),
                opts=on_cluster,
            )
            volumes.append(k8s.core.v1.VolumeArgs(name="tls", secret=k8s.core.v1.SecretVolumeSourceArgs(
                secret_name=tls_secret.metadata.name,
                items=[k8s.core.v1.KeyToPathArgs(key="tls.crt", path=TLS_CERT_NAME),
                       k8s.core.v1.KeyToPathArgs(key="tls.key", path=TLS_KEY_NAME)],
            )))
            mounts.append(k8s.core.v1.VolumeMountArgs(name="tls", mount_path=TLS_DIR, read_only=True))
        pod_annotations: Optional[pulumi.Input[Mapping[str, str]]] = annotations
        if args.config_files:
            files = dict(args.config_files)
            # Named by the provider (`<name>-config-<suffix>`): a changed config is a new ConfigMap
            # (pulumi-kubernetes replaces one whose data changes), created before the old one is
            # deleted, so pods that still mount the old one never lose it.
            config_map = k8s.core.v1.ConfigMap(
                f"{name}-config",
                metadata=k8s.meta.v1.ObjectMetaArgs(namespace=args.namespace, labels=labels, annotations=annotations),
                data=files,
                opts=on_cluster,
            )
            volumes.append(k8s.core.v1.VolumeArgs(name="config", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                name=config_map.metadata.name)))
            mounts.append(k8s.core.v1.VolumeMountArgs(name="config", mount_path=CONFIG_DIR, read_only=True))
            digest = pulumi.Output.all(*files.values()).apply(lambda texts: hashlib.sha256(
                "\0".join(f"{k}\0{t}" for k, t in zip(files, texts)).encode()).hexdigest())
            pod_annotations = digest.apply(lambda d: {**(annotations or {}), CONFIG_HASH_ANNOTATION: d})

        secret_env = args.runtime.secret_environ(self.primary_key, self.secondary_key)
        secret_data = {SECRET_FIELDS[var]: value for var, value in secret_env.items()}

        accelerator = args.accelerator
        environ = settings.environ()
        if accelerator is not None and accelerator.kind == "gpu":
            environ.update(NVIDIA_CAPABILITIES)
        env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in environ.items()]
        if secret_data:
            secret = k8s.core.v1.Secret(
                f"{name}-secret",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=f"{name}-keys", namespace=args.namespace, labels=labels, annotations=annotations),
                type="Opaque",
                string_data=pulumi.Output.secret(secret_data),
                opts=on_cluster,
            )
            for var in secret_env:
                env.append(k8s.core.v1.EnvVarArgs(
                    name=var,
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret.metadata.name, key=SECRET_FIELDS[var])
                    ),
                ))

        pod_labels = dict(labels)
        service_account: Optional[pulumi.Input[str]] = None
        if args.collection is not None:
            service_account = self._collection_identity(name, args, labels)
            # Only on the pods, not in the selector: the webhook injects the federated token.
            pod_labels["azure.workload.identity/use"] = "true"
            env += [
                k8s.core.v1.EnvVarArgs(name=runtime.COLLECT_ACCOUNT_URL, value=args.collection.blob_endpoint),
                k8s.core.v1.EnvVarArgs(name=runtime.COLLECT_CONTAINER, value=args.collection.container_name),
                k8s.core.v1.EnvVarArgs(name=runtime.COLLECT_PREFIX, value=name),
            ]

        timings = args.probes
        progress_deadline, rollout_wait = rollout_bounds(
            timings, (args.autoscale_max_replicas if args.autoscale else args.num_replicas) or 1)
        http_get = k8s.core.v1.HTTPGetActionArgs(path=runtime.READINESS_PATH, port=SERVING_PORT,
                                                 scheme="HTTPS" if tls else "HTTP")
        if args.health_port is not None:
            http_get = k8s.core.v1.HTTPGetActionArgs(path=runtime.READINESS_PATH, port=args.health_port, scheme="HTTP")

        def probe(path: str) -> k8s.core.v1.ProbeArgs:
            # No initial delay: the startup probe below holds both off until init() is done
            # (kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes).
            own = args.health_port is not None
            return k8s.core.v1.ProbeArgs(
                http_get=(http_get if path == runtime.READINESS_PATH else None) if own else k8s.core.v1.HTTPGetActionArgs(
                    path=path, port=SERVING_PORT, scheme="HTTPS" if tls else "HTTP"),
                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=SERVING_PORT)
                if own and path != runtime.READINESS_PATH else None,
                period_seconds=timings.period_seconds,
                timeout_seconds=timings.timeout_seconds,
                success_threshold=timings.success_threshold,
                failure_threshold=timings.failure_threshold,
            )

        # Azure ML's initial_delay_seconds means "init() may take this long", not "serve no earlier":
        # a startup probe (KEP-950, stable) polls readiness every STARTUP_PERIOD_S for at least that
        # long, so a pod ready in 5 s serves in about 5 s and a slow init() is still not restarted.
        startup = k8s.core.v1.ProbeArgs(
            http_get=http_get, period_seconds=STARTUP_PERIOD_S, timeout_seconds=timings.timeout_seconds,
            failure_threshold=timings.startup_failure_threshold(STARTUP_PERIOD_S),
        )

        memory = f"{math.ceil(args.memory_gb * 1024)}Mi"
        requests = {"cpu": f"{math.ceil(args.cpu_cores * 1000)}m", "memory": memory,
                    "ephemeral-storage": EPHEMERAL_STORAGE_REQUEST}
        limits = {**requests, "ephemeral-storage": EPHEMERAL_STORAGE_LIMIT}
        tolerations: Optional[list[k8s.core.v1.TolerationArgs]] = None
        node_selector: Optional[dict[str, str]] = None
        if accelerator is not None:
            # Extended resources are limits only; Kubernetes sets the request equal to the limit.
            limits[accelerator.resource] = str(accelerator.count)
            tolerations = [accelerator_toleration(accelerator.kind)]
            node_selector = {ACCELERATOR_LABEL: accelerator.kind} if accelerator.pinned else None
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=scaled_meta,
            spec=k8s.apps.v1.DeploymentSpecArgs(
                # With autoscaling the HPA owns the replica count; a fixed count here would fight it.
                replicas=None if args.autoscale else (args.num_replicas or 1),
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                # A rollout that makes no progress (an init() that fails, an image that will not
                # pull) is marked failed (Progressing: False, ProgressDeadlineExceeded;
                # kubernetes.io/docs/concepts/workloads/controllers/deployment/#failed-deployment) once
                # a new pod has had its whole startup budget and a minute more (an image pull, a
                # pod to schedule), instead of the default 600 s; the old pods keep serving
                # meanwhile (maxUnavailable 0).
                progress_deadline_seconds=progress_deadline,
                # Never below the ready count while a new image rolls out.
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=MAX_SURGE),
                ),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=pod_labels, annotations=pod_annotations),
                    spec=k8s.core.v1.PodSpecArgs(
                        service_account_name=service_account,
                        tolerations=tolerations,
                        node_selector=node_selector,
                        image_pull_secrets=[k8s.core.v1.LocalObjectReferenceArgs(name=n) for n in args.image_pull_secrets] or None,
                        # The pods never call the Kubernetes API; workload identity mounts its own
                        # projected token (azure.workload.identity/use), not this one.
                        automount_service_account_token=False,
                        # The preStop sleep, the runtime's drain, and a margin before SIGKILL.
                        termination_grace_period_seconds=PRE_STOP_SLEEP_S + (
                            args.drain_s if args.drain_s is not None else settings.shutdown_grace_s) + 5,
                        # Pod Security Standards "restricted" (kubernetes.io/docs/concepts/security/pod-security-standards/):
                        # non-root, seccomp RuntimeDefault; the container drops every capability below.
                        security_context=k8s.core.v1.PodSecurityContextArgs(
                            run_as_non_root=True, run_as_user=SCORING_UID, run_as_group=SCORING_GID,
                            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
                        ),
                        # Replicas on different nodes and zones where there are some; never unschedulable
                        # for want of one (a single-zone cluster, a pool still scaling up).
                        topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
                            max_skew=1, topology_key=key, when_unsatisfiable="ScheduleAnyway",
                            label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                        ) for key in SPREAD_KEYS],
                        volumes=volumes,
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="scoring",
                                image=args.image_ref,
                                command=args.command,
                                ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=SERVING_PORT)],
                                env=env,
                                volume_mounts=mounts,
                                resources=k8s.core.v1.ResourceRequirementsArgs(requests=requests, limits=limits),
                                # A container that exits with an error (init() raised) gets its log's
                                # last lines (at most 2048 bytes or 80 lines) as its termination message
                                # (kubernetes.io/docs/tasks/debug/debug-application/determine-reason-pod-failure),
                                # which `kubectl describe` and a failed `pulumi up` show.
                                termination_message_policy="FallbackToLogsOnError",
                                startup_probe=startup,
                                liveness_probe=probe(runtime.LIVENESS_PATH),
                                readiness_probe=probe(runtime.READINESS_PATH),
                                # Still serving while the endpoint is taken out of every Service and
                                # load balancer, then SIGTERM, on which the runtime drains what it has
                                # (kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination;
                                # the sleep action is KEP-3960, stable since 1.34, beta and on since 1.30).
                                lifecycle=k8s.core.v1.LifecycleArgs(
                                    pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                                        sleep=k8s.core.v1.SleepActionArgs(seconds=PRE_STOP_SLEEP_S))),
                                security_context=k8s.core.v1.SecurityContextArgs(
                                    allow_privilege_escalation=False,
                                    read_only_root_filesystem=True,
                                    # The image's python carries a file capability, NET_BIND_SERVICE (content/bundle.py,
                                    # for port 80 on ACI); exec of such a file fails with EPERM when the bounding
                                    # set lacks it (0xERR0R/blocky#1461), so it stays; "restricted" allows exactly this one.
                                    capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"], add=["NET_BIND_SERVICE"]),
                                ),
                            )
                        ],
                    ),
                ),
            ),
            # pulumi-kubernetes 4.25 does not stop waiting at ProgressDeadlineExceeded (measured in
            # the lab: it waited its 10-minute default), so `up` is bounded by the time a healthy
            # rollout of every replica can take (a broken first pod fails it no sooner than that);
            # a timed-out update leaves the old pods serving.
            # A router rolls out only once every deployment it routes to has.
            opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
                depends_on=list(self.deployments.values()),
                custom_timeouts=pulumi.CustomTimeouts(create=f"{rollout_wait}s", update=f"{rollout_wait}s"))),
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=args.namespace, labels=labels,
                                                annotations=service_annotations),
            spec=k8s.core.v1.ServiceSpecArgs(
                type=args.service_type,
                selector=selector,
                load_balancer_source_ranges=list(args.load_balancer_source_ranges) or None,
                ports=[k8s.core.v1.ServicePortArgs(name="https", port=443, target_port=SERVING_PORT) if tls
                       else k8s.core.v1.ServicePortArgs(name="http", port=80, target_port=SERVING_PORT)],
            ),
            opts=on_cluster,
        )
        if args.autoscale:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa",
                metadata=scaled_meta,
                spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                    scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                        api_version="apps/v1", kind="Deployment", name=deployment.metadata.name
                    ),
                    min_replicas=args.autoscale_min_replicas,
                    max_replicas=args.autoscale_max_replicas,
                    metrics=[
                        k8s.autoscaling.v2.MetricSpecArgs(
                            type="Resource",
                            resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                                name="cpu",
                                target=k8s.autoscaling.v2.MetricTargetArgs(
                                    type="Utilization", average_utilization=args.autoscale_target_utilization
                                ),
                            ),
                        )
                    ],
                ),
                opts=on_cluster,
            )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta,
            # One pod at a time through node drains: with the two replicas production stacks run at least
            # (HPA minimum included), one keeps serving; a justified single replica may still be drained
            # (minAvailable: 1 would block every node drain and AKS upgrade).
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector)
            ),
            opts=on_cluster,
        )

        # Only the scoring port is admitted; enforced where the cluster runs a network-policy engine
        # (AksCluster creates its clusters with Cilium). Egress stays open: App Insights, model data
        # collection and scoring scripts reach Azure endpoints.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta,
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress"],
                ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                    ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=SERVING_PORT, protocol="TCP")])],
            ),
            opts=on_cluster,
        )

        if args.service_type == "LoadBalancer":
            address: pulumi.Input[str] = service.status.apply(
                lambda s: (s.load_balancer.ingress[0].ip or s.load_balancer.ingress[0].hostname or "")
                if s and s.load_balancer and s.load_balancer.ingress else ""
            )
        else:
            address = pulumi.Output.concat(service.metadata.name, ".", service.metadata.namespace, ".svc.cluster.local")
        self.cluster_ip: pulumi.Output[str] = service.spec.apply(lambda spec: (spec.cluster_ip or "") if spec else "")
        """The Service's cluster IP (a router in the cluster reaches the service there, without cluster DNS)."""
        scheme = "https://" if tls else "http://"
        host: pulumi.Input[str] = tls.cname if tls and tls.cname else address
        self.scoring_uri = pulumi.Output.concat(scheme, host, runtime.SCORE_PATH)
        self.swagger_uri = pulumi.Output.concat(scheme, host, runtime.SWAGGER_PATH)
        self.register_service_outputs()

    def _router_args(self, name: str, args: AksServiceArgs, split: TrafficSplit) -> AksServiceArgs:
        """Each deployment as an AksService `<name>-<deployment>` (ClusterIP, plain HTTP, this service's
        keys), and what this one runs instead: the router, configured with their cluster IPs and shares."""
        behind = replace(args.runtime, primary_key=self.primary_key, secondary_key=self.secondary_key, tls=None)
        routes = []
        for d in split.deployments:
            deployment = AksService(f"{name}-{d.name}", replace(
                args, image_ref=d.image_ref, runtime=behind, service_type="ClusterIP", internal_load_balancer=False,
                load_balancer_source_ranges=[], split=None), pulumi.ResourceOptions(parent=self))
            self.deployments[d.name] = deployment
            routes.append(deployment.cluster_ip.apply(lambda ip, d=d: _route(name, d.name, ip, d.traffic)))
        mirror = dict(split.mirror)
        config = pulumi.Output.all(*routes).apply(lambda resolved: router_config(list(resolved), mirror))
        return replace(
            args,
            # The router is in every scoring image; it runs from the first deployment's (so a new image
            # for that deployment rolls the router too, after the deployment).
            image_ref=split.deployments[0].image_ref,
            # No keys in the router (the deployments check them) and no telemetry of its own.
            runtime=replace(args.runtime, auth_enabled=False, app_insights=None),
            command=router_command(CONFIG_DIR, ROUTER_HEALTH_PORT, args.runtime.timeout_ms, args.runtime.tls is not None),
            config_files={ROUTER_CONFIG: config},
            health_port=ROUTER_HEALTH_PORT, component=ROUTER_COMPONENT,
            # A request in flight at SIGTERM may take the scoring timeout and the router's own margin.
            drain_s=math.ceil(args.runtime.timeout_ms / 1000 + runtime.ROUTER_EXTRA_WAIT_S),
            cpu_cores=ROUTER_CPU_CORES, memory_gb=ROUTER_MEMORY_GB, accelerator=None, collection=None, split=None,
        )

    def _collection_identity(self, name: str, args: AksServiceArgs, labels: dict[str, str]) -> pulumi.Output[str]:
        """A managed identity for the pods, federated to their service account, allowed to write
        blobs in the collection container only; returns the service account's name."""
        collection = args.collection
        assert collection is not None
        child = pulumi.ResourceOptions(parent=self)
        identity = managedidentity.UserAssignedIdentity(
            f"{name}-collector", resource_name_=f"{name}-collector",
            resource_group_name=collection.resource_group_name, opts=child,
        )
        managedidentity.FederatedIdentityCredential(
            f"{name}-federation",
            federated_identity_credential_resource_name=name,
            resource_name_=identity.name,
            resource_group_name=collection.resource_group_name,
            issuer=collection.oidc_issuer_url,
            subject=pulumi.Output.concat("system:serviceaccount:", args.namespace, ":", name),
            audiences=[WORKLOAD_IDENTITY_AUDIENCE],
            opts=child,
        )
        authorization.RoleAssignment(
            f"{name}-collector-blob",
            principal_id=identity.principal_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=role_definition_id(collection.subscription_id, STORAGE_BLOB_DATA_CONTRIBUTOR),
            scope=pulumi.Output.concat(
                collection.storage_account_id, "/blobServices/default/containers/", collection.container_name
            ),
            opts=child,
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, namespace=args.namespace, labels=labels,
                annotations={"azure.workload.identity/client-id": identity.client_id},
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider),
        )
        return account.metadata.name
