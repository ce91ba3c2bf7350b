"""Storage layout: which disks become which md RAID array, filesystem and mount point, and is that safe.

Pure: works on the probe's :class:`~dlsetup.model.HostProfile`, does no I/O. :func:`propose_layout`
turns a :class:`StorageRequest` into a :class:`StorageLayout` (disks named by ``/dev/disk/by-id``; with no
disks named, the host's unused fast disks); :func:`refusals` says, per member disk, why writing to it
would destroy data; :meth:`StorageLayout.variables` gives the ``storage`` role's variables. The role
repeats the safety check on the target right before it writes, since disks change after a probe.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dlsetup.errors import UsageError
from dlsetup.model import BlockDevice, HostProfile

#: RAID level -> fewest member disks. "single" is one disk without md.
LEVELS: Mapping[str, int] = {"single": 1, "raid0": 2, "raid1": 2, "raid5": 3, "raid10": 4}
FILESYSTEMS = ("ext4", "xfs")
#: Media worth proposing for datasets and checkpoints.
FAST_MEDIA = ("nvme", "ssd")
#: noatime: reading a dataset does not write; nofail: a missing array does not stop the boot.
DEFAULT_MOUNT_OPTIONS = ("defaults", "noatime", "nofail")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,23}$")
_SIGNATURES = {
    "LVM2_member": "is an LVM physical volume",
    "swap": "is swap space",
    "linux_raid_member": "carries an md RAID signature",
}


@dataclass(frozen=True)
class ArrayRequest:
    """One array as asked for; ``None``/empty means "let the planner choose"."""

    mountpoint: str = "/data"
    level: Optional[str] = None
    filesystem: str = "ext4"
    disks: Tuple[str, ...] = ()  #: by-id paths, /dev paths or kernel names


@dataclass(frozen=True)
class StorageRequest:
    arrays: Tuple[ArrayRequest, ...] = (ArrayRequest(),)
    destroy_data: bool = False


@dataclass(frozen=True)
class Array:
    """One planned array (or single disk): its members by id, filesystem and mount."""

    name: str  #: md array name, e.g. "data" -> /dev/md/data
    level: str
    members: Tuple[str, ...]  #: /dev/disk/by-id/... paths
    filesystem: str
    mountpoint: str
    mount_options: Tuple[str, ...] = DEFAULT_MOUNT_OPTIONS


@dataclass(frozen=True)
class Refusal:
    disk: str  #: the member as the layout names it
    reason: str


@dataclass(frozen=True)
class StorageLayout:
    arrays: Tuple[Array, ...] = ()
    destroy_data: bool = False

    def variables(self) -> Dict[str, Any]:
        """The ``storage`` role's variables for this layout."""
        return {
            "storage_arrays": [
                {"name": a.name, "level": a.level, "members": list(a.members), "filesystem": a.filesystem,
                 "mountpoint": a.mountpoint, "mount_options": list(a.mount_options)}
                for a in self.arrays
            ],
            "storage_destroy_data": self.destroy_data,
        }


def parse_array_option(text: str) -> ArrayRequest:
    """``MOUNTPOINT[:LEVEL[:FILESYSTEM[:DISK,DISK...]]]``, the form of ``--storage``, e.g. ``/data:raid10:xfs``."""
    mountpoint, level, filesystem, disks = (text.split(":", 3) + ["", "", ""])[:4]
    return array_request({"mountpoint": mountpoint, "level": level or None, "filesystem": filesystem or "ext4",
                          "disks": [d for d in disks.split(",") if d]})


def array_request(data: Mapping[str, Any]) -> ArrayRequest:
    """An :class:`ArrayRequest` from config-file data, validated (one-line :class:`UsageError`)."""
    unknown = sorted(set(data) - {"mountpoint", "level", "filesystem", "disks"})
    if unknown:
        raise UsageError(f"storage: unknown key {unknown[0]!r} (use mountpoint, level, filesystem, disks)")
    mountpoint = data.get("mountpoint", "/data")
    if not isinstance(mountpoint, str) or not posixpath.isabs(mountpoint) or posixpath.normpath(mountpoint) == "/":
        raise UsageError(f"storage: mount point {mountpoint!r} must be an absolute path other than /")
    level = data.get("level")
    if level is not None and level not in LEVELS:
        raise UsageError(f"storage: RAID level {level!r} is unknown: use {', '.join(LEVELS)}")
    filesystem = data.get("filesystem", "ext4")
    if filesystem not in FILESYSTEMS:
        raise UsageError(f"storage: filesystem {filesystem!r} is not supported: use {', '.join(FILESYSTEMS)}")
    disks = data.get("disks", [])
    if not isinstance(disks, (list, tuple)) or not all(isinstance(d, str) for d in disks):
        raise UsageError(f"storage: disks must be a list of disk names, got {disks!r}")
    return ArrayRequest(posixpath.normpath(mountpoint), level, filesystem, tuple(disks))


def storage_request(data: Mapping[str, Any]) -> StorageRequest:
    """The ``storage:`` section of the config file: ``arrays: [...]`` and ``destroy_data``."""
    arrays = data.get("arrays", [{}])
    destroy = data.get("destroy_data", False)
    if not isinstance(arrays, list) or not all(isinstance(a, Mapping) for a in arrays) or not arrays:
        raise UsageError("storage: arrays must be a non-empty list of mappings")
    if not isinstance(destroy, bool):
        raise UsageError(f"storage: destroy_data must be true or false, got {destroy!r}")
    return StorageRequest(tuple(array_request(a) for a in arrays), destroy)


def _children(profile: HostProfile) -> Dict[str, List[BlockDevice]]:
    children: Dict[str, List[BlockDevice]] = {}
    for dev in profile.storage.devices:
        if dev.parent:
            children.setdefault(dev.parent, []).append(dev)
    return children


def _descendants(name: str, children: Mapping[str, List[BlockDevice]]) -> List[BlockDevice]:
    found: List[BlockDevice] = []
    for child in children.get(name, []):
        found += [child, *_descendants(child.name, children)]
    return found


def is_unused(dev: BlockDevice, profile: HostProfile) -> bool:
    """A whole disk with nothing on it: no partitions, signature, holder, mount or md membership."""
    return dev.type == "disk" and not _reasons(dev, profile, _children(profile))


def _resolve(disk: str, profile: HostProfile) -> str:
    """The /dev/disk/by-id path of the whole disk named ``disk`` (by-id path, /dev path or kernel name)."""
    for dev in profile.storage.devices:
        if disk in (dev.by_id, dev.path, dev.name) and dev.type == "disk":
            if not dev.by_id:
                raise UsageError(f"storage: disk {disk} has no /dev/disk/by-id link; name it by a stable id")
            return dev.by_id
    raise UsageError(f"storage: disk {disk!r} is not a disk of this host")


def _default_level(count: int) -> str:
    if count >= 4 and count % 2 == 0:
        return "raid10"
    return {1: "single", 2: "raid1"}.get(count, "raid5")


def _array_name(mountpoint: str, taken: set) -> str:
    base = re.sub(r"[^a-z0-9_-]+", "-", posixpath.basename(mountpoint).lower()).strip("-")[:20] or "data"
    base = base if _NAME.match(base) else f"d-{base}"
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    taken.add(name)
    return name


def propose_layout(profile: HostProfile, request: StorageRequest) -> StorageLayout:
    """The arrays for ``request``: named disks as given, else the unused fast disks shared out in order."""
    ids = [_resolve(d, profile) for a in request.arrays for d in a.disks]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise UsageError(f"storage: disk {repeated[0]} is named more than once")
    mountpoints = [a.mountpoint for a in request.arrays]
    if len(set(mountpoints)) != len(mountpoints):
        raise UsageError("storage: each array needs its own mount point")
    free: List[str] = [d.by_id for d in profile.storage.devices
                       if d.media in FAST_MEDIA and d.by_id and d.by_id not in ids and is_unused(d, profile)]
    unassigned = [a for a in request.arrays if not a.disks]
    arrays, taken = [], set()
    for a in request.arrays:
        if a.disks:
            members = tuple(_resolve(d, profile) for d in a.disks)
        else:
            share, extra = divmod(len(free), len(unassigned))
            index = unassigned.index(a)
            start = index * share + min(index, extra)
            members = tuple(free[start:start + share + (index < extra)])
        if not members:
            raise UsageError(f"storage: no unused fast disk for {a.mountpoint}; name the disks to use")
        level = a.level or _default_level(len(members))
        least = LEVELS[level]
        if len(members) < least or (level == "single" and len(members) > 1):
            wanted = "exactly 1 disk" if level == "single" else f"at least {least} disks"
            raise UsageError(f"storage: {level} for {a.mountpoint} needs {wanted}, got {len(members)}")
        arrays.append(Array(_array_name(a.mountpoint, taken), level, members, a.filesystem, a.mountpoint))
    return StorageLayout(tuple(arrays), request.destroy_data)


def _reasons(dev: BlockDevice, profile: HostProfile, children: Mapping[str, List[BlockDevice]]) -> List[str]:
    """Why writing to ``dev`` would destroy data, one phrase per finding."""
    reasons = []
    if dev.partition_table:
        reasons.append(f"has a {dev.partition_table} partition table")
    below = _descendants(dev.name, children)
    parts = [d.name for d in below if d.type == "part"]
    if parts:
        reasons.append(f"has partitions {', '.join(parts)}")
    if dev.fstype:
        reasons.append(_SIGNATURES.get(dev.fstype, f"holds a filesystem ({dev.fstype})"))
    arrays = {dev.md_member_of} | {a.name for a in profile.storage.arrays for m in a.members if m.device == dev.name}
    arrays |= {d.md_member_of for d in below} | {d.name for d in below if (d.type or "").startswith("raid")}
    for md in sorted(a for a in arrays if a):
        reasons.append(f"is a member of md array {md}")
    for holder in below:
        if holder.type in ("lvm", "crypt"):
            reasons.append(f"holds {holder.type} device {holder.name}")
    for d in [dev, *below]:
        for point in d.mountpoints:
            reasons.append("is in use as swap" if point == "[SWAP]" else f"is mounted at {point} ({d.name})")
    mounted = {m.device for m in profile.storage.mounts}
    for d in [dev, *below]:
        path = d.path or f"/dev/{d.name}"
        if path in mounted and not d.mountpoints:
            reasons.append(f"is mounted ({path})")
    return list(dict.fromkeys(reasons))


def refusals(profile: HostProfile, layout: StorageLayout) -> List[Refusal]:
    """Every member disk that holds something, with each reason; empty when the layout is safe to write.

    A set of members that is exactly one existing md array is not refused: it may be an array built by
    dlsetup, which the role assembles after checking its name on the target.
    """
    children = _children(profile)
    by_id = {d.by_id: d for d in profile.storage.devices if d.by_id}
    found = []
    for array in layout.arrays:
        devices = [by_id.get(m) for m in array.members]
        names = {d.name for d in devices if d is not None}
        reuse = {a.name for a in profile.storage.arrays if {m.device for m in a.members} == names}
        for member, dev in zip(array.members, devices):
            if dev is None:
                found.append(Refusal(member, "is not a disk of this host"))
                continue
            if reuse and dev.md_member_of in reuse | {None}:
                continue
            found += [Refusal(member, reason) for reason in _reasons(dev, profile, children)]
    return found
