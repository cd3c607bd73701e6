"""Which input changes make Pulumi replace a resource instead of updating it, for the types this
program registers: the providers' own rules, vendored as small tables (the providers are not
installed here: the engine is offline and plugin downloads are off).

A rule is a property path (`containers[*].resources`); a change at that path or under it replaces
the resource, as every provider here decides it (pulumi-azure-native provider/pkg/provider/diff.go:
"If the parent property causes a replacement, all child properties cause a replacement").
"""

from __future__ import annotations

import re
from typing import Iterable

# pulumi-azure-native (v3) replaces a resource when (provider/pkg/provider/diff.go,
# calculateDetailedDiff) an input that is a parameter of the resource's REST path changes, or an
# input marked force-new changes: top-level properties that the REST spec marks create-only
# (`x-ms-mutability` without "update"), or those in the provider's own list
# (provider/pkg/gen/replacement.go, forceNewMap). The schema no longer carries them as
# `willReplaceOnChanges` (the 3.28.0 SDKs emit no replaceOnChanges for these types), so the table
# holds, for each type this program registers, its REST path parameters (the resource id's
# `{...}` segments, by their SDK names) and the forceNewMap entries of that type. `location` is left
# out: the program never sets it but on container groups and identities, where it is not force-new.
AZURE_NATIVE: dict[str, tuple[str, ...]] = {
    "azure-native:resources:ResourceGroup": ("resourceGroupName", "location"),
    "azure-native:storage:StorageAccount": ("resourceGroupName", "accountName", "isHnsEnabled", "location"),
    "azure-native:storage:BlobContainer": ("resourceGroupName", "accountName", "containerName"),
    # A custom resource of the provider (not an ARM resource): the blob's address.
    "azure-native:storage:Blob": ("resourceGroupName", "accountName", "containerName", "blobName"),
    "azure-native:keyvault:Vault": ("resourceGroupName", "vaultName"),
    "azure-native:operationalinsights:Workspace": ("resourceGroupName", "workspaceName"),
    "azure-native:applicationinsights:Component": ("resourceGroupName", "resourceName"),
    "azure-native:containerregistry:Registry": ("resourceGroupName", "registryName"),
    "azure-native:containerregistry:ScopeMap": ("resourceGroupName", "registryName", "scopeMapName"),
    "azure-native:containerregistry:Token": ("resourceGroupName", "registryName", "tokenName"),
    "azure-native:iothub:IotHubResource": ("resourceGroupName", "resourceName"),
    "azure-native:machinelearningservices:Workspace": ("resourceGroupName", "workspaceName"),
    "azure-native:machinelearningservices:ModelContainer": ("resourceGroupName", "workspaceName", "name"),
    "azure-native:machinelearningservices:ModelVersion": ("resourceGroupName", "workspaceName", "name", "version"),
    "azure-native:managedidentity:UserAssignedIdentity": ("resourceGroupName", "resourceName"),
    "azure-native:managedidentity:FederatedIdentityCredential": (
        "resourceGroupName", "resourceName", "federatedIdentityCredentialResourceName"),
    # Path `{scope}/providers/Microsoft.Authorization/roleAssignments/{roleAssignmentName}`;
    # forceNewMap adds principalId.
    "azure-native:authorization:RoleAssignment": ("scope", "roleAssignmentName", "principalId"),
    "azure-native:containerinstance:ContainerGroup": ("resourceGroupName", "containerGroupName"),
    # forceNewMap's AgentPool entries: vmSize, gpuInstanceProfile, networkProfile.nodePublicIPTags.
    "azure-native:containerservice:AgentPool": (
        "resourceGroupName", "resourceName", "agentPoolName", "vmSize", "gpuInstanceProfile",
        "networkProfile.nodePublicIPTags"),
    "azure-native:containerservice:ManagedCluster": (
        "resourceGroupName", "resourceName",
        # forceNewMap's ManagedCluster entries (networkProfile's are one level down).
        "diskEncryptionSetID", "dnsPrefix", "fqdnSubdomain", "linuxProfile", "location", "nodeResourceGroup",
        "windowsProfile", *(f"networkProfile.{p}" for p in (
            "serviceCidr", "serviceCidrs", "dnsServiceIP", "networkMode", "networkPlugin", "networkPluginMode",
            "podCidr", "networkDataplane", "networkPolicy", "outboundType")),
    ),
}

# Changes azure-native plans as updates but Azure refuses in place: the preview says "update" and
# `pulumi up` fails. Sources: the property docs in the installed SDK (pulumi_azure_native 3.29.0).
AZURE_REFUSES_IN_PLACE: dict[str, dict[str, str]] = {
    "azure-native:containerservice:ManagedCluster": {
        # containerservice/managed_cluster.py: "The Azure API does not currently allow this property to be updated directly."
        "agentPoolProfiles": "Azure does not update a cluster's initial agent pool in place (azure-native docs)",
    },
    "azure-native:machinelearningservices:Workspace": {
        # machinelearningservices/workspace.py: "This cannot be changed once the workspace has been created".
        "storageAccount": "a workspace's storage account cannot be changed once it is created",
        "keyVault": "a workspace's Key Vault cannot be changed once it is created",
    },
}

# pulumi-kubernetes (provider/pkg/provider/diff.go, forceNew): every object is replaced when its
# name or namespace changes, and these fields of the kinds this program registers are immutable.
# Its table spells the DaemonSet kind "Daemonset", so a DaemonSet's selector never matches there and
# is left out here too: the provider updates it (and the API server refuses a new selector).
_LABEL_SELECTOR = ("spec.selector",)
KUBERNETES: dict[str, tuple[str, ...]] = {
    "kubernetes:apps/v1:Deployment": _LABEL_SELECTOR,
    "kubernetes:core/v1:Secret": ("type", "stringData", "data"),
    "kubernetes:core/v1:Service": ("spec.clusterIP",),
    "kubernetes:core/v1:ConfigMap": ("binaryData", "data"),
}
KUBERNETES_METADATA = ("metadata.name", "metadata.namespace")

# pulumi-random bridges terraform-provider-random, whose random_password marks every input
# RequiresReplace (internal/provider/resource_password.go, passwordSchemaV3).
REPLACE_ON_ANY_CHANGE = frozenset({"random:index/randomPassword:RandomPassword"})


DYNAMIC_PREFIX = "pulumi-python:dynamic"
"""Dynamic resources: `pulumi-python:dynamic:Resource`, or `pulumi-python:dynamic/<module>:<Name>` when
the resource names its own type. Their provider's own `diff` decides (cli/diff.py asks it)."""


def provider_rules(type_: str) -> tuple[str, ...]:
    """The property paths whose change makes `type_`'s provider replace the resource."""
    if type_ in AZURE_NATIVE:
        return AZURE_NATIVE[type_]
    if type_.startswith("kubernetes:") and not type_.startswith("pulumi:providers:"):
        return KUBERNETES_METADATA + KUBERNETES.get(type_, ())
    if type_ in REPLACE_ON_ANY_CHANGE:
        return ("*",)
    return ()


def _pattern(rule: str) -> re.Pattern[str]:
    # `a.b[*].c` matches `a.b[3].c` and anything under it; `*` alone matches every path.
    if rule == "*":
        return re.compile(r".*")
    body = re.escape(rule).replace(r"\[\*\]", r"\[\d+\]")
    return re.compile(rf"^{body}(?:$|[.\[])")


def matches(path: str, rules: Iterable[str]) -> list[str]:
    """The rules that `path` (a changed input, e.g. `containers[0].resources.requests.cpu`) falls under."""
    return [rule for rule in rules if _pattern(rule).match(path)]


def refused_in_place(type_: str, path: str) -> str | None:
    """Why Azure would refuse to update `path` of `type_` in place, if it would."""
    for prop, why in AZURE_REFUSES_IN_PLACE.get(type_, {}).items():
        if _pattern(prop).match(path):
            return why
    return None
