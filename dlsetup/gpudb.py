"""The sourced GPU specification table (``dlsetup/data/gpus.toml``) and architecture lookups.

The table names GPUs found on PCI without a driver, and gives the datasheet figures (memory, tensor
cores, dense peak TFLOP/s) that ``check``, ``plan`` and ``verify`` compare a host against. It is read
once, on first use.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from types import MappingProxyType

#: The table layout this module reads (``schema_version`` at the top of gpus.toml).
TABLE_SCHEMA_VERSION = 1

#: Where the NVIDIA architecture rows live: ``[[architecture]]`` of the compatibility table
#: ``dlsetup/data/compat/nvidia.toml`` is the one compute capability -> architecture map; the planner
#: reads the same rows (``dlsetup.plan.compat``).
NVIDIA_TABLE = ("data", "compat", "nvidia.toml")


def _cc_tuple(cc: str) -> tuple[int, int] | None:
    """"9.0" -> (9, 0); "10" -> (10, 0); None for anything that is not "major[.minor]" digits."""
    major, _, minor = cc.strip().partition(".")
    if not major.isdigit() or not (minor.isdigit() or minor == ""):
        return None
    return int(major), int(minor or 0)


@lru_cache(maxsize=1)
def cc_architectures() -> tuple[tuple[tuple[int, int], tuple[int, int], str], ...]:
    """(cc_min, cc_max, name) of every architecture row of nvidia.toml, in file order."""
    table = tomllib.loads(files("dlsetup").joinpath(*NVIDIA_TABLE).read_text(encoding="utf-8"))
    rows = []
    for row in table["architecture"]:
        low, high = _cc_tuple(row["cc_min"]), _cc_tuple(row["cc_max"])
        if low is None or high is None:
            raise RuntimeError(f"nvidia.toml: architecture {row.get('name')!r} has a malformed compute capability")
        rows.append((low, high, row["name"]))
    return tuple(rows)


#: AMD LLVM gfx target -> architecture (https://llvm.org/docs/AMDGPUUsage.html#processors).
_GFX_ARCHITECTURES: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(("gfx900", "gfx902", "gfx904", "gfx906", "gfx909", "gfx90c"), "GCN5"),
        "gfx908": "CDNA",
        "gfx90a": "CDNA2",
        **dict.fromkeys(("gfx940", "gfx941", "gfx942"), "CDNA3"),
        "gfx950": "CDNA4",
        **dict.fromkeys(("gfx1010", "gfx1011", "gfx1012", "gfx1013"), "RDNA1"),
        **dict.fromkeys(tuple(f"gfx103{i}" for i in range(7)), "RDNA2"),
        **dict.fromkeys(("gfx1100", "gfx1101", "gfx1102", "gfx1103"), "RDNA3"),
        **dict.fromkeys(("gfx1150", "gfx1151", "gfx1152", "gfx1153"), "RDNA3.5"),
        **dict.fromkeys(("gfx1200", "gfx1201"), "RDNA4"),
    }
)

#: Words that drivers put before a product name, dropped when matching names.
_NAME_PREFIXES = ("nvidia", "tesla", "amd")


@dataclass(frozen=True)
class GpuSpec:
    """One row of the GPU table."""

    key: str
    vendor: str  #: "nvidia" or "amd"
    name: str  #: as the driver reports it, e.g. "NVIDIA H100 80GB HBM3"
    pci_device_ids: tuple[str, ...]
    architecture: str
    compute_capability: str | None
    gfx_target: str | None
    memory_bytes: int | None
    memory_bandwidth_gbps: float | None
    tdp_w: float | None
    tensor_cores: bool
    integrated: bool
    peak_tflops: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    source: str = ""


def _spec(row: dict) -> GpuSpec:
    return GpuSpec(
        key=row["key"],
        vendor=row["vendor"],
        name=row["name"],
        pci_device_ids=tuple(row["pci_device_ids"]),
        architecture=row["architecture"],
        compute_capability=row.get("compute_capability"),
        gfx_target=row.get("gfx_target"),
        memory_bytes=row.get("memory_bytes"),
        memory_bandwidth_gbps=row.get("memory_bandwidth_gbps"),
        tdp_w=row.get("tdp_w"),
        tensor_cores=row["tensor_cores"],
        integrated=row["integrated"],
        peak_tflops=MappingProxyType(dict(row.get("peak_tflops", {}))),
        source=row["source"],
    )


@lru_cache(maxsize=1)
def all_specs() -> tuple[GpuSpec, ...]:
    """Every row of the table, in file order."""
    table = tomllib.loads(files("dlsetup").joinpath("data", "gpus.toml").read_text(encoding="utf-8"))
    if table.get("schema_version") != TABLE_SCHEMA_VERSION:
        raise RuntimeError(
            f"gpus.toml schema_version {table.get('schema_version')!r} is not {TABLE_SCHEMA_VERSION}"
        )
    return tuple(_spec(row) for row in table["gpu"])


@lru_cache(maxsize=1)
def _by_pci() -> Mapping[tuple[str, str], GpuSpec]:
    vendor_ids = {"nvidia": "10de", "amd": "1002"}
    return {(vendor_ids[s.vendor], d): s for s in all_specs() for d in s.pci_device_ids}


def _normal(name: str) -> str:
    """Lower case, "-"/"_" as spaces, single spaces, without the driver's vendor prefixes."""
    words = re.sub(r"[-_\s]+", " ", name.lower()).split()
    while words and words[0] in _NAME_PREFIXES:
        words.pop(0)
    return " ".join(words)


@lru_cache(maxsize=1)
def _by_name() -> Mapping[str, GpuSpec]:
    return {_normal(s.name): s for s in all_specs()}


def by_pci_id(vendor_id: str, device_id: str) -> GpuSpec | None:
    """The row for a PCI vendor/device id pair ("10de", "2330"), any case; None when not listed."""
    return _by_pci().get((vendor_id.lower(), device_id.lower()))


def by_name(name: str) -> GpuSpec | None:
    """The row whose name matches, ignoring case, spacing, "-"/"_" and "NVIDIA "/"Tesla "/"AMD " prefixes."""
    return _by_name().get(_normal(name))


def architecture_for_cc(cc: str) -> str | None:
    """NVIDIA architecture of a compute capability: "9.0" -> "Hopper", "8.9" -> "Ada Lovelace";
    None for a capability no row of nvidia.toml covers."""
    value = _cc_tuple(cc)
    if value is None:
        return None
    return next((name for low, high, name in cc_architectures() if low <= value <= high), None)


def architecture_for_gfx(gfx: str) -> str | None:
    """AMD architecture of a gfx target: "gfx90a" -> "CDNA2"; feature suffixes (":sramecc+") are ignored."""
    return _GFX_ARCHITECTURES.get(gfx.strip().lower().split(":")[0])
