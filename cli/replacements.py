"""Which input changes make Pulumi replace a resource instead of updating it, for the types this
program registers: the providers' own rules (the providers are not installed here: the engine is
offline and plugin downloads are off).

A rule is a property path (`containers[*].resources`); a change at that path or under it replaces
the resource, as every provider here decides it (pulumi-azure-native provider/pkg/provider/diff.go:
"If the parent property causes a replacement, all child properties cause a replacement").

azure-native. The provider replaces a resource (provider/pkg/provider/diff.go, calculateDetailedDiff)
when an input changes that is a parameter of the resource's REST path, or that its metadata marks
`forceNew`: a top-level property whose REST spec `x-ms-mutability` has "create" but not "update", or
one of the provider's own list (provider/pkg/gen/properties.go, forceNew; provider/pkg/gen/replacement.go,
forceNewMap). That metadata ships only inside the provider's plugin binary: the Go module proxy serves
no pulumi-azure-native module here and the repository is too large to fetch, and the 3.29.0 Python
SDK carries no `replace_on_changes`. So the rules are put together from:

- derived, in cli/azure_native_replacements.json (written by `python -m cli.replacements_generate`
  from the installed SDK): each type's REST API version, its path parameters (its `get_*`
  function's parameters that are also resource inputs) and whether it takes a `location`;
- hand-kept, each with its source, below for the workspace's types and in each target's module
  (`Target.replace_rules`) for the types it registers: the forceNewMap entries (FORCE_NEW_MAP), the
  create-only properties read in the REST spec at the API version the SDK uses (SPEC_READ), the provider's own
  storage Blob resource, whose metadata is hand-written in the provider (CUSTOM_RESOURCES), and changes
  the provider plans as updates that Azure refuses (AZURE_REFUSES_IN_PLACE, and `location` below).

`location`: Azure Resource Manager never moves a tracked resource: its `location` is set once
(ARM RPC-Put-V1-14, as the spec linter's rule LocationMustHaveXmsMutability cites it in
Azure/azure-openapi-validator docs/location-must-have-xms-mutability.md, which asks specs to mark it
`x-ms-mutability: [read, create]`), and a PUT with another location fails with
InvalidResourceLocation. Where the spec marks it so, or forceNewMap lists it, azure-native replaces
the resource; where it does not (pulumi-azure-native issue 3053: the preview says "update" and
`pulumi up` fails), it is refused in place here. A tracked type whose spec was not read
(SPEC_READ, or a target's) is treated as refused in place, and says so.

Nested create-only properties (x-ms-mutability below the top level) do not replace the resource in
azure-native (provider/pkg/gen/properties.go: "a non-updatable property at a subtype level ... does
not mandate the replacement of the whole resource"); only forceNewMap adds nested ones. The specs
were read for `location` (and, where a whole resource model was read, its other top-level
properties); other create-only top-level properties of the types not listed in SPEC_READ are not
known here.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Iterable

from infra import targets
from infra.targets import ReplaceRules, SpecRead

AZURE_NATIVE_PREFIX = "azure-native:"
DATA_FILE = Path(__file__).with_name("azure_native_replacements.json")
"""Derived from the installed SDK by cli/replacements_generate.py; tests check it matches the pin."""


@functools.lru_cache(maxsize=1)
def azure_native_data() -> dict[str, Any]:
    """The generated file: `{"pulumi_azure_native": version, "types": {type: facts}}`."""
    return json.loads(DATA_FILE.read_text())


def sdk_facts(type_: str) -> dict[str, Any] | None:
    """The installed SDK's facts about an azure-native type, as generated (None: not generated)."""
    return azure_native_data()["types"].get(type_)


# pulumi-azure-native provider/pkg/gen/replacement.go, forceNewMap: properties that replace the
# resource whatever the spec says (module, resource, property; nested entries of the types the
# resource embeds are spelled here with their parent, as the provider matches them one level down).
# The workspace's types; each target keeps its own types' entries (`Target.replace_rules`).
FORCE_NEW_MAP: dict[str, tuple[str, ...]] = {
    "azure-native:resources:ResourceGroup": ("location",),
    "azure-native:storage:StorageAccount": ("isHnsEnabled", "location"),
    # forceNewMap's "Authorization"/"RoleAssignment": principalId and scope (scope is also the path).
    "azure-native:authorization:RoleAssignment": ("principalId", "scope"),
}


# What was read in the REST specs of the workspace's types (the targets keep their own types' readings).
SPEC_READ: dict[str, SpecRead] = {
    "azure-native:managedidentity:UserAssignedIdentity": SpecRead(
        "2023-01-31", ("location",),
        # specification/msi/.../stable/2023-01-31/ManagedIdentity.json, definitions.Identity.
        "Identity is allOf common-types v4 TrackedResource, whose location is x-ms-mutability [read, create]"),
    "azure-native:operationalinsights:Workspace": SpecRead(
        "2023-09-01", ("location",),
        # specification/operationalinsights/.../stable/2023-09-01/Workspaces.json, definitions.Workspace.
        "Workspace is allOf common-types v2 TrackedResource (location [read, create]); "
        "its flattened WorkspaceProperties carry no x-ms-mutability"),
    "azure-native:applicationinsights:Component": SpecRead(
        "2020-02-02", ("location", "applicationType"),
        # specification/applicationinsights/.../stable/2020-02-02/components_API.json.
        "ComponentsResource.location and the flattened ApplicationInsightsComponentProperties."
        "Application_Type are x-ms-mutability [create, read]"),
    "azure-native:keyvault:Vault": SpecRead(
        "2024-11-01", (),
        # specification/keyvault/.../stable/2024-11-01/keyvault.json, VaultCreateOrUpdateParameters.
        "VaultCreateOrUpdateParameters' location, tags and properties carry no x-ms-mutability"),
}

# The provider's own resources, which are no ARM resource: no `get_*` function to derive a path
# from, and their metadata (path and ForceNew properties) is written by hand in the provider.
CUSTOM_RESOURCES: dict[str, tuple[str, ...]] = {
    # provider/pkg/resources/customresources/custom_storage.go, newBlob: blobPath's parameters, and
    # the body properties its Meta marks ForceNew (contentMd5, source, type).
    "azure-native:storage:Blob": ("resourceGroupName", "accountName", "containerName", "blobName",
                                  "contentMd5", "source", "type"),
}

# Changes azure-native plans as updates but Azure refuses in place: the preview says "update" and
# `pulumi up` fails. Sources: the property docs in the installed SDK (pulumi_azure_native 3.29.0).
AZURE_REFUSES_IN_PLACE: dict[str, dict[str, str]] = {
    "azure-native:machinelearningservices:Workspace": {
        # machinelearningservices/workspace.py: "This cannot be changed once the workspace has been created".
        "storageAccount": "a workspace's storage account cannot be changed once it is created",
        "keyVault": "a workspace's Key Vault cannot be changed once it is created",
    },
}


@functools.lru_cache(maxsize=1)
def hand_kept() -> ReplaceRules:
    """The tables above and every target's own (`Target.replace_rules`), in one."""
    declared = targets.replace_rules()
    clash = (set(FORCE_NEW_MAP) & set(declared.force_new) | set(SPEC_READ) & set(declared.spec_read)
             | set(AZURE_REFUSES_IN_PLACE) & set(declared.refused_in_place))
    if clash:
        raise ValueError(f"replace facts for {sorted(clash)} are kept both here and by a target: keep them in one place")
    return ReplaceRules(force_new={**FORCE_NEW_MAP, **declared.force_new},
                        spec_read={**SPEC_READ, **declared.spec_read},
                        refused_in_place={**AZURE_REFUSES_IN_PLACE, **declared.refused_in_place})


def hand_kept_types() -> set[str]:
    """The azure-native types the hand tables (these and the targets') name."""
    rules = hand_kept()
    return {t for t in (*rules.force_new, *rules.spec_read, *CUSTOM_RESOURCES, *rules.refused_in_place)
            if t.startswith(AZURE_NATIVE_PREFIX)}


def _azure_native_rules(type_: str) -> tuple[str, ...]:
    facts = sdk_facts(type_) or {}
    paths = CUSTOM_RESOURCES.get(type_) or tuple(facts.get("path_parameters") or ())
    spec = hand_kept().spec_read.get(type_)
    rules = (*paths, *hand_kept().force_new.get(type_, ()), *(spec.create_only if spec else ()))
    return tuple(dict.fromkeys(rules))


def _location_refusal(type_: str) -> str | None:
    """Why a `location` change of `type_` is refused in place, where azure-native does not replace it."""
    facts = sdk_facts(type_)
    if not facts or not facts.get("location") or "location" in _azure_native_rules(type_):
        return None
    moved = "Azure does not move a resource to another region (InvalidResourceLocation, ARM RPC-Put-V1-14)"
    spec = hand_kept().spec_read.get(type_)
    if spec:
        return (f"{moved}, and azure-native plans it as an update: the REST spec at {spec.api_version} "
                f"does not mark location create-only ({spec.source})")
    return (f"{moved}; whether azure-native replaces or updates it was not checked against the REST spec "
            f"at {facts.get('api_version')}")


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
    if type_.startswith(AZURE_NATIVE_PREFIX):
        return _azure_native_rules(type_)
    if type_.startswith("kubernetes:") and not type_.startswith("pulumi:providers:"):
        return KUBERNETES_METADATA + KUBERNETES.get(type_, ())
    if type_ in REPLACE_ON_ANY_CHANGE:
        return ("*",)
    return hand_kept().force_new.get(type_, ())


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
    for prop, why in hand_kept().refused_in_place.get(type_, {}).items():
        if _pattern(prop).match(path):
            return why
    if type_.startswith(AZURE_NATIVE_PREFIX) and _pattern("location").match(path):
        return _location_refusal(type_)
    return None
