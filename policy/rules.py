"""The ml-deploy policy rules: one validator per rule, plain functions of a resource's inputs.

Each validator has pulumi-policy's resource-validation signature, `(args, report_violation)`, and
reads only `args.resource_type`, `args.props`, `args.urn` and `args.opts.protect`, so the tests call
them directly with the same arguments the pack's analyzer builds (`policy/__main__.py` wraps them in
`ResourceValidationPolicy`; constructing a `PolicyPack` starts a gRPC server, so tests never do).

The stack a resource belongs to is read from its URN (`urn:pulumi:<stack>::<project>::...`): the
Python analyzer of pulumi-policy 1.21 learns the stack name only from `PULUMI_STACK`, which the
CLI sets for packs started through a language host but not for a pack started as an executable
(pkg/resource/plugin/analyzer_plugin.go, v3.260.0), which is how this pack runs here.

`evaluate` runs every rule over an offline plan's resources (cli/offline.py's recording), so that
`./ml-deploy plan` and `diff` report what the pack would, without an engine. This module imports
neither pulumi nor pulumi_policy at the top: it runs in the program's venv as well as in the pack's.
The public-service rules read the targets' endpoint declarations from the target registry, which
brings the providers' SDKs: the pack's venv installs the program's (policy/requirements.txt).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, Sequence

import yaml

from content import edge_manifest
from infra.vm_sizes import ACCELERATOR_SIZES, CLOCK, GENERAL_SIZES, VM_VCPUS, general_lifecycle, lifecycle
from policy.endpoints import EndpointReader, Exposure

# Stacks where speed beats safety: nothing has to be protected there. `lab` runs everything on
# 127.0.0.1 (scripts/lab) and its tests destroy it (tests/test_lab_stack.py), which protect would refuse.
UNPROTECTED_STACKS = frozenset({"dev", "local", "lab"})
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


# ---- where the stack files are -------------------------------------------------------------------

PROJECT_FILES = ("Pulumi.yaml", "Pulumi.yml")
STACK_ROOT_ENV = "ML_DEPLOY_STACK_ROOT"
"""Set it to read the stack files from a folder of your choice."""
PLUGIN_PWD_ENV = "ML_DEPLOY_PLUGIN_PWD"
"""Where the CLI started the pack (`policy/run` sets it before it changes to the pack's folder)."""


def project_root(start: Path) -> Path:
    """The project's folder: `start` or its nearest ancestor holding `Pulumi.yaml`, the way the CLI
    finds its project from where it runs; `start` itself when none does."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if any((folder / name).is_file() for name in PROJECT_FILES):
            return folder
    return start


def stack_root(environ: Mapping[str, str], cwd: Path) -> Path:
    """The folder of the `Pulumi.<stack>.yaml` files the rules read: `ML_DEPLOY_STACK_ROOT` when set,
    else the project folder above the directory the CLI started the pack in.

    That directory is the program's, not the project's: the CLI starts an executable pack with its
    plugin context's working directory (pkg/resource/plugin/analyzer_plugin.go, NewPolicyAnalyzer,
    v3.260.0), which is the project's `main` folder (`infra/` here, pkg/engine/project.go GetPwdMain).
    """
    if environ.get(STACK_ROOT_ENV):
        return Path(environ[STACK_ROOT_ENV])
    return project_root(Path(environ.get(PLUGIN_PWD_ENV) or cwd))


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
# Which resources are public endpoints is each target's to say (`Target.public_endpoints` in
# infra/targets/, in policy/endpoints.py's terms); these two rules apply what they say.

CONTAINER_GROUP = "azure-native:containerinstance:ContainerGroup"
K8S_SERVICE = "kubernetes:core/v1:Service"
K8S_DEPLOYMENT = "kubernetes:apps/v1:Deployment"
DYNAMIC = "pulumi-python:dynamic:Resource"
"""The local target's dynamic resources (providers/local.py names no type of its own)."""
EDGE_DEVICE_DEPLOYMENT = "pulumi-python:dynamic/iot_edge:DeviceDeployment"
EDGE_HUB_DEPLOYMENT = "pulumi-python:dynamic/iot_edge:HubDeployment"
"""providers/iot_hub.py's deployments: one device's content, and a deployment at scale."""
EDGE_DEPLOYMENTS = frozenset({EDGE_DEVICE_DEPLOYMENT, EDGE_HUB_DEPLOYMENT})

_READERS: Optional[Mapping[str, Sequence[EndpointReader]]] = None


def endpoint_readers() -> Mapping[str, Sequence[EndpointReader]]:
    """Every target's public-endpoint readers by resource type, read once from the target registry
    (imported here, not at the top: it brings the providers' SDKs, which the pack's venv has too)."""
    global _READERS
    if _READERS is None:
        from infra.targets import endpoint_readers as declared

        _READERS = declared()
    return _READERS


def exposures(args: ResourceArgs) -> list[Exposure]:
    """The endpoints a resource opens beyond its host, as its target declares them."""
    return [found for reader in endpoint_readers().get(args.resource_type, ()) for found in reader(args.props)]


def public_service_auth(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Every service reachable from outside its host checks a key: what each target declares public
    (ACI: a container group with a public IP; AKS and Kubernetes: a scoring Deployment, fronted by a
    LoadBalancer; local: a process on an address other than loopback; IoT Edge: a module that
    publishes a port on the device) must be given the keys."""
    for exposure in exposures(args):
        if exposure.unauthenticated:
            report_violation(exposure.unauthenticated)


def public_service_tls(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Public endpoints are served over TLS (ACI: a public container group without 443 among its
    ports; AKS: a LoadBalancer Service that is not internal, likewise). The pack runs it twice:
    mandatory on production stacks (`public-service-tls`), advisory on dev, local and lab
    (`public-service-tls-dev`)."""
    for exposure in exposures(args):
        if exposure.plaintext:
            report_violation(exposure.plaintext)


def on_stacks(production: bool, validate: Callable[[ResourceArgs, ReportViolation], None]
              ) -> Callable[[ResourceArgs, ReportViolation], None]:
    """`validate` on production stacks only (every stack but dev, local and lab), or on those three only."""
    def on(args: ResourceArgs, report_violation: ReportViolation) -> None:
        if (stack_of(args.urn) not in UNPROTECTED_STACKS) == production:
            validate(args, report_violation)
    return on


# ---- production-replicas ------------------------------------------------------------------------

K8S_HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
SINGLE_REPLICA_ANNOTATION = "ml-deploy/single-replica-reason"
"""components/aks_service.py writes the config's `single_replica_reason` here."""


def production_replicas(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """A production service runs at least two replicas, or says why one is enough.

    One replica means every node drain or AKS upgrade takes the service down (its PodDisruptionBudget
    lets the pod go, or the drain would never finish). A Deployment with `replicas: 1`, or an
    autoscaler whose `minReplicas` is 1 or unset (Kubernetes' default, 1), needs the
    `ml-deploy/single-replica-reason` annotation: the service's `single_replica_reason`.
    """
    if stack_of(args.urn) in UNPROTECTED_STACKS:
        return
    props = args.props
    spec = props.get("spec") or {}
    if args.resource_type == K8S_DEPLOYMENT and spec.get("replicas") == 1:
        what = "Deployment runs 1 replica"
    elif args.resource_type == K8S_HPA and int(spec.get("minReplicas") or 1) < 2:
        what = f"autoscaler may scale down to {spec.get('minReplicas') or 1} replica"
    else:
        return
    annotations = (props.get("metadata") or {}).get("annotations") or {}
    if not str(annotations.get(SINGLE_REPLICA_ANNOTATION) or "").strip():
        report_violation(f"{what} on production stack {stack_of(args.urn)!r}: a node drain or AKS upgrade takes "
                         f"it down; run 2 or more (num_replicas, autoscale_min_replicas) or say why one is enough "
                         f"in the service's single_replica_reason")


# ---- online-deployment-instances ----------------------------------------------------------------

ONLINE_DEPLOYMENT = "azure-native:machinelearningservices:OnlineDeployment"
ONLINE_DEPLOYMENT_MIN_INSTANCES = 2


def online_deployment_instances(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """An online deployment of a production stack runs 2+ instances (advisory).

    With one, an instance's upgrade or failure leaves the deployment nothing to answer with; Microsoft
    recommends "at least 3" in production (learn.microsoft.com/azure/machine-learning/
    reference-yaml-deployment-managed-online, `instance_count`). A deployment is judged on its own:
    one that takes no live traffic (green before the switch) may ignore the advice.
    """
    if args.resource_type != ONLINE_DEPLOYMENT or stack_of(args.urn) in UNPROTECTED_STACKS:
        return
    capacity = int(((args.props.get("sku") or {}).get("capacity")) or 1)
    if capacity < ONLINE_DEPLOYMENT_MIN_INSTANCES:
        name = args.props.get("deploymentName") or args.name
        report_violation(f"online deployment {name} runs {capacity} instance on production stack "
                         f"{stack_of(args.urn)!r}: an instance's upgrade or failure leaves it nothing to answer with; "
                         f"set instance_count to {ONLINE_DEPLOYMENT_MIN_INSTANCES} or more (Microsoft recommends 3) "
                         "once it takes live traffic")


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
    # Deleting a hub deletes every device identity in it: each provisioned device must be
    # provisioned again (components/iot_hub.py protects it with the workspace).
    "azure-native:iothub:IotHubResource",
})
"""Resources whose loss loses data or identity (what `workspace.protect` protects on Azure)."""


def _local_model_registry(args: ResourceArgs) -> bool:
    # The local target's model versions: a dynamic resource with the inputs of providers/local.py's
    # ModelVersionProvider (the internal `__provider` input is not passed to analyzers).
    return args.resource_type == DYNAMIC and {"registry", "model", "version"} <= set(args.props)


def stateful_resources_protected(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Stateful resources carry `protect` on every stack except dev, local and lab."""
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
    if args.resource_type in EDGE_DEPLOYMENTS:
        # The custom modules only: edgeAgent and edgeHub are the IoT Edge runtime, which
        # content/edge_manifest.py points at Microsoft's minor-version tags on purpose.
        return [m.image for m in edge_manifest.custom_modules(props) or [] if m.image]
    return []


def promoted_images_by_digest(promoted: Callable[[str], bool]) -> Callable[[ResourceArgs, ReportViolation], None]:
    """In a promoted stack (`ml-deploy:promote_from` set), every image is referenced by digest, so
    that it runs exactly what was tested in the source stack; a tag can move, a digest cannot.
    Container groups, Deployments and the modules of IoT Edge deployments."""
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
    """(pool, error, warning) for every pool on a size with lifecycle data, from infra/vm_sizes.py's tables
    (the config checks read the same), on today's date. A general size under capacity restrictions is
    a warning here, as for an existing cluster: the pack also sees clusters that already run, whose
    subscription keeps its approved quota; the config check makes it an error for a cluster the stack
    creates."""
    today = CLOCK.today()
    location = args.props.get("location") if args.resource_type == MANAGED_CLUSTER else None
    found = []
    for pool in _pools(args):
        size = str(pool.get("vmSize") or "")
        name = str(pool.get("name") or pool.get("agentPoolName") or args.name)
        if size in ACCELERATOR_SIZES:
            found.append((name, *lifecycle(size, today, str(location) if location else None)))
        elif size in GENERAL_SIZES:
            found.append((name, *general_lifecycle(size, today, new=False)))
    return found


def no_retired_vm_sizes(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """No node pool on a size past its retirement date (NC, NCv3; Dv2/Dsv2 after 2028-05-01, ...) or
    usable only by Azure ML's ended FPGA service (Brainwave's Standard_PB6s)."""
    for pool, error, _warning in _lifecycle(args):
        if error:
            report_violation(f"node pool {pool!r}: {error}")


def vm_sizes_retiring(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Advisory: a node pool on a size with an announced retirement date (NP-series, the v1-v3 general
    series) or under Azure's capacity growth restrictions."""
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


# ---- IoT hubs ---------------------------------------------------------------------------------------

IOT_HUB = "azure-native:iothub:IotHubResource"
MIN_TLS = (1, 2)
DEVICE_CONNECT = "DeviceConnect"


def _hub_properties(args: ResourceArgs) -> Mapping[str, Any]:
    return args.props.get("properties") or {}


def _version(text: Any) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split("."))
    except ValueError:
        return ()


def iot_hub_min_tls(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """An IoT hub refuses clients below TLS 1.2 (`properties.minTlsVersion: "1.2"`).

    Unset, the hub takes every TLS version Azure still serves; with it, IoT Hub accepts only
    TLS 1.2+ and strong cipher suites (learn.microsoft.com/azure/iot-hub/iot-hub-tls-support).
    It can only be given when the hub is created (azure.github.io/PSRule.Rules.Azure
    Azure.IoTHub.MinTLS: "read-only and cannot be changed once your IoT Hub resource is created"),
    and re-creating a hub means provisioning every device again: so it is checked before creation.
    """
    if args.resource_type != IOT_HUB:
        return
    version = _hub_properties(args).get("minTlsVersion")
    if _version(version) < MIN_TLS:
        shown = f"minTlsVersion {version!r}" if version is not None else "no minTlsVersion"
        report_violation(f"IoT hub with {shown}: it accepts clients below TLS 1.2, and the setting can only be "
                         "given when the hub is created (minTlsVersion: \"1.2\")")


def _rights(policy: Mapping[str, Any]) -> set[str]:
    return {r.strip() for r in str(policy.get("rights") or "").split(",") if r.strip()}


def iot_hub_local_auth_scoped(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """With local (SAS) auth on, an IoT hub declares its shared access policies, and none of them
    grants DeviceConnect.

    A hub created without `authorizationPolicies` gets Azure's five default policies, among them
    `iothubowner` with every permission and `device` with DeviceConnect
    (learn.microsoft.com/azure/iot-hub/iot-hub-dev-guide-sas). A hub-level key with DeviceConnect
    reaches the device-facing endpoints of every device, where "individual device credentials ...
    scope access to that device only" (same page): devices authenticate with their own keys.
    `disableLocalAuth: true` turns hub-level keys off altogether ("SAS tokens with Iot hub scoped
    SAS keys cannot be used", azure-native's IotHubProperties) and passes.
    """
    if args.resource_type != IOT_HUB:
        return
    props = _hub_properties(args)
    if props.get("disableLocalAuth") is True:
        return
    policies = props.get("authorizationPolicies")
    if policies is None:
        report_violation("IoT hub without authorizationPolicies: Azure gives it its default shared access policies, "
                         "iothubowner with every right and device with DeviceConnect; declare the ones the stack uses "
                         "(or disableLocalAuth: true)")
        return
    for policy in policies:
        if DEVICE_CONNECT in _rights(policy):
            report_violation(f"shared access policy {policy.get('keyName')!r} grants DeviceConnect: one hub-level key "
                             "that can act for every device; devices use their own keys")


def _accepts_some_addresses(rule: Mapping[str, Any]) -> bool:
    return str(rule.get("action") or "").lower() == "accept" and str(rule.get("ipMask") or "") not in ("", "0.0.0.0/0")


def iot_hub_network_restricted(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Advisory: an IoT hub is not open to every network: public network access off (devices reach
    it through a private endpoint), or IP filter rules that accept only some addresses.

    Unset, `publicNetworkAccess` is Enabled with no IP filter: the portal's "All networks", which
    accepts every address (learn.microsoft.com/azure/iot-hub/iot-hub-ip-filtering,
    learn.microsoft.com/azure/iot-hub/virtual-network-support). Advisory: edge devices at a plant
    usually reach the hub over the internet, from addresses the stack does not know.
    """
    if args.resource_type != IOT_HUB:
        return
    props = _hub_properties(args)
    if str(props.get("publicNetworkAccess") or "").lower() == "disabled":
        return
    if any(_accepts_some_addresses(r) for r in props.get("ipFilterRules") or []):
        return
    rule_set = props.get("networkRuleSets") or {}
    if str(rule_set.get("defaultAction") or "").lower() == "deny":
        return
    report_violation("IoT hub reachable from every network: public network access is on and no IP filter "
                     "narrows it (publicNetworkAccess: Disabled with a private endpoint, or ipFilterRules)")


# ---- registry-tokens-pull-only ---------------------------------------------------------------------

SCOPE_MAP = "azure-native:containerregistry:ScopeMap"
REGISTRY_TOKEN = "azure-native:containerregistry:Token"
# Repository actions (learn.microsoft.com/azure/container-registry/container-registry-repository-scoped-permissions):
# content/write pushes, content/delete deletes, metadata/write enables or disables read, write and
# delete operations; content/read and metadata/read only read.
WRITE_ACTIONS = ("/content/write", "/content/delete", "/metadata/write")
# The registry's system-defined scope maps that write (the same page): they apply to every repository.
WRITING_SYSTEM_SCOPE_MAPS = frozenset({"_repositories_admin", "_repositories_push", "_repositories_push_metadata_write"})


def registry_tokens_pull_only(args: ResourceArgs, report_violation: ReportViolation) -> None:
    """Registry tokens only pull: no scope map grants a write, delete or metadata-write action, and no
    token uses a system scope map that does.

    Tokens here are the IoT Edge devices' (components/iot_edge_service.py): a token on a device is a
    credential anyone holding the device can read, and a push right would let them replace the
    image every device runs. Pushes use the identity of whoever runs `pulumi up`.
    """
    if args.resource_type == SCOPE_MAP:
        writes = [str(a) for a in args.props.get("actions") or [] if str(a).endswith(WRITE_ACTIONS)]
        if writes:
            report_violation(f"scope map grants {', '.join(writes)}: registry tokens here pull only "
                             "(repositories/<image>/content/read)")
    elif args.resource_type == REGISTRY_TOKEN:
        scope_map = str(args.props.get("scopeMapId") or "").rstrip("/").rsplit("/", 1)[-1]
        if scope_map in WRITING_SYSTEM_SCOPE_MAPS:
            report_violation(f"token uses the system scope map {scope_map}, which writes to every repository: "
                             "give it a scope map that pulls its one repository")


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
        Rule("public-service-tls", True, "Public scoring endpoints of production stacks use TLS.",
             on_stacks(True, public_service_tls)),
        Rule("public-service-tls-dev", False, "Public scoring endpoints of dev, local and lab stacks use TLS (advisory).",
             on_stacks(False, public_service_tls)),
        Rule("production-replicas", True, "Production services run 2+ replicas, or say why one is enough.",
             production_replicas),
        Rule("online-deployment-instances", False,
             "Online deployments of production stacks run 2+ instances (advisory).", online_deployment_instances),
        Rule("stateful-resources-protected", True, "Stateful resources are protected outside dev, local and lab stacks.",
             stateful_resources_protected),
        Rule("promoted-images-by-digest", True, "Promoted stacks run images pinned by digest.",
             promoted_images_by_digest(promoted)),
        Rule("no-retired-vm-sizes", True, "No node pool on a retired or Brainwave-era VM size.", no_retired_vm_sizes),
        Rule("vm-sizes-retiring", False,
             "Node pools on sizes with an announced retirement or under capacity restrictions (advisory).",
             vm_sizes_retiring),
        Rule("aks-fastprod-capacity", True, "FastProd AKS clusters have at least 3 nodes and 12 vCPUs.",
             aks_fastprod_capacity),
        Rule("iot-hub-min-tls", True, "IoT hubs refuse clients below TLS 1.2.", iot_hub_min_tls),
        Rule("iot-hub-local-auth-scoped", True,
             "IoT hubs with local auth declare their shared access policies, none with DeviceConnect.",
             iot_hub_local_auth_scoped),
        Rule("iot-hub-network-restricted", False, "IoT hubs are not open to every network (advisory).",
             iot_hub_network_restricted),
        Rule("registry-tokens-pull-only", True, "Registry tokens (IoT Edge devices') pull and never push.",
             registry_tokens_pull_only),
    ]


# ---- the rules over an offline plan -----------------------------------------------------------------

class PlannedResource(Protocol):
    """What `evaluate` reads of a resource of an offline plan (cli/offline.py's Recorded)."""

    @property
    def type(self) -> str: ...
    @property
    def urn(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def inputs(self) -> Mapping[str, Any]: ...
    @property
    def protect(self) -> bool: ...


@dataclass(frozen=True)
class Violation:
    """One rule broken by one resource."""

    rule: str
    mandatory: bool
    urn: str
    type: str
    name: str
    message: str


@dataclass
class _Opts:
    protect: bool


@dataclass
class _Args:
    """A planned resource as pulumi_policy.ResourceValidationArgs would show it to a validator."""

    resource_type: str
    props: Mapping[str, Any]
    urn: str
    name: str
    opts: _Options


def _urn_in_stack(resource: PlannedResource, stack: str) -> str:
    """The resource's URN with `stack` as its stack (the rules read the stack from the URN)."""
    urn = resource.urn
    if urn.startswith("urn:pulumi:") and "::" in urn:
        return f"urn:pulumi:{stack}::{urn.split('::', 1)[1]}"
    return f"urn:pulumi:{stack}::{PROJECT}::{resource.type}::{resource.name}"


def evaluate(resources: Iterable[PlannedResource], stack: str, stack_root: Path) -> list[Violation]:
    """Every rule over every resource, as the pack would run them on `stack`'s preview: the stack
    files (for `promote_from`) are read from `stack_root`, the project's folder. Violations in the
    resources' order, then the rules'."""
    checks = rules(promoted_stacks_from_files(stack_root))
    found: list[Violation] = []
    for resource in resources:
        args = _Args(resource.type, resource.inputs, _urn_in_stack(resource, stack), resource.name,
                     _Opts(bool(resource.protect)))
        for rule in checks:
            def report(message: str, urn: Optional[str] = None, rule: Rule = rule,
                       resource: PlannedResource = resource) -> None:
                found.append(Violation(rule.id, rule.mandatory, resource.urn, resource.type, resource.name, message))
            rule.validate(args, report)
    return found
