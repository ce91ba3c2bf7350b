"""Readers for the OS, the CPU and memory."""

from __future__ import annotations

import re
from typing import Optional

from dlsetup.model import CPUInfo, MachineIdentity, MemoryInfo, OSInfo
from dlsetup.parsers import cpu as cpu_parsers
from dlsetup.parsers import dmi
from dlsetup.parsers import system as sysp
from dlsetup.probe.host import Host
from dlsetup.probe.util import fields_of

#: container engine -> the binary that shows it is installed (the docker CLI alone is no engine)
CONTAINER_ENGINES = {"docker": "dockerd", "podman": "podman", "containerd": "containerd"}
BIN_DIRS = ("/usr/bin/", "/usr/local/bin/", "/usr/sbin/")
SECURE_BOOT_EFIVAR = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e98c0e11ed3e"

COMMANDS = {
    "lscpu": ["lscpu"],
    "dmidecode-t-memory": ["dmidecode", "-t", "memory"],
    "uname-a": ["uname", "-a"],
    "mokutil-sb-state": ["mokutil", "--sb-state"],
}


def kernel_facts(host: Host) -> dict:
    """hostname, kernel and arch from /proc/sys/kernel, else from a saved ``uname -a``."""
    facts = {
        "hostname": _first_line(host.read("/proc/sys/kernel/hostname")),
        "kernel": _first_line(host.read("/proc/sys/kernel/osrelease")),
        "arch": _first_line(host.read("/proc/sys/kernel/arch")),
    }
    if not all(facts.values()) and not host.is_live:
        uname = sysp.parse_uname_a(host.run("uname-a", COMMANDS["uname-a"]) or "")
        facts = {k: v or uname.get(k) for k, v in facts.items()}
    return facts


def read_machine(host: Host) -> MachineIdentity:
    """/etc/machine-id and the DMI product UUID (readable by root), each kept only in its own format."""
    return MachineIdentity(machine_id=sysp.parse_machine_id(host.read("/etc/machine-id") or ""),
                           product_uuid=sysp.parse_product_uuid(host.read("/sys/class/dmi/id/product_uuid") or ""))


def read_os(host: Host, kernel: dict, lscpu: dict) -> OSInfo:
    release = sysp.parse_os_release(host.read("/etc/os-release") or host.read("/usr/lib/os-release") or "")
    return OSInfo(
        id=release.get("ID") or None,
        version_id=release.get("VERSION_ID") or None,
        codename=release.get("VERSION_CODENAME") or release.get("UBUNTU_CODENAME") or None,
        pretty_name=release.get("PRETTY_NAME") or None,
        id_like=tuple(release.get("ID_LIKE", "").split()),
        kernel=kernel.get("kernel"),
        arch=kernel.get("arch"),
        secure_boot=secure_boot(host),
        virtualization=lscpu.get("hypervisor"),
        python_version=python_version(host),
        container_engines=tuple(
            name for name, exe in CONTAINER_ENGINES.items() if any(host.exists(d + exe) for d in BIN_DIRS)
        ),
    )


def python_version(host: Host) -> Optional[str]:
    """The system python3's "major.minor": /usr/bin/python3 links to python3.N on Debian and Ubuntu."""
    target = host.readlink("/usr/bin/python3") or ""
    match = re.fullmatch(r"(?:.*/)?python(3\.\d+)", target)
    return match.group(1) if match else None


def secure_boot(host: Host) -> str:
    """The EFI variable first; a host that booted without EFI has no Secure Boot; else ``mokutil``."""
    state = sysp.secure_boot_from_efivar(host.read_bytes(SECURE_BOOT_EFIVAR, 8))
    if state:
        return state
    if host.exists("/sys/firmware") and not host.exists("/sys/firmware/efi"):
        return "disabled"  # legacy BIOS boot
    text = host.run("mokutil-sb-state", COMMANDS["mokutil-sb-state"])
    return (sysp.secure_boot_from_mokutil(text) if text else None) or "unknown"


def read_lscpu(host: Host) -> dict:
    return cpu_parsers.parse_lscpu(host.run("lscpu", COMMANDS["lscpu"]) or "")


def read_cpu(host: Host, lscpu: dict) -> CPUInfo:
    proc = cpu_parsers.parse_proc_cpuinfo(host.read("/proc/cpuinfo") or "")
    merged = cpu_parsers.merge_cpu(lscpu, proc)
    if merged.get("numa_nodes") is None:
        nodes = [n for n in host.listdir("/sys/devices/system/node") if n.startswith("node") and n[4:].isdigit()]
        merged["numa_nodes"] = len(nodes) or None
    return CPUInfo(**fields_of(CPUInfo, merged))


def read_memory(host: Host) -> MemoryInfo:
    info = sysp.parse_meminfo(host.read("/proc/meminfo") or "")
    dimms = dmi.parse_dmidecode_memory(host.run("dmidecode-t-memory", COMMANDS["dmidecode-t-memory"]) or "")
    return MemoryInfo(
        total_bytes=info.get("MemTotal"),
        available_bytes=info.get("MemAvailable"),
        swap_total_bytes=info.get("SwapTotal"),
        **fields_of(MemoryInfo, dimms),
    )


def _first_line(text: Optional[str]) -> Optional[str]:
    if not text:
        return None
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    return line or None
