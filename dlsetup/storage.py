"""Storage layout: which disks become which md RAID array, filesystem and mount point, and is that safe.

Pure: works on the probe's :class:`~dlsetup.model.HostProfile`, does no I/O. :func:`propose_layout`
turns a :class:`StorageRequest` into a :class:`StorageLayout` (disks named by ``/dev/disk/by-id``; with no
disks named, the host's unused fast disks); :func:`refusals` says, per member disk, why writing to it
would destroy data; :func:`destruction` lists what --destroy-data wipes (disks, md arrays, mount points),
which the plan hands to the role; :meth:`StorageLayout.variables` gives the ``storage`` role's variables;
:func:`repairs` finds the degraded arrays dlsetup made for a layout, which the plan refuses and
``dlsetup status`` reports as drift, planning the host as :func:`repaired` says it will be.
The role repeats the safety check on the target right before it writes, since disks change after a
probe, and wipes nothing the plan did not list.

"An array dlsetup made" has one definition, shared with the role: its md UUID is in dlsetup's record
(``StorageInfo.recorded_arrays``, read from the host's /etc/dlsetup/storage.json). The verdict functions
live in ``plugins/module_utils/dlsetup_storage.py`` (pure, no I/O), which the role's disk module
runs on the target and :func:`shared` loads here.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from dlsetup.errors import UsageError
from dlsetup.model import BlockDevice, HostProfile, MdArray, MdMember

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


#: the collection's module_utils (dlsetup.workstation), which the storage role's module imports on the target
_SHARED = "plugins/module_utils/dlsetup_storage.py"


def shared() -> ModuleType:
    """The verdict module the storage role runs on the target (the source tree's, or the wheel's copy)."""
    from dlsetup.plugins import load

    return load(_SHARED)


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
class Destruction:
    """What --destroy-data wipes: the role gets these lists and touches nothing outside them."""

    disks: Tuple[str, ...] = ()  #: member disks by id
    arrays: Tuple[str, ...] = ()  #: md array UUIDs (32 hex digits) stopped
    mounts: Tuple[str, ...] = ()  #: mount points unmounted
    lines: Tuple[str, ...] = ()  #: "what: why", one per disk reason and one per md array, for the plan

    def variables(self) -> Dict[str, Any]:
        return {"storage_destroy_disks": list(self.disks), "storage_destroy_arrays": list(self.arrays),
                "storage_destroy_mounts": list(self.mounts)}


@dataclass(frozen=True)
class StorageLayout:
    arrays: Tuple[Array, ...] = ()
    destroy_data: bool = False

    def variables(self, destroys: Destruction = Destruction()) -> Dict[str, Any]:
        """The ``storage`` role's variables for this layout; ``destroys``: what the plan lets it wipe."""
        return {
            "storage_arrays": [
                {"name": a.name, "level": a.level, "members": list(a.members), "filesystem": a.filesystem,
                 "mountpoint": a.mountpoint, "mount_options": list(a.mount_options)}
                for a in self.arrays
            ],
            "storage_destroy_data": self.destroy_data,
            **(destroys if self.destroy_data else Destruction()).variables(),
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
    """Kernel name -> the devices right above it: partitions, holders, and the md array of each member
    (lsblk shows an md device under one member only; /proc/mdstat names them all)."""
    children: Dict[str, List[BlockDevice]] = {}
    named = {d.name: d for d in profile.storage.devices}
    for dev in profile.storage.devices:
        if dev.parent:
            children.setdefault(dev.parent, []).append(dev)
    for md in profile.storage.arrays:
        holder = named.get(md.name) or BlockDevice(md.name, md.level or "raid", f"/dev/{md.name}")
        for member in md.members:
            if holder not in children.setdefault(member.device, []):
                children[member.device].append(holder)
    return children


def _descendants(name: str, children: Mapping[str, List[BlockDevice]]) -> List[BlockDevice]:
    found: List[BlockDevice] = []
    for child in children.get(name, []):
        found += [child, *_descendants(child.name, children)]
    return found


def is_unused(dev: BlockDevice, profile: HostProfile) -> bool:
    """A whole disk with nothing on it: no partitions, signature, holder, mount or md membership."""
    return dev.type == "disk" and not _reasons(dev, profile, _children(profile), {})


def _record(profile: HostProfile) -> Dict[str, Dict[str, Any]]:
    """dlsetup's record as the shared verdict functions take it: md UUID -> entry."""
    return {r.uuid: {"name": r.name, "level": r.level, "members": list(r.members), "mountpoint": r.mountpoint,
                     "created": r.created} for r in profile.storage.recorded_arrays}


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


def _array_name(mountpoint: str, taken: set[str]) -> str:
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
    arrays: List[Array] = []
    taken: set[str] = set()
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


def _reasons(dev: BlockDevice, profile: HostProfile, children: Mapping[str, List[BlockDevice]],
             owners: Mapping[str, str], ours: Optional[Tuple[str, str]] = None) -> List[str]:
    """Why writing to ``dev`` would destroy data, one phrase per finding.

    ``owners``: md kernel name -> what that array is to dlsetup (:func:`_owners`); ``ours``: (md kernel
    name, mount point) of the array dlsetup made of exactly these members, whose own traces (RAID
    signature, membership, its mount at its own mount point) are then no reason; anything else still is.
    """
    reasons = []
    if dev.partition_table:
        reasons.append(f"has a {dev.partition_table} partition table")
    below = _descendants(dev.name, children)
    parts = [d.name for d in below if d.type == "part"]
    if parts:
        reasons.append(f"has partitions {', '.join(parts)}")
    if dev.fstype and not (ours and dev.fstype == "linux_raid_member"):
        reasons.append(_SIGNATURES.get(dev.fstype, f"holds a filesystem ({dev.fstype})"))
    arrays = {dev.md_member_of} | {a.name for a in profile.storage.arrays for m in a.members if m.device == dev.name}
    arrays |= {d.md_member_of for d in below} | {d.name for d in below if (d.type or "").startswith("raid")}
    arrays |= {a.name for a in profile.storage.arrays if a.name in {d.name for d in below}}
    for md in sorted(a for a in arrays if a and not (ours and a == ours[0])):
        reasons.append(f"is a member of md array {md} ({owners.get(md, 'not made by dlsetup')})")
    for holder in below:
        if holder.type in ("lvm", "crypt"):
            reasons.append(f"holds {holder.type} device {holder.name}")
    mounted: Dict[str, List[str]] = {}
    for m in profile.storage.mounts:  # df and /proc/mounts: mounts lsblk may not show
        mounted.setdefault(m.device, []).append(m.mountpoint)
    for d in [dev, *below]:
        points = list(d.mountpoints) + mounted.get(d.path or f"/dev/{d.name}", []) + mounted.get(d.by_id or "", [])
        for point in dict.fromkeys(points):
            if ours and (d.name, point) == ours:
                continue
            reasons.append("is in use as swap" if point == "[SWAP]" else f"is mounted at {point} ({d.name})")
    return list(dict.fromkeys(reasons))


def _array_uuid(md: MdArray, profile: HostProfile) -> Optional[str]:
    if md.uuid:
        return shared().md_uuid(md.uuid)
    names = {m.device for m in md.members}
    carried = {shared().md_uuid(d.uuid) for d in profile.storage.devices
               if d.name in names and d.fstype == "linux_raid_member"}
    return carried.pop() if len(carried) == 1 else None


def _owners(profile: HostProfile, array: Array, names: set) -> Tuple[Dict[str, str], Optional[MdArray]]:
    """What each md array is to dlsetup, for this requested array (shared ``ownership``), and the array
    dlsetup made of exactly these members, if there is one and it matches the request."""
    record = _record(profile)
    owners, ours = {}, None
    for md in profile.storage.arrays:
        exact = {m.device for m in md.members} == names
        members = array.members if exact else ()
        owners[md.name] = shared().ownership(_array_uuid(md, profile), record, array.level, members, md.degraded)
        if exact and owners[md.name] == "ours":
            ours = md
    return owners, ours


def refusals(profile: HostProfile, layout: StorageLayout) -> List[Refusal]:
    """Every member disk that holds something, with each reason; empty when the layout is safe to write.

    The members of an array dlsetup made (its md UUID in dlsetup's record) with exactly the requested
    level and members, not degraded, are checked for anything else than that array; every other array
    over a member, whatever its md name, is a reason (see the shared ``ownership``).
    """
    return [refusal for refusal, _ in _findings(profile, layout)]


def _findings(profile: HostProfile, layout: StorageLayout) -> List[Tuple[Refusal, Optional[BlockDevice]]]:
    children = _children(profile)
    by_id = {d.by_id: d for d in profile.storage.devices if d.by_id}
    found: List[Tuple[Refusal, Optional[BlockDevice]]] = []
    for array in layout.arrays:
        devices = [by_id.get(m) for m in array.members]
        names = {d.name for d in devices if d is not None}
        owners, ours = _owners(profile, array, names)
        mine = (ours.name, array.mountpoint) if ours is not None else None
        for member, dev in zip(array.members, devices, strict=True):
            if dev is None:
                found.append((Refusal(member, "is not a disk of this host"), None))
                continue
            found += [(Refusal(member, reason), dev) for reason in _reasons(dev, profile, children, owners, mine)]
    return found


@dataclass(frozen=True)
class Repair:
    """An md array dlsetup made exactly as a layout array asks (its record: UUID, level, members) that
    is degraded. The planner refuses it (provision never re-creates it); ``dlsetup status`` plans the
    host as it is once the array is repaired (:func:`repaired`) and reports the repair as drift."""

    md: str  #: kernel name, e.g. "md127"
    mountpoint: str  #: the layout's mount point for it
    faulty: Tuple[str, ...] = ()  #: kernel names md marks faulty (F)
    missing: Tuple[str, ...] = ()  #: recorded members (by-id) md no longer lists


def missing_members(profile: HostProfile, md: MdArray) -> Tuple[str, ...]:
    """The members dlsetup recorded for ``md`` (by-id) that md no longer lists; () when not dlsetup's."""
    uuid = _array_uuid(md, profile)
    entry = next((r for r in profile.storage.recorded_arrays if r.uuid == uuid), None)
    if entry is None:
        return ()
    names = {d.by_id: d.name for d in profile.storage.devices if d.by_id}
    listed = {m.device for m in md.members}
    return tuple(m for m in entry.members if names.get(m) not in listed)


def repairs(profile: HostProfile, layout: StorageLayout) -> Tuple[Repair, ...]:
    """The degraded arrays dlsetup made for ``layout``: recorded with the requested level and members
    (the shared ``ownership``, as if not degraded), every member md still lists one of those disks, and
    md says degraded or marks a member faulty. Anything else over the members is no repair."""
    record = _record(profile)
    kernel = {d.by_id: d.name for d in profile.storage.devices if d.by_id and d.type == "disk"}
    found: List[Repair] = []
    for array in layout.arrays:
        names = {kernel.get(m) for m in array.members}
        for md in profile.storage.arrays:
            faulty = tuple(m.device for m in md.members if m.state == "faulty")
            listed = {m.device for m in md.members}
            if not (md.degraded or faulty) or not listed or None in names or not listed <= names:
                continue
            if shared().ownership(_array_uuid(md, profile), record, array.level, array.members, False) != "ours":
                continue
            missing = tuple(m for m in array.members if kernel[m] not in listed)
            found.append(Repair(md.name, array.mountpoint, faulty, missing))
    return tuple(found)


def repaired(profile: HostProfile, fixes: Tuple[Repair, ...]) -> HostProfile:
    """``profile`` as it is once each repair is done: the array whole again over its recorded members
    (faulty ones replaced, missing ones back), not degraded. For ``dlsetup status`` only, which plans
    the host as provision would after the repair; provision plans the host as it is and refuses."""
    if not fixes:
        return profile
    kernel = {d.by_id: d.name for d in profile.storage.devices if d.by_id}
    by_md = {f.md: f for f in fixes}
    arrays = []
    for md in profile.storage.arrays:
        fix = by_md.get(md.name)
        if fix is not None:
            members = tuple(replace(m, state="active") if m.state == "faulty" else m for m in md.members)
            members += tuple(MdMember(kernel[m]) for m in fix.missing)
            md = replace(md, members=members, degraded=False, devices_active=md.devices_total,
                         sync_action=None, sync_progress_pct=None)
        arrays.append(md)
    return replace(profile, storage=replace(profile.storage, arrays=tuple(arrays)))


def destruction(profile: HostProfile, layout: StorageLayout) -> Destruction:
    """What --destroy-data wipes for ``layout``: each refused member disk, each md array over one of them
    (not the array dlsetup made and reuses) and each mount point on them, with one plan line each."""
    children = _children(profile)
    mounted: Dict[str, List[str]] = {}
    for m in profile.storage.mounts:
        mounted.setdefault(m.device, []).append(m.mountpoint)
    named_md = {md.name: md for md in profile.storage.arrays}
    devices = {d.name: d for d in profile.storage.devices}
    disks: Dict[str, None] = {}
    lines: List[str] = []
    arrays: Dict[str, str] = {}  # md name -> its owner phrase
    mounts: List[str] = []
    for array in layout.arrays:
        by_id = {d.by_id: d for d in profile.storage.devices if d.by_id}
        owners, _ = _owners(profile, array, {by_id[m].name for m in array.members if m in by_id})
        for refusal, dev in _findings(profile, StorageLayout((array,), layout.destroy_data)):
            lines.append(f"{refusal.disk}: {refusal.reason}")
            if dev is None:
                continue
            disks[refusal.disk] = None
            for d in [dev, *_descendants(dev.name, children)]:
                if d.name in named_md:
                    arrays.setdefault(d.name, owners.get(d.name, "not made by dlsetup"))
                points = list(d.mountpoints) + mounted.get(d.path or f"/dev/{d.name}", [])
                mounts += [p for p in points if p != "[SWAP]"]
    uuids = []
    for name, owner in sorted(arrays.items()):
        uuid = _array_uuid(named_md[name], profile)
        md_dev = devices.get(name)
        where = list(dict.fromkeys([*(md_dev.mountpoints if md_dev else ()), *mounted.get(f"/dev/{name}", [])]))
        at = f", mounted at {', '.join(where)}" if where else ""
        ident = f"UUID {shared().mdadm_uuid(uuid)}" if uuid else "UUID unknown"
        lines.append(f"md array {name} ({ident}, {owner}{at}): stopped and erased")
        if uuid:
            uuids.append(uuid)
    return Destruction(tuple(disks), tuple(uuids), tuple(dict.fromkeys(mounts)), tuple(dict.fromkeys(lines)))
