"""Reader for block devices, md arrays and mounted filesystems."""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
from typing import Any, Dict, List, Optional, Tuple

from dlsetup.model import MdArray, Mount, RecordedArray, StorageInfo
from dlsetup.parsers import lsblk, mdstat
from dlsetup.parsers import system as sysp
from dlsetup.probe.host import Host

LSBLK_COLUMNS = "NAME,KNAME,PATH,TYPE,SIZE,ROTA,TRAN,MODEL,SERIAL,MOUNTPOINT,FSTYPE,UUID,PKNAME,PTTYPE"
COMMANDS = {
    "lsblk-J-b": ["lsblk", "-J", "-b", "-o", LSBLK_COLUMNS],
    "df-PT": ["df", "-P", "-T", "-l"],
}
BY_ID = "/dev/disk/by-id"
#: dlsetup's record of the md arrays it created (written by the storage role; the same path as
#: plugins/module_utils/dlsetup_storage.py RECORD_PATH, which tests/test_storage_verdict.py checks).
RECORD_PATH = "/etc/dlsetup/storage.json"
#: by-id name prefixes, most useful first: readable model+serial names, then world-wide names.
BY_ID_PREFERENCE = ("nvme-", "ata-", "scsi-", "virtio-", "usb-", "mmc-", "md-name-", "wwn-", "nvme-eui.", "md-uuid-")


def by_id_links(host: Host) -> Dict[str, str]:
    """Kernel name -> the most readable stable ``/dev/disk/by-id`` path that points to it."""
    candidates: Dict[str, List[str]] = {}
    for entry in host.listdir(BY_ID):
        target = host.readlink(posixpath.join(BY_ID, entry))
        if target:
            candidates.setdefault(posixpath.basename(target), []).append(entry)
    return {name: posixpath.join(BY_ID, min(entries, key=_by_id_rank)) for name, entries in candidates.items()}


def _by_id_rank(entry: str) -> Tuple[int, str]:
    # "nvme-eui." also starts with "nvme-": rank it by the longest matching prefix
    matches = [(len(p), i) for i, p in enumerate(BY_ID_PREFERENCE) if entry.startswith(p)]
    rank = max(matches)[1] if matches else len(BY_ID_PREFERENCE)
    return rank, entry


def read_storage(host: Host) -> StorageInfo:
    devices = lsblk.parse_lsblk_json(host.run("lsblk-J-b", COMMANDS["lsblk-J-b"]) or "")
    arrays = mdstat.parse_mdstat(host.read("/proc/mdstat") or "")
    members = mdstat.md_membership(arrays)
    links = by_id_links(host)
    devices = tuple(
        dataclasses.replace(
            dev,
            by_id=dev.by_id or links.get(dev.name),
            md_member_of=dev.md_member_of or members.get(dev.name),
        )
        for dev in devices
    )
    links_of_md = md_uuid_links(host)
    arrays = tuple(_with_uuid(md, links_of_md, devices) for md in arrays)
    return StorageInfo(devices=devices, arrays=arrays, mounts=read_mounts(host),
                       recorded_arrays=parse_record(host.read(RECORD_PATH) or ""))


def md_uuid(text: Any) -> Optional[str]:
    """An md UUID as 32 lower-case hex digits, from mdadm's ``a:b:c:d`` or blkid's ``8-4-4-4-12`` form."""
    if not isinstance(text, str) or not re.fullmatch(r"[0-9a-fA-F:.\-]+", text.strip() or "-"):
        return None
    digits = re.sub(r"[^0-9a-f]", "", text.strip().lower())
    return digits if len(digits) == 32 else None


def md_uuid_links(host: Host) -> Dict[str, str]:
    """md kernel name -> its array UUID, from udev's ``/dev/disk/by-id/md-uuid-*`` links."""
    found: Dict[str, str] = {}
    for entry in host.listdir(BY_ID):
        target = host.readlink(posixpath.join(BY_ID, entry)) if entry.startswith("md-uuid-") else None
        uuid = md_uuid(entry[len("md-uuid-"):]) if target else None
        if target and uuid:
            found[posixpath.basename(target)] = uuid
    return found


def _with_uuid(md: MdArray, links: Dict[str, str], devices: Tuple[Any, ...]) -> MdArray:
    """``md`` with its UUID: the udev link's, else the one UUID its members' RAID signatures carry."""
    uuid = links.get(md.name)
    if uuid is None:
        names = {m.device for m in md.members}
        carried = {md_uuid(d.uuid) for d in devices if d.name in names and d.fstype == "linux_raid_member"}
        uuid = carried.pop() if len(carried) == 1 else None
    return dataclasses.replace(md, uuid=uuid)


def parse_record(text: str) -> Tuple[RecordedArray, ...]:
    """dlsetup's record (JSON ``{"version": 1, "arrays": [{uuid, name, level, members, mountpoint,
    created}]}``); garbage gives no entry (nothing is then dlsetup's: the safe side), a bad entry is
    skipped. Mirrors ``parse_record`` of the role's module_utils, which the fast tests compare."""
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError:
        return ()
    arrays = data.get("arrays") if isinstance(data, dict) else None
    found: Dict[str, RecordedArray] = {}
    for entry in arrays if isinstance(arrays, list) else []:
        if not isinstance(entry, dict):
            continue
        uuid, members = md_uuid(entry.get("uuid")), entry.get("members")
        if uuid is None or not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            continue
        text_of = {k: entry.get(k) if isinstance(entry.get(k), str) else None
                   for k in ("name", "level", "mountpoint", "created")}
        found[uuid] = RecordedArray(uuid=uuid, members=tuple(members), **text_of)
    return tuple(found.values())


def read_mounts(host: Host) -> Tuple[Mount, ...]:
    """Real local filesystems with their size and free space (``df``), else without (``/proc/mounts``)."""
    df = sysp.parse_df(host.run("df-PT", COMMANDS["df-PT"]) or "")
    mounts = [
        Mount(mountpoint=mp, device=dev, fstype=fs, size_bytes=size, free_bytes=free)
        for dev, fs, mp, size, free in df
        if fs not in sysp.PSEUDO_FS
    ]
    # /proc/mounts as well: df skips what it cannot stat (a hung mount) and shows one device per mount point
    seen = {(m.device, m.mountpoint) for m in mounts}
    mounts += [
        Mount(mountpoint=mp, device=dev, fstype=fs)
        for dev, mp, fs in sysp.parse_proc_mounts(host.read("/proc/mounts") or "")
        if fs not in sysp.PSEUDO_FS and dev.startswith("/") and (dev, mp) not in seen
    ]
    return tuple(dict.fromkeys(mounts))
