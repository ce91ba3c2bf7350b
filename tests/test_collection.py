"""The roles ship as the Ansible collection dlsetup.workstation (galaxy.yml): it builds, holds every role,
playbook and plugin and nothing else, carries dlsetup's version, and once installed a play that names roles,
the storage module and (inside signed_apt_repo) the key filters by their fully qualified names converges a
chroot of the lab from the signed stand-in mirror, and a second run changes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import dlsetup
from lab import rootfs
from lab.fixtures import ServedMirror, lab_mirror, lab_root  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
PLUGINS = sorted(str(p.relative_to(REPO)) for p in (REPO / "plugins").glob("*/*.py"))
_RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("collection")
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out), str(REPO)],
                   check=True, capture_output=True, text=True)
    (tarball,) = out.glob("dlsetup-workstation-*.tar.gz")
    return tarball


def test_the_collection_holds_the_roles_and_playbooks_and_nothing_else(collection: Path) -> None:
    with tarfile.open(collection) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"MANIFEST.json", "FILES.json", "README.md", "meta", "roles", "playbooks", "plugins"}
    for role in ROLES:
        assert f"roles/{role}/tasks/main.yml" in names and f"roles/{role}/meta/argument_specs.yml" in names
    # the storage module, its module_utils and signed_apt_repo's filters, which the roles call by FQCN
    assert {"plugins/modules/dlsetup_storage_disks.py", "plugins/module_utils/dlsetup_storage.py",
            "plugins/filter/signed_apt_repo_keys.py"} <= set(PLUGINS)
    assert set(PLUGINS) <= set(names)
    assert not [n for n in names if n.startswith("roles/") and n.endswith(".py") and "/files/" not in n]
    assert not [n for n in names if "/molecule" in n or "__pycache__" in n]
    assert "playbooks/site.yml" in names
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("dlsetup", "workstation")


def test_one_version_everywhere() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["version"] == dlsetup.__version__
    project = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in project and 'path = "dlsetup/__init__.py"' in project


def _play(mirror_url: str, fingerprint: str) -> list:
    """Roles, a module and, inside signed_apt_repo, filters of the collection, each by its fully qualified name."""
    array = {"name": "data", "level": "raid1", "members": ["/dev/disk/by-id/dlsetup-test-a",
                                                           "/dev/disk/by-id/dlsetup-test-b"],
             "filesystem": "ext4", "mountpoint": "/data"}
    return [
        {"name": "The collection's roles, by their fully qualified names", "hosts": "all", "gather_facts": False,
         "roles": [
             {"role": "dlsetup.workstation.common", "common_extra_packages": ["less"],
              "common_hold_packages": ["less"]},
             {"role": "dlsetup.workstation.signed_apt_repo", "signed_apt_repo_name": "lab-cuda",
              "signed_apt_repo_uris": f"{mirror_url}/cuda/", "signed_apt_repo_key_url": f"{mirror_url}/key.asc",
              "signed_apt_repo_key_fingerprint": fingerprint},
         ]},
        {"name": "The collection's storage module, on a chroot without disks", "hosts": "all", "gather_facts": False,
         "tasks": [
             {"name": "Record the array before creating it",
              "dlsetup.workstation.dlsetup_storage_disks": {"state": "recorded", "array": array}},
             {"name": "Inspect the member disks (safe mode)",
              "dlsetup.workstation.dlsetup_storage_disks": {"arrays": [array]},
              "register": "inspected", "failed_when": False},
             {"name": "Missing disks are refused by the verdict code",
              "ansible.builtin.assert": {"that": [
                  "inspected.msg is search('refusing the whole layout, nothing was written')",
                  "inspected.msg is search('/dev/disk/by-id/dlsetup-test-a: does not exist')"]}},
         ]},
    ]


@pytest.mark.lab
def test_a_play_using_the_installed_collection_converges(collection: Path, lab_root: Path,  # noqa: F811
                                                          lab_mirror: ServedMirror,  # noqa: F811
                                                          tmp_path: Path) -> None:
    collections = tmp_path / "collections"
    # --force: a dlsetup.workstation installed elsewhere (~/.ansible/collections) must not stand in for this build
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p",
                    str(collections), str(collection)], check=True, capture_output=True, text=True,
                   env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections)})
    installed = collections / "ansible_collections" / "dlsetup" / "workstation"
    assert (installed / "roles" / "common").is_dir() and (installed / "plugins" / "modules").is_dir()
    target = rootfs.fresh_copy(tmp_path / "target")
    plays = tmp_path / "plays"
    plays.mkdir()
    play = plays / "play.yml"
    play.write_text(yaml.safe_dump(_play(lab_mirror.url, lab_mirror.mirror.fingerprint), sort_keys=False))
    empty_roles = tmp_path / "no-roles"
    empty_roles.mkdir()
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_ROLES_PATH": str(empty_roles),
           "ANSIBLE_NOCOLOR": "1"}
    argv = [str(BIN / "ansible-playbook"), "-i", f"{target},", "-c", "community.general.chroot",
            "-e", "ansible_python_interpreter=/usr/bin/python3", str(play)]
    try:
        changed = []
        for _ in range(2):
            run = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=plays)
            recap = _RECAP.search(run.stdout)
            assert run.returncode == 0 and recap is not None, run.stdout[-4000:] + run.stderr[-2000:]
            changed.append(int(recap.group(2)))
        assert changed[0] > 0 and changed[1] == 0, run.stdout[-4000:]
        installed_less = subprocess.run(["chroot", str(target), "dpkg-query", "-W", "-f=${Status}", "less"],
                                        capture_output=True, text=True)
        assert installed_less.stdout == "hold ok installed"
        sources = (target / "etc/apt/sources.list.d/lab-cuda.sources").read_text()
        assert "Signed-By: /etc/apt/keyrings/lab-cuda.asc" in sources
        assert (target / "etc/apt/keyrings/lab-cuda.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK")
        (entry,) = json.loads((target / "etc/dlsetup/storage.json").read_text())["arrays"]
        assert {key: entry[key] for key in ("name", "level", "members", "mountpoint")} == {
            "name": "data", "level": "raid1", "mountpoint": "/data",
            "members": ["/dev/disk/by-id/dlsetup-test-a", "/dev/disk/by-id/dlsetup-test-b"]}
    finally:
        rootfs.remove_copy(target)
