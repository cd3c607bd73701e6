"""An AKS cluster for model services: created for the stack, or an existing one attached; on a
created cluster, tainted accelerator pools (GPU, FPGA) and the device plugin each kind needs."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import pulumi
import pulumi_kubernetes as k8s
from pulumi_azure_native import authorization, containerservice

from components import TOKEN_PREFIX
from components.naming import Kind, azure_name
from components.roles import ACR_PULL, role_definition_id
from components.service import SCORING_NAMESPACE_LABELS


AcceleratorKind = Literal["gpu", "fpga"]

ACCELERATOR_TAINT_KEY = "sku"
"""Accelerator pools are tainted `sku=<kind>:NoSchedule`, AKS's own convention for GPU pools
(MicrosoftDocs/azure-aks-docs articles/aks/use-nvidia-gpu.md, `--node-taints sku=gpu:NoSchedule`)."""
ACCELERATOR_LABEL = "ml-deploy/accelerator"
"""Node label `ml-deploy/accelerator: <kind>` on every accelerator pool: what services and device
plugins select."""
POOL_LABEL = "ml-deploy/pool"
SYSTEM_POOL_TAINT = "CriticalAddonsOnly=true:NoSchedule"
"""On the system pool when the cluster has a user pool: AKS's own add-ons tolerate it, application pods
land on user pools (MicrosoftDocs/azure-aks-docs articles/aks/use-system-pools.md, dedicated system pools)."""
# Cilium enforces NetworkPolicy on Azure CNI's overlay; networkPolicy cilium requires networkDataplane
# cilium (learn.microsoft.com/azure/aks/azure-cni-powered-by-cilium; the AKS API's NetworkPolicy enum).
NETWORK_PLUGIN = "azure"
NETWORK_PLUGIN_MODE = "overlay"
NETWORK_DATAPLANE = "cilium"
NETWORK_POLICY = "cilium"

# NVIDIA's device plugin, as in NVIDIA/k8s-device-plugin deployments/static/nvidia-device-plugin.yml at
# tag v0.20.0 (2026-08-19); FAIL_ON_INIT_ERROR=false as AKS's use-nvidia-gpu.md sets it.
NVIDIA_DEVICE_PLUGIN_IMAGE = "nvcr.io/nvidia/k8s-device-plugin:v0.20.0"
# Xilinx's (AMD's) FPGA device plugin, as in Xilinx/FPGA_as_a_Service k8s-device-plugin/k8s-device-plugin.yml
# at 9feea15 (2023-10-31), the last manifest before the repository removed its examples (cac8e91, 2025-01-28).
XILINX_DEVICE_PLUGIN_IMAGE = "public.ecr.aws/xilinx_dcg/k8s-device-plugin:1.3.0"
# With DeviceNameCustomize=True the plugin reads this file from its ConfigMap (k8s-device-plugin/server.go):
# key `<deviceType>-<shell VBNV>-<timestamp>` ("*" matches any), value the name, 'quoted' parts literal.
# deviceType is the VBNV's second `_` field (fpga.go), "u250" on NP's Alveo U250, so every U250 is
# advertised as amd.com/u250 whatever shell timestamp the card reports.
XILINX_NAME_FILE = "NameCustomize.json"
XILINX_NAMES = {"u250-*-*": "'u250'"}
XILINX_CONFIG_DIR = "/opt/xilinx/device-plugin-configmap"
DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"


@dataclass(frozen=True)
class AcceleratorPool:
    """A user node pool of accelerator VMs, tainted so that only pods asking for its kind land there."""

    name: str
    """The AKS agent pool name: lowercase letters and digits, starting with a letter, at most 12."""
    vm_size: str
    kind: AcceleratorKind
    """The taint and label value, and which device plugin runs on the pool's nodes."""
    count: Optional[int] = 1
    """Fixed node count; None with min_count/max_count (the cluster autoscaler sizes the pool)."""
    min_count: Optional[int] = None
    max_count: Optional[int] = None

    @property
    def autoscale(self) -> bool:
        return self.min_count is not None and self.max_count is not None


@dataclass(frozen=True)
class UserPool:
    """The user pool the scoring pods run on (untainted), while the system pool keeps AKS's own pods."""

    name: str
    vm_size: str
    count: Optional[int] = 3
    """Fixed node count; None with min_count/max_count (the cluster autoscaler sizes the pool)."""
    min_count: Optional[int] = None
    max_count: Optional[int] = None

    @property
    def autoscale(self) -> bool:
        return self.min_count is not None and self.max_count is not None


def accelerator_toleration(kind: str) -> k8s.core.v1.TolerationArgs:
    """Tolerates the taint of accelerator pools of `kind`."""
    return k8s.core.v1.TolerationArgs(key=ACCELERATOR_TAINT_KEY, operator="Equal", value=kind, effect="NoSchedule")


@dataclass(frozen=True)
class AksClusterArgs:
    """Inputs of an AksCluster. With `attach_resource_group` set, the cluster is looked up, not created."""

    cluster_name: str
    resource_group_name: pulumi.Input[str]
    registry_id: pulumi.Input[str]
    """Its kubelet identity gets AcrPull on this registry."""
    subscription_id: pulumi.Input[str]
    log_analytics_workspace_id: pulumi.Input[str]
    agent_count: int = 3
    vm_size: str = "Standard_D4s_v5"
    """The system pool's size; the same default as infra/vm_sizes.py SYSTEM_POOL_DEFAULT (a test checks)."""
    cluster_purpose: str = "FastProd"
    protect: bool = True
    attach_resource_group: Optional[str] = None
    accelerator_pools: tuple[AcceleratorPool, ...] = field(default_factory=tuple)
    """User pools of GPU or FPGA nodes; only on a created cluster (config validation says so)."""
    user_pool: Optional[UserPool] = None
    """The pool services run on; with it the system pool is tainted for critical add-ons only."""


def _kubelet_object_id(profile: Optional[dict[str, Any]]) -> str:
    object_id = getattr((profile or {}).get("kubeletidentity"), "object_id", None)
    if not object_id:
        raise ValueError("the cluster reports no kubelet identity; AKS clusters need a managed identity")
    return str(object_id)


def _issuer_url(profile: Any) -> str:
    url = getattr(profile, "issuer_url", None)
    if not url:
        raise ValueError("the cluster has no OIDC issuer; enable it (and workload identity) for model data collection")
    return str(url)


def _decode_kubeconfig(value: str) -> str:
    return base64.b64decode(value).decode("utf-8")


class AksCluster(pulumi.ComponentResource):
    """A cluster whose nodes pull from the workspace registry with their kubelet identity, and a
    Kubernetes provider (from the cluster's admin credentials, secret) for the services on it."""

    provider: k8s.Provider
    """The explicit Kubernetes provider for this cluster."""
    cluster_name: pulumi.Output[str]
    """The AKS resource's name."""
    kubelet_object_id: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    """The cluster's OIDC issuer, for workload identity federation."""

    def __init__(self, name: str, args: AksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:AksCluster", name, None, opts)
        self._namespaces: dict[str, k8s.core.v1.Namespace] = {}
        invoke = pulumi.InvokeOutputOptions(parent=self)
        if args.attach_resource_group is None:
            cluster = containerservice.ManagedCluster(
                f"{name}-cluster",
                resource_name_=args.cluster_name,
                resource_group_name=args.resource_group_name,
                # Cluster names may hold `_` and run to 63 characters; DNS prefixes may not.
                dns_prefix=azure_name(Kind.AKS_DNS_PREFIX, args.cluster_name),
                identity=containerservice.ManagedClusterIdentityArgs(
                    type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED
                ),
                agent_pool_profiles=[
                    containerservice.ManagedClusterAgentPoolProfileArgs(
                        name="system",
                        mode=containerservice.AgentPoolMode.SYSTEM,
                        count=args.agent_count,
                        vm_size=args.vm_size,
                        os_type=containerservice.OSType.LINUX,
                        type=containerservice.AgentPoolType.VIRTUAL_MACHINE_SCALE_SETS,
                        node_taints=[SYSTEM_POOL_TAINT] if args.user_pool else None,
                    )
                ],
                # A network-policy engine, so the services' NetworkPolicies are enforced (without one
                # AKS accepts them and enforces nothing: MicrosoftDocs/azure-aks-docs articles/aks/use-network-policies.md).
                network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                    network_plugin=NETWORK_PLUGIN, network_plugin_mode=NETWORK_PLUGIN_MODE,
                    network_dataplane=NETWORK_DATAPLANE, network_policy=NETWORK_POLICY,
                ),
                enable_rbac=True,
                # Workload identity: pods get Azure tokens for their own managed identity (model
                # data collection) instead of sharing node credentials.
                oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
                security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                    workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True)
                ),
                # Container logs and metrics go to the workspace's Log Analytics.
                addon_profiles={
                    "omsagent": containerservice.ManagedClusterAddonProfileArgs(
                        enabled=True, config={"logAnalyticsWorkspaceResourceID": args.log_analytics_workspace_id}
                    )
                },
                tags={"ml-deploy-cluster-purpose": args.cluster_purpose},
                # A cluster re-created by mistake drops every service on it.
                opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
            )
            for pool in args.accelerator_pools:
                self._agent_pool(name, pool, cluster, args.resource_group_name)
            if args.user_pool is not None:
                self._user_pool(name, args.user_pool, cluster, args.resource_group_name)
            cluster_name: pulumi.Input[str] = cluster.name
            resource_group: pulumi.Input[str] = args.resource_group_name
            profile: pulumi.Output[Any] = cluster.identity_profile
            oidc: pulumi.Output[Any] = cluster.oidc_issuer_profile
        else:
            if args.accelerator_pools:
                raise ValueError("accelerator pools are only created on a cluster this stack creates")
            existing = containerservice.get_managed_cluster_output(
                resource_group_name=args.attach_resource_group, resource_name=args.cluster_name, opts=invoke
            )
            cluster_name = existing.name
            resource_group = args.attach_resource_group
            profile = existing.identity_profile
            oidc = existing.oidc_issuer_profile

        self.cluster_name = pulumi.Output.from_input(cluster_name)
        self.kubelet_object_id = profile.apply(_kubelet_object_id)
        self.oidc_issuer_url = oidc.apply(_issuer_url)
        authorization.RoleAssignment(
            f"{name}-acrpull",
            principal_id=self.kubelet_object_id,
            principal_type=authorization.PrincipalType.SERVICE_PRINCIPAL,
            role_definition_id=role_definition_id(args.subscription_id, ACR_PULL),
            scope=args.registry_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        credentials = containerservice.list_managed_cluster_admin_credentials_output(
            resource_group_name=resource_group, resource_name=cluster_name, opts=invoke
        )
        kubeconfig = pulumi.Output.secret(credentials.kubeconfigs.apply(lambda ks: _decode_kubeconfig(ks[0].value)))
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=kubeconfig, opts=pulumi.ResourceOptions(parent=self)
        )
        kinds = {pool.kind for pool in args.accelerator_pools}
        if "gpu" in kinds:
            self._nvidia_device_plugin(name)
        if "fpga" in kinds:
            self._xilinx_device_plugin(name)
        self.register_outputs({"kubelet_object_id": self.kubelet_object_id})

    def _agent_pool(self, name: str, pool: AcceleratorPool, cluster: containerservice.ManagedCluster,
                    resource_group_name: pulumi.Input[str]) -> containerservice.AgentPool:
        # Only pods that tolerate the taint (accelerated services, the device plugin) use these nodes.
        return self._pool(name, pool, cluster, resource_group_name,
                          taints=[f"{ACCELERATOR_TAINT_KEY}={pool.kind}:NoSchedule"],
                          labels={ACCELERATOR_LABEL: pool.kind, POOL_LABEL: pool.name})

    def _user_pool(self, name: str, pool: UserPool, cluster: containerservice.ManagedCluster,
                   resource_group_name: pulumi.Input[str]) -> containerservice.AgentPool:
        return self._pool(name, pool, cluster, resource_group_name, taints=None, labels={POOL_LABEL: pool.name})

    def _pool(self, name: str, pool: AcceleratorPool | UserPool, cluster: containerservice.ManagedCluster,
              resource_group_name: pulumi.Input[str], taints: Optional[list[str]],
              labels: dict[str, str]) -> containerservice.AgentPool:
        """A user-mode node pool of the cluster."""
        # The autoscaler owns the node count of an autoscaled pool; an `up` resetting it would fight it.
        ignore = ["count"] if pool.autoscale else []
        return containerservice.AgentPool(
            f"{name}-pool-{pool.name}",
            agent_pool_name=pool.name,
            resource_name_=cluster.name,
            resource_group_name=resource_group_name,
            mode=containerservice.AgentPoolMode.USER,
            os_type=containerservice.OSType.LINUX,
            type=containerservice.AgentPoolType.VIRTUAL_MACHINE_SCALE_SETS,
            vm_size=pool.vm_size,
            count=pool.min_count if pool.autoscale else pool.count,
            enable_auto_scaling=pool.autoscale,
            min_count=pool.min_count,
            max_count=pool.max_count,
            node_taints=taints,
            node_labels=labels,
            # Deleting the cluster deletes its pools; no separate delete call against a cluster already gone.
            opts=pulumi.ResourceOptions(parent=self, deleted_with=cluster, ignore_changes=ignore),
        )

    def _device_plugin(self, name: str, kind: str, app: str, image: str, env: dict[str, str],
                       mounts: list[k8s.core.v1.VolumeMountArgs], volumes: list[k8s.core.v1.VolumeArgs]) -> None:
        """A device plugin DaemonSet on the pools of `kind` only: it tolerates their taint and selects
        their label, registers with the kubelet through its device-plugins folder and nothing else."""
        labels = {"app.kubernetes.io/name": app, "app.kubernetes.io/managed-by": "ml-deploy"}
        k8s.apps.v1.DaemonSet(
            f"{name}-{kind}-device-plugin",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=app, namespace="kube-system", labels=labels),
            spec=k8s.apps.v1.DaemonSetSpecArgs(
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": app}),
                update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=k8s.core.v1.PodSpecArgs(
                        # As both vendors' manifests: rescheduled first after a node failure.
                        priority_class_name="system-node-critical",
                        node_selector={ACCELERATOR_LABEL: kind},
                        tolerations=[accelerator_toleration(kind)],
                        containers=[k8s.core.v1.ContainerArgs(
                            name="device-plugin",
                            image=image,
                            env=[k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in env.items()],
                            # ml-deploy's bounds (neither vendor's manifest sets any); not measured on a
                            # real accelerator node here. No probes: the plugin serves only a gRPC socket
                            # to the kubelet, which notices itself when the plugin goes away.
                            resources=k8s.core.v1.ResourceRequirementsArgs(
                                requests={"cpu": "10m", "memory": "32Mi"},
                                limits={"cpu": "100m", "memory": "128Mi"},
                            ),
                            security_context=k8s.core.v1.SecurityContextArgs(
                                allow_privilege_escalation=False,
                                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                            ),
                            volume_mounts=[k8s.core.v1.VolumeMountArgs(name="device-plugin", mount_path=DEVICE_PLUGIN_DIR),
                                           *mounts],
                        )],
                        volumes=[k8s.core.v1.VolumeArgs(
                            name="device-plugin",
                            host_path=k8s.core.v1.HostPathVolumeSourceArgs(path=DEVICE_PLUGIN_DIR, type="Directory"),
                        ), *volumes],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )

    def _nvidia_device_plugin(self, name: str) -> None:
        """NVIDIA's device plugin: advertises each GPU as `nvidia.com/gpu` (AKS installs the driver)."""
        self._device_plugin(name, "gpu", "nvidia-device-plugin", NVIDIA_DEVICE_PLUGIN_IMAGE,
                            {"FAIL_ON_INIT_ERROR": "false"}, [], [])

    def _xilinx_device_plugin(self, name: str) -> None:
        """Xilinx's FPGA device plugin, with its device names customized to `amd.com/u250`."""
        names = k8s.core.v1.ConfigMap(
            f"{name}-fpga-device-names",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="xilinx-fpga-device-names", namespace="kube-system",
                labels={"app.kubernetes.io/managed-by": "ml-deploy"}),
            data={XILINX_NAME_FILE: json.dumps(XILINX_NAMES)},
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
        self._device_plugin(
            name, "fpga", "xilinx-fpga-device-plugin", XILINX_DEVICE_PLUGIN_IMAGE, {"DeviceNameCustomize": "True"},
            [k8s.core.v1.VolumeMountArgs(name="device-names", mount_path=XILINX_CONFIG_DIR, read_only=True)],
            [k8s.core.v1.VolumeArgs(name="device-names",
                                    config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=names.metadata.name))],
        )

    def namespace(self, name: str) -> k8s.core.v1.Namespace:
        """The namespace `name` on this cluster, registered once however many services use it."""
        if name not in self._namespaces:
            self._namespaces[name] = k8s.core.v1.Namespace(
                f"{self._name}-ns-{name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=dict(SCORING_NAMESPACE_LABELS)),
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )
        return self._namespaces[name]
