"""Which machine is which: facts cached per inventory and checked against the probe, one machine under
two inventory names refused before anything changes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from dlsetup import fleet
from dlsetup.errors import EXIT_USAGE, UsageError
from dlsetup.inventory import Inventory
from dlsetup.model import HostProfile, OSInfo
from dlsetup.remote import RemoteHost, probe_hosts
from dlsetup.runner import _environment, settings

SYSTEM_PYTHON = "/usr/bin/python3"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _host(name: str, kernel: str = "6.1.0-31-amd64", **identity: str) -> RemoteHost:
    return RemoteHost(name, HostProfile(hostname=name, os=OSInfo(kernel=kernel)), root=True, identity=identity)


# -- the fact cache ---------------------------------------------------------------------------------


def test_each_inventory_has_its_own_fact_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gpu01 of lab.yml and a gpu01 of prod.yml never share cached facts."""
    (tmp_path / "lab.yml").write_text("all: {hosts: {gpu01: {}}}\n")
    (tmp_path / "prod.yml").write_text("all: {hosts: {gpu01: {}}}\n")
    cache = tmp_path / "cache"
    lab, prod = (settings.fact_cache_dir([str(tmp_path / n)], cache) for n in ("lab.yml", "prod.yml"))
    assert lab != prod and lab.parent == prod.parent == cache / "facts"
    monkeypatch.chdir(tmp_path)  # the same file named another way is the same inventory
    (tmp_path / "sub").mkdir()
    assert settings.fact_cache_dir(["lab.yml"], cache) == lab
    assert settings.fact_cache_dir(["./sub/../lab.yml"], cache) == lab
    assert settings.fact_cache_dir([], cache) == cache / "facts" / "local"
    assert settings.fact_cache_dir(["gpu01,gpu02,"], cache) not in (lab, prod, cache / "facts" / "local")
    # the runner's settings point Ansible at that folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("ANSIBLE_CACHE_PLUGIN_CONNECTION", raising=False)
    env = _environment(["gpu01"], [str(tmp_path / "lab.yml")])
    assert env["ANSIBLE_CACHE_PLUGIN_CONNECTION"] == str(settings.fact_cache_dir(["lab.yml"], cache / "dlsetup"))
    assert _environment(["gpu01"], [str(tmp_path / "prod.yml")])["ANSIBLE_CACHE_PLUGIN_CONNECTION"] != \
        env["ANSIBLE_CACHE_PLUGIN_CONNECTION"]


def _cache(directory: Path):
    from ansible.plugins.loader import cache_loader

    return cache_loader.get("jsonfile", _uri=str(directory), _timeout=0)


def test_cached_facts_of_another_machine_are_dropped(tmp_path: Path) -> None:
    """Facts Ansible cached (its own jsonfile plugin writes them here) that say another kernel or machine
    id than the probe found under that name are removed; matching ones are kept."""
    directory = tmp_path / "facts"
    cache = _cache(directory)
    for name in ("same", "rebooted", "replaced", "unprobed"):
        cache.set(name, {"ansible_kernel": "6.1.0-31-amd64", "ansible_machine_id": "a" * 32})
    hosts = [_host("same", machine_id="a" * 32), _host("rebooted", kernel="6.1.0-32-amd64"),
             _host("replaced", machine_id="b" * 32), _host("not-cached"), _host("..")]
    assert fleet.drop_stale_facts(directory, hosts) == ("rebooted", "replaced")
    fresh = _cache(directory)
    assert [fresh.contains(n) for n in ("same", "rebooted", "replaced", "unprobed")] == [True, False, False, True]
    assert fleet.drop_stale_facts(tmp_path / "missing", hosts) == ()


def test_gathered_facts_land_in_the_inventory_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run: facts gathered for gpu01 of one inventory are cached in that inventory's folder only."""
    from dlsetup.runner import run_playbooks

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for var in ("ANSIBLE_CACHE_PLUGIN", "ANSIBLE_CACHE_PLUGIN_CONNECTION", "ANSIBLE_GATHERING"):
        monkeypatch.delenv(var, raising=False)
    play = tmp_path / "facts.yml"
    play.write_text(yaml.safe_dump([{"hosts": "all", "gather_facts": True, "tasks": [
        {"name": "kernel", "ansible.builtin.debug": {"msg": "{{ ansible_facts['kernel'] }}"}}]}]))
    lab = tmp_path / "lab.yml"
    lab.write_text(yaml.safe_dump({"all": {"hosts": {"gpu01": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    result = run_playbooks([play], [str(lab)], hosts=["gpu01"])
    assert result.host("gpu01").failed == 0
    lab_facts = settings.fact_cache_dir([str(lab)], tmp_path / "cache" / "dlsetup")
    assert _cache(lab_facts).get("gpu01")["ansible_kernel"] == os.uname().release
    other = settings.fact_cache_dir([str(tmp_path / "prod.yml")], tmp_path / "cache" / "dlsetup")
    assert not _cache(other).contains("gpu01")


# -- one machine under two names --------------------------------------------------------------------


def test_aliases_are_hosts_with_one_identity() -> None:
    one = {"boot_id": "b1", "root": "2049:2", "machine_id": "m1"}
    hosts = [_host("gpu01", **one), _host("gpu01.lab", **one), _host("10.0.0.1", **one),
             # a clone of the image (same machine id) on another kernel: another machine
             _host("clone", **{**one, "boot_id": "b2"}),
             # a chroot or container host of the same kernel: its own root
             _host("chroot", **{**one, "root": "64:1"}),
             # no boot id (or nothing read: a bundle): never called an alias
             _host("bundle"), _host("bundle2"), _host("no-boot-id", root="2049:2", machine_id="m1"),
             _host("no-boot-id-2", root="2049:2", machine_id="m1"),
             # a minimal system without a machine id, under two names
             _host("minimal", boot_id="b3", root="1:1"), _host("minimal.lab", boot_id="b3", root="1:1")]
    assert fleet.aliases(hosts) == (("gpu01", "gpu01.lab", "10.0.0.1"), ("minimal", "minimal.lab"))
    with pytest.raises(UsageError, match="reach the same machine: gpu01 = gpu01.lab = 10.0.0.1; minimal = minimal.lab. "
                       ) as err:
        fleet.refuse_aliases(hosts)
    assert err.value.exit_code == EXIT_USAGE
    fleet.refuse_aliases(hosts[3:-1])


def test_remote_probe_reports_the_machine_identity() -> None:
    """The zipapp's entry point, run here: this kernel's boot id, the root's device and inode."""
    sys.path.insert(0, str(REPO / "dlsetup" / "remote"))
    try:
        from entry import identity  # noqa: PLC0415 - the zipapp's __main__ module, importable by name
    except SystemExit:  # pragma: no cover
        raise
    finally:
        sys.path.pop(0)
    found = identity()
    st = os.stat("/")
    assert found["boot_id"] == BOOT_ID and found["root"] == f"{st.st_dev}:{st.st_ino}"
    assert found["machine_id"] == Path("/etc/machine-id").read_text().strip()


@pytest.fixture
def two_names(tmp_path: Path) -> Path:
    """This machine twice: by the local connection and by a chroot of its own root."""
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {
        "here": {"ansible_connection": "local", "ansible_python_interpreter": SYSTEM_PYTHON},
        "/": {"ansible_connection": "community.general.chroot", "ansible_python_interpreter": SYSTEM_PYTHON}}}}))
    return inventory


@pytest.mark.skipif(os.geteuid() != 0, reason="the chroot connection needs root")
def test_probe_finds_one_machine_under_two_names(two_names: Path) -> None:
    hosts = probe_hosts(Inventory(sources=(str(two_names),), hosts=("here", "/")))
    assert hosts["here"].identity == hosts["/"].identity and hosts["here"].identity["boot_id"] == BOOT_ID
    with pytest.raises(UsageError, match="reach the same machine: here = /"):
        probe_hosts(Inventory(sources=(str(two_names),), hosts=("here", "/")), distinct=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="the chroot connection needs root")
def test_provision_refuses_aliases_before_changing_anything(two_names: Path, tmp_path: Path) -> None:
    # --check: were the refusal missing, the run would still change nothing here
    run = subprocess.run([sys.executable, "-m", "dlsetup", "provision", "-i", str(two_names), "--check",
                          "--framework", "pytorch"], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert run.returncode == EXIT_USAGE, run.stderr
    assert re.search(r"reach the same machine: (here = /|/ = here)\. ", run.stderr), run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "cache" / "dlsetup" / "retry").exists()
