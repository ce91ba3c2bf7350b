"""``dlsetup probe``: read a host (live, saved bundle or remote) into a :class:`~dlsetup.model.HostProfile`.

Readers take a :class:`~dlsetup.probe.host.Host` (a root path and a command runner). The commands a
probe needs are started together up front, so their run time overlaps with the file reads. A reader
that fails turns into "unknown" fields and a note, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from dlsetup.errors import UsageError
from dlsetup.model import (GPU, AmdState, CPUInfo, GPULink, HostProfile, KernelState, MachineIdentity, MemoryInfo,
                           NvidiaState, StorageInfo)
from dlsetup.probe import gpus as gpu_reader
from dlsetup.probe import kernel as kernel_reader
from dlsetup.probe import storage as storage_reader
from dlsetup.probe import system as system_reader
from dlsetup.probe.host import Host, Recorder

__all__ = ["Host", "Recorder", "enrich", "probe", "probe_host"]

T = TypeVar("T")

#: Commands every probe needs, started at once in the background on a live host.
UP_FRONT = (
    ("lscpu", system_reader.COMMANDS["lscpu"]),
    ("lsblk-J-b", storage_reader.COMMANDS["lsblk-J-b"]),
    ("df-PT", storage_reader.COMMANDS["df-PT"]),
    ("dkms-status", kernel_reader.COMMANDS["dkms-status"]),
)


def probe(bundle: Optional[Path] = None, save_bundle: Optional[Path] = None) -> HostProfile:
    """Probe this machine, or the saved bundle ``bundle``; optionally save what was read as a bundle."""
    if bundle is not None:
        bundle = Path(bundle)
        if not bundle.is_dir():
            raise UsageError(f"bundle directory not found: {bundle}")
        host = Host.bundle(bundle)
    else:
        host = Host.live()
    if save_bundle is not None:
        host = Recorder(host)
    try:
        profile = probe_host(host)
    finally:
        host.close()
    if save_bundle is not None:
        assert isinstance(host, Recorder)
        try:
            host.save(Path(save_bundle))
        except OSError as err:
            raise UsageError(f"cannot save bundle to {save_bundle}: {err.strerror or err}") from err
    return profile


def probe_host(host: Host, enrich: bool = True) -> HostProfile:
    """Read everything dlsetup knows how to read from ``host``.

    ``enrich=False`` leaves out the GPU table lookups (for remote hosts, where only the standard library
    of the host's Python is available); :func:`enrich` adds them on the controller."""
    notes: List[str] = []

    def guarded(what: str, fn: Callable[[], T], default: T) -> T:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - a bad source must never abort the probe
            notes.append(f"{what}: could not be read ({type(err).__name__}: {err})")
            return default

    if host.is_live:
        host.start(UP_FRONT)
        if _is_root():
            host.start([("dmidecode-t-memory", system_reader.COMMANDS["dmidecode-t-memory"])])
    kernel: Dict[str, Any] = guarded("kernel", lambda: system_reader.kernel_facts(host), {})
    machine = guarded("machine", lambda: system_reader.read_machine(host), MachineIdentity())
    lscpu: Dict[str, Any] = guarded("lscpu", lambda: system_reader.read_lscpu(host), {})
    os_info = guarded("os", lambda: system_reader.read_os(host, kernel, lscpu), None)
    no_gpus: Tuple[Tuple[GPU, ...], Tuple[GPULink, ...], NvidiaState, AmdState] = ((), (), NvidiaState(), AmdState())
    gpus, links, nvidia, amd = guarded("gpus", lambda: gpu_reader.read_gpus(host, enrich), no_gpus)
    cpu = guarded("cpu", lambda: system_reader.read_cpu(host, lscpu), CPUInfo())
    memory = guarded("memory", lambda: system_reader.read_memory(host), MemoryInfo())
    storage = guarded("storage", lambda: storage_reader.read_storage(host), StorageInfo())
    kernels = guarded("kernels", lambda: kernel_reader.read_kernels(host, kernel.get("kernel")), KernelState())
    notes.extend(host.notes)
    if nvidia.nvml_error:
        notes.append(f"nvml: {nvidia.nvml_error}")
    kwargs: Dict[str, Any] = {"os": os_info} if os_info is not None else {}
    return HostProfile(
        hostname=kernel.get("hostname"),
        source=host.source,
        machine=machine,
        probed_at=_now() if host.is_live else None,
        cpu=cpu,
        memory=memory,
        storage=storage,
        gpus=gpus,
        gpu_links=links,
        nvidia=nvidia,
        amd=amd,
        kernel=kernels,
        notes=tuple(notes),
        **kwargs,
    )


def enrich(profile: HostProfile) -> HostProfile:
    """Add the GPU table's facts to a profile read with ``enrich=False`` (e.g. on a remote host)."""
    import dataclasses

    return dataclasses.replace(profile, gpus=gpu_reader.enrich_gpus(profile.gpus))


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_root() -> bool:
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0
