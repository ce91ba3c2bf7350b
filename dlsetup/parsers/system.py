"""Parsers for small system files: os-release, meminfo, uname, df, /proc/modules, /proc/mounts."""

from __future__ import annotations

import re
import shlex
from typing import Dict, List, Optional, Tuple

#: Filesystems that hold no user data worth judging (pseudo, memory, read-only images, overlays).
PSEUDO_FS = frozenset(
    "proc sysfs devtmpfs devpts tmpfs securityfs cgroup cgroup2 pstore bpf debugfs tracefs configfs "
    "fusectl mqueue hugetlbfs autofs binfmt_misc efivarfs rpc_pipefs nsfs ramfs squashfs overlay "
    "fuse.lxcfs fuse.portal fuse.gvfsd-fuse selinuxfs zram".split()
)


def parse_os_release(text: str) -> Dict[str, str]:
    """KEY=value lines, values unquoted as a shell would (os-release(5))."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        out[key.strip()] = parts[0] if parts else ""
    return out


def parse_meminfo(text: str) -> Dict[str, int]:
    """/proc/meminfo as bytes: {"MemTotal": ..., "MemAvailable": ...}."""
    out: Dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        fields = rest.split()
        if not fields:
            continue
        try:
            value = int(fields[0])
        except ValueError:
            continue
        unit = fields[1].lower() if len(fields) > 1 else ""
        out[key.strip()] = value * 1024 if unit == "kb" else value
    return out


def parse_uname_a(text: str) -> Dict[str, str]:
    """``uname -a``: "Linux HOST RELEASE #VERSION ... MACHINE [PROCESSOR PLATFORM] OS"."""
    fields = text.split()
    if len(fields) < 3 or fields[0] != "Linux":
        return {}
    out = {"hostname": fields[1], "kernel": fields[2]}
    arches = [f for f in fields[3:] if f in KNOWN_ARCHES]
    if arches:
        out["arch"] = arches[0]
    return out


KNOWN_ARCHES = frozenset("x86_64 aarch64 ppc64le s390x riscv64 armv7l i686".split())


def parse_proc_modules(text: str) -> Dict[str, str]:
    """/proc/modules: module name -> its state ("Live", "Loading", "Unloading")."""
    out: Dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5:
            out[fields[0]] = fields[4]
    return out


def parse_df(text: str) -> List[Tuple[str, str, str, int, int]]:
    """``df -PT`` (POSIX, 1024-byte blocks): (device, fstype, mountpoint, size_bytes, free_bytes)."""
    rows: List[Tuple[str, str, str, int, int]] = []
    lines = text.splitlines()
    if not lines or not lines[0].startswith("Filesystem"):
        return rows
    block = 1024
    header = lines[0].split()
    if len(header) > 2 and header[2].endswith("-blocks"):
        try:
            block = int(header[2].split("-")[0])
        except ValueError:
            pass
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 7:
            continue
        try:
            size, avail = int(fields[2]) * block, int(fields[4]) * block
        except ValueError:
            continue
        rows.append((fields[0], fields[1], " ".join(fields[6:]), size, avail))
    return rows


def parse_proc_mounts(text: str) -> List[Tuple[str, str, str]]:
    """/proc/mounts: (device, mountpoint, fstype) with octal escapes (``\\040``) decoded."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        rows.append((_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return rows


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    try:
        return value.encode("latin-1").decode("unicode_escape")
    except (UnicodeDecodeError, UnicodeEncodeError):
        return value


def secure_boot_from_efivar(data: Optional[bytes]) -> Optional[str]:
    """The SecureBoot EFI variable: 4 bytes of attributes, then 1 = enabled, 0 = disabled."""
    if not data or len(data) < 5:
        return None
    return "enabled" if data[4] == 1 else "disabled"


def secure_boot_from_mokutil(text: str) -> Optional[str]:
    """``mokutil --sb-state``: "SecureBoot enabled" / "SecureBoot disabled"."""
    lowered = text.lower()
    if "secureboot enabled" in lowered:
        return "enabled"
    if "secureboot disabled" in lowered or "efi variables are not supported" in lowered:
        return "disabled"
    return None


_MACHINE_ID = re.compile(r"[0-9a-f]{32}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: product UUIDs firmware writes when it has none (all zeros, all ones, the "03000200-..." placeholder)
_PLACEHOLDER_UUIDS = {"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff",
                      "03000200-0400-0500-0006-000700080009"}


def parse_machine_id(text: str) -> Optional[str]:
    """/etc/machine-id: 32 hex digits on one line; "uninitialized" (first boot) or anything else is None."""
    value = text.strip().lower()
    return value if _MACHINE_ID.fullmatch(value) and value != "0" * 32 else None


def parse_product_uuid(text: str) -> Optional[str]:
    """/sys/class/dmi/id/product_uuid: a UUID, lowercased; firmware placeholders are None."""
    value = text.strip().lower()
    return value if _UUID.fullmatch(value) and value not in _PLACEHOLDER_UUIDS else None
