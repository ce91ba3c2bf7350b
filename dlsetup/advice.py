"""``dlsetup check``: the usual deep-learning workstation advice, as rules over a HostProfile.

Pure: no I/O. Each rule yields findings with an id, a severity (pass/info/warn/fail), a message with
the measured figure, and a hint saying what to do. Thresholds are named below with where they come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple

from dlsetup.model import GPU, HostProfile

GIB = 1024**3
SEVERITIES = ("pass", "info", "warn", "fail")

# Workstation advice (Tim Dettmers, "A Full Hardware Guide to Deep Learning"; Lambda and Puget Systems
# workstation guides): RAM at least the GPU memory and ideally twice it, 64 GB for a serious box; a few
# CPU cores per GPU for data loading; NVMe/SSD for active data; PSU = GPUs + CPU + base with 20-30 % margin.
MIN_RAM_BYTES = 64 * GIB
RAM_PER_VRAM = 2.0
MIN_CORES_PER_GPU = 4
MIN_VRAM_BYTES = 8 * GIB
GOOD_VRAM_BYTES = 16 * GIB
FREE_SPACE_WARN = 50 * GIB
FREE_SPACE_FAIL = 10 * GIB
PSU_BASE_W = 150.0  # board, memory, disks, fans
PSU_CPU_W_PER_SOCKET = 150.0  # assumed when the CPU's TDP cannot be read
PSU_HEADROOM = (1.2, 1.3)
# NVIDIA: CUDA 13 needs compute capability 7.5 (Turing) or newer; 12.x still serves 5.0 to 7.0.
CUDA_CURRENT_MIN_CC = (7, 5)
CUDA_ANY_MIN_CC = (5, 0)
TENSOR_CORE_MIN_CC = (7, 0)
PSU_SINGLE_MAX_W = 1600  # about the most one PSU on a household circuit delivers


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str  #: "pass", "info", "warn" or "fail"
    message: str
    hint: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "severity": self.severity, "message": self.message, "hint": self.hint}


Rule = Callable[[HostProfile], Iterator[Finding]]
RULES: List[Rule] = []


def rule(fn: Rule) -> Rule:
    RULES.append(fn)
    return fn


def run_checks(profile: HostProfile, today: Optional[str] = None) -> Tuple[Finding, ...]:
    """Every rule over ``profile``, in a stable order; with ``today`` ("YYYY-MM-DD"), also how old
    dlsetup's own compatibility data is (:func:`data_age`)."""
    findings = tuple(f for r in RULES for f in r(profile))
    if today:
        from dlsetup.plan.compat import load

        findings += tuple(data_age(today, load().oldest_as_of))
    return findings


#: dlsetup's shipped compatibility data older than this is worth a warning (NVIDIA, PyTorch and AMD
#: each ship about one release a quarter)
DATA_MAX_AGE_DAYS = 90


def data_age(today: str, as_of: Optional[str]) -> Iterator[Finding]:
    """Whether dlsetup's tables (dated ``as_of``) are older than :data:`DATA_MAX_AGE_DAYS` on ``today``."""
    from datetime import date

    hint = ("Update dlsetup (pip install -U dlsetup); until then `dlsetup plan` asks the package indexes "
            "for newer releases unless --offline, and plans them as unverified.")
    if not as_of:
        yield Finding("data.fresh", "info", "dlsetup's compatibility data carries no date", hint)
        return
    age = (date.fromisoformat(today) - date.fromisoformat(as_of)).days
    if age > DATA_MAX_AGE_DAYS:
        yield Finding("data.fresh", "warn", f"dlsetup's compatibility data is {age} days old (as of {as_of}); "
                      f"newer drivers, CUDA and framework releases are likely", hint)
    else:
        yield Finding("data.fresh", "pass", f"dlsetup's compatibility data is {max(age, 0)} days old (as of {as_of})")


def worst(findings: Tuple[Finding, ...]) -> str:
    return max((f.severity for f in findings), key=SEVERITIES.index, default="pass")


def _gib(num: Optional[int]) -> str:
    return f"{num / GIB:.0f} GiB" if num is not None else "unknown"


def _cc(gpu: GPU) -> Optional[Tuple[int, int]]:
    try:
        major, minor = (gpu.compute_capability or "").split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def _compute_gpus(profile: HostProfile) -> Tuple[GPU, ...]:
    """The GPUs that would train: discrete NVIDIA and AMD cards."""
    return tuple(g for g in profile.gpus if g.vendor in ("nvidia", "amd") and not g.integrated)


def _label(gpu: GPU) -> str:
    return f"GPU {gpu.index if gpu.index is not None else '?'} ({gpu.name or gpu.pci_device_id or gpu.pci_bus_id})"


# -- GPUs ---------------------------------------------------------------------------------------


@rule
def gpu_present(p: HostProfile) -> Iterator[Finding]:
    gpus = _compute_gpus(p)
    if gpus:
        yield Finding("gpu.present", "pass", f"{len(gpus)} GPU(s) for compute: " + ", ".join(_label(g) for g in gpus))
    elif p.gpus:
        yield Finding("gpu.present", "warn", "only integrated graphics found", "Training will run on the CPU.")
    else:
        yield Finding("gpu.present", "warn", "no GPU found", "dlsetup will plan a CPU-only stack.")
    for g in p.gpus:
        if g.integrated and gpus:
            yield Finding(
                "gpu.integrated", "info", f"{_label(g)} is integrated graphics and is left out of compute",
                "ROCm can misbehave with an iGPU visible; hide it with HIP_VISIBLE_DEVICES if needed."
                if g.vendor == "amd" else "",
            )


@rule
def gpu_supported(p: HostProfile) -> Iterator[Finding]:
    for g in _compute_gpus(p):
        if g.vendor == "nvidia":
            cc = _cc(g)
            if cc is None:
                yield Finding("gpu.supported", "info", f"{_label(g)}: compute capability unknown",
                              "Install the driver, or add the card to the GPU table.")
            elif cc < CUDA_ANY_MIN_CC:
                yield Finding("gpu.supported", "fail", f"{_label(g)}: compute capability {g.compute_capability} "
                              "is too old for any current CUDA", "Use a Maxwell or newer card.")
            elif cc < CUDA_CURRENT_MIN_CC:
                yield Finding("gpu.supported", "warn", f"{_label(g)}: compute capability {g.compute_capability} "
                              "is not supported by CUDA 13", "It stays on CUDA 12.x and the 580 driver branch.")
            else:
                yield Finding("gpu.supported", "pass", f"{_label(g)}: compute capability {g.compute_capability}")
        else:
            supported = _rocm_gfx_targets()
            if not g.gfx_target:
                yield Finding("gpu.supported", "info", f"{_label(g)}: gfx target unknown", "Load amdgpu to read it.")
            elif g.gfx_target not in supported:
                yield Finding("gpu.supported", "warn", f"{_label(g)}: {g.gfx_target} is not in ROCm's supported list",
                              "ROCm may still work with HSA_OVERRIDE_GFX_VERSION, unsupported.")
            else:
                yield Finding("gpu.supported", "pass", f"{_label(g)}: {g.gfx_target} is supported by ROCm")


def _rocm_gfx_targets() -> frozenset:
    """gfx targets that any ROCm release in the compatibility data supports."""
    from dlsetup.plan.compat import load

    return frozenset(g for release in load().rocm for g in release.gfx)


def _supported_os() -> frozenset:
    from dlsetup.plan.compat import load

    return frozenset((s.id, s.version) for s in load().systems)


@rule
def gpu_memory(p: HostProfile) -> Iterator[Finding]:
    for g in _compute_gpus(p):
        mem = g.memory_bytes
        if mem is None:
            yield Finding("gpu.vram", "info", f"{_label(g)}: memory size unknown")
        elif mem < MIN_VRAM_BYTES:
            yield Finding("gpu.vram", "warn", f"{_label(g)}: {_gib(mem)} of memory",
                          "Enough for small models only; 16 GiB or more suits most work.")
        elif mem < GOOD_VRAM_BYTES:
            yield Finding("gpu.vram", "info", f"{_label(g)}: {_gib(mem)} of memory", "Large models need more.")
        else:
            yield Finding("gpu.vram", "pass", f"{_label(g)}: {_gib(mem)} of memory")


@rule
def gpu_tensor_cores(p: HostProfile) -> Iterator[Finding]:
    for g in _compute_gpus(p):
        has = _tensor_cores(g)
        if has is None:
            continue
        if has:
            yield Finding("gpu.tensor_cores", "pass", f"{_label(g)}: has tensor/matrix cores (fast fp16/bf16)")
        else:
            yield Finding("gpu.tensor_cores", "warn", f"{_label(g)}: no tensor/matrix cores",
                          "Mixed precision gains little; fp32 throughput is the limit.")


def _tensor_cores(g: GPU) -> Optional[bool]:
    from dlsetup import gpudb

    spec = gpudb.by_pci_id(g.pci_vendor_id, g.pci_device_id) if g.pci_vendor_id and g.pci_device_id else None
    spec = spec or (gpudb.by_name(g.name) if g.name else None)
    if spec is not None:
        return spec.tensor_cores
    cc = _cc(g)
    return cc >= TENSOR_CORE_MIN_CC if cc else None


@rule
def gpu_pcie(p: HostProfile) -> Iterator[Finding]:
    for g in _compute_gpus(p):
        if g.pcie_width_current and g.pcie_width_max and g.pcie_width_current < g.pcie_width_max:
            yield Finding("gpu.pcie", "warn", f"{_label(g)}: PCIe link x{g.pcie_width_current}, card supports "
                          f"x{g.pcie_width_max}", "Move it to a full-width slot, or check risers and lane sharing.")
        elif g.pcie_gen_current and g.pcie_gen_max and g.pcie_gen_current < g.pcie_gen_max:
            yield Finding("gpu.pcie", "info", f"{_label(g)}: PCIe gen{g.pcie_gen_current}, card supports "
                          f"gen{g.pcie_gen_max}", "Idle GPUs lower the link speed to save power; re-check under load.")
        elif g.pcie_gen_max and g.pcie_width_max:
            cur = f"gen{g.pcie_gen_current or g.pcie_gen_max} x{g.pcie_width_current or g.pcie_width_max}"
            known = g.pcie_gen_current and g.pcie_width_current
            yield Finding("gpu.pcie", "pass" if known else "info",
                          f"{_label(g)}: PCIe {cur}" + ("" if known else " (max; current link not read)"))


@rule
def gpu_partitions(p: HostProfile) -> Iterator[Finding]:
    """Partitioned GPUs (AMD SPX/DPX/QPX/CPX, NPS): physical cards, the devices a framework sees, the mode."""
    split = [g for g in _compute_gpus(p) if g.partitions or g.compute_partition or g.memory_partition]
    if not split:
        return
    physical = len(_compute_gpus(p))
    visible = p.visible_gpu_count
    modes = sorted({"/".join(m for m in (g.compute_partition, g.memory_partition) if m) or "unknown" for g in split})
    # cards may show unequal counts (a partition hidden or missing): say the range, not a wrong mean
    counts = sorted({len(g.partitions) or 1 for g in _compute_gpus(p)})
    per_card = (str(visible // physical) if visible % physical == 0 else
                f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else "~")
    message = (f"{physical} physical GPU(s) in {', '.join(modes)} mode: frameworks see {visible} device(s)"
               + ("" if visible == physical else f" ({per_card}"
                  " per card, each with that share of compute units and memory)"))
    if visible == physical:
        yield Finding("gpu.partitions", "pass", message)
    else:
        yield Finding("gpu.partitions", "info", message,
                      "One job per partition suits inference and small models; for training across whole cards "
                      "switch to SPX (amd-smi set --compute-partition SPX) and count the cards, not the devices.")


@rule
def gpu_driver(p: HostProfile) -> Iterator[Finding]:
    nv = p.nvidia
    if not p.nvidia_gpus:
        return
    if nv.reboot_required:
        yield Finding("driver.mismatch", "fail", f"NVIDIA kernel module {nv.kernel_module_version or '?'} and "
                      f"library {nv.library_version or '?'} disagree", "Reboot to load the installed driver.")
    elif nv.kernel_module_loaded:
        yield Finding("driver.loaded", "pass", f"NVIDIA driver {nv.kernel_module_version or nv.library_version} "
                      f"loaded, CUDA {nv.cuda_driver_version or 'unknown'}")
    elif nv.kernel_module_loaded is False:
        yield Finding("driver.loaded", "info", "NVIDIA driver not loaded", "dlsetup provision installs it.")
    if nv.nouveau_loaded:
        yield Finding("driver.nouveau", "warn", "the nouveau driver is loaded",
                      "dlsetup provision blacklists it; a reboot is then needed.")


def gpu_modules_in_use(p: HostProfile) -> Tuple[str, ...]:
    """The GPU kernel modules this host depends on: "nvidia" when it has NVIDIA GPUs and an NVIDIA driver
    is loaded or built for some kernel, "amdgpu" likewise for AMD GPUs."""
    used = []
    kernels = p.kernel.kernels
    if p.nvidia_gpus and (p.nvidia.kernel_module_loaded or p.nvidia.library_version
                          or any(k.nvidia_module for k in kernels)):
        used.append("nvidia")
    if [g for g in p.amd_gpus if not g.integrated] and (p.amd.amdgpu_loaded or any(k.amdgpu_module for k in kernels)):
        used.append("amdgpu")
    return tuple(used)


def kernel_module_fix(p: HostProfile, module: str, release: str) -> str:
    """The commands that give kernel ``release`` the GPU module ``module``."""
    image = p.kernel.image(release)
    others = [k for k in p.kernel.kernels if k.version != release]
    if module == "nvidia" and any(k.nvidia_module == "precompiled" for k in others) and not any(
            k.nvidia_module == "dkms" for k in others):
        branch = (p.nvidia.library_version or p.nvidia.kernel_module_version or "<branch>").split(".")[0]
        return f"apt install linux-modules-nvidia-{branch}-{release}"
    steps = []
    if image is None or not image.headers:
        steps.append(f"apt install linux-headers-{release}")
    steps.append(f"dkms autoinstall -k {release}")
    return " && ".join(steps)


@rule
def kernel_modules(p: HostProfile) -> Iterator[Finding]:
    """Every installed kernel, above all the one that boots next, needs the GPU module the host uses:
    an unattended kernel update whose DKMS build failed leaves the GPUs without a driver after a reboot."""
    state = p.kernel
    if not state.kernels:
        return
    for module in gpu_modules_in_use(p):
        attr = f"{module}_module"
        missing = [k for k in state.kernels if getattr(k, attr) is None]
        for image in missing:
            failure = f" (last DKMS build failed: {image.dkms_failure})" if image.dkms_failure else ""
            headers = "" if image.headers is not False else ", no kernel headers"
            fix = kernel_module_fix(p, module, image.version)
            if image.version == state.next_boot:
                yield Finding("kernel.next_boot", "fail",
                              f"kernel {image.version} boots next and has no {module} module{headers}{failure}: "
                              "rebooting now leaves the GPUs without a driver", fix)
            else:
                yield Finding("kernel.modules", "warn",
                              f"installed kernel {image.version} has no {module} module{headers}{failure}", fix)
        if state.next_boot and state.next_boot not in {k.version for k in missing}:
            yield Finding("kernel.next_boot", "pass",
                          f"kernel {state.next_boot} boots next and has the {module} module "
                          f"({getattr(state.image(state.next_boot), attr) or 'unknown'})")


# -- CPU and memory --------------------------------------------------------------------------------


@rule
def cpu_cores(p: HostProfile) -> Iterator[Finding]:
    gpus = len(_compute_gpus(p))
    cores = p.cpu.physical_cores or p.cpu.logical_cpus
    if not gpus or not cores:
        return
    per = cores / gpus
    msg = f"{cores} CPU cores for {gpus} GPU(s): {per:.1f} per GPU"
    if per >= MIN_CORES_PER_GPU:
        yield Finding("cpu.cores_per_gpu", "pass", msg)
    else:
        yield Finding("cpu.cores_per_gpu", "warn", msg,
                      f"Data loading may starve the GPUs; {MIN_CORES_PER_GPU}+ cores per GPU is the usual advice.")


@rule
def cpu_vector(p: HostProfile) -> Iterator[Finding]:
    c = p.cpu
    if p.os.arch not in (None, "x86_64", "i686"):  # AVX is x86's: an Arm CPU's vector units are NEON/SVE
        yield Finding("cpu.avx2", "info", f"an {p.os.arch} CPU: AVX2 and AVX-512 are x86 instruction sets",
                      "Frameworks' Arm builds use the CPU's NEON/SVE vector units instead.")
        return
    if c.avx2 is False:
        yield Finding("cpu.avx2", "warn", "the CPU lacks AVX2",
                      "Recent TensorFlow wheels need AVX2 (and AVX); PyTorch CPU kernels run slower.")
    elif c.avx2:
        yield Finding("cpu.avx2", "pass", "AVX2 present")
    if c.avx512f:
        extra = " with BF16" if "avx512_bf16" in c.avx512_extensions else ""
        yield Finding("cpu.avx512", "pass", f"AVX-512 present{extra}" + (", and AMX" if c.amx else ""))
    elif c.avx512f is False:
        yield Finding("cpu.avx512", "info", "no AVX-512", "Only CPU-side inference and preprocessing are affected.")


@rule
def memory_size(p: HostProfile) -> Iterator[Finding]:
    total = p.memory.total_bytes
    if total is None:
        yield Finding("memory.total", "info", "RAM size unknown")
        return
    if total >= MIN_RAM_BYTES * 0.95:  # the kernel reserves a little of the installed memory
        yield Finding("memory.total", "pass", f"{_gib(total)} RAM")
    else:
        yield Finding("memory.total", "warn", f"{_gib(total)} RAM", "64 GiB or more is the usual workstation advice.")
    vram = sum(g.memory_bytes or 0 for g in _compute_gpus(p))
    if vram:
        msg = f"{_gib(total)} RAM for {_gib(vram)} of GPU memory"
        if total >= RAM_PER_VRAM * vram:
            yield Finding("memory.vs_vram", "pass", msg)
        else:
            yield Finding("memory.vs_vram", "warn", msg + f": under {RAM_PER_VRAM:g}x",
                          f"Aim for at least {_gib(int(RAM_PER_VRAM * vram))} RAM for data loading and checkpoints.")


# -- storage ------------------------------------------------------------------------------------


@rule
def storage_fast(p: HostProfile) -> Iterator[Finding]:
    disks = [d for d in p.storage.devices if d.type == "disk" and (d.size_bytes or 0) > 0]
    fast = [d for d in disks if d.media in ("nvme", "ssd")]
    if fast:
        names = ", ".join(f"{d.name} ({d.media}, {_gib(d.size_bytes)})" for d in fast)
        yield Finding("storage.fast", "pass", f"fast storage for data: {names}")
    else:
        kinds = ", ".join(sorted({d.media for d in disks})) or "none"
        yield Finding("storage.fast", "warn", f"no NVMe or SSD for data (disks: {kinds})",
                      "Put active datasets and checkpoints on NVMe/SSD; loading from HDD starves GPUs.")
    if any(d.media == "hdd" for d in disks):
        yield Finding("storage.archive", "pass", "an HDD is available for archives")
    for a in p.storage.arrays:
        if a.degraded:
            yield Finding("storage.raid", "fail", f"{a.name} ({a.level}) is degraded",
                          "Replace the failed member before trusting it with data.")
    redundant = [a for a in p.storage.arrays if a.level in ("raid1", "raid4", "raid5", "raid6", "raid10")]
    if redundant:
        yield Finding("storage.redundancy", "pass", "redundant arrays: " + ", ".join(a.name for a in redundant))
    else:
        yield Finding("storage.redundancy", "info", "no redundant array for data",
                      "A RAID1/10 over NVMe protects checkpoints from a disk failure: "
                      "dlsetup plan --storage /data:raid10.")


@rule
def storage_free(p: HostProfile) -> Iterator[Finding]:
    mounts = [m for m in p.storage.mounts if m.free_bytes is not None]
    if not mounts:
        return
    best = max(mounts, key=lambda m: m.free_bytes or 0)
    free = best.free_bytes or 0  # never None: only mounts with a free size are compared
    msg = f"most free space: {_gib(free)} on {best.mountpoint}"
    if free < FREE_SPACE_FAIL:
        yield Finding("storage.free", "fail", msg, "Free space or add a disk before installing the stack.")
    elif free < FREE_SPACE_WARN:
        yield Finding("storage.free", "warn", msg, "Datasets and checkpoints need room; add a data disk.")
    else:
        yield Finding("storage.free", "pass", msg)


# -- power, OS ----------------------------------------------------------------------------------


@rule
def psu(p: HostProfile) -> Iterator[Finding]:
    gpus = _compute_gpus(p)
    if not gpus:
        return
    known = [g.power_limit_w for g in gpus if g.power_limit_w]
    if len(known) != len(gpus):
        yield Finding("power.psu", "info", "GPU power limits unknown; cannot estimate the PSU")
        return
    gpu_w = sum(known)
    cpu_w = PSU_CPU_W_PER_SOCKET * (p.cpu.sockets or 1)
    load = gpu_w + cpu_w + PSU_BASE_W
    low, high = (round(load * h / 50) * 50 for h in PSU_HEADROOM)
    hint = "A PSU cannot be probed: check its rating, and that each GPU has its own power cables."
    if high > PSU_SINGLE_MAX_W:
        hint += " That is more than one PSU on a normal circuit gives: split the load over two PSUs, " \
                "or lower the GPU power limits (nvidia-smi -pl)."
    yield Finding("power.psu", "info", f"estimated load {load:.0f} W (GPUs {gpu_w:.0f} W, CPU ~{cpu_w:.0f} W, "
                  f"base ~{PSU_BASE_W:.0f} W): a {low}-{high} W PSU is recommended", hint)


@rule
def os_supported(p: HostProfile) -> Iterator[Finding]:
    o = p.os
    if not o.id:
        yield Finding("os.supported", "warn", "OS unknown", "dlsetup provisions Ubuntu 22.04/24.04 and Debian 12.")
    elif (o.id, o.version_id) in _supported_os():
        yield Finding("os.supported", "pass", f"{o.pretty_name or o.id} is supported")
    else:
        yield Finding("os.supported", "fail", f"{o.pretty_name or o.id} is not supported by dlsetup provision",
                      "Use Ubuntu 22.04/24.04 or Debian 12.")
    if o.secure_boot == "enabled" and (p.nvidia_gpus or p.amd_gpus):
        yield Finding("os.secure_boot", "warn", "Secure Boot is enabled",
                      "Kernel modules must be signed: enrol the DKMS MOK key (mokutil --import) at the next boot.")
    elif o.secure_boot == "disabled":
        yield Finding("os.secure_boot", "pass", "Secure Boot is off: unsigned driver modules load")
    elif p.nvidia_gpus or p.amd_gpus:
        yield Finding("os.secure_boot", "info", "Secure Boot state unknown",
                      "If it is on, the driver module must be signed (MOK enrolment).")
