"""The fleet tier: 8 namespace hosts over real SSH (tests/lab/fleet.py), one unreachable, one whose run fails,
provisioned through the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import H100_BUNDLE, missing_tool
from test_fleet import derived_bundle

from dlsetup import fleet
from dlsetup.provisioning import PROBE_TASK
from dlsetup.errors import EXIT_UNREACHABLE
from dlsetup.inventory import load_inventory
from dlsetup.plan import load_request, make_plan
from lab.fleet import Fleet

pytestmark = pytest.mark.fleet

UNREACHABLE, FAILING = "h8", "h7"
#: an apt configuration that does not parse, on every host: a host whose packages are all installed must
#: never reach apt (the roles ask dpkg first); the failing host lacks MISSING, so its apt task runs and fails
BROKEN_APT = "/etc/apt/apt.conf.d/99dlsetup-broken"
MISSING = "pciutils"
APT_TASK = "Install the base packages, and dkms with the kernel headers when asked"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lab_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    missing = [tool for tool in ("ip", "unshare", "ssh", "ssh-keygen", "debootstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        missing_tool(f"the fleet tier needs root and {', '.join(missing) or 'its tools'} (apt-get install iproute2 "
                     "openssh-client openssh-server debootstrap, as .ci/run does)")
    with Fleet(tmp_path_factory.mktemp("fleet"), 8, unreachable=(8,),
               files={f"h{i}": {BROKEN_APT: 'APT::Install-Recommends "false\n'} for i in range(1, 9)}) as started:
        inventory = started.inventory(tmp_path_factory.mktemp("remove") / "hosts.yml")
        ansible = Path(sys.executable).with_name("ansible")
        subprocess.run([str(ansible), "-i", str(inventory), FAILING, "-m", "ansible.builtin.command", "-a",
                        f"dpkg --remove --force-depends {MISSING}"], check=True, capture_output=True, timeout=120)
        yield started


def provision(inventory: Path, cache: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """``dlsetup provision -i INVENTORY --yes --json``; the hosts have no network: no pip packages (and no
    controller-side cache: test_mirror_lab.py covers that)."""
    run = subprocess.run([sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), "--yes", "--json",
                          "--no-cache",
                          "-e", json.dumps({"frameworks_venvs": [], "frameworks_packages": []}), *args], cwd=REPO,
                         capture_output=True, text=True, timeout=900, env={**os.environ, "XDG_CACHE_HOME": str(cache)})
    assert "Traceback" not in run.stderr, run.stderr
    return run, [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_fleet_converges_past_a_failed_and_an_unreachable_host(lab_fleet: Fleet, tmp_path: Path) -> None:
    inventory = lab_fleet.inventory(tmp_path / "hosts.yml")
    names = [h.name for h in lab_fleet.hosts]
    run, summaries = provision(inventory, tmp_path)

    assert run.returncode == EXIT_UNREACHABLE, run.stderr[-3000:]
    by_host = {h["host"]: h for h in summaries}
    assert list(by_host) == names
    for name in names[:6]:
        host = by_host[name]
        assert host["status"] in ("ok", "changed") and host["failed"] == 0, host
        assert host["reboot_required"] is False and host["roles"] == ["common", "frameworks"]
    failed, gone = by_host[FAILING], by_host[UNREACHABLE]
    assert failed["status"] == "failed" and failed["failure"]["task"] == APT_TASK
    assert f"Syntax error {BROKEN_APT}:2" in failed["failure"]["message"]
    assert gone["status"] == "unreachable" and gone["failure"]["task"] == PROBE_TASK
    assert f"{lab_fleet.hosts[-1].address} port 22: Connection refused" in gone["failure"]["message"]
    error = run.stderr.splitlines()[-1]
    assert error.startswith(f"dlsetup: error: 1 host(s) unreachable: {UNREACHABLE}; "
                            f"1 host(s) failed: {FAILING} ({APT_TASK}: ")

    again, summaries = provision(inventory, tmp_path, "--retry-failed")
    assert again.returncode == EXIT_UNREACHABLE
    assert [h["host"] for h in summaries] == [FAILING, UNREACHABLE]
    assert [h["status"] for h in summaries] == ["failed", "unreachable"]


def test_heterogeneous_fleet_gets_plans_per_hardware_grouped(lab_fleet: Fleet, tmp_path: Path) -> None:
    bundles = {"h1": H100_BUNDLE, "h2": derived_bundle(tmp_path / "mi210", "1002", "740f")}
    inventory = lab_fleet.inventory(
        tmp_path / "hosts.yml", {name: {fleet.HOST_BUNDLE_VAR: str(path)} for name, path in bundles.items()},
        hosts=["h1", "h2", "h3", "h4", UNREACHABLE])
    outcomes = fleet.probe_fleet(load_inventory(inventory))

    gone = outcomes.pop(UNREACHABLE)
    assert isinstance(gone, fleet.ProbeFailure) and gone.status == "unreachable"
    assert "Connection refused" in gone.message
    for name in ("h3", "h4"):  # probed over SSH: the namespace hosts' own Debian 12 roots
        profile = outcomes[name]
        assert not isinstance(profile, fleet.ProbeFailure)
        assert (profile.source, profile.hostname) == (f"remote:{name}", name)
        assert (profile.os.id, profile.os.version_id, profile.gpus) == ("debian", "12", ())
    request = load_request()
    plans = {name: make_plan(profile, request) for name, profile in outcomes.items()
             if not isinstance(profile, fleet.ProbeFailure)}
    groups = {g.hosts: g for g in fleet.group_plans(plans)}
    assert sorted(groups) == [("h1",), ("h2",), ("h3", "h4")]
    assert dict(groups[("h3", "h4")].choices)["accelerator"] == "cpu"
    assert dict(groups[("h1",)].choices)["torch build"] == "cu130"
    assert groups[("h2",)].roles == ("common", "rocm", "frameworks")


def test_one_machine_under_two_names_is_refused(lab_fleet: Fleet, tmp_path: Path) -> None:
    """h1 listed twice (a second name for its address) is one machine; the namespace hosts, chroots of one
    kernel with roots of their own, are not. Provision refuses before changing anything."""
    import yaml

    from dlsetup.errors import EXIT_USAGE
    from dlsetup.remote import probe_hosts

    inventory = lab_fleet.inventory(tmp_path / "hosts.yml", hosts=["h1", "h2", "h3"])
    data = yaml.safe_load(inventory.read_text())
    data["all"]["hosts"]["h1-again"] = dict(data["all"]["hosts"]["h1"])
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    hosts = probe_hosts(load_inventory(inventory))
    identity = {name: host.identity for name, host in hosts.items()}
    assert identity["h1"] == identity["h1-again"]
    assert identity["h1"]["boot_id"] == identity["h2"]["boot_id"] == identity["h3"]["boot_id"]
    assert len({identity[name]["root"] for name in ("h1", "h2", "h3")}) == 3
    assert fleet.aliases(list(hosts.values())) == (("h1", "h1-again"),)
    run, summaries = provision(inventory, tmp_path, "--check")
    assert run.returncode == EXIT_USAGE and summaries == []
    assert "reach the same machine: h1 = h1-again" in run.stderr.splitlines()[-1]


def test_a_fake_gpu_is_the_hosts_alone_and_plans_the_nvidia_driver(tmp_path: Path) -> None:
    """``Fleet(fake_gpu=...)``: the host's probe finds a Tesla T4 on its PCI bus and the planner plans the NVIDIA
    driver for it, while this machine's own /sys still shows its devices' real ids."""
    pci = Path("/sys/bus/pci/devices")
    before = {d.name: (d / "vendor").read_text() for d in pci.iterdir()} if pci.is_dir() else {}
    if not any(not (pci / name / "class").read_text().startswith("0x06") for name in before):
        missing_tool("this machine has no PCI device to show the fake GPU in place of")
    with Fleet(tmp_path / "fleet", 1, fake_gpu=("0x10de", "0x1eb8", "0x030200")) as started:
        inventory = started.inventory(tmp_path / "hosts.yml")
        run = subprocess.run([sys.executable, "-m", "dlsetup", "probe", "-i", str(inventory), "--json"], cwd=REPO,
                             capture_output=True, text=True, timeout=300,
                             env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert run.returncode == 0, run.stderr[-3000:]
        during = {d.name: (d / "vendor").read_text() for d in pci.iterdir()}
    from dlsetup.model import HostProfile

    profile = HostProfile.from_dict(json.loads(run.stdout)["h1"])
    assert [(g.vendor, g.pci_vendor_id, g.pci_device_id) for g in profile.gpus] == [("nvidia", "10de", "1eb8")]
    plan = make_plan(profile, load_request(None, offline=True))
    assert "nvidia_driver" in plan.roles and plan.variables["nvidia_driver_install_type"] == "compute"
    assert during == before and "0x10de\n" not in before.values()
