"""``dlsetup status -i`` over real SSH hosts (network namespaces): planted drift is found on each host, a host
in sync exits 0, an unreachable one 4. The hosts have no network: the framework venv gets a stand-in torch
distribution (a dist-info and torch/version.py, which is all status reads) instead of a real wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from conftest import missing_tool
from lab.fleet import Fleet

pytestmark = pytest.mark.fleet

REPO = Path(__file__).resolve().parents[1]
VENV = "/opt/dlsetup/venvs/pytorch"  # the default: one venv per framework
IN_SYNC, NO_TORCH, REBOOT, UNHELD, GONE = "h1", "h2", "h3", "h4", "h5"
#: what status is told provision held (as provision -e would be): a package the fleet root has
HOLD = "pciutils"
EXTRA = json.dumps({"common_hold_packages": [HOLD]})


def ansible(inventory: Path, hosts: str, command: str) -> None:
    binary = Path(sys.executable).with_name("ansible")
    subprocess.run([str(binary), "-i", str(inventory), hosts, "-m", "ansible.builtin.shell", "-a", command],
                   check=True, capture_output=True, timeout=120)


def status(inventory: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dlsetup", "status", "-i", str(inventory), "--offline", "-e", EXTRA,
                           *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XDG_CACHE_HOME": str(cache)})


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Path]]:
    missing = [tool for tool in ("ip", "unshare", "ssh", "ssh-keygen", "debootstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        missing_tool(f"the fleet tier needs root and {', '.join(missing) or 'its tools'}")
    with Fleet(tmp_path_factory.mktemp("statusfleet"), 5, unreachable=(5,)) as started:
        inventory = started.inventory(tmp_path_factory.mktemp("inv") / "hosts.yml")
        yield started, inventory


def plant_torch(inventory: Path, hosts: str, version: str) -> None:
    """A torch distribution as pip leaves it, CPU build: dist-info with RECORD, and torch/version.py."""
    script = (
        f"set -e; site=$({VENV}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()[\"purelib\"])'); "
        f"mkdir -p $site/torch $site/torch-{version}.dist-info; "
        f"printf \"__version__ = '{version}+cpu'\\ncuda = None\\nhip = None\\n\" > $site/torch/version.py; "
        f"printf 'Metadata-Version: 2.1\\nName: torch\\nVersion: {version}+cpu\\n' "
        f"> $site/torch-{version}.dist-info/METADATA; "
        f"printf 'torch/version.py,,\\n' > $site/torch-{version}.dist-info/RECORD")
    ansible(inventory, hosts, script)


def test_status_finds_planted_drift_and_in_sync_exits_0(fleet: tuple[Fleet, Path], tmp_path: Path) -> None:
    _, inventory = fleet
    reachable = f"{IN_SYNC},{NO_TORCH},{REBOOT},{UNHELD}"
    ansible(inventory, reachable, f"python3 -m venv {VENV}")  # what the frameworks role makes, without pip's downloads
    first = status(inventory, tmp_path, "-l", reachable, "--json")
    assert first.returncode == 1, first.stderr
    spec = next(i["expected"] for i in json.loads(first.stdout)[IN_SYNC]["drift"] if i["topic"] == "torch")
    version = spec.split("==", 1)[1].replace("*", "0")

    plant_torch(inventory, f"{IN_SYNC},{REBOOT},{UNHELD}", version)
    ansible(inventory, f"{IN_SYNC},{NO_TORCH},{REBOOT}", f"apt-mark hold {HOLD}")
    ansible(inventory, REBOOT, "mkdir -p /run/dlsetup && echo test > /run/dlsetup/reboot-required")

    run = status(inventory, tmp_path, "--json")
    assert run.returncode == 4, run.stderr  # h5 is unreachable
    docs = json.loads(run.stdout)
    assert docs[GONE]["status"] == "unreachable"
    drift = {name: {i["topic"]: i["fix"] for i in docs[name]["drift"]} for name in (IN_SYNC, NO_TORCH, REBOOT, UNHELD)}
    assert drift[IN_SYNC] == {}
    assert list(drift[NO_TORCH]) == ["torch"] and drift[NO_TORCH]["torch"].startswith(f"{VENV}/bin/pip install")
    assert list(drift[REBOOT]) == ["reboot"]
    assert drift[UNHELD] == {f"hold {HOLD}": f"apt-mark hold {HOLD}"}
    assert {i["topic"] for i in docs[IN_SYNC]["items"]} >= {"torch", "torch build", f"hold {HOLD}", "reboot"}

    alone = status(inventory, tmp_path, "-l", IN_SYNC)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "in sync" in alone.stdout
