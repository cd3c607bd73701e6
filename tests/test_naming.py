"""The physical-name helper: every derived name is valid for its Azure resource kind."""

from __future__ import annotations

import pytest

from components.naming import Kind, azure_name, is_valid


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("parts", [("mlws", "dev"), ("ML_WS", "Prod--West", "x" * 80), ("9lives", "stack")])
def test_derived_names_are_valid(kind, parts):
    assert is_valid(kind, azure_name(kind, *parts))


def test_same_parts_same_name():
    assert azure_name(Kind.STORAGE_ACCOUNT, "mlws", "dev") == azure_name(Kind.STORAGE_ACCOUNT, "mlws", "dev")


def test_globally_unique_kinds_get_a_hash_suffix():
    a = azure_name(Kind.CONTAINER_REGISTRY, "mlws", "dev")
    b = azure_name(Kind.CONTAINER_REGISTRY, "mlws", "prod")
    assert a != b and a.startswith("mlwsdev")


def test_storage_names_are_cut_to_24():
    name = azure_name(Kind.STORAGE_ACCOUNT, "averyveryverylongworkspace", "production")
    assert len(name) == 24 and is_valid(Kind.STORAGE_ACCOUNT, name)


@pytest.mark.parametrize("kind,bad", [
    (Kind.STORAGE_ACCOUNT, "Has-Upper"), (Kind.KEY_VAULT, "a--b"), (Kind.KEY_VAULT, "1abc"),
    (Kind.CONTAINER_REGISTRY, "abc"), (Kind.DNS_LABEL, "-x-"), (Kind.KUBERNETES, "UPPER"),
])
def test_invalid_names_are_rejected(kind, bad):
    assert not is_valid(kind, bad)


# Microsoft.MachineLearningServices/workspaces: 3-33 "Alphanumerics and hyphens" (MicrosoftDocs/azure-docs
# articles/azure-resource-manager/management/resource-name-rules.md).
@pytest.mark.parametrize("bad", ["ml_ws", "-mlws", "ab", "a" * 34, "ml.ws"])
def test_workspace_names_take_only_letters_digits_and_hyphens(bad):
    assert not is_valid(Kind.ML_WORKSPACE, bad)


def test_workspace_name_from_a_stack_with_an_underscore_drops_it():
    # Pulumi stack names may hold `_` and `.`; the workspace name derived from one may not.
    name = azure_name(Kind.ML_WORKSPACE, "mlws", "team_a.prod")
    assert name == "mlws-teamaprod" and is_valid(Kind.ML_WORKSPACE, name)
