"""The ml-deploy policy rules: one validator per rule, plain functions of a resource's inputs.

Each validator has pulumi-policy's resource-validation signature, `(args, report_violation)`, and
reads only `args.resource_type`, `args.props`, `args.urn` and `args.opts.protect`, so the tests call
them directly with the same arguments the pack's analyzer builds (`policy/__main__.py` wraps them in
`ResourceValidationPolicy`; constructing a `PolicyPack` starts a gRPC server, so tests never do).

The stack a resource belongs to is read from its URN (`urn:pulumi:<stack>::<project>::...`): the
Python analyzer of pulumi-policy 1.21 learns the stack name only from `PULUMI_STACK`, which the
CLI sets for packs started through a language host but not for a pack started as an executable
(pkg/resource/plugin/analyzer_plugin.go, v3.260.0), which is how this pack runs here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

import yaml

from infra.vm_sizes import ACCELERATOR_SIZES, CLOCK, VM_VCPUS, lifecycle
from serving.settings import AUTH_KEYS

# Stacks where speed beats safety: nothing has to be protected there.
UNPROTECTED_STACKS = frozenset({"dev", "local"})
PROJECT = "ml-deploy"
PROMOTE_FROM_KEY = f"{PROJECT}:promote_from"
CLUSTER_PURPOSE_TAG = "ml-deploy-cluster-purpose"
# Azure ML refuses a FastProd cluster with fewer than 3 nodes or 12 vCPUs in all
# (MicrosoftDocs/azure-docs articles/machine-learning/v1/how-to-create-attach-kubernetes.md);
# the same numbers infra/targets/aks.py checks in the config.
FASTPROD_MIN_NODES = 3
FASTPROD_MIN_VCPUS = 12


class _Options(Protocol):
    protect: bool


class ResourceArgs(Protocol):
    """What the validators read of pulumi_policy.ResourceValidationArgs."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str
    opts: _Options


ReportViolation = Callable[..., None]


def stack_of(urn: str) -> str:
    """The stack name in a resource URN (`urn:pulumi:<stack>::<project>::<type>::<name>`)."""
    return urn.split("::", 1)[0].split(":", 2)[2]


# ---- registry-admin-user-off -------------------------------------------------------------------

REGISTRY = "azure-native:containerregistry:Registry"


def registry_admin_user_off(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """A container registry's admin user (a shared password) stays off: pulls use managed identities.

    An unset `adminUserEnabled` is compliant: the SDK and Azure both default it to false.
    """
    if args.resource_type == REGISTRY and args.props.get("adminUserEnabled") is True:
        report_violation("the registry's admin user is enabled: a shared password that never expires; "
                         "pull with a managed identity holding AcrPull instead (adminUserEnabled: false)")


# ---- public-service-auth / public-service-tls ------------------------------------------------------

CONTAINER_GROUP = "azure-native:containerinstance:ContainerGroup"
K8S_SERVICE = "kubernetes:core/v1:Service"
K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DYNAMIC = "pulumi-python:dynamic:Resource"
"""The local target's dynamic resources (providers/local.py names no type of its own)."""
HTTPS_PORT = 443


def _env_names(containers: Iterable[Mapping[str, Any]], key: str) -> set[str]:
    return {str(e.get("name")) for c in containers for e in (c.get(key) or []) if isinstance(e, Mapping)}


def _public_container_group(props: Mapping[str, Any]) -> bool:
    ip = props.get("ipAddress") or {}
    return str(ip.get("type", "")).lower() == "public"


def public_service_auth(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Every service reachable from outside its host checks a key.

    ACI: a container group with a public IP must give its containers `SCORING_AUTH_KEYS`.
    AKS: a Deployment's scoring container must read `SCORING_AUTH_KEYS` (the services front it with a
    LoadBalancer, a public IP on AKS). Local: a service process with auth off is compliant only on
    127.0.0.1, where it always listens (providers/local.py), so it is flagged when a `host` input
    says otherwise.
    """
    props = args.props
    if args.resource_type == CONTAINER_GROUP and _public_container_group(props):
        if AUTH_KEYS not in _env_names(props.get("containers") or [], "environmentVariables"):
            report_violation(f"public container group without auth: no {AUTH_KEYS} in its containers "
                             "(set auth_enabled: true on the service)")
    elif args.resource_type == K8S_DEPLOYMENT:
        pod = ((props.get("spec") or {}).get("template") or {}).get("spec") or {}
        if AUTH_KEYS not in _env_names(pod.get("containers") or [], "env"):
            report_violation(f"scoring Deployment without auth: no {AUTH_KEYS} in its containers, and AKS "
                             "services are exposed through a LoadBalancer (set auth_enabled: true)")
    elif args.resource_type == DYNAMIC and "auth_enabled" in props and "service" in props:
        host = str(props.get("host") or "127.0.0.1")
        if props.get("auth_enabled") is not True and host not in ("127.0.0.1", "localhost", "::1"):
            report_violation(f"local service {props.get('service')} listens on {host} without auth")


def public_service_tls(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Public endpoints are served over TLS (advisory until the scoring runtime serves TLS).

    Keyed on the inputs visible today: a public container group, or a LoadBalancer Service, whose
    ports do not include 443 serves plain HTTP.
    """
    props = args.props
    if args.resource_type == CONTAINER_GROUP and _public_container_group(props):
        ports = {p.get("port") for p in (props.get("ipAddress") or {}).get("ports") or []}
        if HTTPS_PORT not in ports:
            report_violation(f"public container group serves plain HTTP on port(s) {sorted(ports)}; no TLS on {HTTPS_PORT}")
    elif args.resource_type == K8S_SERVICE:
        spec = props.get("spec") or {}
        if spec.get("type") == "LoadBalancer":
            ports = {p.get("port") for p in spec.get("ports") or []}
            if HTTPS_PORT not in ports:
                report_violation(f"LoadBalancer Service serves plain HTTP on port(s) {sorted(ports)}; no TLS on {HTTPS_PORT}")


# ---- stateful-resources-protected ---------------------------------------------------------------

STATEFUL_TYPES = frozenset({
    "azure-native:resources:ResourceGroup",
    "azure-native:storage:StorageAccount",
    "azure-native:storage:BlobContainer",
    "azure-native:keyvault:Vault",
    "azure-native:operationalinsights:Workspace",
    "azure-native:containerregistry:Registry",
    "azure-native:machinelearningservices:Workspace",
    "azure-native:machinelearningservices:ModelContainer",
    "azure-native:containerservice:ManagedCluster",
})
"""Resources whose loss loses data or identity (what `workspace.protect` protects on Azure)."""


def _local_model_registry(args: ResourceArgs) -> bool:
    # The local target's model versions: a dynamic resource with the inputs of providers/local.py's
    # ModelVersionProvider (the internal `__provider` input is not passed to analyzers).
    return args.resource_type == DYNAMIC and {"registry", "model", "version"} <= set(args.props)


def stateful_resources_protected(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Stateful resources carry `protect` on every stack except dev and local."""
    stack = stack_of(args.urn)
    if stack in UNPROTECTED_STACKS:
        return
    if (args.resource_type in STATEFUL_TYPES or _local_model_registry(args)) and not args.opts.protect:
        report_violation(f"stateful resource not protected on stack {stack!r}: a rename or a removed config "
                         "entry would delete it (set workspace.protect: true)")


# ---- promoted-images-by-digest -------------------------------------------------------------------

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def promoted_stacks_from_files(root: Path) -> Callable[[str], bool]:
    """Whether a stack is promoted: its `Pulumi.<stack>.yaml` in `root` sets `ml-deploy:promote_from`.

    Read from the committed stack file because pulumi-policy 1.21 does not hand the stack's config
    to Python packs (its ConfigureStack keeps only the stack tags).
    """
    def promoted(stack: str) -> bool:
        path = root / f"Pulumi.{stack}.yaml"
        if not path.is_file():
            return False
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        return bool(config.get(PROMOTE_FROM_KEY) or config.get("promote_from"))
    return promoted


def _images(args: ResourceArgs) -> list[str]:
    props = args.props
    if args.resource_type == CONTAINER_GROUP:
        return [str(c.get("image")) for c in props.get("containers") or [] if c.get("image")]
    if args.resource_type == K8S_DEPLOYMENT:
        pod = ((props.get("spec") or {}).get("template") or {}).get("spec") or {}
        return [str(c.get("image")) for c in pod.get("containers") or [] if c.get("image")]
    return []


def promoted_images_by_digest(promoted: Callable[[str], bool]) -> Callable[[ResourceArgs, ReportViolation], None]:
    """In a promoted stack (`ml-deploy:promote_from` set), every image is referenced by digest, so
    that it runs exactly what was tested in the source stack; a tag can move, a digest cannot."""
    def validate(args: ResourceArgs, report_violation: ReportViolation) -> None:
        if not promoted(stack_of(args.urn)):
            return
        for image in _images(args):
            if not DIGEST.search(image):
                report_violation(f"image {image!r} is not pinned by digest (…@sha256:<64 hex>) in a promoted stack")
    return validate


# ---- no-retired-vm-sizes ----------------------------------------------------------------------------

MANAGED_CLUSTER = "azure-native:containerservice:ManagedCluster"
AGENT_POOL = "azure-native:containerservice:AgentPool"


def _pools(args: ResourceArgs) -> list[Mapping[str, Any]]:
    if args.resource_type == MANAGED_CLUSTER:
        return [p for p in args.props.get("agentPoolProfiles") or [] if isinstance(p, Mapping)]
    if args.resource_type == AGENT_POOL:
        return [args.props]
    return []


def _lifecycle(args: ResourceArgs) -> list[tuple[str, Optional[str], Optional[str]]]:
    """(pool, error, warning) for every pool on an accelerator size, from infra/vm_sizes.py's table of
    sizes and retirement dates (the config checks read the same table), on today's date."""
    today = CLOCK.today()
    found = []
    for pool in _pools(args):
        size = pool.get("vmSize") or ""
        if size in ACCELERATOR_SIZES:
            error, warning = lifecycle(str(size), today)
            found.append((str(pool.get("name") or pool.get("agentPoolName") or args.name), error, warning))
    return found


def no_retired_vm_sizes(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """No node pool on a size past its retirement date (NC, NCv3) or usable only by Azure ML's
    ended FPGA service (Brainwave's Standard_PB6s)."""
    for pool, error, _warning in _lifecycle(args):
        if error:
            report_violation(f"node pool {pool!r}: {error}")


def vm_sizes_retiring(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Advisory: a node pool on a size with an announced retirement date (NP-series)."""
    for pool, _error, warning in _lifecycle(args):
        if warning:
            report_violation(f"node pool {pool!r}: {warning}")


# ---- aks-fastprod-capacity --------------------------------------------------------------------------

def aks_fastprod_capacity(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """A FastProd (production) cluster has at least 3 nodes and 12 vCPUs, Azure ML's minimum."""
    if args.resource_type != MANAGED_CLUSTER:
        return
    tags = args.props.get("tags") or {}
    if tags.get(CLUSTER_PURPOSE_TAG, "FastProd") != "FastProd":
        return
    nodes, vcpus, unknown = 0, 0, []
    for pool in _pools(args):
        count = int(pool.get("count") or 1)
        size = str(pool.get("vmSize"))
        nodes += count
        if size in VM_VCPUS:
            vcpus += count * VM_VCPUS[size]
        else:
            unknown.append(size)
    if unknown:
        report_violation(f"cannot count the vCPUs of {', '.join(unknown)}: add the size to infra/vm_sizes.py")
    elif nodes < FASTPROD_MIN_NODES or vcpus < FASTPROD_MIN_VCPUS:
        report_violation(f"FastProd cluster with {nodes} node(s) and {vcpus} vCPUs; Azure ML needs at least "
                         f"{FASTPROD_MIN_NODES} nodes and {FASTPROD_MIN_VCPUS} vCPUs (or tag it DevTest)")


@dataclass(frozen=True)
class Rule:
    """One policy: its id, whether it blocks, what it checks, and its validator."""

    id: str
    mandatory: bool
    description: str
    validate: Callable[[ResourceArgs, ReportViolation], None]


def rules(promoted: Optional[Callable[[str], bool]] = None) -> list[Rule]:
    """Every rule of the pack, in the README's order."""
    promoted = promoted or (lambda _stack: False)
    return [
        Rule("registry-admin-user-off", True, "Container registries keep their admin user off.", registry_admin_user_off),
        Rule("public-service-auth", True, "Every public scoring service checks a key.", public_service_auth),
        Rule("public-service-tls", False, "Public scoring endpoints use TLS (advisory until the runtime serves TLS).",
             public_service_tls),
        Rule("stateful-resources-protected", True, "Stateful resources are protected outside dev and local stacks.",
             stateful_resources_protected),
        Rule("promoted-images-by-digest", True, "Promoted stacks run images pinned by digest.",
             promoted_images_by_digest(promoted)),
        Rule("no-retired-vm-sizes", True, "No node pool on a retired or Brainwave-era VM size.", no_retired_vm_sizes),
        Rule("vm-sizes-retiring", False, "Node pools on sizes with an announced retirement (advisory).",
             vm_sizes_retiring),
        Rule("aks-fastprod-capacity", True, "FastProd AKS clusters have at least 3 nodes and 12 vCPUs.",
             aks_fastprod_capacity),
    ]
