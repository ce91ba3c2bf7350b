"""tools/check_vendor_repos.py against the lab's stand-ins served on 127.0.0.1 (no network beyond loopback).

The stand-ins built from the recorded descriptions hold every name the roles use, so the check passes; a
stand-in built from a description that lost a pinning package, a branch of a driver package and a ROCm meta
package makes it fail and name each.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lab import mirror, vendor_repos

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "check_vendor_repos.py"

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in ("dpkg-deb", "apt-ftparchive", "gpg")),
                                reason="building the stand-ins needs dpkg-deb, apt-ftparchive and gpg")


def check(url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), "--nvidia-url", url + "/nvidia/{id}/",
                           "--rocm-url", url + "/rocm/{version}/", "--amdgpu-url", url + "/amdgpu/{version}/",
                           *extra], capture_output=True, text=True, timeout=300)


def write_toml(path: Path, data: dict) -> None:
    """Write the subset of TOML the descriptions use (tables, arrays of tables, strings, ints, lists)."""
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        return '"' + str(v).replace("\\\\", "\\\\\\\\").replace('"', '\\\\"') + '"'

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, (dict, list)) or
             (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{key}]")
            lines += [f'"{k}" = {value(v)}' for k, v in table.items()]
        elif isinstance(table, list) and table and isinstance(table[0], dict):
            for item in table:
                lines.append(f"[[{key}]]")
                lines += [f'"{k}" = {value(v)}' for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    assert tomllib.loads(path.read_text()) == data


def test_check_passes_on_the_recorded_layout(tmp_path: Path) -> None:
    built = vendor_repos.build(tmp_path / "vendors")
    with mirror.serve(built.root) as url:
        run = check(url, "--no-keys")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 names the roles use are missing, 0 other differences" in run.stdout


def test_check_names_what_the_roles_use_and_the_vendor_lacks(tmp_path: Path) -> None:
    nvidia = copy.deepcopy(vendor_repos.load(vendor_repos.NVIDIA))
    nvidia["pinning"]["branches"].remove(615)
    ubuntu_open = next(p for p in nvidia["package"] if p["family"] == "ubuntu" and p["name"] == "nvidia-open")
    ubuntu_open["branches"].remove(595)  # the name exists, but without a 595 version
    rocm = copy.deepcopy(vendor_repos.load(vendor_repos.ROCM))
    rocm["package"] = [p for p in rocm["package"] if p["name"] != "amdrocm7.14"]
    write_toml(tmp_path / "nvidia.toml", nvidia)
    write_toml(tmp_path / "rocm.toml", rocm)
    built = vendor_repos.build(tmp_path / "vendors", tmp_path / "nvidia.toml", tmp_path / "rocm.toml")
    with mirror.serve(built.root) as url:
        run = check(url, "--no-keys")
        keys = check(url, "--only", "nvidia", "--os", "debian12")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "MISSING nvidia debian12: nvidia-driver-pinning-615 (nvidia_driver Debian-12 branch 615" in run.stdout
    assert "MISSING nvidia ubuntu2604: nvidia-driver-pinning-615" in run.stdout
    assert "MISSING rocm 7.14 ubuntu2404: amdrocm7.14 (rocm role" in run.stdout
    assert "NOT FOUND nvidia ubuntu2204: nvidia-driver-pinning-615" in run.stdout
    assert "MISSING nvidia ubuntu2404: nvidia-open (nvidia_driver Ubuntu-24.04 branch 595 desktop/open)" in run.stdout
    assert "NOT FOUND nvidia ubuntu2404: nvidia-open has no 595 version" in run.stdout
    assert "MISSING rocm 7.2" not in run.stdout and "Debian-12 branch 595" not in run.stdout
    # the stand-ins are signed with the lab's key, not NVIDIA's: the key check says so
    assert f"KEY {url}/nvidia/debian12/3bf863cc.pub: cannot be downloaded" in keys.stdout
