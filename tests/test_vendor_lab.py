"""The driver roles converged on a Debian 12 chroot against the stand-ins of the vendors' current layouts.

The stand-ins are built from tests/lab/vendors/*.toml only (tests/lab/vendor_repos.py); what each case must
install is derived from the same description, never from the roles. One chroot serves every case: the
vendor packages are purged between cases, which keeps the matrix within a few minutes.

NVIDIA: branches 580, 595, 615 x open / proprietary / compute-only, with NVIDIA's Debian names (the host's
own) and with its Ubuntu names (nvidia_driver_packaging=ubuntu against the Ubuntu stand-in: branch-named
packages up to 580, unversioned ones after), idempotence, branch switches up and down, holds.
ROCm: the TheRock layout (7.14) and the legacy one (7.2), each from its own stand-in.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from lab import play, rootfs, vendor_repos
from lab.fixtures import ServedVendors, lab_root, vendor_mirror  # noqa: F401 - pytest fixtures

REPO = Path(__file__).resolve().parents[1]
NVIDIA = vendor_repos.load(vendor_repos.NVIDIA)
ROCM = vendor_repos.load(vendor_repos.ROCM)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def target(lab_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:  # noqa: F811
    root = rootfs.fresh_copy(tmp_path_factory.mktemp("vendor-lab") / "target")
    yield root
    rootfs.remove_copy(root)


def converge(target: Path, tmp: Path, role: str, variables: Dict[str, Any]) -> Tuple[int, str]:
    """Run one role on the chroot with ``variables``; (changed count, output). Fails the test if it failed."""
    run = play.run_role(target, tmp, role, variables)
    assert run.rc == 0 and run.failed == 0, run.output
    return run.changed, run.stdout


def installed(target: Path) -> Dict[str, str]:
    out = subprocess.run(["chroot", str(target), "dpkg-query", "-W", "-f",
                          "${db:Status-Abbrev}|${Package}|${Version}\n"], check=True, capture_output=True,
                         text=True).stdout
    return {name: version for status, name, version in (line.split("|") for line in out.splitlines())
            if status[1:2] == "i"}


def held(target: Path) -> List[str]:
    return subprocess.run(["chroot", str(target), "apt-mark", "showhold"], check=True, capture_output=True,
                          text=True).stdout.split()


def purge(target: Path, vendor_names: set) -> None:
    names = sorted(vendor_names & set(installed(target)))
    if names:
        subprocess.run(["chroot", str(target), "dpkg", "--purge", "--force-depends", "--force-hold", *names],
                       check=True, capture_output=True)


# ---- what the description says a case must install ----

def nvidia_names(family: str) -> set:
    names = {p["name"] for p in NVIDIA["package"] if p["family"] == family}
    return names | {NVIDIA["pinning"]["name"].replace("{branch}", str(b)) for b in NVIDIA["pinning"]["branches"]}


def expected_nvidia(family: str, branch: int, flavour: str, install_type: str) -> Dict[str, str]:
    """name -> version: NVIDIA's documented packages for the case, at the newest version of the branch."""
    wanted = {f"desktop/{flavour}"} if install_type == "desktop" else {"compute", f"compute/{flavour}"}
    candidates = [p for p in NVIDIA["package"]
                  if p["family"] == family and p["role"] in wanted and branch in p["branches"]]
    unversioned = [p for p in candidates if str(branch) not in p["name"]]
    chosen = unversioned if {p["role"] for p in unversioned} == wanted else \
        [p for p in candidates if str(branch) in p["name"]]
    assert {p["role"] for p in chosen} == wanted, (family, branch, flavour, install_type)
    newest = vendor_repos.nvidia_branch_versions(NVIDIA, branch)[-1] + NVIDIA["family"][family]["revision"]
    pinning = NVIDIA["pinning"]["name"].replace("{branch}", str(branch))
    return {**{p["name"]: newest for p in chosen},
            pinning: NVIDIA["family"][family]["pinning_version"].replace("{branch}", str(branch))}


def nvidia_variables(vendors: ServedVendors, repo_id: str, branch: int, flavour: str, install_type: str,
                     **extra: Any) -> Dict[str, Any]:
    family = next(r["family"] for r in NVIDIA["repository"] if r["id"] == repo_id)
    return {
        "nvidia_driver_branch": str(branch), "nvidia_driver_open_modules": flavour == "open",
        "nvidia_driver_install_type": install_type, "nvidia_driver_secure_boot": "disabled",
        "nvidia_driver_packaging": family,
        "nvidia_driver_repo_url": f"{vendors.url}/nvidia/{repo_id}/",
        "nvidia_driver_repo_key_url": f"{vendors.url}/key.asc",
        "nvidia_driver_repo_key_fingerprint": vendors.mirror.fingerprint, **extra,
    }


def check_nvidia(target: Path, family: str, branch: int, flavour: str, install_type: str) -> Dict[str, str]:
    now = installed(target)
    expected = expected_nvidia(family, branch, flavour, install_type)
    assert {name: now.get(name) for name in expected} == expected
    drivers = {n: v for n, v in now.items() if n in nvidia_names(family) and re.match(r"\d{3}\.", v)}
    assert drivers and all(v.startswith(f"{branch}.") for v in drivers.values()), drivers
    pins = [n for n in now if n.startswith("nvidia-driver-pinning-")]
    assert pins == [f"nvidia-driver-pinning-{branch}"]
    return expected


def run_case(target: Path, vendors: ServedVendors, tmp: Path, repo_id: str, branch: int, flavour: str,
             install_type: str, **extra: Any) -> Dict[str, str]:
    """Converge one case and check it against the description; the packages it must have installed."""
    family = next(r["family"] for r in NVIDIA["repository"] if r["id"] == repo_id)
    converge(target, tmp, "nvidia_driver", nvidia_variables(vendors, repo_id, branch, flavour, install_type, **extra))
    return check_nvidia(target, family, branch, flavour, install_type)


@pytest.mark.parametrize("flavour,install_type", [("proprietary", "desktop"), ("open", "compute")])
def test_nvidia_each_branch_from_a_clean_host(target: Path, vendor_mirror: ServedVendors, tmp_path: Path,  # noqa: F811
                                              flavour: str, install_type: str) -> None:
    """Debian 12 (the host's own naming): the pinning package, then NVIDIA's packages of the branch."""
    for branch in (580, 595, 615):
        purge(target, nvidia_names("debian"))
        run_case(target, vendor_mirror, tmp_path, "debian12", branch, flavour, install_type)
        assert held(target) == []
    purge(target, nvidia_names("debian"))


def test_nvidia_branch_switches_holds_and_rerun(target: Path, vendor_mirror: ServedVendors, tmp_path: Path) -> None:  # noqa: F811
    """580 -> 615 -> 595 (open, desktop) on one host: the pin moves every driver package, downgrades and
    held packages included; a re-run changes nothing."""
    purge(target, nvidia_names("debian"))
    for branch, hold in ((580, False), (615, True), (595, True)):
        expected = run_case(target, vendor_mirror, tmp_path, "debian12", branch, "open", "desktop",
                            nvidia_driver_hold=hold)
        assert sorted(held(target)) == (sorted(n for n in expected if "pinning" not in n) if hold else [])
    again = nvidia_variables(vendor_mirror, "debian12", 595, "open", "desktop", nvidia_driver_hold=True)
    changed, out = converge(target, tmp_path, "nvidia_driver", again)
    assert changed == 0, out[-3000:]
    purge(target, nvidia_names("debian"))


def test_nvidia_ubuntu_names_up_to_580(target: Path, vendor_mirror: ServedVendors, tmp_path: Path) -> None:  # noqa: F811
    """NVIDIA's Ubuntu naming (the Ubuntu stand-in, nvidia_driver_packaging=ubuntu): 580 is published under
    its own names only, so the role installs those, through the 580 pinning package; a re-run changes
    nothing."""
    purge(target, nvidia_names("ubuntu"))
    run_case(target, vendor_mirror, tmp_path, "ubuntu2404", 580, "proprietary", "desktop")
    variables = nvidia_variables(vendor_mirror, "ubuntu2404", 580, "proprietary", "desktop")
    changed, out = converge(target, tmp_path, "nvidia_driver", variables)
    assert changed == 0, out[-3000:]
    purge(target, nvidia_names("ubuntu"))
    run_case(target, vendor_mirror, tmp_path, "ubuntu2404", 580, "open", "compute")
    purge(target, nvidia_names("ubuntu"))


@pytest.mark.parametrize("release,gfx", [("7.14", "gfx942"), ("7.2", "")])
def test_rocm_layouts(target: Path, vendor_mirror: ServedVendors, tmp_path: Path, release: str, gfx: str) -> None:  # noqa: F811
    variables = {
        "rocm_version": release, "rocm_gfx_target": gfx, "rocm_install_dkms": True,
        "rocm_repo_url": f"{vendor_mirror.url}/rocm/{release}/", "rocm_repo_suite": "/", "rocm_repo_components": [],
        "rocm_amdgpu_repo_url": f"{vendor_mirror.url}/amdgpu/{release}/", "rocm_amdgpu_repo_suite": "/",
        "rocm_amdgpu_repo_components": [],
        "rocm_repo_key_url": f"{vendor_mirror.url}/key.asc", "rocm_amdgpu_repo_key_url": f"{vendor_mirror.url}/key.asc",
        "rocm_repo_key_fingerprint": vendor_mirror.mirror.fingerprint,
        "rocm_amdgpu_repo_key_fingerprint": vendor_mirror.mirror.fingerprint,
    }
    converge(target, tmp_path, "rocm", variables)
    packages = [p for p in ROCM["package"] if p["release"] == release]
    meta = [p for p in packages if p["role"] == ("meta-gfx" if gfx else "meta")
            and (not gfx or p["name"].endswith("-" + gfx))]
    expected = {p["name"]: p["version"] for p in packages if p in meta or p["role"] in ("part", "driver")}
    now = installed(target)
    assert len(meta) == 1 and {n: now.get(n) for n in expected} == expected
    for path in (f for p in packages for f in p.get("files", ())):
        assert (target / path.lstrip("/")).is_file(), path
    purge(target, {p["name"] for p in ROCM["package"]})
