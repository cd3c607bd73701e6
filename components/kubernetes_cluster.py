"""A Kubernetes cluster attached by kubeconfig: any conformant cluster, not only AKS, with an image
pull secret in each namespace for a registry that needs one."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_kubernetes as k8s

from components import TOKEN_PREFIX
from components.service import SCORING_NAMESPACE_LABELS

PULL_SECRET_NAME = "ml-deploy-registry"
"""The image pull secret's name in each namespace."""
SKIP_AWAIT = "pulumi.com/skipAwait"
DELETION_PROPAGATION = "pulumi.com/deletionPropagationPolicy"


@dataclass(frozen=True)
class RegistryCredentials:
    """A registry login for the pods' image pulls."""

    server: str
    """The registry's address as images name it (`myregistry.example.com`, `127.0.0.1:5000`)."""
    username: str
    password: pulumi.Input[str]
    """Secret."""


@dataclass(frozen=True)
class KubernetesClusterArgs:
    """Inputs of a KubernetesCluster."""

    kubeconfig: pulumi.Input[str]
    """The kubeconfig's text (secret)."""
    context: Optional[str] = None
    """The kubeconfig context to use; its current context when None."""
    pull_secret: Optional[RegistryCredentials] = None
    """Credentials for the registry the services' images come from, when it needs them."""
    api_only: bool = False
    """The cluster has an API server but no controllers or nodes (the lab): objects are stored and
    served, nothing ever rolls out, gets a load balancer, or finishes a foreground deletion."""


def dockerconfigjson(server: str, username: str, password: str) -> str:
    """A `kubernetes.io/dockerconfigjson` Secret's `.dockerconfigjson`, as `kubectl create secret
    docker-registry` writes it (kubernetes.io/docs/concepts/configuration/secret/#docker-config-secrets)."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    return json.dumps({"auths": {server: {"username": username, "password": password, "auth": auth}}})


@dataclass(frozen=True)
class Namespace:
    """A namespace on the cluster and the names of the image pull secrets its pods use."""

    name: pulumi.Output[str]
    image_pull_secrets: list[pulumi.Output[str]]


class KubernetesCluster(pulumi.ComponentResource):
    """An existing cluster, reached with a kubeconfig through an explicit Kubernetes provider."""

    provider: k8s.Provider
    """The explicit Kubernetes provider for this cluster."""
    annotations: dict[str, str]
    """Annotations every object on this cluster carries (the await settings of an API-only cluster)."""

    def __init__(self, name: str, args: KubernetesClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TOKEN_PREFIX}:KubernetesCluster", name, None, opts)
        self._args = args
        self._namespaces: dict[str, Namespace] = {}
        # Without controllers, a Deployment never reports a rollout and a LoadBalancer Service never
        # gets an address (skip the wait), and a foreground deletion's finalizer is never removed
        # by a garbage collector (delete in the background: nothing depends on these objects there).
        self.annotations = {SKIP_AWAIT: "true", DELETION_PROPAGATION: "background"} if args.api_only else {}
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=pulumi.Output.secret(args.kubeconfig),
            context=args.context,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})

    def namespace(self, name: str) -> Namespace:
        """The namespace `name` (and its pull secret), registered once however many services use it."""
        if name not in self._namespaces:
            on_cluster = pulumi.ResourceOptions(parent=self, provider=self.provider)
            labels = dict(SCORING_NAMESPACE_LABELS)
            namespace = k8s.core.v1.Namespace(
                f"{self._name}-ns-{name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=name, labels=labels, annotations=self.annotations or None),
                opts=on_cluster,
            )
            secrets: list[pulumi.Output[str]] = []
            creds = self._args.pull_secret
            if creds is not None:
                secret = k8s.core.v1.Secret(
                    f"{self._name}-pull-{name}",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=PULL_SECRET_NAME, namespace=namespace.metadata.name, labels=labels,
                        annotations=self.annotations or None,
                    ),
                    type="kubernetes.io/dockerconfigjson",
                    string_data={".dockerconfigjson": pulumi.Output.secret(pulumi.Output.from_input(creds.password).apply(
                        lambda password: dockerconfigjson(creds.server, creds.username, password)))},
                    opts=on_cluster,
                )
                secrets.append(secret.metadata.name)
            self._namespaces[name] = Namespace(namespace.metadata.name, secrets)
        return self._namespaces[name]
