"""playbooks/reboot.yml tells the machine running Ansible by its kernel's boot id, not /etc/machine-id.

The target is this machine's own root reached through the chroot connection (not the local one, which
is left alone before anything is read), so the play reads real identity files; the controller's side is
overridden with ``-e`` to stand for another machine. ``dlsetup_reboot`` stays false: nothing reboots,
the test reads the decision the play made.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import pytest

from dlsetup.runner import RunOptions, ansible_dir, run_playbooks

DECIDE = "Tell whether the host is the machine running Ansible"
LEAVE = "Leave the machine running Ansible alone"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not BOOT_ID.is_file(),
                                reason="the chroot connection needs root; the boot id needs Linux")


def _decision(tmp_path: Path, controller_boot_id: Optional[str]) -> tuple:
    marker = tmp_path / "reboot-required"
    marker.write_text("storage\n")
    extra = () if controller_boot_id is None else (f"__reboot_controller_boot_id={controller_boot_id}",)
    result = run_playbooks([ansible_dir() / "playbooks" / "reboot.yml"], [], capture=[DECIDE, LEAVE],
                           host_vars={"/": {"ansible_connection": "community.general.chroot",
                                            "ansible_python_interpreter": sys.executable,
                                            "dlsetup_reboot": False,
                                            "dlsetup_reboot_required_file": str(marker)}},
                           options=RunOptions(check=True, extra_vars=extra))
    (host,) = result.hosts
    assert host.failed == 0, host.failure
    return host.captured[DECIDE]["ansible_facts"]["__reboot_is_controller"], LEAVE in host.captured


def test_same_kernel_is_the_controller(tmp_path: Path) -> None:
    """A chroot of this machine runs on its kernel: rebooting it reboots the controller."""
    assert _decision(tmp_path, None) == (True, True)


def test_other_kernel_is_not_the_controller(tmp_path: Path) -> None:
    """The same /etc/machine-id (a cloned image: here literally the same file) on another kernel is
    another machine."""
    assert _decision(tmp_path, "0bd9a5f4-5d8e-4a5b-9f0e-000000000001") == (False, False)


def test_unknown_boot_id_counts_as_the_controller(tmp_path: Path) -> None:
    assert _decision(tmp_path, "''") == (True, True)
