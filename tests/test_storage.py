"""Storage layout proposal and safety analysis, on profiles from the model and from real lsblk captures."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import H100_BUNDLE, PUBLIC
from dlsetup.errors import UsageError
from dlsetup.model import BlockDevice, HostProfile, MdArray, MdMember, Mount, RecordedArray, StorageInfo
from dlsetup.parsers.lsblk import parse_lsblk_table
from dlsetup.probe import probe
from dlsetup.storage import (Array, ArrayRequest, Refusal, StorageLayout, StorageRequest, parse_array_option,
                             propose_layout, refusals, storage_request)

NVME = tuple(f"/dev/disk/by-id/nvme-eui.000{i}" for i in range(4))


def _workstation(*extra: BlockDevice, arrays: tuple = ()) -> HostProfile:
    """A root SATA SSD (partitioned, mounted), an HDD and four blank NVMe disks."""
    devices = (
        BlockDevice("sda", "disk", "/dev/sda", "/dev/disk/by-id/wwn-0x5000", media="ssd", partition_table="gpt"),
        BlockDevice("sda1", "part", "/dev/sda1", parent="sda", fstype="ext4", mountpoints=("/",)),
        BlockDevice("sdb", "disk", "/dev/sdb", "/dev/disk/by-id/wwn-0x5001", media="hdd"),
        *(BlockDevice(f"nvme{i}n1", "disk", f"/dev/nvme{i}n1", NVME[i], media="nvme") for i in range(4)),
        *extra,
    )
    return HostProfile(storage=StorageInfo(devices=devices, arrays=arrays))


def _with_by_id(devices: tuple) -> tuple:
    """What the probe adds from /dev/disk/by-id, which a bare lsblk capture lacks."""
    return tuple(dataclasses.replace(d, by_id=f"/dev/disk/by-id/test-{d.name}") if d.type == "disk" else d
                 for d in devices)


def test_unused_fast_disks_become_raid10():
    layout = propose_layout(_workstation(), StorageRequest())
    assert layout.arrays == (Array("data", "raid10", NVME, "ext4", "/data", ("defaults", "noatime", "nofail")),)
    assert refusals(_workstation(), layout) == []
    assert layout.variables() == {
        "storage_arrays": [{"name": "data", "level": "raid10", "members": list(NVME), "filesystem": "ext4",
                            "mountpoint": "/data", "mount_options": ["defaults", "noatime", "nofail"]}],
        "storage_destroy_data": False, "storage_destroy_disks": [], "storage_destroy_arrays": [],
        "storage_destroy_mounts": [],
    }


def test_two_mountpoints_share_the_free_disks():
    request = StorageRequest((ArrayRequest("/data", filesystem="xfs"), ArrayRequest("/checkpoints", "raid1")))
    data, checkpoints = propose_layout(_workstation(), request).arrays
    assert (data.name, data.level, data.members, data.filesystem) == ("data", "raid1", NVME[:2], "xfs")
    assert (checkpoints.name, checkpoints.level, checkpoints.members) == ("checkpoints", "raid1", NVME[2:])


@pytest.mark.parametrize(("count", "level"), [(1, "single"), (2, "raid1"), (3, "raid5"), (4, "raid10")])
def test_default_level_follows_the_disk_count(count, level):
    request = StorageRequest((ArrayRequest(disks=NVME[:count]),))
    assert propose_layout(_workstation(), request).arrays[0].level == level


@pytest.mark.parametrize(("level", "count", "message"), [
    ("raid10", 3, "storage: raid10 for /data needs at least 4 disks, got 3"),
    ("raid5", 2, "storage: raid5 for /data needs at least 3 disks, got 2"),
    ("single", 2, "storage: single for /data needs exactly 1 disk, got 2"),
])
def test_level_needs_enough_disks(level, count, message):
    with pytest.raises(UsageError) as err:
        propose_layout(_workstation(), StorageRequest((ArrayRequest(level=level, disks=NVME[:count]),)))
    assert str(err.value) == message


def test_disks_named_by_kernel_name_resolve_to_by_id():
    request = StorageRequest((ArrayRequest(level="raid0", disks=("nvme1n1", "/dev/nvme3n1")),))
    assert propose_layout(_workstation(), request).arrays[0].members == (NVME[1], NVME[3])


@pytest.mark.parametrize(("disks", "message"), [
    (("nvme9n1",), "storage: disk 'nvme9n1' is not a disk of this host"),
    (("nvme0n1", NVME[0]), f"storage: disk {NVME[0]} is named more than once"),
])
def test_bad_disks(disks, message):
    with pytest.raises(UsageError) as err:
        propose_layout(_workstation(), StorageRequest((ArrayRequest(level="raid1", disks=disks),)))
    assert str(err.value) == message


def test_every_kind_of_used_disk_is_refused_with_its_reason():
    used = _workstation(
        BlockDevice("nvme0n1p1", "part", parent="nvme0n1", fstype="xfs"),
        BlockDevice("md0", "raid1", parent="nvme2n1", mountpoints=("/srv",)),
        arrays=(MdArray("md0", "active", "raid1", (MdMember("nvme2n1", 0), MdMember("sdc", 1))),),
    )
    devices = {d.name: d for d in used.storage.devices}
    devices["nvme1n1"] = dataclasses.replace(devices["nvme1n1"], fstype="LVM2_member")
    devices["nvme3n1"] = dataclasses.replace(devices["nvme3n1"], fstype="swap", mountpoints=("[SWAP]",))
    used = dataclasses.replace(used, storage=StorageInfo(devices=tuple(devices.values()), arrays=used.storage.arrays))
    layout = StorageLayout((Array("data", "raid10", NVME, "ext4", "/data"),))
    assert refusals(used, layout) == [
        Refusal(NVME[0], "has partitions nvme0n1p1"),
        Refusal(NVME[1], "is an LVM physical volume"),
        Refusal(NVME[2], "is a member of md array md0 (not made by dlsetup)"),
        Refusal(NVME[2], "is mounted at /srv (md0)"),
        Refusal(NVME[3], "is swap space"),
        Refusal(NVME[3], "is in use as swap"),
    ]
    with pytest.raises(UsageError, match="no unused fast disk for /data"):
        propose_layout(used, StorageRequest())


def test_used_disks_are_not_proposed():
    used = _workstation(BlockDevice("nvme0n1p1", "part", parent="nvme0n1"))
    devices = tuple(dataclasses.replace(d, fstype="ext4") if d.name == "nvme1n1" else d for d in used.storage.devices)
    used = dataclasses.replace(used, storage=StorageInfo(devices=devices))
    assert propose_layout(used, StorageRequest()).arrays[0].members == (NVME[2], NVME[3])


def _raid10(recorded: tuple = (), **md: object) -> HostProfile:
    """The four NVMe disks as one raid10 md127 mounted at /data, with dlsetup's record ``recorded``."""
    members = tuple(MdMember(f"nvme{i}n1", i) for i in range(4))
    dev = BlockDevice("md127", "raid10", "/dev/md127", parent="nvme0n1", fstype="ext4", mountpoints=("/data",))
    array = MdArray("md127", "active", "raid10", members, uuid=UUID, **md)  # type: ignore[arg-type]
    profile = _workstation(dev, arrays=(array,))
    return dataclasses.replace(profile, storage=dataclasses.replace(profile.storage, recorded_arrays=recorded))


UUID = "0123456789abcdef0123456789abcdef"
OURS = RecordedArray(UUID, "data", "raid10", NVME, "/data", "2026-01-01T00:00:00Z")
RAID10 = StorageLayout((Array("data", "raid10", NVME, "ext4", "/data"),))


def test_the_array_dlsetup_recorded_is_kept_any_other_is_refused():
    assert refusals(_raid10((OURS,)), RAID10) == []
    # the same array without dlsetup's record: an array someone else made, whatever its name
    assert refusals(_raid10(), RAID10) == [
        Refusal(NVME[i], reason) for i in range(4)
        for reason in ("is a member of md array md127 (not made by dlsetup)", "is mounted at /data (md127)")]
    partial = StorageLayout((Array("data", "raid1", NVME[:2], "ext4", "/data"),))
    assert refusals(_raid10((OURS,)), partial) == [
        Refusal(NVME[i], reason) for i in range(2)
        for reason in ("is a member of md array md127 (made by dlsetup as raid10 over 4 disk(s), not as asked)",
                       "is mounted at /data (md127)")]


@pytest.mark.parametrize(("recorded", "md", "layout", "reason"), [
    ((dataclasses.replace(OURS, uuid="f" * 32),), {}, RAID10, "not made by dlsetup"),
    ((dataclasses.replace(OURS, level="raid0"),), {}, RAID10, "made by dlsetup as raid0 over 4 disk(s), not as asked"),
    ((dataclasses.replace(OURS, members=NVME[::-1][:3] + ("/dev/disk/by-id/other",)),), {}, RAID10,
     "made by dlsetup as raid10 over 4 disk(s), not as asked"),
    ((OURS,), {"degraded": True}, RAID10,
     "made by dlsetup, degraded: repair it (mdadm --add) or pass --destroy-data"),
])
def test_an_array_not_exactly_as_recorded_is_a_reason(recorded, md, layout, reason):
    found = refusals(_raid10(recorded, **md), layout)
    assert Refusal(NVME[0], f"is a member of md array md127 ({reason})") in found
    assert Refusal(NVME[0], "is mounted at /data (md127)") in found


def test_reusing_the_array_dlsetup_made_still_checks_everything_else():
    """Only what the array itself explains is left out: a partition, a mount elsewhere, swap still count."""
    profile = _raid10((OURS,))
    devices = tuple(dataclasses.replace(d, mountpoints=("/srv",)) if d.name == "md127" else
                    dataclasses.replace(d, partition_table="gpt") if d.name == "nvme1n1" else d
                    for d in profile.storage.devices)
    profile = dataclasses.replace(profile, storage=dataclasses.replace(profile.storage, devices=devices))
    found = refusals(profile, RAID10)
    assert Refusal(NVME[1], "has a gpt partition table") in found
    assert Refusal(NVME[0], "is mounted at /srv (md127)") in found
    assert not [r for r in found if "member of md array" in r.reason]


def test_a_mount_seen_only_by_df_or_proc_mounts_is_a_reason():
    """lsblk can miss a mount (stale udev data, another mount namespace); df and /proc/mounts count."""
    profile = _workstation()
    profile = dataclasses.replace(profile, storage=dataclasses.replace(
        profile.storage, mounts=(Mount("/scratch", "/dev/nvme2n1", "xfs"),)))
    layout = StorageLayout((Array("data", "raid1", NVME[2:], "ext4", "/data"),))
    assert refusals(profile, layout) == [Refusal(NVME[2], "is mounted at /scratch (nvme2n1)")]
    assert NVME[2] not in propose_layout(profile, StorageRequest()).arrays[0].members


def test_real_lsblk_capture_partitioned_disks_are_refused_and_none_proposed():
    text = (PUBLIC / "lsblk" / "lsblk_basic_lvm-on-loop_sata_nvme.txt").read_text()
    profile = HostProfile(storage=StorageInfo(devices=_with_by_id(parse_lsblk_table(text))))
    with pytest.raises(UsageError, match=r"^storage: no unused fast disk for /data; name the disks to use$"):
        propose_layout(profile, StorageRequest())
    layout = propose_layout(profile, StorageRequest((ArrayRequest(level="raid1", disks=("nvme0n1", "sdb")),)))
    assert refusals(profile, layout) == [
        Refusal("/dev/disk/by-id/test-nvme0n1", "has partitions nvme0n1p1, nvme0n1p2, nvme0n1p3"),
        Refusal("/dev/disk/by-id/test-nvme0n1", "is mounted at /home (nvme0n1p2)"),
        Refusal("/dev/disk/by-id/test-nvme0n1", "is mounted at /home/test (nvme0n1p3)"),
        Refusal("/dev/disk/by-id/test-sdb", "has partitions sdb1"),
        Refusal("/dev/disk/by-id/test-sdb", "is mounted at /home/archive (sdb1)"),
    ]


def test_h100_bundle_disks_have_no_by_id_and_the_root_disk_is_refused():
    profile = probe(H100_BUNDLE)
    with pytest.raises(UsageError, match=r"^storage: disk vdb has no /dev/disk/by-id link; name it by a stable id$"):
        propose_layout(profile, StorageRequest((ArrayRequest(disks=("vdb",)),)))
    devices = _with_by_id(profile.storage.devices)
    profile = dataclasses.replace(profile, storage=StorageInfo(devices=devices, mounts=(Mount("/", "/dev/vda"),)))
    layout = propose_layout(profile, StorageRequest((ArrayRequest(level="raid1", disks=("vda", "vdb")),)))
    assert refusals(profile, layout) == [Refusal("/dev/disk/by-id/test-vda", "is mounted at / (vda)"),
                                         Refusal("/dev/disk/by-id/test-vdb", "is mounted at /usr/local/nvidia (vdb)")]


def test_destroy_data_reaches_the_role():
    layout = propose_layout(_workstation(), StorageRequest(destroy_data=True))
    assert layout.variables()["storage_destroy_data"] is True
    assert propose_layout(_workstation(), StorageRequest()).variables()["storage_destroy_data"] is False


def test_option_and_config_forms():
    assert parse_array_option("/checkpoints:raid1:xfs:nvme0n1,nvme1n1") == ArrayRequest(
        "/checkpoints", "raid1", "xfs", ("nvme0n1", "nvme1n1"))
    assert parse_array_option("/data/") == ArrayRequest("/data", None, "ext4", ())
    assert storage_request({"arrays": [{"mountpoint": "/scratch", "level": "raid0"}], "destroy_data": True}) == \
        StorageRequest((ArrayRequest("/scratch", "raid0"),), True)


@pytest.mark.parametrize(("text", "message"), [
    ("/data:raid6", "storage: RAID level 'raid6' is unknown: use single, raid0, raid1, raid5, raid10"),
    ("/data:raid1:btrfs", "storage: filesystem 'btrfs' is not supported: use ext4, xfs"),
    ("data", "storage: mount point 'data' must be an absolute path other than /"),
    ("/", "storage: mount point '/' must be an absolute path other than /"),
])
def test_bad_options(text, message):
    with pytest.raises(UsageError) as err:
        parse_array_option(text)
    assert str(err.value) == message


@pytest.mark.parametrize(("data", "message"), [
    ({"arrays": []}, "storage: arrays must be a non-empty list of mappings"),
    ({"destroy_data": "yes"}, "storage: destroy_data must be true or false, got 'yes'"),
    ({"arrays": [{"mount": "/data"}]}, "storage: unknown key 'mount' (use mountpoint, level, filesystem, disks)"),
    ({"arrays": [{"disks": "nvme0n1"}]}, "storage: disks must be a list of disk names, got 'nvme0n1'"),
])
def test_bad_config(data, message):
    with pytest.raises(UsageError) as err:
        storage_request(data)
    assert str(err.value) == message
