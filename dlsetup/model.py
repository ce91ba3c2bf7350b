"""The host data model: what dlsetup knows about a machine.

One schema for every way a host is read (live, saved bundle, remote over Ansible). Every field that a
probe could not determine is ``None`` (JSON ``null``) and is shown as "unknown"; nothing is guessed.
Sizes are bytes, clocks MHz, power watts. The JSON schema in ``dlsetup/schema/host-profile.schema.json``
is generated from these classes (``python -m dlsetup.model``) and versioned by ``SCHEMA_VERSION``.

This module is pure: no I/O, standard library only, Python 3.9+ (it also runs on remote hosts).
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple

SCHEMA_VERSION = "1.0"
SCHEMA_ID = "https://dlsetup.invalid/schema/host-profile/" + SCHEMA_VERSION

#: Secure Boot states.
SECURE_BOOT_STATES = ("enabled", "disabled", "unknown")


@dataclass(frozen=True)
class OSInfo:
    """Operating system and kernel."""

    id: Optional[str] = None  #: os-release ID, e.g. "ubuntu", "debian"
    version_id: Optional[str] = None  #: os-release VERSION_ID, e.g. "24.04", "12"
    codename: Optional[str] = None  #: e.g. "noble", "bookworm"
    pretty_name: Optional[str] = None
    id_like: Tuple[str, ...] = ()
    kernel: Optional[str] = None  #: kernel release (uname -r)
    arch: Optional[str] = None  #: machine architecture as uname -m prints it: "x86_64", "aarch64"
    secure_boot: str = "unknown"  #: "enabled", "disabled" or "unknown"
    virtualization: Optional[str] = None  #: hypervisor vendor when the host is a VM, e.g. "KVM"
    python_version: Optional[str] = None  #: the system python3, "major.minor", e.g. "3.12"
    container_engines: Tuple[str, ...] = ()  #: installed engines: "docker", "podman", "containerd"


@dataclass(frozen=True)
class MachineIdentity:
    """What tells this machine from another of the same host name (cloud images are often all "vm" or
    "ubuntu"): /etc/machine-id, and the DMI product UUID where it is readable (root)."""

    machine_id: Optional[str] = None  #: /etc/machine-id, 32 lowercase hex digits
    product_uuid: Optional[str] = None  #: /sys/class/dmi/id/product_uuid, lowercase

    @property
    def short(self) -> Optional[str]:
        """A short id to show beside a host name: the first 8 digits of the machine id (or product UUID)."""
        full = self.machine_id or (self.product_uuid or "").replace("-", "")
        return full[:8] or None

    @property
    def key(self) -> Optional[str]:
        """The identity as one string, None when nothing is known."""
        return self.machine_id or self.product_uuid


@dataclass(frozen=True)
class CPUInfo:
    """Processors, summed over sockets."""

    model: Optional[str] = None
    vendor: Optional[str] = None  #: "GenuineIntel", "AuthenticAMD", ...
    sockets: Optional[int] = None
    physical_cores: Optional[int] = None
    logical_cpus: Optional[int] = None
    base_mhz: Optional[float] = None
    max_mhz: Optional[float] = None
    l2_cache_bytes: Optional[int] = None  #: total over all instances
    l3_cache_bytes: Optional[int] = None  #: total over all instances
    numa_nodes: Optional[int] = None
    avx2: Optional[bool] = None
    avx512f: Optional[bool] = None
    avx512_extensions: Tuple[str, ...] = ()  #: every avx512* flag, e.g. ("avx512_bf16", "avx512bw", ...)
    amx: Optional[bool] = None  #: Intel AMX tiles (amx_tile)
    hybrid: Optional[bool] = None  #: performance + efficiency cores (Intel hybrid, ARM big.LITTLE / DynamIQ)
    clusters: Optional[int] = None  #: ARM: core clusters of different core types (lscpu "Model name" blocks)


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: Optional[int] = None
    available_bytes: Optional[int] = None
    swap_total_bytes: Optional[int] = None
    dimm_count: Optional[int] = None  #: populated DIMM slots (dmidecode)
    dimm_speed_mts: Optional[int] = None  #: configured speed of the DIMMs, MT/s (dmidecode)
    populated_channels: Optional[int] = None  #: distinct memory channels with a DIMM (dmidecode)


@dataclass(frozen=True)
class BlockDevice:
    """A block device as lsblk and /dev/disk/by-id see it."""

    name: str  #: kernel name, e.g. "nvme0n1", "sda1", "md0"
    type: Optional[str] = None  #: "disk", "part", "raid1", "lvm", "rom", "loop", ...
    path: Optional[str] = None  #: /dev/NAME
    by_id: Optional[str] = None  #: the stable /dev/disk/by-id/... path, preferring wwn-/nvme-eui.
    size_bytes: Optional[int] = None
    rotational: Optional[bool] = None
    transport: Optional[str] = None  #: "nvme", "sata", "sas", "virtio", "usb", "mmc", ...
    media: str = "unknown"  #: "nvme", "ssd", "hdd", "virtual", "optical" or "unknown"
    model: Optional[str] = None
    serial: Optional[str] = None
    parent: Optional[str] = None  #: parent kernel name for partitions and holders
    fstype: Optional[str] = None  #: filesystem or signature: "ext4", "xfs", "LVM2_member", "swap", ...
    uuid: Optional[str] = None
    partition_table: Optional[str] = None  #: "gpt", "dos" when the device carries a table
    mountpoints: Tuple[str, ...] = ()
    md_member_of: Optional[str] = None  #: md array this device belongs to, e.g. "md0"


@dataclass(frozen=True)
class MdMember:
    device: str  #: kernel name, e.g. "sda1"
    role: Optional[int] = None  #: slot number in the array
    state: str = "active"  #: "active", "faulty", "spare", "replacement", "write-mostly"


@dataclass(frozen=True)
class MdArray:
    """A Linux md array from /proc/mdstat."""

    name: str  #: e.g. "md0"
    state: str  #: "active", "inactive", "active (read-only)", "active (auto-read-only)"
    level: Optional[str] = None  #: "raid0", "raid1", "raid5", "raid10", ... (None when inactive)
    members: Tuple[MdMember, ...] = ()
    size_bytes: Optional[int] = None
    devices_total: Optional[int] = None  #: [n/m]: the n (raid disks)
    devices_active: Optional[int] = None  #: [n/m]: the m (working)
    degraded: Optional[bool] = None
    sync_action: Optional[str] = None  #: "recovery", "resync", "reshape", "check" when one runs
    sync_progress_pct: Optional[float] = None
    bitmap: Optional[bool] = None
    metadata: Optional[str] = None  #: e.g. "external:imsm", "1.2"
    uuid: Optional[str] = None  #: md array UUID, 32 lower-case hex digits (/dev/disk/by-id/md-uuid-*)


@dataclass(frozen=True)
class Mount:
    mountpoint: str
    device: str
    fstype: Optional[str] = None
    size_bytes: Optional[int] = None
    free_bytes: Optional[int] = None


@dataclass(frozen=True)
class RecordedArray:
    """An md array dlsetup created, from its record on the host (/etc/dlsetup/storage.json)."""

    uuid: str  #: md array UUID, 32 lower-case hex digits
    name: Optional[str] = None
    level: Optional[str] = None
    members: Tuple[str, ...] = ()  #: /dev/disk/by-id paths, as the layout named them
    mountpoint: Optional[str] = None
    created: Optional[str] = None  #: ISO 8601 UTC


@dataclass(frozen=True)
class StorageInfo:
    devices: Tuple[BlockDevice, ...] = ()
    arrays: Tuple[MdArray, ...] = ()
    mounts: Tuple[Mount, ...] = ()  #: local, real filesystems only (no tmpfs, proc, overlay, squashfs)
    #: the arrays dlsetup recorded creating: an array is dlsetup's iff its md UUID is here (never by md name)
    recorded_arrays: Tuple[RecordedArray, ...] = ()


#: AMD compute partition modes (XCDs per logical device: all, half, third, quarter, one) and memory
#: partition modes (NUMA nodes per socket).
COMPUTE_PARTITIONS = ("SPX", "DPX", "TPX", "QPX", "CPX")
MEMORY_PARTITIONS = ("NPS1", "NPS2", "NPS4", "NPS8")


@dataclass(frozen=True)
class GPUPartition:
    """One logical device a partitioned GPU presents (an AMD compute partition): what a framework counts."""

    index: Optional[int] = None  #: the KFD node / ROCr agent order among all GPU devices
    pci_bus_id: Optional[str] = None  #: as the driver numbers it: partition N of 0000:0a:00.0 is 0000:0a:00.N
    compute_units: Optional[int] = None
    render_minor: Optional[int] = None  #: /dev/dri/renderD<minor>
    memory_bytes: Optional[int] = None  #: the partition's share of the card's memory


@dataclass(frozen=True)
class GPU:
    """One GPU. Found from PCI even without a driver; enriched by NVML, nvidia-smi, KFD, rocm-smi."""

    vendor: str  #: "nvidia", "amd" or "intel"
    pci_bus_id: str  #: normalised "dddd:bb:dd.f", e.g. "0000:00:06.0"
    index: Optional[int] = None
    pci_vendor_id: Optional[str] = None  #: 4 lowercase hex digits, "10de"
    pci_device_id: Optional[str] = None  #: 4 lowercase hex digits, "2330"
    pci_subsystem_id: Optional[str] = None  #: "vvvv:dddd"
    pci_class: Optional[str] = None  #: "0300" VGA, "0302" 3D controller, "0380" display
    kernel_driver: Optional[str] = None  #: driver bound to the device: "nvidia", "nouveau", "amdgpu", ...
    name: Optional[str] = None
    architecture: Optional[str] = None  #: "Hopper", "Ampere", "CDNA3", "RDNA3", ...
    memory_bytes: Optional[int] = None
    compute_capability: Optional[str] = None  #: NVIDIA, e.g. "9.0"
    gfx_target: Optional[str] = None  #: AMD, e.g. "gfx942"
    uuid: Optional[str] = None
    serial: Optional[str] = None
    vbios: Optional[str] = None
    integrated: Optional[bool] = None  #: an iGPU / APU sharing system memory
    pcie_gen_max: Optional[int] = None
    pcie_width_max: Optional[int] = None
    pcie_gen_current: Optional[int] = None
    pcie_width_current: Optional[int] = None
    power_limit_w: Optional[float] = None
    power_default_w: Optional[float] = None
    ecc_enabled: Optional[bool] = None
    mig_enabled: Optional[bool] = None
    mig_devices: Optional[int] = None
    persistence_mode: Optional[bool] = None
    cuda_cores: Optional[int] = None
    memory_bus_width_bits: Optional[int] = None
    numa_node: Optional[int] = None
    sources: Tuple[str, ...] = ()  #: where the facts came from: "pci", "table", "nvml", "nvidia-smi", ...
    compute_partition: Optional[str] = None  #: AMD compute partition mode, one of COMPUTE_PARTITIONS
    memory_partition: Optional[str] = None  #: AMD memory partition mode, one of MEMORY_PARTITIONS
    partitions: Tuple[GPUPartition, ...] = ()  #: the logical devices of a partitioned GPU (none when whole)


@dataclass(frozen=True)
class GPULink:
    """One entry of the GPU interconnect matrix (nvidia-smi topo -m)."""

    a: int
    b: int
    link: str  #: "NV18", "PIX", "PXB", "PHB", "NODE", "SYS", ...


@dataclass(frozen=True)
class NvidiaState:
    kernel_module_loaded: Optional[bool] = None
    kernel_module_version: Optional[str] = None  #: /sys/module/nvidia/version or /proc/driver/nvidia/version
    kernel_module_flavor: Optional[str] = None  #: "open" or "proprietary"
    library_version: Optional[str] = None  #: user-space driver (libnvidia-ml) version
    nvml_version: Optional[str] = None
    cuda_driver_version: Optional[str] = None  #: highest CUDA the driver supports, "13.0"
    nouveau_loaded: Optional[bool] = None
    nvcc_version: Optional[str] = None  #: CUDA toolkit on PATH, when any
    reboot_required: bool = False  #: the loaded kernel module and the library disagree
    nvml_error: Optional[str] = None  #: why NVML could not be used, when it could not


@dataclass(frozen=True)
class AmdState:
    amdgpu_loaded: Optional[bool] = None
    kfd_present: Optional[bool] = None
    rocm_version: Optional[str] = None


@dataclass(frozen=True)
class KernelImage:
    """One installed kernel and the GPU kernel modules built for it."""

    version: str  #: kernel release, as uname -r prints it: "6.8.0-45-generic"
    nvidia_module: Optional[str] = None  #: where nvidia.ko comes from: "dkms", "precompiled", None: absent
    amdgpu_module: Optional[str] = None  #: where amdgpu.ko comes from: "dkms", "precompiled", "in-tree", None
    headers: Optional[bool] = None  #: kernel headers installed (/lib/modules/<v>/build or linux-headers-<v>)
    #: dkms status for this kernel, "module/version: state", e.g. "nvidia/580.95.05: installed"
    dkms: Tuple[str, ...] = ()
    dkms_failure: Optional[str] = None  #: the first error of the last failed DKMS build for this kernel


@dataclass(frozen=True)
class KernelState:
    """Installed kernels, the one that boots next, and whether each has a GPU kernel module."""

    running: Optional[str] = None  #: uname -r
    next_boot: Optional[str] = None  #: the kernel the boot loader starts next, when it can be told
    next_boot_source: Optional[str] = None  #: how that was decided: "grubenv", "grub.cfg", "/boot/vmlinuz", "newest"
    kernels: Tuple[KernelImage, ...] = ()  #: every installed kernel, oldest first; () when not read

    def image(self, version: Optional[str]) -> Optional[KernelImage]:
        return next((k for k in self.kernels if k.version == version), None)


@dataclass(frozen=True)
class HostProfile:
    """Everything ``dlsetup probe`` knows about one host."""

    schema_version: str = SCHEMA_VERSION
    hostname: Optional[str] = None
    source: str = "live"  #: "live", "bundle:<dir>" or "remote:<inventory name>"
    machine: MachineIdentity = field(default_factory=MachineIdentity)
    probed_at: Optional[str] = None  #: when a live probe ran, ISO 8601 UTC; None for a bundle
    os: OSInfo = field(default_factory=OSInfo)
    cpu: CPUInfo = field(default_factory=CPUInfo)
    memory: MemoryInfo = field(default_factory=MemoryInfo)
    storage: StorageInfo = field(default_factory=StorageInfo)
    gpus: Tuple[GPU, ...] = ()
    gpu_links: Tuple[GPULink, ...] = ()
    nvidia: NvidiaState = field(default_factory=NvidiaState)
    amd: AmdState = field(default_factory=AmdState)
    kernel: KernelState = field(default_factory=KernelState)  #: installed kernels and their GPU modules
    notes: Tuple[str, ...] = ()  #: what the probe could not read, and why

    # -- conveniences ---------------------------------------------------------------------------
    @property
    def nvidia_gpus(self) -> Tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.vendor == "nvidia")

    @property
    def amd_gpus(self) -> Tuple[GPU, ...]:
        return tuple(g for g in self.gpus if g.vendor == "amd")

    @property
    def visible_gpu_count(self) -> int:
        """Devices a framework enumerates: each partition of a partitioned GPU counts as one."""
        return sum(len(g.partitions) or 1 for g in self.gpus if not g.integrated)

    @property
    def total_vram_bytes(self) -> Optional[int]:
        sizes = [g.memory_bytes for g in self.gpus if not g.integrated]
        if not sizes or any(s is None for s in sizes):
            return None
        return sum(sizes)  # type: ignore[arg-type]

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HostProfile":
        return from_dict(cls, data)


# -- (de)serialisation --------------------------------------------------------------------------


def to_dict(obj: Any) -> Any:
    """Dataclasses to plain JSON-ready data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value)
    if origin is tuple:
        return tuple(_convert(args[0], v) for v in value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def from_dict(cls: type, data: dict) -> Any:
    """Plain data (e.g. JSON from a remote probe) back to the dataclass; unknown keys are ignored."""
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


# -- JSON schema ----------------------------------------------------------------------------------


def _schema_for(tp: Any, defs: dict) -> dict:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return {"anyOf": [_schema_for(inner[0], defs), {"type": "null"}]}
    if origin is tuple:
        return {"type": "array", "items": _schema_for(args[0], defs)}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # placeholder against recursion
            hints = _hints(tp)
            props = {}
            required = []
            for f in dataclasses.fields(tp):
                props[f.name] = _schema_for(hints[f.name], defs)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    required.append(f.name)
            doc = (tp.__doc__ or "").strip().splitlines()
            defs[name] = {
                "type": "object",
                "description": doc[0] if doc else name,
                "properties": props,
                "required": sorted(set(required) | set(props)),
                "additionalProperties": False,
            }
        return {"$ref": "#/$defs/" + name}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"no schema for {tp!r}")


def json_schema() -> dict:
    """The JSON schema of :class:`HostProfile`, generated from the dataclasses."""
    defs: dict = {}
    root = _schema_for(HostProfile, defs)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "dlsetup host profile",
        "description": "What dlsetup probe reports about one host (live, bundle or remote). "
        "null means unknown.",
        **root,
        "$defs": defs,
    }
    defs["OSInfo"]["properties"]["secure_boot"] = {"enum": list(SECURE_BOOT_STATES)}
    defs["HostProfile"]["properties"]["schema_version"] = {"const": SCHEMA_VERSION}
    # added within schema 1.0: documents written before it (without the key) stay valid
    for added in ("kernel", "machine", "probed_at"):
        defs["HostProfile"]["required"].remove(added)
    return schema


if __name__ == "__main__":  # pragma: no cover - regenerates the committed schema
    import json

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
