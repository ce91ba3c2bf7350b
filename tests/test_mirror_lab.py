"""The mirror on real targets: a Debian 12 chroot converged by ``unshare -n dlsetup provision --mirror DIR``
(no network at all: only the loopback the controller serves the mirror on) twice, the second changing
nothing; and a fleet of namespace hosts with no route but to the controller, provisioned without --mirror,
through the mirror the run builds in the controller's cache and serves to each host over its own SSH
connection (a reverse forward). The mirror itself is fetched once, with this machine's network, by
``dlsetup mirror`` from the chroot's plan: the CPU plan with the local torch wheel."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, missing_tool
from lab import rootfs
from lab.fixtures import lab_root, lab_wheels, vendor_mirror  # noqa: F401 - pytest fixtures
from lab.fleet import Fleet

pytestmark = pytest.mark.lab


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dlsetup(*args: str, env: dict, offline: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "dlsetup", *args]
    if offline:  # a network namespace of its own: no interface but the loopback, brought up
        command = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1200, env=env)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


def summaries(run: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        missing_tool("the mirror lab tests need unshare and ip (util-linux, iproute2)")
    base = tmp_path_factory.mktemp("dlsetup-home")
    return {**os.environ, "XDG_CACHE_HOME": str(base / "cache"), "XDG_STATE_HOME": str(base / "state"),
            "XDG_DATA_HOME": str(base / "data"), "DLSETUP_MIRROR_PORT": str(_port())}


@pytest.fixture(scope="module")
def chroot(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    work = tmp_path_factory.mktemp("mirror-chroot")
    root = rootfs.fresh_copy(work / "target")
    inventory = work / "hosts.ini"
    inventory.write_text(f"{root} ansible_connection=community.general.chroot "
                         "ansible_python_interpreter=/usr/bin/python3\n")
    yield root, inventory
    rootfs.remove_copy(root)


@pytest.fixture(scope="module")
def mirror(chroot: tuple[Path, Path], lab_wheels: Path, env: dict,
           tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, inventory = chroot
    dest = tmp_path_factory.mktemp("mirror") / "m"
    run = dlsetup("mirror", "-i", str(inventory), "-o", str(dest), "--pip-find-links", str(lab_wheels),
                  "--pip-offline", env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    fingerprint = (dest / "key.fingerprint").read_text().strip()
    assert f"mirror key fingerprint: {fingerprint}" in " ".join(run.stderr.split())
    again = dlsetup("mirror", "-i", str(inventory), "-o", str(dest), "--pip-find-links", str(lab_wheels),
                    "--pip-offline", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (dest / "key.fingerprint").read_text().strip() == fingerprint  # the key is made once
    return dest


def test_chroot_converges_from_the_mirror_without_any_network(chroot: tuple[Path, Path], mirror: Path,
                                                              lab_wheels: Path, env: dict) -> None:
    root, inventory = chroot
    plan = ("--pip-find-links", str(lab_wheels), "--pip-offline")
    # --check first: it reads the mirror (checked and served as for a run) and changes nothing on the host
    check = dlsetup("provision", "-i", str(inventory), "--check", "--json", "--mirror", str(mirror), *plan,
                    env=env, offline=True)
    assert check.returncode == 0, check.stderr[-3000:]
    assert [h["failed"] for h in summaries(check)] == [0]
    assert not (root / "etc" / "dlsetup" / "mirror").exists() and not (root / "opt" / "dlsetup").exists()
    first = dlsetup("provision", "-i", str(inventory), "--yes", "--json", "--mirror", str(mirror), *plan,
                    env=env, offline=True)
    assert first.returncode == 0, first.stderr[-3000:]
    [host] = summaries(first)
    assert host["changed"] > 0 and host["failed"] == 0
    installed = subprocess.run(["chroot", str(root), "dpkg-query", "-W", "-f", "${Package}\n", "build-essential",
                                "python3-venv"], capture_output=True, text=True)
    assert installed.stdout.split() == ["build-essential", "python3-venv"], installed.stderr
    torch = subprocess.run(["chroot", str(root), "/opt/dlsetup/venvs/pytorch/bin/python", "-c",
                            "import torch; print(torch.__version__)"], capture_output=True, text=True)
    assert torch.stdout.strip() == "2.13.0+cpu", torch.stderr
    # the host's own apt sources were neither used nor changed: the mirror's are in a folder of dlsetup's
    assert "127.0.0.1" not in "".join(p.read_text() for p in (root / "etc/apt").rglob("*.sources"))
    second = dlsetup("provision", "-i", str(inventory), "--yes", "--json", "--mirror", str(mirror), *plan,
                     env=env, offline=True)
    assert second.returncode == 0, second.stderr[-3000:]
    assert [h["changed"] for h in summaries(second)] == [0]


@pytest.mark.fleet
def test_fleet_without_mirror_fetches_once_through_the_controller_cache(lab_root: Path, lab_wheels: Path,
                                                                       env: dict, tmp_path: Path) -> None:
    missing = [tool for tool in ("ssh", "ssh-keygen", "debootstrap") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        missing_tool(f"the fleet tier needs root and {', '.join(missing) or 'its tools'}")
    with Fleet(tmp_path / "fleet", 2) as fleet:
        inventory = fleet.inventory(tmp_path / "hosts.yml")
        routes = subprocess.run(["ip", "-n", fleet.hosts[0].netns, "route"], capture_output=True, text=True).stdout
        assert "default" not in routes  # no route but to the controller's bridge
        run = dlsetup("provision", "-i", str(inventory), "--yes", "--json", "--pip-find-links", str(lab_wheels),
                      "--pip-offline", env=env)
        assert run.returncode == 0, run.stderr[-3000:]
        assert sorted(h["host"] for h in summaries(run) if h["failed"] == 0) == ["h1", "h2"]
        cache = Path(env["XDG_CACHE_HOME"]) / "dlsetup" / "mirror"
        [built] = list(cache.iterdir())
        manifest = json.loads((built / "manifest.json").read_text())
        # the fleet root has every distribution package of the plan: the cache fetched none, only the wheels
        assert manifest["apt"] == {} and any(name.startswith("wheels/torch-") for name in manifest["files"])
        assert sorted(manifest["hosts"]) == ["h1", "h2"]
        for host in fleet.hosts:
            wheel = list((host.upper / "opt/dlsetup/venvs/pytorch/lib").glob("python3*/site-packages/torch/version.py"))
            assert wheel and "2.13.0+cpu" in wheel[0].read_text()


class _DriverPlan:
    """The parts of a plan the mirror reads: the NVIDIA driver role, its repository at the stand-ins."""

    roles = ("nvidia_driver",)
    decisions = ()

    def __init__(self, url: str, fingerprint: str):
        self.variables = {"nvidia_driver_branch": "580", "nvidia_driver_open_modules": True,
                          "nvidia_driver_install_type": "desktop", "nvidia_driver_repo_url": url,
                          "nvidia_driver_repo_suite": "/", "nvidia_driver_repo_key_url": f"{url}../../key.asc",
                          "nvidia_driver_repo_key_fingerprint": fingerprint}


def test_mirror_carries_vendor_packages_under_the_pinned_key(vendor_mirror, tmp_path: Path,  # noqa: F811
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """NVIDIA's repository (the lab's stand-in) through the mirror: its key checked against the pinned
    fingerprint, the driver packages the role would choose in the mirror's signed repository; another
    fingerprint pinned refuses the key before anything is fetched."""
    from dlsetup.errors import UsageError
    from dlsetup.mirror import build
    from dlsetup.mirror.contents import plan_contents
    from dlsetup.mirror.roles import role_data
    from dlsetup.mirror.verify import check_covers, verify
    from lab.mirror import WRONG_FINGERPRINT

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    url = f"{vendor_mirror.url}/nvidia/debian12/"
    contents = plan_contents("gpu", _DriverPlan(url, vendor_mirror.mirror.fingerprint), "debian", "12", "bookworm",
                             "x86_64", "6.1.0-30-amd64", role_data("debian", "12"))
    assert contents.alternatives[0][:2] == ("nvidia-driver-pinning-580", "nvidia-open")
    build.build(tmp_path / "m", [contents])
    checked = verify(tmp_path / "m")
    check_covers(checked, [contents])
    names = set(checked.available()["debian-12-amd64"])
    assert {"nvidia-driver-pinning-580", "nvidia-open"} <= names
    origins = {entry["origin"] for entry in checked.manifest["files"].values()}
    assert any(origin.startswith(url) for origin in origins)
    wrong = plan_contents("gpu", _DriverPlan(url, WRONG_FINGERPRINT), "debian", "12", "bookworm", "x86_64",
                          "6.1.0-30-amd64", role_data("debian", "12"))
    with pytest.raises(UsageError, match=f"refusing the signing key .* but {WRONG_FINGERPRINT} is pinned"):
        build.build(tmp_path / "m2", [wrong])
