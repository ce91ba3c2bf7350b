"""Reader for block devices, md arrays and mounted filesystems."""

from __future__ import annotations

import dataclasses
import posixpath
from typing import Dict, List, Tuple

from dlsetup.model import Mount, StorageInfo
from dlsetup.parsers import lsblk, mdstat
from dlsetup.parsers import system as sysp
from dlsetup.probe.host import Host

LSBLK_COLUMNS = "NAME,KNAME,PATH,TYPE,SIZE,ROTA,TRAN,MODEL,SERIAL,MOUNTPOINT,FSTYPE,UUID,PKNAME,PTTYPE"
COMMANDS = {
    "lsblk-J-b": ["lsblk", "-J", "-b", "-o", LSBLK_COLUMNS],
    "df-PT": ["df", "-P", "-T", "-l"],
}
BY_ID = "/dev/disk/by-id"
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
    return StorageInfo(devices=devices, arrays=arrays, mounts=read_mounts(host))


def read_mounts(host: Host) -> Tuple[Mount, ...]:
    """Real local filesystems with their size and free space (``df``), else without (``/proc/mounts``)."""
    df = sysp.parse_df(host.run("df-PT", COMMANDS["df-PT"]) or "")
    if df:
        return tuple(
            Mount(mountpoint=mp, device=dev, fstype=fs, size_bytes=size, free_bytes=free)
            for dev, fs, mp, size, free in df
            if fs not in sysp.PSEUDO_FS
        )
    return tuple(
        Mount(mountpoint=mp, device=dev, fstype=fs)
        for dev, mp, fs in sysp.parse_proc_mounts(host.read("/proc/mounts") or "")
        if fs not in sysp.PSEUDO_FS and dev.startswith("/")
    )
