"""infra/vm_sizes.py: each general series' lifecycle (retirement, capacity restrictions), the system
pool's rules as AKS writes them, in the config checks and the policy pack; the GPU template against
the driver AKS installs."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest

from infra import vm_sizes
from infra.vm_sizes import (AKS_CUDA_DRIVER, ACCELERATOR_SIZES, CUDA_MIN_DRIVER_BRANCH, GENERAL_SIZES,
                            SERIES_LIFECYCLE, SYSTEM_POOL_DEFAULT, general_lifecycle, lifecycle, system_pool_problem)
from policy import rules
from tests.helpers import assert_rejected
from tests.test_policy import Args, cluster, violations

ROOT = Path(__file__).resolve().parent.parent
TODAY = date(2026, 11, 25)


@pytest.fixture(autouse=True)
def pinned(monkeypatch):
    monkeypatch.setattr(vm_sizes.CLOCK, "today", lambda: TODAY)


@pytest.fixture
def aks(config):
    config["ml-deploy:aks_clusters"] = [{"name": "prod", "agent_count": 3}]
    config["ml-deploy:services"] = [{"name": "diabetes-aks", "image": "diabetes", "target": "aks", "cluster": "prod"}]
    return config


# ---- the table -----------------------------------------------------------------------------------

def test_every_general_size_has_a_series_with_lifecycle_data():
    assert {s.series for s in GENERAL_SIZES.values()} <= set(SERIES_LIFECYCLE)


# retirements-and-capacity-restrictions.md (2026-09-24): the planned retirement date of each series.
@pytest.mark.parametrize("size, retires", [
    ("Standard_D3_v2", date(2028, 5, 1)), ("Standard_DS3_v2", date(2028, 5, 1)),
    ("Standard_D4s_v3", date(2029, 11, 15)), ("Standard_E4_v3", date(2029, 11, 15)),
    ("Standard_F4s_v2", date(2028, 11, 15)), ("Standard_B2ms", date(2028, 11, 15)),
    ("Standard_D4s_v5", None), ("Standard_D4ds_v4", None),
])
def test_each_series_carries_its_retirement_date(size, retires):
    life = SERIES_LIFECYCLE[GENERAL_SIZES[size].series]
    assert life.retires == retires
    assert (life.restricted is not None) == (retires is not None)  # the page restricts every retiring series here


def test_ncv3_retires_later_in_four_regions():
    assert lifecycle("Standard_NC6s_v3", TODAY)[0]  # the general date, 2025-09-30, has passed
    assert "usgovvirginia until 2026-12-31" in (lifecycle("Standard_NC6s_v3", TODAY)[0] or "")
    error, warning = lifecycle("Standard_NC6s_v3", TODAY, "US Gov Virginia")
    assert error is None and "retires in usgovvirginia on 2026-12-31" in (warning or "")
    assert lifecycle("Standard_NC6s_v3", date(2027, 1, 1), "usgovvirginia")[0]
    assert lifecycle("Standard_NC6s_v3", date(2027, 1, 1), "chinanorth3")[0] is None


def test_a_restricted_size_is_an_error_for_a_new_cluster_and_a_warning_for_an_existing_one():
    error, _ = general_lifecycle("Standard_D3_v2", TODAY, new=True)
    assert error and "new subscription can't deploy it" in error and "Standard_D4s_v5" in error
    error, warning = general_lifecycle("Standard_D3_v2", TODAY, new=False)
    assert error is None and warning and "retires on 2028-05-01" in warning and "becomes an error" in warning


def test_before_the_restrictions_a_retiring_size_only_warns():
    assert general_lifecycle("Standard_D3_v2", date(2026, 6, 30), new=True)[0] is None
    assert general_lifecycle("Standard_D3_v2", date(2026, 7, 1), new=True)[0]


def test_past_retirement_every_cluster_is_refused():
    assert general_lifecycle("Standard_D3_v2", date(2028, 5, 2), new=False)[0]


@pytest.mark.parametrize("size, words", [
    ("Standard_B4ms", "B-series"), ("Standard_B20ms", "B-series"),
    ("Standard_D2s_v5", "at least 4 vCPUs and 4 GB"), ("Standard_E2s_v5", "at least 4 vCPUs"),
])
def test_system_pool_rules_as_aks_writes_them(size, words):
    assert words in (system_pool_problem(size) or "")


def test_the_default_system_pool_size_is_current_and_fit():
    assert system_pool_problem(SYSTEM_POOL_DEFAULT) is None
    assert general_lifecycle(SYSTEM_POOL_DEFAULT, TODAY, new=True) == (None, None)


# ---- config checks ---------------------------------------------------------------------------------

def test_a_cluster_without_a_size_gets_the_current_default(aks, run):
    cluster_ = run(aks).of_type("azure-native:containerservice:ManagedCluster")[0]
    assert cluster_.inputs["agentPoolProfiles"][0]["vmSize"] == "Standard_D4s_v5"


def test_a_new_cluster_on_a_restricted_size_is_refused(aks):
    aks["ml-deploy:aks_clusters"][0]["vm_size"] = "Standard_D3_v2"
    assert_rejected(aks, "aks_clusters[0].vm_size", "capacity growth restrictions")


@pytest.mark.parametrize("size, words", [("Standard_B4ms", "B-series"), ("Standard_D2s_v5", "at least 4 vCPUs")])
def test_a_system_pool_below_aks_minimum_is_refused(aks, size, words):
    aks["ml-deploy:aks_clusters"][0].update(vm_size=size, cluster_purpose="DevTest")
    assert_rejected(aks, "aks_clusters[0].vm_size", words)


# ---- policy pack -----------------------------------------------------------------------------------

def test_policy_warns_on_a_restricted_size_it_finds_and_refuses_it_after_retirement(monkeypatch):
    d3 = cluster({"name": "system", "vmSize": "Standard_D3_v2", "count": 3})
    assert violations(rules.no_retired_vm_sizes, d3) == []
    assert "capacity growth restrictions" in violations(rules.vm_sizes_retiring, d3)[0]
    monkeypatch.setattr(vm_sizes.CLOCK, "today", lambda: date(2028, 5, 2))
    assert "retired on 2028-05-01" in violations(rules.no_retired_vm_sizes, d3)[0]


def test_policy_judges_ncv3_by_the_cluster_location():
    pool = {"name": "gpu", "vmSize": "Standard_NC6s_v3", "count": 1}
    gov = Args(rules.MANAGED_CLUSTER, {"agentPoolProfiles": [pool], "location": "usgovvirginia"})
    assert violations(rules.no_retired_vm_sizes, gov) == []
    assert violations(rules.no_retired_vm_sizes, cluster(pool))


def test_policy_passes_a_current_size():
    ok = cluster({"name": "system", "vmSize": "Standard_D4s_v5", "count": 3})
    assert violations(rules.no_retired_vm_sizes, ok) == violations(rules.vm_sizes_retiring, ok) == []


# ---- the GPU template against the driver AKS installs ------------------------------------------------

# onnxruntime-gpu's CUDA major per minor release, from the package's own Requires-Dist: 1.31.1 has
# `nvidia-cuda-runtime~=13.0; extra == "cuda"` and `nvidia-cudnn-cu13~=9.0; extra == "cudnn"`
# (pip install --dry-run --report, PyPI metadata, read 2026-12-04).
ONNXRUNTIME_GPU_CUDA = {(1, 31): 13}


def _ort_pins() -> set[tuple[int, int]]:
    pins = set()
    for path in ("scoring_templates/onnx_gpu/requirements.txt", "scoring_templates/onnx_gpu/env.yml"):
        found = re.findall(r"onnxruntime-gpu\[[^\]]*\]>=(\d+)\.(\d+),<(\d+)\.(\d+)", (ROOT / path).read_text())
        assert found, f"{path}: no onnxruntime-gpu pin"
        for lo_major, lo_minor, hi_major, hi_minor in found:
            assert (int(hi_major), int(hi_minor)) == (int(lo_major), int(lo_minor) + 1), "pin one minor release"
            pins.add((int(lo_major), int(lo_minor)))
    return pins


def test_the_gpu_template_needs_a_cuda_major_the_aks_t4_driver_runs():
    pins = _ort_pins()
    assert len(pins) == 1, "requirements.txt and env.yml pin the same onnxruntime-gpu"
    cuda_major = ONNXRUNTIME_GPU_CUDA[pins.pop()]
    driver_branch = int(AKS_CUDA_DRIVER["NCasT4_v3"].split(".")[0])
    assert driver_branch >= CUDA_MIN_DRIVER_BRANCH[cuda_major], (
        f"CUDA {cuda_major} needs an R{CUDA_MIN_DRIVER_BRANCH[cuda_major]}+ driver; AKS installs "
        f"{AKS_CUDA_DRIVER['NCasT4_v3']} on T4 nodes")


def test_every_gpu_series_in_the_table_that_a_service_may_use_on_aks_has_a_known_driver_or_is_retired():
    t4 = {s.series for s in ACCELERATOR_SIZES.values() if "T4" in s.device}
    assert t4 <= set(AKS_CUDA_DRIVER)


def test_the_component_default_is_the_table_default():
    from components.aks_cluster import AksClusterArgs
    assert AksClusterArgs.__dataclass_fields__["vm_size"].default == SYSTEM_POOL_DEFAULT
