"""The roles ship as the Ansible collection dlsetup.workstation (galaxy.yml): it builds, holds every role and
playbook and nothing else, carries dlsetup's version, and once installed a play that names a role by its
fully qualified name converges a chroot of the lab from the signed stand-in mirror."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

import dlsetup
from lab import rootfs
from lab.fixtures import lab_root  # noqa: F401 - pytest fixture

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())


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
    assert tops == {"MANIFEST.json", "FILES.json", "README.md", "meta", "roles", "playbooks"}
    for role in ROLES:
        assert f"roles/{role}/tasks/main.yml" in names and f"roles/{role}/meta/argument_specs.yml" in names
    assert "roles/storage/library/dlsetup_storage_disks.py" in names  # the role's own module travels with it
    assert not [n for n in names if "/molecule" in n or "__pycache__" in n]
    assert "playbooks/site.yml" in names
    info = manifest["collection_info"]
    assert (info["namespace"], info["name"]) == ("dlsetup", "workstation")


def test_one_version_everywhere() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["version"] == dlsetup.__version__
    project = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in project and 'path = "dlsetup/__init__.py"' in project


@pytest.mark.lab
def test_a_play_using_the_installed_collection_converges(collection: Path, lab_root: Path,  # noqa: F811
                                                          tmp_path: Path) -> None:
    collections = tmp_path / "collections"
    # --force: a dlsetup.workstation installed elsewhere (~/.ansible/collections) must not stand in for this build
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "--no-deps", "--force", "-p",
                    str(collections), str(collection)], check=True, capture_output=True, text=True,
                   env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections)})
    assert (collections / "ansible_collections" / "dlsetup" / "workstation" / "roles" / "common").is_dir()
    target = rootfs.fresh_copy(tmp_path / "target")
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "name": "The collection's role, by its fully qualified name", "hosts": "all", "gather_facts": False,
        "roles": [{"role": "dlsetup.workstation.common", "common_extra_packages": ["less"],
                   "common_hold_packages": ["less"]}],
    }]))
    empty_roles = tmp_path / "no-roles"
    empty_roles.mkdir()
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_ROLES_PATH": str(empty_roles),
           "ANSIBLE_NOCOLOR": "1"}
    try:
        run = subprocess.run([str(BIN / "ansible-playbook"), "-i", f"{target},", "-c", "community.general.chroot",
                              "-e", "ansible_python_interpreter=/usr/bin/python3", str(play)],
                             env=env, capture_output=True, text=True, cwd=tmp_path)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        installed = subprocess.run(["chroot", str(target), "dpkg-query", "-W", "-f=${Status}", "less"],
                                   capture_output=True, text=True)
        assert installed.stdout == "hold ok installed"
    finally:
        rootfs.remove_copy(target)
