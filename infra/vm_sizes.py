"""Azure VM sizes ml-deploy knows, with their vCPU counts (for the AKS FastProd rule).

A size outside this table is an error that says to add it here, never a guess.
"""

from __future__ import annotations

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
