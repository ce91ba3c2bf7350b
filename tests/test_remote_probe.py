"""The remote probe: a zipapp run with the target's own python3, giving the local probe's profile."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from dlsetup.inventory import Inventory
from dlsetup.model import HostProfile
from dlsetup.probe import Host, probe, probe_host
from dlsetup.probe.host import BundleRunner
from dlsetup.remote import build_zipapp, probe_hosts
from lab.fixtures import lab_root  # noqa: F401 - pytest fixture
from lab import rootfs

SYSTEM_PYTHON = "/usr/bin/python3"


def test_zipapp_is_built_once(tmp_path: Path) -> None:
    first = build_zipapp(tmp_path)
    assert build_zipapp(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    names = zipfile.ZipFile(first).namelist()
    assert {"__main__.py", "pynvml.py", "dlsetup/model.py", "dlsetup/probe/host.py",
            "dlsetup/parsers/nvidia.py"} <= set(names)
    assert not any(name.startswith(("dlsetup/commands", "dlsetup/plan", "dlsetup/runner")) for name in names)


def test_zipapp_runs_on_the_bare_system_python(tmp_path: Path) -> None:
    """-I: no site-packages, no user paths - only what a bare host has."""
    out = subprocess.run([SYSTEM_PYTHON, "-I", str(build_zipapp(tmp_path))], capture_output=True, text=True,
                         check=True).stdout
    data = json.loads(out)
    profile = HostProfile.from_dict(data["profile"])
    local = probe()
    assert data["euid"] == 0
    assert profile.os == local.os
    assert (profile.hostname, profile.cpu, profile.gpus) == (local.hostname, local.cpu, local.gpus)
    assert profile.memory.total_bytes == local.memory.total_bytes


def test_local_connection_gives_the_local_profile(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(f"all:\n  hosts:\n    here:\n      ansible_connection: local\n"
                         f"      ansible_python_interpreter: {SYSTEM_PYTHON}\n")
    remote = probe_hosts(Inventory(sources=(str(inventory),), hosts=("here",)))
    local = probe()
    here = remote["here"]
    assert here.root is True and here.profile.source == "remote:here"
    for field in ("hostname", "os", "cpu", "gpus", "gpu_links"):
        assert getattr(here.profile, field) == getattr(local, field), field
    assert here.profile.memory.total_bytes == local.memory.total_bytes


@pytest.mark.lab
def test_chroot_target_matches_probe_of_its_root(lab_root: Path, tmp_path: Path) -> None:
    root = rootfs.fresh_copy(tmp_path / "target")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"{root} ansible_connection=community.general.chroot "
                         f"ansible_python_interpreter={SYSTEM_PYTHON}\n")
    try:
        remote = probe_hosts(Inventory(sources=(str(inventory),), hosts=(str(root),)))[str(root)]
        # the same readers over the same files, read from outside the chroot (no commands there)
        direct = probe_host(Host(root, BundleRunner(root), "direct"), enrich=False)
    finally:
        rootfs.remove_copy(root)
    assert remote.root is True
    assert remote.profile.os.id == "debian" and remote.profile.os.version_id == "12"
    for field in ("hostname", "os", "cpu", "gpus", "gpu_links"):
        assert getattr(remote.profile, field) == getattr(direct, field), field
