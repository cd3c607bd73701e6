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
