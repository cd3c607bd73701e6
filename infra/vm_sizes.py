"""Azure VM sizes ml-deploy knows: vCPUs of the general sizes (the AKS FastProd rule), and one table
of accelerator sizes (GPU and FPGA) with what each exposes to Kubernetes and when it retires.

A size outside these tables is an error that says to add it here, never a guess. Retirement dates
are data compared with today's date (`Clock`), so a size turns from a warning into an error on the
day after it retires without anyone editing code.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Callable, Literal, Optional

# vCPUs per size, from the size series pages of MicrosoftDocs/azure-compute-docs
# articles/virtual-machines/sizes/ (general-purpose: dv2, dv3, dv4/dsv4/ddsv4/dasv4, dv5 family,
# bv1; memory-optimized: ev3-ev5 families; compute-optimized: fsv2). There is no Ddsv3/Dasv3
# (nor Edsv3/Easv3) series, and the B-series' "s" sizes above B2s do not exist. D1_v2 and DS1_v2
# (1 vCPU) are left out: AKS refuses them for a system pool (learn.microsoft.com/azure/aks/use-system-pools).
VM_VCPUS: dict[str, int] = {
    **{f"Standard_D{n}_v2": c for n, c in ((2, 2), (3, 4), (4, 8), (5, 16))},
    **{f"Standard_DS{n}_v2": c for n, c in ((2, 2), (3, 4), (4, 8), (5, 16))},
    **{f"Standard_D{n}_v2": c for n, c in ((11, 2), (12, 4), (13, 8), (14, 16))},
    **{f"Standard_D{c}{s}_v3": c for c in (2, 4, 8, 16, 32, 48, 64) for s in ("", "s")},
    **{f"Standard_D{c}{s}_v{v}": c for c in (2, 4, 8, 16, 32, 48, 64) for s in ("", "s", "ds", "as") for v in (4, 5)},
    **{f"Standard_E{c}{s}_v3": c for c in (2, 4, 8, 16, 32) for s in ("", "s")},
    **{f"Standard_E{c}{s}_v{v}": c for c in (2, 4, 8, 16, 32) for s in ("", "s", "ds", "as") for v in (4, 5)},
    **{f"Standard_F{c}s_v2": c for c in (2, 4, 8, 16, 32, 48, 64, 72)},
    "Standard_B2s": 2,
    **{f"Standard_B{c}ms": c for c in (2, 4, 8, 12, 16, 20)},
}


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
    brainwave_only: bool = False
    """Usable only through Azure ML's FPGA service (Project Brainwave), which no longer exists."""
    note: str = ""


def _series(series: str, kind: Kind, device: str, resource: Optional[str], sizes: dict[str, tuple[int, int]],
            *, retires: Optional[date] = None, brainwave_only: bool = False, note: str = "") -> dict[str, AcceleratorSize]:
    """The rows of one series: size -> (vCPUs, accelerators)."""
    return {name: AcceleratorSize(series=series, vcpus=vcpus, kind=kind, device=device, count=count,
                                  resource=resource, retires=retires, brainwave_only=brainwave_only, note=note)
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
    # NCv3: sizes/gpu-accelerated/ncv3-series.md (V100 16 GB); retired 2025-09-30 (lifecycle/retirement/ncv3-retirement.md).
    **_series("NCv3", "gpu", "NVIDIA Tesla V100", GPU_RESOURCE, {
        "Standard_NC6s_v3": (6, 1), "Standard_NC12s_v3": (12, 2),
        "Standard_NC24s_v3": (24, 4), "Standard_NC24rs_v3": (24, 4)}, retires=date(2025, 9, 30)),
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


def lifecycle(vm_size: str, today: date) -> tuple[Optional[str], Optional[str]]:
    """(error, warning) for an accelerator size on `today`: an error for a Brainwave-only size or
    one past its retirement, a warning for one that retires later. Both None otherwise."""
    size = ACCELERATOR_SIZES[vm_size]
    if size.brainwave_only:
        return f"{vm_size}: {brainwave_refusal(today)}", None
    if size.retires is None:
        return None, None
    what = f"{vm_size} ({size.series}-series, {size.device})"
    if today > size.retires:
        return (f"{what} retired on {size.retires.isoformat()}: Azure deallocates these VMs; "
                f"use {GPU_ALTERNATIVES}"), None
    days = (size.retires - today).days
    reservations = (f"; no new reservations since {NP_RESERVATIONS_ENDED.isoformat()}"
                    if size.series == "NP" and today >= NP_RESERVATIONS_ENDED else "")
    return None, (f"{what} retires on {size.retires.isoformat()} ({days} days from {today.isoformat()}): "
                  f"Azure deallocates these VMs after that day and this config becomes an error{reservations}; "
                  f"plan the move to {GPU_ALTERNATIVES}")
