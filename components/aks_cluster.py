"""An AKS cluster for model services: created for the stack, or an existing one attached."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Optional

import pulumi
import pulumi_kubernetes as k8s
from pulumi_azure_native import authorization, containerservice

from components import TOKEN_PREFIX
from components.naming import Kind, azure_name
from components.roles import ACR_PULL, role_definition_id


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
    vm_size: str = "Standard_D3_v2"
    cluster_purpose: str = "FastProd"
    protect: bool = True
    attach_resource_group: Optional[str] = None


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
                    )
                ],
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
            cluster_name: pulumi.Input[str] = cluster.name
            resource_group: pulumi.Input[str] = args.resource_group_name
            profile: pulumi.Output[Any] = cluster.identity_profile
            oidc: pulumi.Output[Any] = cluster.oidc_issuer_profile
        else:
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
        self.register_outputs({"kubelet_object_id": self.kubelet_object_id})

    def namespace(self, name: str) -> k8s.core.v1.Namespace:
        """The namespace `name` on this cluster, registered once however many services use it."""
        if name not in self._namespaces:
            self._namespaces[name] = k8s.core.v1.Namespace(
                f"{self._name}-ns-{name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels={"app.kubernetes.io/managed-by": "ml-deploy"}),
                opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
            )
        return self._namespaces[name]
