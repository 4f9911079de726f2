"""Facts of well-known Azure GPU sizes, for when the Resource SKUs API may not be read.

Without ``Microsoft.Compute/skus/read`` the provider still needs a size's GPU count (the claim's
``nvidia.com/gpu`` capacity, ``MAX_GPUS``, waiting for the device plugin) and, for the quota
pre-flight, its vCPUs and quota family. These come from Azure's size documentation for the GPU
sizes Kaito's presets use. Zones and subscription restrictions cannot be known this way: AKS
checks them on create. A size not listed here has no facts until its Node reports its capacity.
"""

from __future__ import annotations

from provisioner.cloud.azure.skus import SkuFacts

_NCSV3 = "standardNCSv3Family"
_NCAS_T4_V3 = "standardNCASv3_T4Family"
_NCADS_A100_V4 = "standardNCADSA100v4Family"
_NDAS_A100_V4 = "standardNDASv4_A100Family"
_NDAMS_A100_V4 = "standardNDAMSv4_A100Family"
_NDS_H100_V5 = "standardNDSH100v5Family"
_NCADS_H100_V5 = "standardNCadsH100v5Family"
_NVADS_A10_V5 = "standardNVADSA10v5Family"

#: name, quota family, vCPUs, memory GiB, GPUs
_TABLE: tuple[tuple[str, str, int, float, int], ...] = (
    ("Standard_NC6s_v3", _NCSV3, 6, 112, 1),
    ("Standard_NC12s_v3", _NCSV3, 12, 224, 2),
    ("Standard_NC24s_v3", _NCSV3, 24, 448, 4),
    ("Standard_NC24rs_v3", _NCSV3, 24, 448, 4),
    ("Standard_NC4as_T4_v3", _NCAS_T4_V3, 4, 28, 1),
    ("Standard_NC8as_T4_v3", _NCAS_T4_V3, 8, 56, 1),
    ("Standard_NC16as_T4_v3", _NCAS_T4_V3, 16, 110, 1),
    ("Standard_NC64as_T4_v3", _NCAS_T4_V3, 64, 440, 4),
    ("Standard_NC24ads_A100_v4", _NCADS_A100_V4, 24, 220, 1),
    ("Standard_NC48ads_A100_v4", _NCADS_A100_V4, 48, 440, 2),
    ("Standard_NC96ads_A100_v4", _NCADS_A100_V4, 96, 880, 4),
    ("Standard_ND96asr_v4", _NDAS_A100_V4, 96, 900, 8),
    ("Standard_ND96amsr_A100_v4", _NDAMS_A100_V4, 96, 1900, 8),
    ("Standard_ND96isr_H100_v5", _NDS_H100_V5, 96, 1900, 8),
    ("Standard_NC40ads_H100_v5", _NCADS_H100_V5, 40, 320, 1),
    ("Standard_NC80adis_H100_v5", _NCADS_H100_V5, 80, 640, 2),
    ("Standard_NV36ads_A10_v5", _NVADS_A10_V5, 36, 440, 1),
    ("Standard_NV72ads_A10_v5", _NVADS_A10_V5, 72, 880, 2),
)

KNOWN_SIZES: dict[str, SkuFacts] = {
    name.lower(): SkuFacts(name=name, family=family, vcpus=vcpus, memory_gib=memory, gpus=gpus)
    for name, family, vcpus, memory, gpus in _TABLE
}


def known_size(vm_size: str) -> SkuFacts | None:
    """The documented facts of ``vm_size`` (no zones, no restrictions), or None if it is not listed."""
    return KNOWN_SIZES.get(vm_size.lower())
