"""The storage role's disk check module on real loop devices of this machine (root; no md on this kernel).

The module runs as Ansible runs it: a Python file given its arguments as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "plugins" / "modules" / "dlsetup_storage_disks.py"

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(os.geteuid() != 0, reason="loop devices need root")]


def _sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def loops(tmp_path: Path) -> Iterator[list[str]]:
    """Two 32 MiB loop devices, detached afterwards."""
    devices = []
    for i in range(2):
        image = tmp_path / f"disk{i}.img"
        image.write_bytes(b"\0" * (32 << 20))
        devices.append(_sh("losetup", "--find", "--show", str(image)))
    yield devices
    for device in devices:
        subprocess.run(["umount", device], capture_output=True)
        subprocess.run(["losetup", "-d", device], check=True)


UTILS_NAME = "ansible_collections.dlsetup.workstation.plugins.module_utils.dlsetup_storage"
BOOT = ("import runpy, sys, importlib.util as u; "
        f"sys.argv.pop(0); spec = u.spec_from_file_location('{UTILS_NAME}', sys.argv.pop(0)); "
        "m = u.module_from_spec(spec); spec.loader.exec_module(m); "
        f"sys.modules['{UTILS_NAME}'] = m; "
        "runpy.run_path(sys.argv[0], run_name='__main__')")
UTILS = REPO / "plugins" / "module_utils" / "dlsetup_storage.py"


def _module(tmp_path: Path, members: list[str], state: str = "inspect", **extra: object) -> dict:
    """The module as Ansible runs it, its module_utils importable as Ansible provides it."""
    args = tmp_path / "args.json"
    request = {"name": "data", "level": "raid1", "members": members, "mountpoint": "/data"}
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"arrays": [request], "state": state,
                                                         "record": str(tmp_path / "storage.json"), **extra}}))
    run = subprocess.run([sys.executable, "-c", BOOT, str(UTILS), str(MODULE), str(args)],
                         capture_output=True, text=True)
    return json.loads(run.stdout)


def test_blank_disks_pass_and_no_array_exists(loops: list[str], tmp_path: Path) -> None:
    result = _module(tmp_path, loops)
    assert not result.get("failed"), result
    assert result["refusals"] == [] and result["changed"] is False
    assert result["arrays"] == [{"state": "absent", "uuid": None, "device": None, "stale": [], "why": None}]
    assert [d["device"] for d in result["disks"][0]] == loops


def test_filesystem_mount_and_swap_signatures_are_named(loops: list[str], tmp_path: Path) -> None:
    _sh("mkfs.ext4", "-q", loops[0])
    _sh("mkswap", loops[1])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    _sh("mount", loops[0], str(mountpoint))
    (mountpoint / "keep").write_text("planted")
    result = _module(tmp_path, loops)
    name = Path(loops[0]).name
    assert result["failed"] is True
    assert result["refusals"] == [f"{loops[0]}: holds a filesystem (ext4), is mounted at {mountpoint} ({name})",
                                  f"{loops[1]}: is swap space"]
    assert (mountpoint / "keep").read_text() == "planted"


def test_missing_disk_is_refused(tmp_path: Path) -> None:
    result = _module(tmp_path, ["/dev/disk/by-id/no-such-disk"])
    assert result["refusals"] == ["/dev/disk/by-id/no-such-disk: does not exist"]


def test_wiped_unmounts_and_erases_only_what_is_listed(loops: list[str], tmp_path: Path) -> None:
    _sh("mkfs.ext4", "-q", loops[0])
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    _sh("mount", loops[0], str(mountpoint))
    unlisted = _module(tmp_path, loops, state="wiped", destroy_data=True, destroy_disks=[loops[0]])
    assert unlisted["failed"] is True and "mount point" in unlisted["msg"]
    assert _sh("wipefs", "--no-act", loops[0]) != ""
    result = _module(tmp_path, loops, state="wiped", destroy_data=True, destroy_disks=[loops[0]],
                     destroy_mounts=[str(mountpoint)])
    assert not result.get("failed"), result
    assert result["changed"] is True and result["wipe"] == [loops[0]]
    assert _sh("wipefs", "--no-act", loops[0]) == ""
    assert str(mountpoint) not in Path("/proc/self/mounts").read_text()
