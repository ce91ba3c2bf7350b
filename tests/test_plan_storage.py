"""The storage part of a plan: --storage / config, safe mode as a plan conflict, --destroy-data said loudly.

Hosts are the real H100 capture; where a test needs blank NVMe disks, the capture's storage is replaced by
the workstation disks of tests/test_storage.py (the capture has two virtio disks, both in use).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import H100_BUNDLE
from dlsetup.cli import cli
from dlsetup.errors import UsageError
from dlsetup.model import BlockDevice, StorageInfo
from dlsetup.plan import PlanConflict, load_request, make_plan
from dlsetup.probe import probe
from dlsetup.storage import ArrayRequest, StorageRequest
from test_storage import NVME, _workstation


@pytest.fixture(scope="module")
def h100():
    return probe(H100_BUNDLE)


def _with_disks(profile, *extra: BlockDevice):
    devices = _workstation().storage.devices + extra
    return dataclasses.replace(profile, storage=StorageInfo(devices=devices))


def test_storage_adds_the_role_after_common_with_the_layout(h100):
    request = load_request(None, storage=("/data:raid10:xfs",))
    plan = make_plan(_with_disks(h100), request)
    assert plan.roles == ("common", "storage", "frameworks")
    assert plan.variables["storage_arrays"] == [{
        "name": "data", "level": "raid10", "members": list(NVME), "filesystem": "xfs", "mountpoint": "/data",
        "mount_options": ["defaults", "noatime", "nofail"]}]
    assert plan.variables["storage_destroy_data"] is False
    (decision,) = [d for d in plan.decisions if d.topic == "storage"]
    assert (decision.choice, decision.rule) == ("/data: xfs on raid10 over 4 disk(s)", "rule:storage-unused-fast-disks")
    assert decision.reason == "the unused NVMe/SSD disks: " + ", ".join(n.rsplit("/", 1)[1] for n in NVME)
    assert plan.destroys == ()


def test_no_storage_asked_no_storage_role(h100):
    plan = make_plan(_with_disks(h100), load_request(None))
    assert "storage" not in plan.roles and "storage_arrays" not in plan.variables


def test_used_disks_refuse_the_plan_in_one_line_naming_each(h100):
    used = BlockDevice("nvme0n1p1", "part", "/dev/nvme0n1p1", parent="nvme0n1", fstype="xfs",
                       mountpoints=("/scratch",))
    request = load_request(None, storage=(f"/data:raid1::nvme0n1,{NVME[1]}", "/checkpoints:single::sda"))
    with pytest.raises(PlanConflict) as err:
        make_plan(_with_disks(h100, used), request)
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"storage: refusing the layout, these disks hold data: {NVME[0]}: has partitions nvme0n1p1; "
        f"{NVME[0]}: is mounted at /scratch (nvme0n1p1); /dev/disk/by-id/wwn-0x5000: has a gpt partition table; "
        "/dev/disk/by-id/wwn-0x5000: has partitions sda1; /dev/disk/by-id/wwn-0x5000: is mounted at / (sda1). "
        "Free them, name other disks, or pass --destroy-data to wipe them")


def test_destroy_data_plans_the_wipe_and_names_every_disk(h100):
    used = BlockDevice("nvme0n1p1", "part", "/dev/nvme0n1p1", parent="nvme0n1", fstype="xfs")
    request = load_request(None, storage=(f"/data:raid1::nvme0n1,{NVME[1]}",), destroy_data=True)
    plan = make_plan(_with_disks(h100, used), request)
    assert plan.destroys == (f"{NVME[0]}: has partitions nvme0n1p1",)
    assert plan.variables["storage_destroy_data"] is True
    assert [d.choice for d in plan.decisions if d.topic == "storage"] == ["/data: ext4 on raid1 over 2 disk(s)",
                                                                         "destroy data"]


def test_config_file_storage_section_and_cli_override(tmp_path):
    config = tmp_path / "dlsetup.yml"
    config.write_text("storage:\n  arrays:\n    - {mountpoint: /datasets, level: raid0, disks: [nvme0n1, nvme1n1]}\n"
                      "  destroy_data: true\n")
    assert load_request(config).storage == StorageRequest((ArrayRequest("/datasets", "raid0", "ext4",
                                                                         ("nvme0n1", "nvme1n1")),), True)
    # the command line replaces the file's layout, and its destroy_data with it
    assert load_request(config, storage=("/data",)).storage == StorageRequest((ArrayRequest("/data"),), False)
    config.write_text("storage: [{mountpoint: /ckpt}]\n")
    assert load_request(config).storage == StorageRequest((ArrayRequest("/ckpt"),), False)


@pytest.mark.parametrize(("args", "message"), [
    (["--destroy-data"], "--destroy-data applies to a storage layout: add --storage or a storage: section"),
    (["--storage", "/data:raid1::vda,vdb"], "storage: disk vda has no /dev/disk/by-id link; name it by a stable id"),
    (["--storage", "/data:raid7"], "storage: RAID level 'raid7' is unknown: use single, raid0, raid1, raid5, raid10"),
    (["--storage", "/data"], "storage: no unused fast disk for /data; name the disks to use"),
])
def test_cli_bad_storage_requests_are_one_line_usage_errors(fixtures_dir, args, message):
    result = subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--from-bundle", str(H100_BUNDLE), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert (result.stdout, result.stderr.splitlines()) == ("", [f"dlsetup: error: {message}"])


def test_config_storage_not_a_mapping(tmp_path):
    config = tmp_path / "dlsetup.yml"
    config.write_text("storage: /data\n")
    with pytest.raises(UsageError, match="^storage: expected a mapping with arrays and destroy_data, got '/data'$"):
        load_request(config)


def test_human_plan_says_destroy_data_per_disk(h100, monkeypatch):
    monkeypatch.setattr("dlsetup.probe.probe", lambda bundle=None: _with_disks(
        h100, BlockDevice("nvme0n1p1", "part", "/dev/nvme0n1p1", parent="nvme0n1", fstype="xfs")))
    args = ["plan", "--storage", "/data:raid1:xfs:nvme0n1,nvme1n1", "--destroy-data"]
    result = CliRunner().invoke(cli, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"DESTROY DATA: {NVME[0]}: has partitions nvme0n1p1 - wiped by --destroy-data" in result.output
    plan = json.loads(CliRunner().invoke(cli, [*args, "--json"]).output)
    assert plan["destroys"] == [f"{NVME[0]}: has partitions nvme0n1p1"] and "storage" in plan["roles"]


#: An md array someone else made (its md name even ends in ":data") over two NVMe disks, mounted at
#: /backup: /proc/mdstat is the real capture pymdstat10 (md126: raid0 over nvme0n1, nvme1n1); lsblk, df,
#: /proc/mounts and /dev/disk/by-id as on such a host.
FOREIGN_UUID = "a1b2c3d4:e5f60718:293a4b5c:6d7e8f90"
SAMSUNG = tuple(f"/dev/disk/by-id/nvme-Samsung_SSD_990_PRO_2TB_S7DNNJ0X00000{i}" for i in range(2))


def _member_json(i: int) -> dict:
    md = {"name": "md126", "kname": "md126", "path": "/dev/md126", "type": "raid0", "size": 1023947046912,
          "rota": False, "tran": None, "mountpoint": "/backup", "fstype": "ext4",
          "uuid": "5d3c1b5e-4a7f-4e0c-9d61-1f2a3b4c5d6e", "pkname": f"nvme{i}n1"}
    return {"name": f"nvme{i}n1", "kname": f"nvme{i}n1", "path": f"/dev/nvme{i}n1", "type": "disk",
            "size": 2000398934016, "rota": False, "tran": "nvme", "model": "Samsung SSD 990 PRO 2TB",
            "serial": f"S7DNNJ0X00000{i}", "mountpoint": None, "fstype": "linux_raid_member",
            "uuid": "a1b2c3d4-e5f6-0718-293a-4b5c6d7e8f90", "pkname": None, "children": [md]}


@pytest.fixture
def foreign_array(tmp_path):
    """A bundle: the H100 capture with the two NVMe disks of an admin-made md array mounted at /backup."""
    import shutil

    from conftest import PUBLIC

    bundle = tmp_path / "bundle"
    shutil.copytree(H100_BUNDLE, bundle, symlinks=True)
    lsblk = json.loads((bundle / "cmd" / "lsblk-J-b.out").read_text())
    lsblk["blockdevices"] += [_member_json(0), _member_json(1)]
    (bundle / "cmd" / "lsblk-J-b.out").write_text(json.dumps(lsblk))
    (bundle / "proc" / "mdstat").write_text((PUBLIC / "mdstat" / "pymdstat10_nvme_raid0_bitmap.txt").read_text())
    df = (bundle / "cmd" / "df-PT.out").read_text()
    (bundle / "cmd" / "df-PT.out").write_text(
        df + "/dev/md126              ext4    983349760    61452 933268816       1% /backup\n")
    by_id = bundle / "dev" / "disk" / "by-id"
    by_id.mkdir(parents=True)
    for i, link in enumerate(SAMSUNG):
        (by_id / link.rsplit("/", 1)[1]).symlink_to(f"../../nvme{i}n1")
    (by_id / "md-name-backup01:data").symlink_to("../../md126")
    (by_id / f"md-uuid-{FOREIGN_UUID}").symlink_to("../../md126")
    return bundle


def _plan(bundle, *args):
    return subprocess.run([sys.executable, "-m", "dlsetup", "plan", "--from-bundle", str(bundle), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_mounted_foreign_array_refuses_the_plan(foreign_array):
    """Exit 2 without --destroy-data, whatever the array's md name (it ends in ":data" here)."""
    result = _plan(foreign_array, "--storage", "/data:raid1:ext4:nvme0n1,nvme1n1")
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert result.stdout == ""
    for disk in SAMSUNG:
        assert f"{disk}: is a member of md array md126 (not made by dlsetup)" in line
        assert f"{disk}: is mounted at /backup (md126)" in line
    assert line.endswith("Free them, name other disks, or pass --destroy-data to wipe them")


def test_destroy_data_lists_the_disks_the_array_and_its_mount_and_hands_them_to_the_role(foreign_array):
    result = _plan(foreign_array, "--storage", "/data:raid1:ext4:nvme0n1,nvme1n1", "--destroy-data", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["destroys"] == [
        f"{SAMSUNG[0]}: carries an md RAID signature",
        f"{SAMSUNG[0]}: is a member of md array md126 (not made by dlsetup)",
        f"{SAMSUNG[0]}: is mounted at /backup (md126)",
        f"{SAMSUNG[1]}: carries an md RAID signature",
        f"{SAMSUNG[1]}: is a member of md array md126 (not made by dlsetup)",
        f"{SAMSUNG[1]}: is mounted at /backup (md126)",
        f"md array md126 (UUID {FOREIGN_UUID}, not made by dlsetup, mounted at /backup): stopped "
        "and erased",
    ]
    variables = plan["variables"]
    assert (variables["storage_destroy_data"], variables["storage_destroy_disks"]) == (True, list(SAMSUNG))
    assert variables["storage_destroy_arrays"] == [FOREIGN_UUID.replace(":", "")]
    assert variables["storage_destroy_mounts"] == ["/backup"]


def test_the_record_not_the_name_makes_an_array_dlsetups(foreign_array):
    """Recorded by dlsetup (same UUID, level, members), the array is kept: no refusal, nothing destroyed;
    mounted elsewhere than asked, it is still refused."""
    record = foreign_array / "etc" / "dlsetup" / "storage.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"version": 1, "arrays": [
        {"uuid": FOREIGN_UUID, "name": "backup", "level": "raid0", "members": list(SAMSUNG),
         "mountpoint": "/backup", "created": "2026-01-01T00:00:00Z"}]}))
    kept = _plan(foreign_array, "--storage", "/backup:raid0:ext4:nvme0n1,nvme1n1", "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["destroys"] == []
    elsewhere = _plan(foreign_array, "--storage", "/data:raid0:ext4:nvme0n1,nvme1n1")
    assert elsewhere.returncode == 2
    assert f"{SAMSUNG[0]}: is mounted at /backup (md126)" in elsewhere.stderr
    assert "member of md array" not in elsewhere.stderr


def test_the_array_uuid_comes_from_its_members_without_the_udev_link(foreign_array):
    """No md-uuid link (udev without mdadm's rules): the UUID the members' RAID signatures carry."""
    (foreign_array / "dev" / "disk" / "by-id" / f"md-uuid-{FOREIGN_UUID}").unlink()
    result = _plan(foreign_array, "--storage", "/data:raid1:ext4:nvme0n1,nvme1n1", "--destroy-data", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["variables"]["storage_destroy_arrays"] == [FOREIGN_UUID.replace(":", "")]
