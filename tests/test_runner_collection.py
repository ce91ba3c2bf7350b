"""dlsetup's own runs find the roles, modules and filters by their fully qualified names in this installation's
tree: dlsetup.runner.link_collection makes it the collection dlsetup.workstation next to the run's playbook,
which Ansible searches before any installed collection or ANSIBLE_COLLECTIONS_PATH."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from dlsetup.runner import RunOptions, ansible_dir, link_collection, run_playbooks

FILTER = "Normalise a fingerprint with the collection's filter"
MODULE = "Inspect a missing disk with the collection's storage module"
MISSING = "/dev/disk/by-id/dlsetup-test-no-such-disk"


def test_link_collection_points_at_this_tree(tmp_path: Path) -> None:
    path = link_collection(tmp_path / "collections")
    link = path / "ansible_collections" / "dlsetup" / "workstation"
    assert link.is_symlink() and link.resolve() == ansible_dir().resolve()
    assert (link / "plugins" / "modules" / "dlsetup_storage_disks.py").is_file()
    assert link_collection(tmp_path / "collections") == path  # again: kept as it is
    link.unlink()
    link.symlink_to(tmp_path)  # left by another installation of dlsetup
    link_collection(tmp_path / "collections")
    assert link.resolve() == ansible_dir().resolve()


def test_a_run_uses_this_trees_collection_over_an_installed_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # an older dlsetup.workstation, without plugins, installed where the user's settings look first
    installed = tmp_path / "installed"
    (installed / "ansible_collections" / "dlsetup" / "workstation" / "roles").mkdir(parents=True)
    monkeypatch.setenv("ANSIBLE_COLLECTIONS_PATH", str(installed))
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{"name": "The collection by its fully qualified names", "hosts": "all",
                                     "gather_facts": False, "tasks": [
        {"name": FILTER, "ansible.builtin.set_fact": {
            "pinned": "{{ '0x3bf8 63cc' | dlsetup.workstation.signed_apt_repo_fingerprint }}"}},
        {"name": MODULE, "dlsetup.workstation.dlsetup_storage_disks": {"arrays": [
            {"name": "data", "level": "single", "members": [MISSING], "filesystem": "ext4",
             "mountpoint": "/data"}]}, "failed_when": False},
    ]}]))
    host_vars = {"here": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    # check mode: the module only reads (a missing disk, so it reads nothing of this machine's disks)
    run = run_playbooks([play], [], host_vars=host_vars, capture=[FILTER, MODULE], options=RunOptions(check=True))
    host = run.host("here")
    assert run.error is None and host.failed == 0, host.failure
    assert host.captured[FILTER]["ansible_facts"]["pinned"] == "3BF863CC"
    inspected = host.captured[MODULE]
    assert inspected["msg"].startswith("storage: refusing the whole layout, nothing was written.")
    assert f"{MISSING}: does not exist" in inspected["msg"]
