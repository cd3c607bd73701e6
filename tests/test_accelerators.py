"""GPU and FPGA services on AKS: accelerator pools, device plugins, placement, the accelerator size
table, the Brainwave refusal and the NP-series retirement by date (a fixed clock), the GPU template."""

from __future__ import annotations

import copy
import json
import logging
import pickle
from datetime import date

import httpx
import kubernetes_validate
import pytest

from infra import vm_sizes
from infra.vm_sizes import ACCELERATOR_SIZES, CLOCK, VM_VCPUS, brainwave_refusal, lifecycle
from tests.helpers import SEED, TEMPLATES, assert_rejected, dev_config, run_config, serve

POOL = "azure-native:containerservice:AgentPool"
CLUSTER = "azure-native:containerservice:ManagedCluster"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CONFIGMAP = "kubernetes:core/v1:ConfigMap"
K8S_VERSION = kubernetes_validate.latest_version()
TODAY = date(2026, 11, 25)
"""The fixed day the tests run on: the NP-series still runs (it retires on 2027-05-31)."""


def accelerated(pkl) -> dict:
    """The dev config plus a created cluster with a GPU and an FPGA pool, an attached cluster, and
    services asking for each, one through the Azure ML SDK's `gpu_cores`."""
    config = copy.deepcopy(dev_config(pkl))
    config["ml-deploy:aks_clusters"] = [
        {"name": "prod", "agent_count": 3, "vm_size": "Standard_D4s_v5",
         "accelerator_pools": [
             {"name": "gpu", "vm_size": "Standard_NC4as_T4_v3", "count": 1},
             {"name": "fpga", "vm_size": "Standard_NP10s", "count": 1},
         ]},
        {"name": "shared", "attach": {"resource_group": "platform-rg", "cluster_name": "platform-aks"}},
    ]
    config["ml-deploy:services"] += [
        {"name": "diabetes-gpu", "image": "diabetes", "target": "aks", "cluster": "prod", "num_replicas": 1,
         "accelerator": "gpu", "accelerator_count": 1},
        {"name": "diabetes-fpga", "image": "diabetes", "target": "aks", "cluster": "prod", "num_replicas": 1,
         "accelerator": "fpga"},
        {"name": "diabetes-alias", "image": "diabetes", "target": "aks", "cluster": "prod", "num_replicas": 1,
         "gpu_cores": 1},
        {"name": "diabetes-shared", "image": "diabetes", "target": "aks", "cluster": "shared", "num_replicas": 1,
         "gpu_cores": 1},
    ]
    return config


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch):
    """Every test runs on TODAY unless it pins another day: the rules read CLOCK, not the wall clock."""
    monkeypatch.setattr(CLOCK, "today", lambda: TODAY)


@pytest.fixture
def accel(model_files):
    return accelerated(model_files[0])


@pytest.fixture(scope="module")
def rec(model_files):
    """One run of the accelerated config, shared by the tests that only read it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CLOCK, "today", lambda: TODAY)
        return run_config(accelerated(model_files[0]))


def pod_spec(rec, service: str) -> dict:
    return rec.by_name(DEPLOYMENT, f"{service}-deployment").inputs["spec"]["template"]["spec"]


def _aks(config: dict, i: int = 0) -> dict:
    return config["ml-deploy:aks_clusters"][i]


def _svc(config: dict, name: str) -> tuple[int, dict]:
    return next((i, s) for i, s in enumerate(config["ml-deploy:services"]) if s["name"] == name)


# ---- pools -----------------------------------------------------------------------------------------

def test_each_pool_is_a_tainted_labelled_user_pool_of_the_created_cluster(rec):
    cluster = rec.of_type(CLUSTER)[0]
    pools = {p.name: p for p in rec.of_type(POOL)}
    # and the untainted user pool the scoring pods run on (tests/test_aks_hardening.py)
    assert set(pools) == {"prod-pool-gpu", "prod-pool-fpga", "prod-pool-scoring"}
    for kind in ("gpu", "fpga"):
        pool = pools[f"prod-pool-{kind}"]
        assert pool.inputs["agentPoolName"] == pool.outputs["name"] == kind
        assert pool.inputs["resourceName"] == cluster.outputs["name"]
        assert (pool.inputs["mode"], pool.inputs["osType"]) == ("User", "Linux")
        assert pool.inputs["nodeTaints"] == [f"sku={kind}:NoSchedule"]
        assert pool.inputs["nodeLabels"] == {"ml-deploy/accelerator": kind, "ml-deploy/pool": kind}
        assert (pool.inputs["count"], pool.inputs["enableAutoScaling"]) == (1, False)
        assert rec.by_urn(pool.parent).type == "ml-deploy:index:AksCluster"
    assert pools["prod-pool-gpu"].inputs["vmSize"] == "Standard_NC4as_T4_v3"
    assert pools["prod-pool-fpga"].inputs["vmSize"] == "Standard_NP10s"
    # The system pool stays what it was: accelerators are extra pools, not the cluster's own.
    assert [p["name"] for p in cluster.inputs["agentPoolProfiles"]] == ["system"]


def test_an_autoscaled_pool_gets_its_range_and_leaves_the_count_to_the_autoscaler(accel, run):
    _aks(accel)["accelerator_pools"][0] = {"name": "gpu", "vm_size": "Standard_NC4as_T4_v3",
                                           "min_count": 0, "max_count": 3}
    pool = run(accel).by_name(POOL, "prod-pool-gpu")
    assert (pool.inputs["enableAutoScaling"], pool.inputs["minCount"], pool.inputs["maxCount"]) == (True, 0, 3)
    assert pool.ignore_changes == ["count"]


def test_a_pool_without_count_has_one_node(accel, run):
    del _aks(accel)["accelerator_pools"][0]["count"]
    assert run(accel).by_name(POOL, "prod-pool-gpu").inputs["count"] == 1


def test_a_cluster_without_pools_gets_no_pool_and_no_device_plugin(accel, run):
    accel["ml-deploy:aks_clusters"][0]["accelerator_pools"] = []
    accel["ml-deploy:services"] = [s for s in accel["ml-deploy:services"]
                                   if s.get("cluster") != "prod"]
    rec = run(accel)
    assert [p.name for p in rec.of_type(POOL)] == ["prod-pool-scoring"]  # the services' user pool only
    assert rec.of_type(DAEMONSET) == [] and rec.of_type(CONFIGMAP) == []


# ---- device plugins ----------------------------------------------------------------------------------

def test_each_kind_gets_its_vendors_device_plugin_only_on_its_pools(rec):
    plugins = {d.name: d.inputs for d in rec.of_type(DAEMONSET)}
    assert set(plugins) == {"prod-gpu-device-plugin", "prod-fpga-device-plugin"}
    images = {"gpu": "nvcr.io/nvidia/k8s-device-plugin:v0.20.0",
              "fpga": "public.ecr.aws/xilinx_dcg/k8s-device-plugin:1.3.0"}
    for kind, image in images.items():
        ds = plugins[f"prod-{kind}-device-plugin"]
        assert ds["metadata"]["namespace"] == "kube-system"
        pod = ds["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"ml-deploy/accelerator": kind}
        assert pod["tolerations"] == [{"key": "sku", "operator": "Equal", "value": kind, "effect": "NoSchedule"}]
        (container,) = pod["containers"]
        assert container["image"] == image
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["device-plugin"] == "/var/lib/kubelet/device-plugins"
        assert pod["priorityClassName"] == "system-node-critical"


def test_the_fpga_plugin_names_every_u250_amd_com_u250(rec):
    names = rec.by_name(CONFIGMAP, "prod-fpga-device-names")
    assert json.loads(names.inputs["data"]["NameCustomize.json"]) == {"u250-*-*": "'u250'"}
    pod = rec.by_name(DAEMONSET, "prod-fpga-device-plugin").inputs["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["DeviceNameCustomize"] == "True"
    volume = next(v for v in pod["volumes"] if v["name"] == "device-names")
    assert volume["configMap"]["name"] == names.inputs["metadata"]["name"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "device-names")
    assert mount["mountPath"] == "/opt/xilinx/device-plugin-configmap"


def test_a_gpu_only_cluster_runs_only_nvidias_plugin(accel, run):
    _aks(accel)["accelerator_pools"].pop(1)
    accel["ml-deploy:services"] = [s for s in accel["ml-deploy:services"] if s["name"] != "diabetes-fpga"]
    rec = run(accel)
    assert [d.name for d in rec.of_type(DAEMONSET)] == ["prod-gpu-device-plugin"]
    assert rec.of_type(CONFIGMAP) == []


# ---- services ------------------------------------------------------------------------------------------

def test_a_gpu_service_gets_the_limit_the_toleration_and_the_gpu_pools(rec):
    pod = pod_spec(rec, "diabetes-gpu")
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in container["resources"]["requests"]
    assert pod["tolerations"] == [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"ml-deploy/accelerator": "gpu"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_an_fpga_service_gets_the_u250_limit_and_the_fpga_pools(rec):
    pod = pod_spec(rec, "diabetes-fpga")
    container = pod["containers"][0]
    assert container["resources"]["limits"]["amd.com/u250"] == "1"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert pod["tolerations"] == [{"key": "sku", "operator": "Equal", "value": "fpga", "effect": "NoSchedule"}]
    assert pod["nodeSelector"] == {"ml-deploy/accelerator": "fpga"}
    assert "NVIDIA_DRIVER_CAPABILITIES" not in {e["name"] for e in container["env"]}


def test_gpu_cores_is_the_sdk_alias_of_accelerator_gpu(rec):
    alias, explicit = pod_spec(rec, "diabetes-alias"), pod_spec(rec, "diabetes-gpu")
    for key in ("tolerations", "nodeSelector"):
        assert alias[key] == explicit[key]
    assert alias["containers"][0]["resources"] == explicit["containers"][0]["resources"]


def test_a_service_without_an_accelerator_stays_off_the_accelerator_pools(accel, run):
    accel["ml-deploy:services"].append({"name": "diabetes-cpu", "image": "diabetes", "target": "aks",
                                        "cluster": "prod", "num_replicas": 1})
    pod = pod_spec(run(accel), "diabetes-cpu")
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert set(pod["containers"][0]["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}


def test_accelerator_count_sets_the_limit(accel, run):
    _aks(accel)["accelerator_pools"][0]["vm_size"] = "Standard_NC64as_T4_v3"  # 4 T4 per node
    _svc(accel, "diabetes-gpu")[1]["accelerator_count"] = 4
    limits = pod_spec(run(accel), "diabetes-gpu")["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "4"


def test_a_gpu_service_on_an_attached_cluster_gets_the_limit_and_toleration_but_no_pool_selector(rec):
    pod = pod_spec(rec, "diabetes-shared")
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert "nodeSelector" not in pod


def test_every_kubernetes_object_is_schema_valid(rec):
    objects = [r for r in rec.resources if r.type.startswith("kubernetes:") and r.custom
               and not r.type.startswith("pulumi:providers")]
    assert {DAEMONSET, CONFIGMAP, DEPLOYMENT} <= {o.type for o in objects}
    for obj in objects:
        manifest = {k: v for k, v in obj.inputs.items() if not k.startswith("__")}
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


# ---- config errors, each with its path, before anything is registered -------------------------------------

def test_a_service_asking_for_a_kind_its_cluster_has_no_pool_of(accel):
    _aks(accel)["accelerator_pools"].pop(1)
    i, _ = _svc(accel, "diabetes-fpga")
    assert_rejected(accel, f"services[{i}].accelerator", "cluster 'prod' has no fpga pool; add one to "
                                                         "aks_clusters[0].accelerator_pools")


def test_the_alias_is_named_in_the_error_when_it_was_the_alias_that_asked(accel):
    _aks(accel)["accelerator_pools"].pop(0)
    i, _ = _svc(accel, "diabetes-alias")
    assert_rejected(accel, f"services[{i}].gpu_cores", "has no gpu pool")


def test_more_accelerators_per_replica_than_any_node_has(accel):
    i, svc = _svc(accel, "diabetes-gpu")
    svc["accelerator_count"] = 2
    assert_rejected(accel, f"services[{i}].accelerator_count", "(Standard_NC4as_T4_v3, pool 'gpu') has 1")


def test_accelerator_count_needs_an_accelerator(accel):
    i, svc = _svc(accel, "diabetes-gpu")
    del svc["accelerator"]
    assert_rejected(accel, f"services[{i}].accelerator_count", "needs accelerator")


def test_gpu_cores_and_accelerator_exclude_each_other(accel):
    i, svc = _svc(accel, "diabetes-gpu")
    svc["gpu_cores"] = 1
    assert_rejected(accel, f"services[{i}].gpu_cores", "not allowed with accelerator")


def test_an_unknown_accelerator_kind_is_refused(accel):
    i, svc = _svc(accel, "diabetes-gpu")
    svc["accelerator"] = "tpu"
    assert_rejected(accel, f"services[{i}].accelerator", "'gpu' or 'fpga'")


def test_pools_only_on_created_clusters(accel):
    _aks(accel, 1)["accelerator_pools"] = [{"name": "gpu", "vm_size": "Standard_NC4as_T4_v3"}]
    assert_rejected(accel, "aks_clusters[1].accelerator_pools", "not allowed with attach")


def test_no_fpga_service_on_an_attached_cluster(accel):
    i, svc = _svc(accel, "diabetes-shared")
    svc.pop("gpu_cores")
    svc["accelerator"] = "fpga"
    assert_rejected(accel, f"services[{i}].accelerator", "cluster 'shared' is attached")


def test_an_unknown_accelerator_size_says_where_to_add_it(accel):
    _aks(accel)["accelerator_pools"][0]["vm_size"] = "Standard_NC8ads_A10_v4"
    assert_rejected(accel, "aks_clusters[0].accelerator_pools[0].vm_size", "add it there with its vCPUs")


def test_an_accelerator_size_is_not_a_system_pool_size(accel):
    _aks(accel)["vm_size"] = "Standard_NC4as_T4_v3"
    assert_rejected(accel, "aks_clusters[0].vm_size", "is an accelerator size: declare it under accelerator_pools")


@pytest.mark.parametrize("pool,key,words", [
    ({"name": "system"}, "name", "the cluster's own pool"),
    ({"name": "gpu"}, "name", "already used by aks_clusters[0].accelerator_pools[0]"),
    ({"name": "GPU"}, "name", "should match pattern"),
    ({"name": "gpupoolnumber1"}, "name", "should match pattern"),  # 14 characters: AKS allows 12
    ({"min_count": 1, "max_count": 2}, "count", "not allowed with min_count/max_count"),
    ({"count": None, "min_count": 1}, "max_count", "required with min_count"),
    ({"count": None, "min_count": 3, "max_count": 2}, "min_count", "must not exceed max_count (3 > 2)"),
])
def test_pool_settings_aks_refuses(accel, pool, key, words):
    entry = {"name": "more", "vm_size": "Standard_NC8as_T4_v3", "count": 1, **pool}
    entry = {k: v for k, v in entry.items() if v is not None}
    _aks(accel)["accelerator_pools"].append(entry)
    assert_rejected(accel, f"aks_clusters[0].accelerator_pools[2].{key}", words)


# ---- honesty: Brainwave is gone, retired sizes are refused, the NP-series by date --------------------------

BRAINWAVE_FACTS = ("Project Brainwave", "Standard_PB6s", "2025-03-31", "2026-06-30", "2024-04-29",
                   "accelerator: fpga` on an NP-series pool", "until its retirement on 2027-05-31",
                   "accelerator: gpu` on NCasT4_v3")


def test_a_pb6s_pool_is_refused_with_the_brainwave_history_and_the_alternatives(accel):
    _aks(accel)["accelerator_pools"][1]["vm_size"] = "Standard_PB6s"
    for fact in BRAINWAVE_FACTS:
        assert_rejected(accel, "aks_clusters[0].accelerator_pools[1].vm_size", fact)


def test_a_pb6s_cluster_as_the_sdk_provisioned_it_is_refused_the_same_way(accel):
    # AksCompute.provisioning_configuration(vm_size="Standard_PB6s", agent_count=1), the FPGA how-to's cluster
    _aks(accel).update(vm_size="Standard_PB6s", agent_count=1, cluster_purpose="DevTest")
    for fact in BRAINWAVE_FACTS:
        assert_rejected(accel, "aks_clusters[0].vm_size", fact)


def test_target_fpga_is_refused_with_the_brainwave_history(accel):
    accel["ml-deploy:services"][0]["target"] = "fpga"
    for fact in BRAINWAVE_FACTS:
        assert_rejected(accel, "services[0].target", fact)


def test_brainwave_refusal_offers_the_np_series_only_while_it_runs():
    assert "until its retirement on 2027-05-31" in brainwave_refusal(date(2027, 5, 31))
    after = brainwave_refusal(date(2027, 6, 1))
    assert "no FPGA: the NP-series, the last FPGA VMs, retired on 2027-05-31" in after
    assert "accelerator: fpga" not in after and "accelerator: gpu` on NCasT4_v3" in after


@pytest.mark.parametrize("size,words", [
    ("Standard_NC6s_v3", "NCv3-series, NVIDIA Tesla V100) retired on 2025-09-30"),
    ("Standard_NC24rs_v3", "retired on 2025-09-30"),
    ("Standard_NC6", "NC-series, NVIDIA Tesla K80 (half card)) retired on 2023-09-06"),
])
def test_a_retired_gpu_size_is_refused_with_its_date(accel, size, words):
    _aks(accel)["accelerator_pools"][0]["vm_size"] = size
    assert_rejected(accel, "aks_clusters[0].accelerator_pools[0].vm_size", words)


def test_an_np_pool_warns_with_its_retirement_date_on_every_run(accel, caplog):
    for _ in range(2):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            run_config(accel)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "NP-series" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert warnings[0].startswith("aks_clusters[0].accelerator_pools[1].vm_size: Standard_NP10s")
        assert "retires on 2027-05-31 (187 days from 2026-11-25)" in warnings[0]
        assert "no new reservations since 2026-04-02" in warnings[0]


def test_a_gpu_pool_without_a_retirement_date_warns_nothing(accel, caplog):
    _aks(accel)["accelerator_pools"].pop(1)
    accel["ml-deploy:services"] = [s for s in accel["ml-deploy:services"] if s["name"] != "diabetes-fpga"]
    with caplog.at_level(logging.WARNING):
        run_config(accel)
    assert not [r for r in caplog.records if "retire" in r.getMessage()]


def test_an_np_pool_still_deploys_on_its_last_day(accel, monkeypatch, caplog):
    monkeypatch.setattr(CLOCK, "today", lambda: date(2027, 5, 31))
    with caplog.at_level(logging.WARNING):
        rec = run_config(accel)
    assert rec.by_name(POOL, "prod-pool-fpga").inputs["vmSize"] == "Standard_NP10s"
    assert any("retires on 2027-05-31 (0 days from 2027-05-31)" in r.getMessage() for r in caplog.records)


def test_an_np_pool_is_an_error_the_day_after_it_retires(accel, monkeypatch):
    monkeypatch.setattr(CLOCK, "today", lambda: date(2027, 6, 1))
    assert_rejected(accel, "aks_clusters[0].accelerator_pools[1].vm_size",
                    "Standard_NP10s (NP-series, Xilinx (AMD) Alveo U250) retired on 2027-05-31")


def test_lifecycle_turns_the_same_row_from_warning_into_error_by_date_alone():
    before, after = lifecycle("Standard_NP40s", date(2027, 5, 30)), lifecycle("Standard_NP40s", date(2027, 6, 1))
    assert before[0] is None and before[1] and "1 days from 2027-05-30" in before[1]
    assert after[1] is None and after[0] and "retired on 2027-05-31" in after[0]
    assert lifecycle("Standard_NC40ads_H100_v5", date(2030, 1, 1)) == (None, None)
    # Reservations ended on 2026-04-02: said from that day on, not before.
    assert "reservations" not in (lifecycle("Standard_NP10s", date(2026, 4, 1))[1] or "")
    assert "reservations" in (lifecycle("Standard_NP10s", date(2026, 4, 2))[1] or "")


# ---- the table -------------------------------------------------------------------------------------------

def test_every_accelerator_size_exposes_its_vendors_resource():
    for name, size in ACCELERATOR_SIZES.items():
        assert size.vcpus > 0 and size.count > 0, name
        if size.brainwave_only:
            assert size.resource is None, name  # Azure ML drove the PB6s FPGA; no device plugin
        else:
            assert size.resource == {"gpu": "nvidia.com/gpu", "fpga": "amd.com/u250"}[size.kind], name
    assert not set(ACCELERATOR_SIZES) & set(VM_VCPUS), "a size is either general or an accelerator"


def test_the_np_series_is_the_only_fpga_left_and_retires_on_2027_05_31():
    fpga = {n: s for n, s in ACCELERATOR_SIZES.items() if s.kind == "fpga" and not s.brainwave_only}
    assert {n: (s.vcpus, s.count) for n, s in fpga.items()} == {
        "Standard_NP10s": (10, 1), "Standard_NP20s": (20, 2), "Standard_NP40s": (40, 4)}
    assert {s.retires for s in fpga.values()} == {vm_sizes.NP_RETIRES} == {date(2027, 5, 31)}


# ---- the GPU template: the CPU fallback answers here ----------------------------------------------------------

def test_the_gpu_template_falls_back_to_the_cpu_says_so_and_answers_the_seed_example(tmp_path, model_files):
    pkl, onnx = model_files
    expected = pickle.loads(pkl.read_bytes()).predict(SEED["data"]).tolist()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / onnx.name).write_bytes(onnx.read_bytes())
    with serve(TEMPLATES / "onnx_gpu" / "score.py", tmp_path, model_dir=model_dir) as s:
        r = s.post(httpx.Request("POST", "/", json=SEED).content)
        log = s.log.read_text()
    assert r.status_code == 200, r.text
    assert r.json() == pytest.approx(expected, rel=1e-4)
    assert "onnx_gpu: scoring diabetes-ridge.onnx with CPUExecutionProvider (CUDA not available" in log

