"""Azure VM sizes ml-deploy knows: the general sizes with their vCPUs, memory and series lifecycle
(retirement and capacity-restriction dates, the system-pool rules), and one table of accelerator sizes
(GPU and FPGA) with what each exposes to Kubernetes and when it retires. The config checks and the
policy pack both read these tables.

A size outside these tables is an error that says to add it here, never a guess. Dates are data
compared with today's date (`Clock`), so a size turns from a warning into an error on the day after
its date without anyone editing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable, Literal, Optional

# The general sizes, from the size series pages of MicrosoftDocs/azure-compute-docs
# articles/virtual-machines/sizes/ (general-purpose: dv2, dv3, dv4/dsv4/ddsv4/dasv4, dv5 family,
# bv1; memory-optimized: ev3-ev5 families; compute-optimized: fsv2): series, vCPUs and GiB of memory.
# There is no Ddsv3/Dasv3 (nor Edsv3/Easv3) series, and the B-series' "s" sizes above B2s do not exist.
# D1_v2 and DS1_v2 (1 vCPU) are left out: AKS refuses them for a system pool.


@dataclass(frozen=True)
class GeneralSize:
    """One general-purpose, memory- or compute-optimized size."""

    series: str
    """As Microsoft's lifecycle pages name it (`Dv2`, `Dsv3`, `B (v1)`, ...): the key of SERIES_LIFECYCLE."""
    vcpus: int
    memory_gib: int


def _sizes(series: str, sizes: dict[str, tuple[int, int]]) -> dict[str, GeneralSize]:
    """The rows of one series: size -> (vCPUs, GiB)."""
    return {name: GeneralSize(series, vcpus, gib) for name, (vcpus, gib) in sizes.items()}


# Dv2/DSv2 memory per size from dv2-series.md/dsv2-series.md; v3-v5 D sizes have 4 GiB per vCPU,
# E sizes 8, Fsv2 2 (each series page's size table).
_DV2 = {2: (2, 7), 3: (4, 14), 4: (8, 28), 5: (16, 56), 11: (2, 14), 12: (4, 28), 13: (8, 56), 14: (16, 112)}
_D_SUFFIX = {"": "D", "s": "Ds", "ds": "Dds", "as": "Das"}
_E_SUFFIX = {"": "E", "s": "Es", "ds": "Eds", "as": "Eas"}
GENERAL_SIZES: dict[str, GeneralSize] = {
    **_sizes("Dv2", {f"Standard_D{n}_v2": c for n, c in _DV2.items()}),
    **_sizes("Dsv2", {f"Standard_DS{n}_v2": c for n, c in _DV2.items()}),
    **{f"Standard_D{c}{s}_v3": GeneralSize("Dsv3" if s else "Dv3", c, 4 * c)
       for c in (2, 4, 8, 16, 32, 48, 64) for s in ("", "s")},
    **{f"Standard_D{c}{s}_v{v}": GeneralSize(f"{_D_SUFFIX[s]}v{v}", c, 4 * c)
       for c in (2, 4, 8, 16, 32, 48, 64) for s in _D_SUFFIX for v in (4, 5)},
    **{f"Standard_E{c}{s}_v3": GeneralSize("Esv3" if s else "Ev3", c, 8 * c) for c in (2, 4, 8, 16, 32) for s in ("", "s")},
    **{f"Standard_E{c}{s}_v{v}": GeneralSize(f"{_E_SUFFIX[s]}v{v}", c, 8 * c)
       for c in (2, 4, 8, 16, 32) for s in _E_SUFFIX for v in (4, 5)},
    **{f"Standard_F{c}s_v2": GeneralSize("Fsv2", c, 2 * c) for c in (2, 4, 8, 16, 32, 48, 64, 72)},
    "Standard_B2s": GeneralSize("B (v1)", 2, 4),
    **{f"Standard_B{c}ms": GeneralSize("B (v1)", c, 4 * c) for c in (2, 4, 8, 12, 16, 20)},
}

VM_VCPUS: dict[str, int] = {name: size.vcpus for name, size in GENERAL_SIZES.items()}
"""vCPUs per general size (the AKS FastProd rule)."""


# ---- lifecycle of the general series ---------------------------------------------------------------

LIFECYCLE_PAGE = ("MicrosoftDocs/azure-compute-docs articles/virtual-machines/sizes/lifecycle/"
                  "retirements-and-capacity-restrictions.md (ms.date 2026-09-24)")
CAPACITY_RESTRICTED = date(2026, 7, 1)
"""Capacity growth restrictions on the End of Life series: the page says they "begin in July 2026" and
names July 31, 2026 as the day by which they apply everywhere ("some customers might encounter the
restriction before July 31"); the table keeps the first day of the month, the earliest a deployment
can meet them. From then on a new subscription can't deploy these series and no more quota is approved;
an existing subscription keeps its approved quota, subject to capacity (the page's "Quota limitations")."""


@dataclass(frozen=True)
class SeriesLifecycle:
    """Microsoft's dates for one series; None where the page announces nothing."""

    retires: Optional[date]
    """The planned retirement date: after it the VMs are deallocated and can't be created."""
    restricted: Optional[date]
    """When capacity growth restrictions began."""
    successor: str
    """What to move to, from the page's "Recommended modernization paths" (sizes this module knows)."""


_CURRENT = SeriesLifecycle(None, None, "")
SERIES_LIFECYCLE: dict[str, SeriesLifecycle] = {
    # LIFECYCLE_PAGE, "General purpose retired sizes": Dv2 and Dsv2 05/01/28 (announced 03/31/25);
    # "Impacted VM series" lists both under capacity growth restrictions.
    "Dv2": SeriesLifecycle(date(2028, 5, 1), CAPACITY_RESTRICTED, "Dsv5/Ddsv5 (e.g. Standard_D4s_v5)"),
    "Dsv2": SeriesLifecycle(date(2028, 5, 1), CAPACITY_RESTRICTED, "Dsv5/Ddsv5 (e.g. Standard_D4s_v5)"),
    # LIFECYCLE_PAGE: Dv3, Dsv3 11/15/29, also under the capacity restrictions; "Modernization
    # recommendations": Dv5 (or Dv6/Dv7).
    "Dv3": SeriesLifecycle(date(2029, 11, 15), CAPACITY_RESTRICTED, "Dv5/Dsv5 (e.g. Standard_D4s_v5)"),
    "Dsv3": SeriesLifecycle(date(2029, 11, 15), CAPACITY_RESTRICTED, "Dv5/Dsv5 (e.g. Standard_D4s_v5)"),
    # LIFECYCLE_PAGE, "Memory optimized retired sizes": Ev3, Esv3 11/15/29, restricted; target Ev5 (or Esv6/Esv7).
    "Ev3": SeriesLifecycle(date(2029, 11, 15), CAPACITY_RESTRICTED, "Ev5/Esv5 (e.g. Standard_E4s_v5)"),
    "Esv3": SeriesLifecycle(date(2029, 11, 15), CAPACITY_RESTRICTED, "Ev5/Esv5 (e.g. Standard_E4s_v5)"),
    # LIFECYCLE_PAGE, "Compute optimized retired sizes": Fsv2 11/15/28 (announced 10/15/25), restricted.
    # The page names no F successor this table knows (Fasv6 and later are not in it): a v5 D size.
    "Fsv2": SeriesLifecycle(date(2028, 11, 15), CAPACITY_RESTRICTED, "a v5 size (e.g. Standard_D4s_v5)"),
    # LIFECYCLE_PAGE: "B-series (V1)" 11/15/28; "Impacted VM series" lists B and Bs. (B v2 sizes,
    # Standard_B2s_v2 and so on, are another series and not in this table.)
    "B (v1)": SeriesLifecycle(date(2028, 11, 15), CAPACITY_RESTRICTED, "Dsv5 (e.g. Standard_D4s_v5)"),
    # v4 and v5 series: not on LIFECYCLE_PAGE (no retirement, no restriction announced).
    **{f"{p}v{v}": _CURRENT for p in (*_D_SUFFIX.values(), *_E_SUFFIX.values()) for v in (4, 5)},
}


def general_lifecycle(vm_size: str, today: date, *, new: bool) -> tuple[Optional[str], Optional[str]]:
    """(error, warning) for a general size on `today`. Past retirement: an error. Under capacity
    restrictions: an error for a cluster being created (`new`), a warning for one that already
    exists or is attached (its subscription may still hold quota). Retirement announced: a warning."""
    size = GENERAL_SIZES[vm_size]
    life = SERIES_LIFECYCLE[size.series]
    what = f"{vm_size} ({size.series}-series)"
    if life.retires is not None and today > life.retires:
        return f"{what} retired on {life.retires.isoformat()}: Azure deallocates these VMs; use {life.successor}", None
    if life.retires is None:
        return None, None
    days = (life.retires - today).days
    retires = f"retires on {life.retires.isoformat()} ({days} days from {today.isoformat()})"
    if life.restricted is not None and today >= life.restricted:
        restriction = (f"is under Azure's capacity growth restrictions since {life.restricted.strftime('%B %Y')}: "
                       f"a new subscription can't deploy it and no more quota is approved")
        if new:
            return f"{what} {restriction}, and it {retires}; use {life.successor} (source: {LIFECYCLE_PAGE})", None
        return None, (f"{what} {restriction} (existing nodes run within the quota already approved), and it "
                      f"{retires}: Azure deallocates these VMs after that day and this config becomes an error; "
                      f"plan the move to {life.successor}")
    return None, (f"{what} {retires}: Azure deallocates these VMs after that day and this config becomes an "
                  f"error; plan the move to {life.successor}")


# ---- the system pool ------------------------------------------------------------------------------

SYSTEM_POOL_DEFAULT = "Standard_D4s_v5"
"""The default system pool size: a current (v5) 4-vCPU, 16 GiB size, the one AKS's own system-pool
examples use (MicrosoftDocs/azure-aks-docs articles/aks/use-system-pools.md, ms.date 2026-04-30:
`vm_size = "Standard_D4s_v5"` for the default and the dedicated system pool) and the v5 target the
lifecycle page recommends for Dv3/Dsv3. Replaces Standard_D3_v2, the Azure ML SDK v1 default."""
SYSTEM_POOL_MIN_VCPUS = 4
SYSTEM_POOL_MIN_MEMORY_GIB = 4
# use-system-pools.md, "System and user node pools": "System node pools require a VM SKU of at least
# 4 vCPUs and 4 GB of memory" and "B series VMs aren't supported for system node pools".


def system_pool_problem(vm_size: str) -> Optional[str]:
    """Why `vm_size` cannot be a system pool's size, as AKS writes its rules; None if it can."""
    size = GENERAL_SIZES[vm_size]
    if size.series.startswith("B"):
        return (f"{vm_size} is a B-series (burstable) size: AKS doesn't support B-series VMs for system node "
                f"pools (use-system-pools.md); use e.g. {SYSTEM_POOL_DEFAULT}")
    if size.vcpus < SYSTEM_POOL_MIN_VCPUS or size.memory_gib < SYSTEM_POOL_MIN_MEMORY_GIB:
        return (f"{vm_size} has {size.vcpus} vCPUs and {size.memory_gib} GiB: AKS system node pools require a VM "
                f"SKU of at least {SYSTEM_POOL_MIN_VCPUS} vCPUs and {SYSTEM_POOL_MIN_MEMORY_GIB} GB of memory "
                f"(use-system-pools.md); use e.g. {SYSTEM_POOL_DEFAULT}")
    return None


# ---- accelerators ---------------------------------------------------------------------------------

Kind = Literal["gpu", "fpga"]

GPU_RESOURCE = "nvidia.com/gpu"
"""What NVIDIA's device plugin advertises per GPU (NVIDIA/k8s-device-plugin README; AKS's
use-nvidia-gpu.md schedules with `nvidia.com/gpu: 1`)."""
FPGA_RESOURCE = "amd.com/u250"
"""What Xilinx's device plugin advertises per Alveo U250 with the name customization ml-deploy
installs (components/aks_cluster.py): the plugin's prefix is `amd.com/` (Xilinx/FPGA_as_a_Service
k8s-device-plugin/server.go `resourceNamePrefix`), and without customization the rest would be the
shell's VBNV and timestamp read from the card, which cannot be known before a node exists."""

RESOURCES: dict[str, str] = {"gpu": GPU_RESOURCE, "fpga": FPGA_RESOURCE}
"""The extended resource a service of each accelerator kind is limited by."""


@dataclass(frozen=True)
class AcceleratorSize:
    """One accelerator VM size."""

    series: str
    vcpus: int
    kind: Kind
    device: str
    """The accelerator, as Microsoft's size page names it."""
    count: int
    """Accelerators per VM."""
    resource: Optional[str]
    """The Kubernetes extended resource one accelerator is scheduled as; None: no device plugin."""
    retires: Optional[date] = None
    """The last day it runs (Azure deallocates the VMs after it); None: no announced retirement."""
    regional_retirement: tuple[tuple[str, date], ...] = ()
    """(Azure region name, last day) where the series runs past `retires`."""
    brainwave_only: bool = False
    """Usable only through Azure ML's FPGA service (Project Brainwave), which no longer exists."""
    note: str = ""


def _series(series: str, kind: Kind, device: str, resource: Optional[str], sizes: dict[str, tuple[int, int]],
            *, retires: Optional[date] = None, regional_retirement: tuple[tuple[str, date], ...] = (),
            brainwave_only: bool = False, note: str = "") -> dict[str, AcceleratorSize]:
    """The rows of one series: size -> (vCPUs, accelerators)."""
    return {name: AcceleratorSize(series=series, vcpus=vcpus, kind=kind, device=device, count=count,
                                  resource=resource, retires=retires, regional_retirement=regional_retirement,
                                  brainwave_only=brainwave_only, note=note)
            for name, (vcpus, count) in sizes.items()}


NP_RETIRES = date(2027, 5, 31)
"""NP-series retirement (sizes/fpga-accelerated/np-series.md); the alternative FPGA while it runs."""

ACCELERATOR_SIZES: dict[str, AcceleratorSize] = {
    # NCasT4_v3: MicrosoftDocs/azure-compute-docs sizes/gpu-accelerated/ncast4v3-series.md (T4 16 GB); no retirement.
    **_series("NCasT4_v3", "gpu", "NVIDIA Tesla T4", GPU_RESOURCE, {
        "Standard_NC4as_T4_v3": (4, 1), "Standard_NC8as_T4_v3": (8, 1),
        "Standard_NC16as_T4_v3": (16, 1), "Standard_NC64as_T4_v3": (64, 4)}),
    # NCads_H100_v5: sizes/gpu-accelerated/ncadsh100v5-series.md (H100 NVL 94 GB); no retirement.
    **_series("NCads_H100_v5", "gpu", "NVIDIA H100 NVL", GPU_RESOURCE, {
        "Standard_NC40ads_H100_v5": (40, 1), "Standard_NC80adis_H100_v5": (80, 2)}),
    # NDv2: sizes/gpu-accelerated/ndv2-series.md + includes/ndv2-series-specs.md (8 V100 32 GB); not in
    # sizes/lifecycle/retirements-and-capacity-restrictions.md (2026-09-24): no announced retirement.
    **_series("NDv2", "gpu", "NVIDIA Tesla V100 (NVLink)", GPU_RESOURCE, {"Standard_ND40rs_v2": (40, 8)},
              note="Volta: CUDA 13 builds such as onnxruntime-gpu 1.31 no longer run on it (CUDA 13.0 release notes)"),
    # NCv3: sizes/gpu-accelerated/ncv3-series.md (V100 16 GB); retired 2025-09-30 except in four regions
    # with extensions: US Gov Virginia and US Gov Arizona until 2026-12-31, Jio India West and China North 3
    # until 2027-06-30 (lifecycle/retirement/ncv3-retirement.md, ms.date 2025-05-28, the note at its top).
    **_series("NCv3", "gpu", "NVIDIA Tesla V100", GPU_RESOURCE, {
        "Standard_NC6s_v3": (6, 1), "Standard_NC12s_v3": (12, 2),
        "Standard_NC24s_v3": (24, 4), "Standard_NC24rs_v3": (24, 4)}, retires=date(2025, 9, 30),
              regional_retirement=(("usgovvirginia", date(2026, 12, 31)), ("usgovarizona", date(2026, 12, 31)),
                                   ("jioindiawest", date(2027, 6, 30)), ("chinanorth3", date(2027, 6, 30)))),
    # NC (v1): MicrosoftDocs/azure-docs articles/virtual-machines/nc-series.md (1 GPU = half a K80 card);
    # retired 2023-09-06 (articles/virtual-machines/nc-series-retirement.md, "extending the retirement date by 1 year").
    **_series("NC", "gpu", "NVIDIA Tesla K80 (half card)", GPU_RESOURCE, {
        "Standard_NC6": (6, 1), "Standard_NC12": (12, 2), "Standard_NC24": (24, 4), "Standard_NC24r": (24, 4)},
              retires=date(2023, 9, 6)),
    # NP: sizes/fpga-accelerated/np-series.md (Xilinx/AMD Alveo U250 64 GB); retires 2027-05-31.
    **_series("NP", "fpga", "Xilinx (AMD) Alveo U250", FPGA_RESOURCE, {
        "Standard_NP10s": (10, 1), "Standard_NP20s": (20, 2), "Standard_NP40s": (40, 4)}, retires=NP_RETIRES),
    # PBS: MicrosoftDocs/azure-docs articles/machine-learning/how-to-deploy-fpga-web-service.md (2020-03-05):
    # "The PB6 VM has six vCPUs and one FPGA" (Intel Arria 10), "only used with Azure ML", "cannot run
    # arbitrary bitstreams"; no device plugin, Azure ML drove it.
    **_series("PBS", "fpga", "Intel Arria 10", None, {"Standard_PB6s": (6, 1)}, brainwave_only=True),
}

NP_RESERVATIONS_ENDED = date(2026, 4, 2)
"""No 1- or 3-year reservations for NP-series after this day (same page)."""
SDK_V1_DEPRECATED = date(2025, 3, 31)
"""Azure ML SDK v1 deprecated (MicrosoftDocs/azure-ai-docs articles/machine-learning/includes/sdk-v1-deprecation.md)."""
SDK_V1_SUPPORT_ENDED = date(2026, 6, 30)
"""Azure ML SDK v1 end of support (same include)."""
NOTEBOOKS_REMOVED = date(2024, 4, 29)
"""Azure/MachineLearningNotebooks commit 8373b938 (SDK 1.56.0 samples) deleted
how-to-use-azureml/deployment/accelerated-models/; the how-to-deploy-fpga-web-service article is not
among the v1 articles of MicrosoftDocs/azure-ai-docs."""
GPU_ALTERNATIVES = "NCasT4_v3 (T4, inference), NCads_H100_v5 (H100) or NDv2 (V100)"
"""Microsoft's migration targets for NP-series (np-series.md, "Migration guidance")."""


@dataclass
class Clock:
    """Today's date for the retirement rules. The program reads `CLOCK.today()` once per check;
    tests pin it (`monkeypatch.setattr(CLOCK, "today", ...)`), never the global `date`."""

    today: Callable[[], date] = date.today


CLOCK = Clock()


def brainwave_refusal(today: date) -> str:
    """Why an Azure ML FPGA (Brainwave) deployment cannot be made, with the dates and what to use."""
    if today <= NP_RETIRES:
        fpga = (f"`accelerator: fpga` on an NP-series pool (Standard_NP10s/20s/40s, Xilinx Alveo U250) "
                f"until its retirement on {NP_RETIRES.isoformat()}")
    else:
        fpga = f"no FPGA: the NP-series, the last FPGA VMs, retired on {NP_RETIRES.isoformat()}"
    return (
        "Azure ML's FPGA service (Hardware Accelerated Models, Project Brainwave: quantized ResNet 50/152, "
        "DenseNet-121, VGG-16 and SSD-VGG on Intel Arria 10 Standard_PB6s nodes, deployed with the Azure ML SDK v1 "
        f"and azureml-accel-models) no longer exists: its sample notebooks were removed on {NOTEBOOKS_REMOVED.isoformat()}, "
        "its how-to is gone from the v1 docs, the SDK v1 was "
        f"deprecated on {SDK_V1_DEPRECATED.isoformat()} and its support ended on {SDK_V1_SUPPORT_ENDED.isoformat()}, "
        "and PB6s nodes run only Azure ML's own bitstreams. Alternatives: "
        f"{fpga}; or `accelerator: gpu` on {GPU_ALTERNATIVES}"
    )


ENDED_TARGETS: dict[str, Callable[[date], str]] = {"fpga": brainwave_refusal}
"""Service targets of the Azure ML SDK that no longer exist, with the message that says so."""


def lifecycle(vm_size: str, today: date, location: Optional[str] = None) -> tuple[Optional[str], Optional[str]]:
    """(error, warning) for an accelerator size on `today` in `location` (an Azure region name; None:
    not known): an error for a Brainwave-only size or one past its retirement, a warning for one that
    retires later. Both None otherwise. A series retired later in some regions is judged by that
    region's date when the location is known, by the general date otherwise (and the message says where
    it runs longer)."""
    size = ACCELERATOR_SIZES[vm_size]
    if size.brainwave_only:
        return f"{vm_size}: {brainwave_refusal(today)}", None
    if size.retires is None:
        return None, None
    region = (location or "").replace(" ", "").lower()
    retires = dict(size.regional_retirement).get(region, size.retires)
    where = f" in {region}" if retires != size.retires else ""
    elsewhere = ""
    if size.regional_retirement and not where:
        elsewhere = " (later in " + ", ".join(f"{r} until {d.isoformat()}" for r, d in size.regional_retirement) + ")"
    what = f"{vm_size} ({size.series}-series, {size.device})"
    if today > retires:
        return (f"{what} retired{where} on {retires.isoformat()}{elsewhere}: Azure deallocates these VMs; "
                f"use {GPU_ALTERNATIVES}"), None
    days = (retires - today).days
    reservations = (f"; no new reservations since {NP_RESERVATIONS_ENDED.isoformat()}"
                    if size.series == "NP" and today >= NP_RESERVATIONS_ENDED else "")
    return None, (f"{what} retires{where} on {retires.isoformat()} ({days} days from {today.isoformat()}){elsewhere}: "
                  f"Azure deallocates these VMs after that day and this config becomes an error{reservations}; "
                  f"plan the move to {GPU_ALTERNATIVES}")


# ---- the GPU driver AKS installs -------------------------------------------------------------------

AKS_CUDA_DRIVER: dict[str, str] = {"NCasT4_v3": "580.159.04"}
"""The NVIDIA driver AKS installs on a GPU series' Ubuntu nodes. AKS routes modern CUDA compute sizes
(T4, V100, A100, H100, ...) to its `aks-gpu-cuda-lts` image, R580 LTS, 580.159.04: Azure/karpenter-provider-azure
pkg/utils/gpu.go `NvidiaCudaLTSDriverVersion` (kept in sync, it says, with Azure/AgentBaker
parts/common/components.json GPUContainerImages, whose stored copy here did not show that entry). The
previous default was the 570 branch (Azure/AKS issue #5207, 2025-08-13, node image 20250806); no AKS
documentation page in the stored sources states the driver per size. The node image decides, so a
pool on an older image may still run 570: upgrade the node image."""
CUDA_MIN_DRIVER_BRANCH: dict[int, int] = {12: 525, 13: 580}
"""The oldest driver branch each CUDA major runs on (NVIDIA's minor-version compatibility: CUDA 12.x
needs >= 525.60.13, CUDA 13.x >= 580, CUDA Toolkit release notes, "CUDA Driver" table; the stored
copies here stop before that table, so these are the values as NVIDIA publishes them, not re-read)."""
