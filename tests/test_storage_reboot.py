"""playbooks/reboot.yml never reboots the machine running Ansible, even with --reboot and the marker set.

Runs in check mode as a second guard: had the play reached ansible.builtin.reboot, check mode would
report it as a changed task instead of rebooting this machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlsetup.provisioning import REBOOT_TASK
from dlsetup.runner import RunOptions, ansible_dir, run_playbooks

LEAVE = "Leave the machine running Ansible alone"
REBOOT = "Reboot and wait for the host"


def test_localhost_is_never_rebooted(tmp_path: Path) -> None:
    marker = tmp_path / "reboot-required"
    marker.write_text("storage\n")
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    playbooks = [ansible_dir() / "playbooks" / name for name in ("reboot.yml", "reboot_status.yml")]
    result = run_playbooks(playbooks, [str(inventory)], hosts=["localhost"], capture=[LEAVE, REBOOT],
                           host_vars={"localhost": {"dlsetup_reboot": True,
                                                    "dlsetup_reboot_required_file": str(marker)}},
                           options=RunOptions(check=True), reboot_task=REBOOT_TASK)
    (host,) = result.hosts
    assert (host.status, host.changed, host.failed, host.reboot_required) == ("ok", 0, 0, True)
    assert REBOOT not in host.captured
    assert host.captured[LEAVE]["msg"].startswith("localhost runs dlsetup itself: not rebooted")
    assert marker.read_text() == "storage\n"
