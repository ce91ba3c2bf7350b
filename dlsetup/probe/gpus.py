"""Reader for GPUs and the NVIDIA / AMD driver state.

GPUs are found on the PCI bus (sysfs, display class 03xx, vendor NVIDIA/AMD/Intel) with or without a
driver, and named from the sourced GPU table (or pci.ids). Driver-side sources then add what only a
driver knows, most trusted first: NVML, ``nvidia-smi -q -x``; the AMD KFD topology, sysfs and rocm-smi.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
from typing import Any, Dict, List, Optional, Tuple

from dlsetup.model import GPU, AmdState, GPULink, GPUPartition, NvidiaState
from dlsetup.parsers import amd as amd_parsers
from dlsetup.parsers import nvidia as nv
from dlsetup.parsers import pci as pci_parsers
from dlsetup.parsers import system as sysp
from dlsetup.probe.host import Host
from dlsetup.probe.util import fields_of, int_or_none, merge_layers

PCI_DEVICES = "/sys/bus/pci/devices"
GPU_VENDORS = {"10de": "nvidia", "1002": "amd", "8086": "intel"}
#: PCIe transfer rate (GT/s) -> generation
LINK_GEN = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids")
NVML_LIBRARY_LINKS = (
    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1",
    "/usr/lib/aarch64-linux-gnu/libnvidia-ml.so.1",
    "/usr/lib64/libnvidia-ml.so.1",
    "/usr/local/nvidia/lib64/libnvidia-ml.so.1",
)
KFD_NODES = "/sys/class/kfd/kfd/topology/nodes"

COMMANDS = {
    "nvidia-smi-q-x": ["nvidia-smi", "-q", "-x"],
    "nvidia-smi-q": ["nvidia-smi", "-q"],
    "nvidia-smi-topo-m": ["nvidia-smi", "topo", "-m"],
    "nvcc-version": ["nvcc", "--version"],
    "amd-smi-static-json": ["amd-smi", "static", "--json"],
    "rocm-smi-json": ["rocm-smi", "--showallinfo", "--json"],
}


def scan_pci(host: Host) -> List[dict]:
    """Every display-class device of a GPU vendor on the PCI bus, driver or not."""
    found = []
    for addr in host.listdir(PCI_DEVICES):
        base = posixpath.join(PCI_DEVICES, addr)
        pci_class = int_or_none(host.read(base + "/class"), 16)
        if pci_class is not None and pci_class >> 16 != 0x03:
            continue  # not a display controller
        vendor_id, device_id = _hex4(host.read(base + "/vendor")), _hex4(host.read(base + "/device"))
        if pci_class is None or vendor_id is None:  # uevent carries the same ids when a file is missing
            uevent = dict(line.partition("=")[::2] for line in (host.read(base + "/uevent") or "").split())
            pci_class = pci_class if pci_class is not None else int_or_none(uevent.get("PCI_CLASS"), 16)
            ids = uevent.get("PCI_ID", "").split(":")
            if vendor_id is None and len(ids) == 2:
                vendor_id, device_id = _hex4(ids[0]), _hex4(ids[1])
        if pci_class is None or pci_class >> 16 != 0x03 or vendor_id not in GPU_VENDORS:
            continue
        driver = host.readlink(base + "/driver")
        numa = int_or_none(host.read(base + "/numa_node"))
        sub_vendor = _hex4(host.read(base + "/subsystem_vendor"))
        sub_device = _hex4(host.read(base + "/subsystem_device"))
        gpu = {
            "vendor": GPU_VENDORS[vendor_id],
            "pci_bus_id": addr.lower(),
            "pci_vendor_id": vendor_id,
            "pci_device_id": device_id,
            "pci_subsystem_id": f"{sub_vendor}:{sub_device}" if sub_vendor and sub_device else None,
            "pci_class": f"{pci_class >> 8:04x}",
            "kernel_driver": posixpath.basename(driver) if driver else None,
            "numa_node": numa if numa is not None and numa >= 0 else None,
            "pcie_gen_max": _link_gen(host.read(base + "/max_link_speed")),
            "pcie_gen_current": _link_gen(host.read(base + "/current_link_speed")),
            "pcie_width_max": _link_width(host.read(base + "/max_link_width")),
            "pcie_width_current": _link_width(host.read(base + "/current_link_width")),
            "sources": ("pci",),
        }
        if vendor_id == "8086" and addr.lower().endswith(":00:02.0"):
            gpu["integrated"] = True  # Intel's integrated graphics always sits at 00:02.0
        if vendor_id == "1002":
            vram = int_or_none(host.read(base + "/mem_info_vram_total"))
            gpu["memory_bytes"] = vram or None
        found.append(gpu)
    return found


def table_layer(gpu: dict, pci_ids: "Optional[PciIds]") -> dict:
    """Facts from the sourced GPU table for this PCI id, else the name from pci.ids."""
    from dlsetup import gpudb  # the table loads only when a GPU was found

    vendor_id, device_id = gpu.get("pci_vendor_id"), gpu.get("pci_device_id")
    spec = gpudb.by_pci_id(vendor_id, device_id) if vendor_id and device_id else None
    if spec is None and gpu.get("name"):
        spec = gpudb.by_name(gpu["name"])
    if spec is not None:
        return {
            "name": spec.name,
            "architecture": spec.architecture,
            "compute_capability": spec.compute_capability,
            "gfx_target": spec.gfx_target,
            "memory_bytes": spec.memory_bytes,
            "integrated": spec.integrated,
            "sources": ("table",),
        }
    name = pci_ids.device_name(vendor_id, device_id) if pci_ids and vendor_id and device_id else None
    layer: Dict[str, Any] = {"name": name, "sources": ("pci.ids",)} if name else {}
    cc = gpu.get("compute_capability")
    if cc:
        layer["architecture"] = gpudb.architecture_for_cc(cc)
    elif gpu.get("gfx_target"):
        layer["architecture"] = gpudb.architecture_for_gfx(gpu["gfx_target"])
    return layer


class PciIds:
    """pci.ids, read once and only if a GPU is missing from the table."""

    def __init__(self, host: Host):
        self.host = host
        self._text: Optional[str] = None

    def device_name(self, vendor_id: str, device_id: str) -> Optional[str]:
        if self._text is None:
            self._text = next((t for t in map(self.host.read, PCI_IDS_PATHS) if t), "")
        vendor, device = pci_parsers.lookup_pci_ids(self._text, vendor_id, device_id)
        return device


def nvidia_layers(host: Host, pci_gpus: List[dict]) -> Tuple[List[nv.SmiReport], Optional[dict]]:
    """Driver-side NVIDIA reports, most trusted first, and the NVML snapshot (for errors)."""
    reports: List[nv.SmiReport] = []
    has_nvidia = any(g["vendor"] == "nvidia" for g in pci_gpus)
    module_loaded = host.exists("/sys/module/nvidia") or host.exists("/proc/driver/nvidia/version")
    snapshot = host.nvml() if (module_loaded and has_nvidia) or not host.is_live else None
    if snapshot and "devices" in snapshot:
        reports.append(nv.report_from_nvml_snapshot(snapshot))
    if not host.is_live or (has_nvidia and module_loaded and not reports):
        xml = host.run("nvidia-smi-q-x", COMMANDS["nvidia-smi-q-x"])
        if xml:
            try:
                reports.append(nv.parse_smi_xml(xml))
            except nv.SmiParseError as err:
                host.note(f"nvidia-smi -q -x: {err}")
        if not any(r.gpus for r in reports):
            # the text report: what support cases and bundles often hold alone (nvidia-smi -q)
            text = host.run("nvidia-smi-q", COMMANDS["nvidia-smi-q"])
            report = nv.parse_smi_q_text(text) if text else None
            if report and (report.gpus or report.driver_version):
                reports.append(report)
    return reports, snapshot


def read_nvidia_state(host: Host, reports: List[nv.SmiReport], snapshot: Optional[dict]) -> NvidiaState:
    modules = sysp.parse_proc_modules(host.read("/proc/modules") or "") if host.exists("/proc/modules") else None
    proc_version, flavor = nv.parse_proc_driver_version(host.read("/proc/driver/nvidia/version") or "")
    sys_version = (host.read("/sys/module/nvidia/version") or "").strip() or None
    kernel_version = sys_version or proc_version
    if kernel_version or host.exists("/sys/module/nvidia"):
        loaded: Optional[bool] = True
    elif modules is not None:
        loaded = "nvidia" in modules
    else:
        loaded = False if host.is_live else None

    snapshot = snapshot or {}
    nvml_version = snapshot.get("nvml")
    library = _library_from_nvml_version(nvml_version)
    if library is None and (snapshot.get("error") or not reports):
        library = _library_from_soname(host)
    if library is None:
        library = next((r.driver_version for r in reports if r.driver_version), None)
    cuda = next((r.cuda_version for r in reports if r.cuda_version), None)
    mismatch = snapshot.get("error_kind") == "lib_rm_version_mismatch" or bool(
        kernel_version and library and kernel_version != library
    )
    nouveau = None
    if modules is not None or host.is_live:
        nouveau = host.exists("/sys/module/nouveau") or bool(modules and "nouveau" in modules)
    return NvidiaState(
        kernel_module_loaded=loaded,
        kernel_module_version=kernel_version,
        kernel_module_flavor=flavor,
        library_version=library,
        nvml_version=nvml_version,
        cuda_driver_version=cuda,
        nouveau_loaded=nouveau,
        nvcc_version=_nvcc_version(host),
        reboot_required=mismatch,
        nvml_error=snapshot.get("error"),
    )


def _library_from_nvml_version(version: Optional[str]) -> Optional[str]:
    # NVML reports "13.580.159.04": the CUDA major, then the driver version of the library
    if not version:
        return None
    parts = version.split(".")
    return ".".join(parts[1:]) if len(parts) >= 3 else None


def _library_from_soname(host: Host) -> Optional[str]:
    for link in NVML_LIBRARY_LINKS:
        target = host.readlink(link)
        match = re.search(r"libnvidia-ml\.so\.(\d+\.\d+(?:\.\d+)?)$", target or "")
        if match:
            return match.group(1)
    return None


def _nvcc_version(host: Host) -> Optional[str]:
    if host.is_live and not (host.exists("/usr/local/cuda/bin/nvcc") or shutil.which("nvcc")):
        return None
    text = host.run("nvcc-version", COMMANDS["nvcc-version"]) or ""
    match = re.search(r"release \S+, V(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def amd_layers(host: Host, pci_gpus: List[dict]) -> List[dict]:
    """Per-GPU AMD facts: the KFD topology (partitions grouped back into their card), then amd-smi, the
    tool of ROCm 6/7, or the deprecated rocm-smi when amd-smi gives nothing (in bundles, or when KFD
    says nothing)."""
    nodes = []
    for node in host.listdir(KFD_NODES):
        number = int_or_none(node)
        if number is not None:
            props = amd_parsers.parse_kfd_node(host.read(f"{KFD_NODES}/{node}/properties") or "")
            banks = f"{KFD_NODES}/{node}/mem_banks"
            props[amd_parsers.KFD_BANK_BYTES] = amd_parsers.kfd_bank_bytes(
                host.read(f"{banks}/{bank}/properties") or "" for bank in host.listdir(banks)
            )
            nodes.append((number, props))
    layers = [dict(gpu, sources=("kfd",)) for gpu in amd_parsers.kfd_physical_gpus(nodes)]
    has_amd = any(g["vendor"] == "amd" for g in pci_gpus)
    if not host.is_live or has_amd:
        smi: List[dict] = []
        text = host.run("amd-smi-static-json", COMMANDS["amd-smi-static-json"])
        if text:
            smi = list(amd_parsers.parse_amd_smi_json(text).gpus)
        if not smi and (not host.is_live or not layers):
            text = host.run("rocm-smi-json", COMMANDS["rocm-smi-json"])
            if text:
                smi = list(amd_parsers.parse_rocm_smi_json(text).gpus)
        # a partition's invented bus id (0000:0a:00.1 of card 0000:0a:00.0) is no GPU of its own
        cards = {layer.get("pci_bus_id") for layer in layers}
        invented = {p.get("pci_bus_id") for layer in layers for p in layer.get("partitions", ())} - cards
        smi = [g for g in smi if g.get("pci_bus_id") not in invented or g.get("pci_bus_id") is None]
        if layers and len(smi) > len(layers):
            # a tool that numbers partitions as GPUs cannot be matched to the cards: keep only card-wide facts
            smi = [{k: v for k, v in g.items() if k in _CARD_WIDE} for g in smi if g.get("pci_bus_id")]
        layers.extend(smi)
    return layers


#: Facts of an amd-smi / rocm-smi entry that hold for the whole card even when the tool lists partitions.
_CARD_WIDE = {"vendor", "pci_bus_id", "pci_vendor_id", "pci_device_id", "name", "vbios", "serial",
              "compute_partition", "memory_partition", "sources"}


def read_amd_state(host: Host) -> AmdState:
    loaded: Optional[bool] = None
    if host.exists("/sys/module/amdgpu"):
        loaded = True
    elif host.exists("/proc/modules"):
        loaded = "amdgpu" in sysp.parse_proc_modules(host.read("/proc/modules") or "")
    elif host.is_live:
        loaded = False
    version = (host.read("/opt/rocm/.info/version") or "").strip() or None
    kfd = host.exists("/sys/class/kfd/kfd") if (host.is_live or host.exists("/sys/class")) else None
    return AmdState(amdgpu_loaded=loaded, kfd_present=kfd, rocm_version=version.split("-")[0] if version else None)


def read_links(host: Host, gpus: Tuple[GPU, ...]) -> Tuple[GPULink, ...]:
    if host.is_live and len([g for g in gpus if g.vendor == "nvidia"]) < 2:
        return ()
    text = host.run("nvidia-smi-topo-m", COMMANDS["nvidia-smi-topo-m"])
    return nv.parse_topo_matrix(text) if text else ()


def read_gpus(host: Host, enrich: bool = True) -> Tuple[Tuple[GPU, ...], Tuple[GPULink, ...], NvidiaState, AmdState]:
    """All GPUs, merged per PCI address. ``enrich=False`` skips the GPU table and pci.ids (a remote host
    reads; the controller enriches with :func:`enrich_gpus`)."""
    pci_gpus = scan_pci(host)
    reports, snapshot = nvidia_layers(host, pci_gpus)
    amd = amd_layers(host, pci_gpus)

    by_bus: Dict[str, List[dict]] = {}
    order: List[str] = []

    unplaced: List[dict] = []

    def add(layer: dict) -> None:
        bus = layer.get("pci_bus_id")
        if not bus:
            unplaced.append(layer)  # placed once every GPU with a bus id is known
            return
        if bus not in by_bus:
            by_bus[bus] = []
            order.append(bus)
        by_bus[bus].append(layer)

    for report in reports:  # NVML, then nvidia-smi
        for layer in report.gpus:
            add(layer)
    for layer in amd:
        add(layer)
    for layer in pci_gpus:  # sysfs is the least detailed but always there: it goes last
        add(layer)
    for layer in unplaced:  # a driver layer without a bus id ranks just above the PCI scan
        bus = _match_by_device(layer, by_bus)
        if bus:
            layers = by_bus[bus]
            at = next((i for i, x in enumerate(layers) if x.get("sources") == ("pci",)), len(layers))
            layers.insert(at, layer)

    pci_ids = PciIds(host) if enrich else None
    gpus = []
    for bus in sorted(order):
        merged = merge_layers(by_bus[bus])
        if pci_ids is not None:
            merged = merge_layers([merged, table_layer(merged, pci_ids)])
        merged.setdefault("vendor", "unknown")
        merged["pci_bus_id"] = bus
        gpus.append(_model_gpu(merged))
    gpus = _number(gpus)
    nvidia_state = read_nvidia_state(host, reports, snapshot)
    return tuple(gpus), read_links(host, tuple(gpus)), nvidia_state, read_amd_state(host)


def enrich_gpus(gpus: Tuple[GPU, ...], host: Optional[Host] = None) -> Tuple[GPU, ...]:
    """Fill what the GPU table (or pci.ids on ``host``) knows into GPUs read without it."""
    pci_ids = PciIds(host) if host is not None else None
    out = []
    for gpu in gpus:
        current = dataclasses.asdict(gpu)
        layer = table_layer(current, pci_ids)
        merged = merge_layers([current, layer])
        out.append(_model_gpu(merged))
    return tuple(out)


def _model_gpu(merged: dict) -> GPU:
    """The model GPU of merged facts (partitions given as dicts become :class:`GPUPartition`)."""
    facts = fields_of(GPU, merged)
    facts["partitions"] = tuple(
        p if isinstance(p, GPUPartition) else GPUPartition(**fields_of(GPUPartition, p))
        for p in facts.get("partitions") or () if isinstance(p, (dict, GPUPartition))
    )
    return GPU(**facts)


def _match_by_device(layer: dict, by_bus: Dict[str, List[dict]]) -> Optional[str]:
    """A layer without a bus id (old rocm-smi, amd-smi without ``bus.bdf``) belongs to the only GPU with
    its device id, or, among several, to the one at its device index in PCI order (the order amd-smi and
    rocm-smi number them)."""
    device = layer.get("pci_device_id")
    hits = sorted(b for b, ls in by_bus.items() if device and any(x.get("pci_device_id") == device for x in ls))
    if len(hits) == 1:
        return hits[0]
    index = layer.get("index")
    same = [b for b, ls in by_bus.items() if any(x.get("vendor") == layer.get("vendor") for x in ls)]
    if isinstance(index, int) and hits and len(same) == len(hits) and 0 <= index < len(hits):
        return hits[index]  # every GPU of this vendor is this model: the index is the PCI order
    return None


def _number(gpus: List[GPU]) -> List[GPU]:
    """Give each GPU its per-vendor index (the driver's when known, else PCI order)."""
    out: List[GPU] = []
    counters: Dict[str, int] = {}
    for gpu in gpus:
        idx = counters.get(gpu.vendor, 0)
        counters[gpu.vendor] = idx + 1
        out.append(gpu if gpu.index is not None else dataclasses.replace(gpu, index=idx))
    return out


def _hex4(text: Optional[str]) -> Optional[str]:
    value = int_or_none(text, 16)
    return f"{value:04x}" if value is not None else None


def _link_gen(text: Optional[str]) -> Optional[int]:
    match = re.match(r"\s*([\d.]+)\s*GT/s", text or "")
    return LINK_GEN.get(float(match.group(1))) if match else None


def _link_width(text: Optional[str]) -> Optional[int]:
    width = int_or_none(text)
    return width if width and width > 0 else None
