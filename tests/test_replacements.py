"""The replace rules (cli/replacements.py): where they come from, and what they make of a region change."""

from __future__ import annotations

import copy
from importlib import metadata

import pytest

from cli import diff, offline, replacements, replacements_generate
from tests.helpers import ROOT, run_config

GROUP = "azure-native:containerinstance:ContainerGroup"
IDENTITY = "azure-native:managedidentity:UserAssignedIdentity"
TYPES = replacements.azure_native_data()["types"]


def provider_replaces(type_: str, path: str) -> bool:
    return bool(replacements.matches(path, replacements.provider_rules(type_)))


@pytest.fixture(scope="module")
def committed_plans() -> dict[str, offline.Recording]:
    return {s: offline.run(offline.stack_config(s), stack=s) for s in diff.committed_stacks(ROOT)}


# ---- where the rules come from -------------------------------------------------------------------

def test_the_generated_rules_are_for_the_pinned_sdk():
    # A new pulumi-azure-native pin fails here until `python -m cli.replacements_generate` runs again.
    assert replacements.azure_native_data()["pulumi_azure_native"] == metadata.version("pulumi_azure_native")


def test_the_generated_rules_are_what_the_installed_sdk_says():
    assert {t: replacements_generate.sdk_facts(t) for t in TYPES} == TYPES


def test_every_azure_native_type_in_every_committed_stack_has_rules(committed_plans):
    planned = {r.type for rec in committed_plans.values() for r in rec.resources
               if r.type.startswith(replacements.AZURE_NATIVE_PREFIX)}
    assert planned and planned <= set(TYPES)
    for type_ in planned:
        assert replacements.provider_rules(type_), type_


def test_spec_facts_were_read_at_the_api_version_the_sdk_uses():
    # A spec read at another API version says nothing about this one: read it again.
    for type_, read in replacements.hand_kept().spec_read.items():
        assert TYPES[type_]["api_version"] == read.api_version, type_


def test_hand_tables_name_only_generated_types():
    assert replacements.hand_kept_types() <= set(TYPES)


def test_path_parameters_come_from_the_sdk_and_leave_query_parameters_out():
    assert provider_replaces("azure-native:storage:BlobContainer", "containerName")
    assert provider_replaces("azure-native:machinelearningservices:ModelVersion", "version")
    # getStorageAccount's `expand` and getRoleAssignment's `tenantId` are query parameters.
    assert not provider_replaces("azure-native:storage:StorageAccount", "expand")
    assert not provider_replaces("azure-native:authorization:RoleAssignment", "tenantId")
    assert provider_replaces("azure-native:authorization:RoleAssignment", "scope")


# ---- what the rules say --------------------------------------------------------------------------

@pytest.mark.parametrize("type_", [
    "azure-native:resources:ResourceGroup", "azure-native:storage:StorageAccount",
    "azure-native:containerservice:ManagedCluster",  # forceNewMap
    IDENTITY, "azure-native:operationalinsights:Workspace",
    "azure-native:applicationinsights:Component",  # the spec: x-ms-mutability [read, create]
])
def test_a_new_location_replaces_where_azure_native_marks_it_create_only(type_):
    assert replacements.matches("location", replacements.provider_rules(type_)) == ["location"]
    assert replacements.refused_in_place(type_, "location") is None


@pytest.mark.parametrize("type_", [GROUP, "azure-native:iothub:IotHubResource", "azure-native:keyvault:Vault"])
def test_a_new_location_is_refused_in_place_where_the_spec_leaves_it_updatable(type_):
    assert not provider_replaces(type_, "location")
    why = replacements.refused_in_place(type_, "location")
    assert why and "InvalidResourceLocation" in why and "plans it as an update" in why


def test_a_tracked_type_whose_spec_was_not_read_says_so():
    why = replacements.refused_in_place("azure-native:containerregistry:Registry", "location")
    assert why and "not checked" in why and "2023-01-01-preview" in why


def test_no_tracked_type_takes_a_new_location_as_a_plain_update():
    for type_, facts in TYPES.items():
        if facts["location"]:
            assert provider_replaces(type_, "location") or replacements.refused_in_place(type_, "location"), type_


def test_a_proxy_resource_has_no_location_rule():
    assert not provider_replaces("azure-native:storage:BlobContainer", "location")
    assert replacements.refused_in_place("azure-native:storage:BlobContainer", "location") is None


def test_an_app_insights_components_application_type_replaces_it():
    assert provider_replaces("azure-native:applicationinsights:Component", "applicationType")


def test_a_blobs_new_bytes_replace_it():
    # custom_storage.go marks source, type and contentMd5 ForceNew in the Blob's own metadata.
    for path in ("source", "type", "contentMd5", "blobName"):
        assert provider_replaces("azure-native:storage:Blob", path)
    assert not provider_replaces("azure-native:storage:Blob", "contentType")


def test_nested_rules_cover_what_is_under_them():
    rules = replacements.provider_rules("azure-native:containerservice:ManagedCluster")
    assert replacements.matches("networkProfile.podCidr", rules) == ["networkProfile.podCidr"]
    assert replacements.matches("networkProfile.loadBalancerProfile.idleTimeoutInMinutes", rules) == []


# ---- the whole program ---------------------------------------------------------------------------

def test_moving_an_aci_service_replaces_its_identity_and_group_deleting_each_first(config):
    after = copy.deepcopy(config)
    after["ml-deploy:services"][0]["location"] = "northeurope"
    d = diff.compare_resources(diff.as_records(run_config(config)), diff.as_records(run_config(after)), "dev")
    changes = {c.name: c for c in d.changes}
    identity = changes["diabetes-aci-identity"]
    assert identity.type == IDENTITY and identity.op == "replace"
    assert identity.replaced_by == ["location (provider)"]
    # Same name in the same resource group: the old identity must go before the new one is made.
    assert identity.delete_before_replace
    # azure-native would plan the container group's new region as an update (its spec leaves
    # location updatable) that Azure refuses; the program asks for the replacement instead.
    group = changes["diabetes-aci-group"]
    assert group.type == GROUP and group.op == "replace"
    assert "location (program's replace_on_changes)" in group.replaced_by and group.delete_before_replace
    assert not group.warnings
